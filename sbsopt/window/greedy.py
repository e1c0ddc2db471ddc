"""Greedy backends: PBAA water-filling + LPT (prefill) and IQR-lex (decode), Numba-compiled.

The wrappers are thin on purpose: one compiled call per window computes the request orders,
every pass, the best answer and its analytic bound, so a 256 x 32 window is decided in tens of
microseconds; call :func:`warm_up` once outside timed paths (the kernels are cached on disk with
``cache=True``).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from sbsopt.kvblocks import chunk_kv_blocks
from sbsopt.window import _kernels
from sbsopt.window.bounds import analytic_bound, lp_bound, split_bound
from sbsopt.window.host_bound import host_bound
from sbsopt.window.objective import prefill_objective, prefill_unit_time_us, remainder_price_us
from sbsopt.window.problem import DecodeWindow, PrefillWindow

__all__ = ["GreedyAnswer", "greedy_prefill", "greedy_decode", "chunk_after", "ruin_recreate",
           "ruin_iteration_s", "exchange_search", "warm_up"]

_PREFILL_VARIANTS = ("pbaa", "lpt", "density", "knapsack")  # by _kernels.ORDER_* code
_DECODE_VARIANTS = ("iqr-lex", "min-step")

class GreedyAnswer(NamedTuple):
    """A greedy answer with the analytic lower bound computed in the same compiled call, and
    how many guarded requests (past their guard) it could not place."""

    assignment: np.ndarray
    chunks: dict[int, int]
    objective: float
    variant: str
    bound: float
    unplaced_guarded: int = 0


def _carry(problem: PrefillWindow) -> np.ndarray:
    """Weight on a chunk remainder's cost per request, ``w_i * defer_factor``."""
    return problem.weight * problem.defer_factor


def _chunk_spec(problem: PrefillWindow) -> tuple:
    """The chunk kernels' ``spec``: ``(cached, alpha, beta, gamma, min_chunk, carry)``."""
    c = problem.coefficients
    return (problem.cached_tokens, float(c.alpha_us_per_token), float(c.beta_us_per_pair),
            float(c.gamma_us_per_request), problem.min_chunk_tokens, _carry(problem))


def _empty_state(problem: PrefillWindow) -> tuple[np.ndarray, ...]:
    """The kernels' unit state before a pass: ``(room, free, unit_time, inst_max,
    chunk_tokens, used)``, fresh copies."""
    unit_time = problem.residual_us.copy()
    inst_max = np.full(problem.n_instances, -np.inf)
    np.maximum.at(inst_max, problem.instance, unit_time)
    return (problem.room_tokens.copy(), problem.free_kv_blocks.copy(), unit_time, inst_max,
            np.zeros(problem.n_requests, np.int64), np.zeros(problem.n_units, np.bool_))


def _prefill_pass(problem: PrefillWindow, order: np.ndarray, local_search: int) -> GreedyAnswer:
    """One pass in Python around the kernels (reference of ``_kernels.prefill_best_of``; no
    bound, reported as ``-inf``)."""
    spec = _chunk_spec(problem)
    room, free, unit_time, inst_max, chunk_tokens, used = _empty_state(problem)
    assignment = _kernels.prefill_greedy(
        order, problem.cost_us, problem.new_tokens, problem.kv_blocks, problem.penalty_us,
        problem.guarded, room, free, unit_time, problem.instance, inst_max, chunk_tokens, used,
        problem.allow_chunking, spec,
    )
    if local_search > 0:
        _kernels.prefill_local_search(
            assignment, problem.cost_us, problem.new_tokens, problem.kv_blocks,
            problem.penalty_us, problem.guarded, room, free, unit_time, problem.instance,
            inst_max, chunk_tokens, local_search,
        )
    deferred = assignment < 0
    if problem.allow_chunking and deferred.any():
        chunk_unit, late = _kernels.chunk_fill(
            order[deferred[order]], problem.new_tokens, problem.kv_blocks, problem.penalty_us,
            room, free, unit_time, problem.instance, inst_max, used, spec,
        )
        placed = chunk_unit >= 0
        assignment[placed] = chunk_unit[placed]
        chunk_tokens[placed] = late[placed]
    if problem.allow_chunking:
        _kernels.trim_step_chunks(
            order, assignment, chunk_tokens, problem.cost_us, problem.new_tokens,
            problem.kv_blocks, problem.penalty_us, problem.guarded, room, free, unit_time,
            problem.instance, inst_max, used, spec,
        )
    chunks = {int(i): int(chunk_tokens[i]) for i in np.flatnonzero(chunk_tokens)}
    # objective from the kernels' state (same formula as objective.prefill_objective)
    value = problem.n_instances * problem.base_us + float(inst_max.sum())
    value += float(problem.penalty_us[assignment < 0].sum())
    if chunks:
        value += float(remainder_price_us(problem, np.array(list(chunks)),
                                          np.array(list(chunks.values()))).sum())
    return GreedyAnswer(assignment, chunks, value, "", -np.inf)


