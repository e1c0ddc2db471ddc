"""Lookahead release of an engine-paced SBS window (``SchedulerConfig.lookahead_release``).

The window objective (step times plus deferral prices with ``defer_factor`` 1) fills the
instance about to start up to its units' room: once one unit holds two prompts, more stacked
prompts cost nothing until the step rises again. A window that gathered a busy spell's arrivals
so stacks them on one instance while the next instance frees milliseconds later with nothing
left, every request of the stacked forward waits for the whole stack, and the instances' phases
bunch (arXiv mix at load 0.5: 59 prompts on one instance in a 0.59 s forward, one prompt on the
next instance 9 ms later; SBS's p99 TTFT 23% above round robin's). :func:`lean_release` weighs
the window's answer against a lean forward that leaves the stack to the instance freeing next.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from sbsopt.sim.engine import PrefillInstance
from sbsopt.sim.router import allocate_prefill
from sbsopt.sim.steps import StepTimes

__all__ = ["lean_release", "next_free_s", "window_solver"]

#: ``solve(new, cached, arrival_s, capacity, load) -> (assignment, chunks)``: the window solver
#: over the released instance's units, with the simulation's solver settings bound.
Solve = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                 tuple[np.ndarray, dict[int, int]]]


def lean_release(
    new: np.ndarray, cached: np.ndarray, arrival_s: np.ndarray, *, capacity: np.ndarray,
    load: np.ndarray, assignment: np.ndarray, chunks: dict[int, int], solve: Solve,
    step_times: StepTimes, now_s: float, next_free_s: float, guard_s: float, live_instances: int,
    seen_arrival_s: np.ndarray, seen_tokens: np.ndarray,
) -> tuple[np.ndarray, dict[int, int]]:
    """The window's answer for the instance about to start (``full``), or a lean forward with
    the rest left buffered for the instance that frees next, whichever gives the smaller sum
    of predicted first-token times.

    The lean forward is the window solved with every unit's room cut to the longest request
    the full answer places (or the units' committed load, if more): its step is set by that
    request alone. The rest ``R`` waits ``w`` until the next live instance can start and
    rides that forward with what arrives meanwhile, ``A``, predicted as a copy of the
    arrivals of the last ``w`` seconds. Steps are the cost model's forward times (per unit:
    new tokens, attention pairs, requests; the committed load as one uncached request), not
    the window's linearisation, which prices a unit's stack as the sum of its prompts and
    misses what a fuller forward costs on every rank (all-to-all, attention). With ``n``
    requests per forward::

        full: n_full * step(full) + n_A * (w + step(A))
        lean: n_lean * step(lean) + n_(R+A) * (w + step(R + A))

    Lean forwards hold fewer tokens per step, so they run only while they keep up: the live
    instances' lean throughput (lean tokens / lean step each) must exceed the token arrival
    rate over the last full step, else the buffer would grow without bound (at saturation
    stacked forwards amortise the step's base; on the arXiv mix at load 0.9, without this
    test the mean TTFT was 1618 ms instead of 1013 ms). A request past its TTFT guard is never
    left in the rest: the guard defers only for want of room, and a lean room is not that.

    Parameters
    ----------
    new, cached, arrival_s : numpy.ndarray
        The window's requests: new and cached prompt tokens, arrival times.
    capacity, load : numpy.ndarray
        Per unit of the released instance: token room of a window, committed tokens.
    assignment, chunks : numpy.ndarray, dict
        The window's answer (unit per request, -1 deferred; first-chunk tokens).
    solve : callable
        The window solver over the same units (see ``Solve``).
    step_times : StepTimes
        The prefill cost model's forward times.
    now_s, next_free_s, guard_s : float
        Now; when the earliest other live instance can start (``inf``: none); the TTFT guard.
    live_instances : int
        Live prefill instances.
    seen_arrival_s, seen_tokens : numpy.ndarray
        Arrival times and context tokens of every request arrived so far (sorted by time).

    Returns
    -------
    (assignment, chunks)
        The answer to run; a request it leaves at -1 stays buffered.
    """
    placed = assignment >= 0
    if placed.sum() < 2 or not np.isfinite(next_free_s):
        return assignment, chunks
    room = int(capacity[0])
    cap = int(max(np.minimum(new[placed], room).max(), load.max()))
    if cap >= room:
        return assignment, chunks
    units = len(capacity)
    sizes = new.astype(np.float64)
    done = cached.astype(np.float64)
    committed = np.asarray(load, np.float64)

    def step_s(unit: np.ndarray, tokens: np.ndarray, prefix: np.ndarray, held: np.ndarray) -> float:
        """The cost model's forward time of ``tokens`` (after ``prefix``) on ``unit``."""
        n = held + np.bincount(unit, weights=tokens, minlength=units)
        pairs = held * held / 2.0 + np.bincount(unit, weights=tokens * (prefix + tokens / 2.0), minlength=units)
        reqs = (held > 0).astype(np.float64) + np.bincount(unit, minlength=units)
        return step_times.prefill_us(n, pairs, reqs) * 1e-6

    def forward(assign: np.ndarray, chunk_map: dict[int, int]) -> tuple[float, float]:
        """(step seconds, new tokens) of ``assign`` on these units."""
        n = sizes.copy()
        for i, size in chunk_map.items():
            n[i] = size
        on = assign >= 0
        return step_s(assign[on], n[on], done[on], committed), float(n[on].sum())

    lean, lean_chunks = solve(new, cached, arrival_s, np.full(units, cap, dtype=np.int64), load)
    # a lean chunk of a request the full answer placed whole would pin its remainder to this
    # unit, behind this forward: such a request waits for the next instance whole
    for i in [i for i in lean_chunks if i not in chunks]:
        lean[i] = -1
        del lean_chunks[i]
    rest = np.flatnonzero(placed & (lean < 0))
    if not len(rest) or (arrival_s[rest] + guard_s <= now_s).any():
        return assignment, chunks
    full_s, _ = forward(assignment, chunks)
    lean_s, lean_tokens = forward(lean, lean_chunks)
    recent = int(np.searchsorted(seen_arrival_s, now_s - full_s, side="right"))
    arriving = float(seen_tokens[recent:].sum()) / full_s
    if arriving >= live_instances * lean_tokens / lean_s:
        return assignment, chunks
    wait_s = max(next_free_s - now_s, 0.0)
    first = int(np.searchsorted(seen_arrival_s, now_s - wait_s, side="right"))
    ahead = seen_tokens[first:].astype(np.int64)

    def empty_forward(tokens: np.ndarray) -> tuple[int, float]:
        """(requests placed, step seconds) of a window of ``tokens`` on an idle instance."""
        if not len(tokens):
            return 0, 0.0
        zeros = np.zeros(len(tokens), np.int64)
        got, _ = solve(tokens, zeros, np.full(len(tokens), now_s), capacity, np.zeros(units))
        on = got >= 0
        return int(on.sum()), step_s(got[on], tokens[on].astype(np.float64), np.zeros(int(on.sum())),
                                     np.zeros(units))

    n_ahead, ahead_s = empty_forward(ahead)
    n_both, both_s = empty_forward(np.concatenate([new[rest], ahead]))
    full_cost = int(placed.sum()) * full_s + n_ahead * (wait_s + ahead_s)
    lean_cost = int((lean >= 0).sum()) * lean_s + n_both * (wait_s + both_s)
    if lean_cost < full_cost:
        return lean, lean_chunks
    return assignment, chunks