def chunk_after(problem: PrefillWindow, assignment: np.ndarray) -> tuple[np.ndarray, dict]:
    """The greedy chunk post-pass applied to a whole-request assignment (CP-SAT's answer):
    the deferred requests, guarded then oldest then largest first, place first chunks where
    they remove more deferral price than they add step time, then the step units' chunks (or
    costliest whole requests) are trimmed where the freed room refills
    (``_kernels.trim_step_chunks``). Returns a new
    assignment and the chunks."""
    if not problem.allow_chunking:
        return assignment, {}
    placed = assignment >= 0
    room = problem.room_tokens - np.bincount(
        assignment[placed], weights=problem.new_tokens[placed], minlength=problem.n_units
    ).astype(np.int64)
    free = problem.free_kv_blocks - np.bincount(
        assignment[placed], weights=problem.kv_blocks[placed], minlength=problem.n_units
    ).astype(np.int64)
    unit_time = prefill_unit_time_us(problem, assignment, {})
    inst_max = np.full(problem.n_instances, -np.inf)
    np.maximum.at(inst_max, problem.instance, unit_time)
    order = np.lexsort((-problem.cost_us, problem.arrival_s, ~problem.guarded))
    spec = _chunk_spec(problem)
    used = np.zeros(problem.n_units, np.bool_)
    chunk_unit, chunk_tokens = _kernels.chunk_fill(
        order[assignment[order] < 0], problem.new_tokens, problem.kv_blocks, problem.penalty_us,
        room, free, unit_time, problem.instance, inst_max, used, spec,
    )
    idx = np.flatnonzero(chunk_unit >= 0)
    assignment = assignment.copy()
    assignment[idx] = chunk_unit[idx]
    _kernels.trim_step_chunks(
        order, assignment, chunk_tokens, problem.cost_us, problem.new_tokens, problem.kv_blocks,
        problem.penalty_us, problem.guarded, room, free, unit_time, problem.instance, inst_max,
        used, spec,
    )
    idx = np.flatnonzero(chunk_tokens)
    return assignment, dict(zip(idx.tolist(), chunk_tokens[idx].tolist(), strict=True))


#: Ruin and recreate (``_kernels.prefill_ruin_recreate``): units ruined per iteration, the
#: share of their requests deferred, the noise on the reinsertion order, and how often that
#: order is largest first instead of by deferral penalty per token. Choices of ours, measured
#: on the benchmark windows (64 x 8 to 256 x 32, with and without chunking): two units at one
#: half reached the 1% gap on more windows than 3 x 0.3, 4 x 0.2, 4 x 0.5 or 6 x 0.3, and
#: mixing in largest-first orders (half the iterations) lowered the worst gaps.
RUIN_UNITS, RUIN_SHARE, RUIN_NOISE, RUIN_LARGEST_FIRST = 2, 0.5, 0.3, 0.5
#: Seconds one iteration takes at most, ``RUIN_ITERATION_S + RUIN_PAIR_S * pairs`` (slowest
#: windows measured: 2.2 / 2.8 / 7.1 us at 64 x 8 / 128 x 16 / 256 x 32; see
#: :func:`ruin_iteration_s`), and how often the clock is read (iterations run in compiled calls
#: of about ``_RUIN_CALL_S``, at most ``_RUIN_CHUNK`` iterations each).
RUIN_ITERATION_S, RUIN_PAIR_S = 2e-6, 0.75e-9
_RUIN_CALL_S = 1e-3
_RUIN_CHUNK = 500


def ruin_iteration_s(problem: PrefillWindow) -> float:
    """Seconds one ruin-and-recreate iteration takes at most on ``problem`` (what iteration
    counts are sized with, so that they do not depend on the clock)."""
    return RUIN_ITERATION_S + RUIN_PAIR_S * problem.n_requests * problem.n_units