def window_solver(*, now_s: float, guard_s: float, coefficients, solver: str, seed: int) -> Solve:
    """The simulation's window solver (:func:`~sbsopt.sim.router.allocate_prefill`) over one
    instance's units at ``now_s``, as :func:`lean_release` calls it."""
    def solve(new: np.ndarray, cached: np.ndarray, arrival_s: np.ndarray, capacity: np.ndarray,
              load: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
        chunks: dict[int, int] = {}
        assignment = allocate_prefill(
            new, cached, arrival_s, capacity_tokens=capacity, load_tokens=load, now_s=now_s, guard_s=guard_s,
            coefficients=coefficients, solver=solver, seed=seed, chunks=chunks)
        return assignment, chunks
    return solve


def next_free_s(prefill: list[PrefillInstance], alive: np.ndarray, k: int,
                start_s: Callable[[PrefillInstance], float]) -> float:
    """When the earliest live prefill instance other than ``k`` can start a forward: at
    ``start_s(instance)`` if idle (now, or its next dummy-forward boundary), else at the
    scheduler's prediction of its forward's end (``inf``: no other live instance)."""
    best = math.inf
    for other in prefill:
        if other.index != k and alive[other.index]:
            best = min(best, other.predicted_end_s if other.busy else start_s(other))
    return best