def ruin_recreate(problem: PrefillWindow, assignment: np.ndarray, iterations: int, *,
                  seed: int = 0, deadline: float | None = None
                  ) -> tuple[np.ndarray, dict[int, int], float, int]:
    """Improve a whole-request answer (unit per request, -1 deferred: give a chunked request
    as deferred) by ``iterations`` of ruin and recreate, then add chunks as
    :func:`chunk_after` does.

    Returns ``(assignment, chunks, objective, iterations run)``: the best answer seen, which is
    never worse than ``assignment`` taken whole. Deterministic for a fixed ``seed``; the
    iterations run in compiled calls of about a millisecond and stop early once
    ``time.perf_counter()`` passes ``deadline``.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([60, 50, 40, 30], [0] * 4, [0.0] * 4,
    ...                               capacity_tokens=[90, 90], coefficients=c,
    ...                               allow_chunking=False)
    >>> start = np.array([0, 1, -1, -1])  # 60 | 50, with 40 and 30 deferred
    >>> answer, chunks, value, ran = ruin_recreate(w, start, 50)
    >>> value, sorted(np.bincount(answer, weights=w.new_tokens).tolist())  # 60+30 | 50+40
    (90.0, [90.0, 90.0])
    """
    current = np.array(assignment, dtype=np.int64, copy=True)
    best = current.copy()
    per_call = int(min(max(_RUIN_CALL_S / ruin_iteration_s(problem), 1), _RUIN_CHUNK))
    ran = 0
    while ran < iterations and (deadline is None or time.perf_counter() < deadline):
        count = min(per_call, iterations - ran)
        _kernels.prefill_ruin_recreate(
            current, best, problem.cost_us, problem.new_tokens, problem.kv_blocks,
            problem.penalty_us, problem.guarded, problem.room_tokens, problem.free_kv_blocks,
            problem.residual_us, problem.instance, problem.n_instances, count, RUIN_UNITS,
            RUIN_SHARE, RUIN_NOISE, RUIN_LARGEST_FIRST, seed * 1_000_003 + ran // per_call)
        ran += count
    placed, chunks = chunk_after(problem, best)
    return placed, chunks, prefill_objective(problem, placed, chunks), ran


#: Exchange search (``_kernels.prefill_exchange_search``): seconds one unit of its work (a
#: subset visited, or a sixteenth of one built) is taken to cost, which sizes its work from a
#: budget (measured 3-7 ns on full windows from 64 x 8 to 256 x 32, up to 13 ns on searches
#: of under 0.1 ms, where the fixed cost counts; the clock guards the rest).
EXCHANGE_WORK_S = 10e-9


def exchange_search(problem: PrefillWindow, assignment: np.ndarray, chunks: dict[int, int],
                    work: int, *, deadline: float | None = None
                    ) -> tuple[np.ndarray, float, int, int]:
    """Improve an answer by exchange descent (``_kernels.prefill_exchange_search``): up to two
    whole requests of a unit trade places with up to two of another unit or of the deferred
    ones; chunked requests stay.

    Returns ``(assignment, objective, changes made, work done)``, never worse than the answer
    given. The search stops when no change helps or its work (subsets visited, about 10 ns
    each) reaches ``work``, so that it repeats; and, as a guard, once ``time.perf_counter()``
    passes ``deadline``.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([50, 40, 30, 20, 20], [0] * 5, [0.0] * 5,
    ...                               capacity_tokens=[80, 80], coefficients=c,
    ...                               allow_chunking=False)
    >>> start = np.array([0, 1, 1, -1, -1])  # 50 | 40+30, both 20s deferred: 70 + 2 * 1020
    >>> answer, value, made, done = exchange_search(w, start, {}, 10_000)
    >>> answer.tolist(), value, made  # the 30 for both 20s, a 20 over, the 30 for a 20
    ([0, 1, 1, 0, -1], 1090.0, 3)
    """
    current = np.array(assignment, dtype=np.int64, copy=True)
    movable = np.ones(problem.n_requests, np.bool_)
    held_tokens = problem.new_tokens.astype(np.float64)
    held_blocks = problem.kv_blocks.astype(np.float64)
    for i, k in chunks.items():
        movable[i] = False
        held_tokens[i] = k
        held_blocks[i] = chunk_kv_blocks(k, int(problem.kv_blocks[i]), int(problem.new_tokens[i]))
    placed = current >= 0
    # float: the kernel compiles for one type (an empty bincount is int whatever its weights)
    room = problem.room_tokens - np.bincount(current[placed], weights=held_tokens[placed],
                                             minlength=problem.n_units).astype(np.float64)
    free = problem.free_kv_blocks - np.bincount(current[placed], weights=held_blocks[placed],
                                                minlength=problem.n_units).astype(np.float64)
    unit_time = prefill_unit_time_us(problem, current, chunks)
    made, done = _kernels.prefill_exchange_search(
        current, movable, problem.cost_us, problem.new_tokens, problem.kv_blocks,
        problem.penalty_us, problem.guarded, room, free, unit_time, problem.instance,
        problem.n_instances, work, np.inf if deadline is None else deadline)
    return current, prefill_objective(problem, current, chunks), made, done


def greedy_prefill(problem: PrefillWindow, *, local_search: int = 0) -> GreedyAnswer:
    """Best of PBAA (guarded, then oldest first, then largest) and LPT (guarded, then largest);
    in a window that holds more tokens or KV blocks than the units have room for, best of a
    knapsack order and penalty density (chunking) or LPT (``_kernels.prefill_orders``). A
    request that fits no unit whole places its first chunk when chunking is allowed; the
    answer carries the analytic bound (:func:`sbsopt.window.analytic_bound`).

    Parameters
    ----------
    local_search : int
        Maximum number of accepted local-search changes (0: none): move/swap on each instance's
        step unit, then exchanges with the deferred requests (``_kernels.prefill_local_search``).

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([30, 20, 20, 10], [0] * 4, [0.0] * 4,
    ...                               capacity_tokens=[64, 64], coefficients=c)
    >>> answer = greedy_prefill(w)
    >>> answer.objective, answer.chunks, answer.bound
    (40.0, {}, 40.0)
    """
    if problem.n_requests == 0:
        empty = np.zeros(0, np.int64)
        return GreedyAnswer(empty, {}, prefill_objective(problem, empty, {}), "empty",
                            analytic_bound(problem))
    c = problem.coefficients
    kind, assignment, chunk_tokens, chunked, unplaced, value, bound = _kernels.prefill_solve(
        problem.cost_us, problem.new_tokens, problem.cached_tokens, problem.kv_blocks,
        problem.penalty_us, problem.guarded, problem.arrival_s, problem.room_tokens,
        problem.free_kv_blocks, problem.residual_us, problem.instance, problem.n_instances,
        problem.base_us, problem.allow_chunking, float(c.alpha_us_per_token),
        float(c.beta_us_per_pair), float(c.gamma_us_per_request), problem.min_chunk_tokens,
        _carry(problem), local_search,
    )
    chunks = {}
    if chunked:
        placed = chunk_tokens.nonzero()[0]
        chunks = dict(zip(placed.tolist(), chunk_tokens[placed].tolist(), strict=True))
    return GreedyAnswer(assignment, chunks, value, _PREFILL_VARIANTS[kind], bound, unplaced)


def greedy_decode(problem: DecodeWindow) -> GreedyAnswer:
    """Best of IQR-lex and min-step-raise decode placements, longest context first, with the
    analytic bound.

    Examples
    --------
    >>> from sbsopt.costmodel import DecodeCoefficients
    >>> c = DecodeCoefficients(base_us=0.0, us_per_request=1.0, us_per_kv_token=0.001)
    >>> d = DecodeWindow.from_arrays([900, 100], [15, 2], batch_size=[0, 0],
    ...                              max_batch_size=[4, 4], kv_blocks_used=[0, 0],
    ...                              free_kv_blocks=[100, 100], coefficients=c)
    >>> greedy_decode(d)[0].tolist()
    [0, 1]
    """
    row, assignment, value, bound = _kernels.decode_solve(
        problem.context_tokens, problem.kv_blocks, problem.batch_size, problem.max_batch_size,
        problem.kv_tokens, problem.free_kv_blocks, problem.instance, problem.n_instances,
        problem.base_us, problem.us_per_request, problem.us_per_kv_token, problem.penalty_us,
        problem.iqr_k,
    )
    return GreedyAnswer(assignment, {}, value, _DECODE_VARIANTS[row], bound)


def warm_up() -> float:
    """Compile (or load from the on-disk cache) every kernel, and load the LP solvers the
    bounds call; returns the seconds it took."""
    # imported here: the cost model is not otherwise loaded with sbsopt.window
    from sbsopt.costmodel import DecodeCoefficients, PrefillCoefficients

    start = time.perf_counter()
    pc = PrefillCoefficients(base_us=1.0, alpha_us_per_token=1.0, beta_us_per_pair=0.001,
                             gamma_us_per_request=1.0)
    w = PrefillWindow.from_arrays([5, 300, 40], [0, 0, 0], [0.0, 0.0, 0.0],
                                  capacity_tokens=[200, 100], coefficients=pc)
    greedy_prefill(w, local_search=4)
    # loaded on first use otherwise: the step-split bound and CP-SAT's chunk post-pass
    split_bound(w)
    chunk_after(w, np.full(w.n_requests, -1, np.int64))
    ruin_recreate(w, np.full(w.n_requests, -1, np.int64), 2)
    # enough work to read the clock: its object-mode block compiles on first use
    exchange_search(w, np.full(w.n_requests, -1, np.int64), {}, 10_000)
    dc = DecodeCoefficients(base_us=1.0, us_per_request=1.0, us_per_kv_token=0.001)
    d = DecodeWindow.from_arrays([5, 6, 7, 8, 9], [1] * 5, batch_size=[0] * 5,
                                 max_batch_size=[2] * 5, kv_blocks_used=[0] * 5,
                                 free_kv_blocks=[9] * 5, coefficients=dc)
    greedy_decode(d)
    analytic_bound(w)
    analytic_bound(d)
    # GLOP's first import took 7 ms, inside the first cpsat solve's budget (2.4 ms late at 50
    # ms), and HiGHS' first solve 0.7 ms more than the next
    lp_bound(w)
    hosts = PrefillWindow.from_arrays([80, 80, 20, 20], [0] * 4, [0.0] * 4,
                                      capacity_tokens=[100, 100], coefficients=pc)
    host_bound(hosts, upper=110.0)  # the two 80-token prompts are long
    return time.perf_counter() - start
