"""CP-SAT model of the prefill window (whole-request placement; see ``problem`` Notes).

Costs are integer ticks of ``1 / scale`` microseconds (``to_int_us(cost_us * scale)``, rounded
up). Each rounding overstates a term by less than one tick, so a scaled objective exceeds the
true one by less than ``N + G`` ticks and ``(cp_bound - N - G) / scale`` (+ the constant
base) is a proven bound of the true problem. ``scale`` is 100 ticks per microsecond unless
the total would pass 2**52, where it shrinks.

Chunking is not modelled: a chunk is a post-pass of the greedy kind (``_kernels.chunk_fill``,
priced as ``objective.remainder_price_us``) applied to the requests CP-SAT defers, so CP-SAT's
proof covers whole-request placement only.

The model is written straight into ``CpModel.proto`` from numpy arrays, a few calls per
constraint instead of one per variable and term (:class:`_Writer`): at 128 x 16 it builds in
about 2 ms instead of 13 ms (256 x 32: 6 ms instead of 52 ms).

Tried and dropped (measured on windows cut from the real traces, see ``benchmarks/cpsat.py``):
ordering interchangeable units by load (symmetry breaking) made proofs 2-6x slower on windows
with identical units (CP-SAT's own symmetry detection already covers them) and did not help
in 50 ms; a floor on the objective from the analytic bound changed nothing at 128 x 16 and made
the decode search slightly worse at 64 x 8.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from ortools.sat.python import cp_model, cp_model_helper

from sbsopt._scaling import to_int_us
from sbsopt.window.fits import fits_alone
from sbsopt.window.problem import PrefillWindow

__all__ = ["WindowModel", "BuildTimeout", "build_prefill_model", "read_assignment"]

_MAX_TOTAL = float(2**52)
_INT_MAX = 2**63 - 1


class BuildTimeout(Exception):
    """Model building passed its deadline (internal: the caller falls back to the greedy)."""


@dataclass(frozen=True)
class WindowModel:
    """A built model, the request/unit of each assignment literal, and the scaling needed to
    read its bound back (``bound_us = constant_us + (cp_bound - slack_ticks) / scale``).

    Literals ``0 .. len(pair_i) - 1`` of the model are ``x[pair_i[k], pair_j[k]]``.
    """

    model: cp_model.CpModel
    pair_i: np.ndarray
    pair_j: np.ndarray
    scale: float
    slack_ticks: int
    constant_us: float
    trivially_infeasible: bool


def _check(deadline: float) -> None:
    if time.perf_counter() > deadline:
        raise BuildTimeout


class _Writer:
    """Appends variables and constraints to a ``CpModelProto`` in bulk (indices are ints)."""

    def __init__(self, model: cp_model.CpModel) -> None:
        self.proto = model.proto
        self.size = 0

    def bools(self, count: int) -> np.ndarray:
        """``count`` new booleans, appended as blocks of 2**k copies of one variable (a few C++
        merges: 1.5 ms for 8192 against 5 ms for a text-format parse, 8 ms for one call each)."""
        first, self.size = self.size, self.size + count
        block = cp_model_helper.CpModelProto()
        block.variables.add().domain.extend([0, 1])
        while count:
            if count & 1:
                self.proto.merge_from(block)
            count >>= 1
            if count:
                doubled = cp_model_helper.CpModelProto()
                doubled.copy_from(block)
                doubled.merge_from(block)
                block = doubled
        return np.arange(first, self.size, dtype=np.int64)

    def int_vars(self, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
        for lo, hi in zip(lows.tolist(), highs.tolist(), strict=True):
            self.proto.variables.add().domain.extend([lo, hi])
        first, self.size = self.size, self.size + len(lows)
        return np.arange(first, self.size, dtype=np.int64)

    def linear(self, variables: np.ndarray, coeffs: np.ndarray, lo: int, hi: int) -> None:
        """``lo <= sum coeffs * variables <= hi``."""
        linear = self.proto.constraints.add().linear
        linear.vars.extend(variables.tolist())
        linear.coeffs.extend(coeffs.tolist())
        linear.domain.extend([lo, hi])

    def exactly_one(self, literals: np.ndarray, starts: np.ndarray) -> None:
        """One ``exactly_one`` per slice ``literals[starts[k]:starts[k + 1]]``."""
        constraints = self.proto.constraints
        values = literals.tolist()
        bounds = starts.tolist()
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            constraints.add().exactly_one.literals.extend(values[a:b])

    def minimize(self, variables: np.ndarray, coeffs: np.ndarray) -> None:
        objective = self.proto.objective
        objective.vars.extend(variables.tolist())
        objective.coeffs.extend(coeffs.tolist())

    def hint(self, values: np.ndarray) -> None:
        """A complete hint (every variable): CP-SAT then accepts it without search."""
        hint = self.proto.solution_hint
        hint.vars.extend(range(self.size))
        hint.values.extend(values.tolist())


def _csr(pair_major: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair indices grouped by ``pair_major`` (stable) and the group starts (length count+1)."""
    order = np.argsort(pair_major, kind="stable")
    starts = np.zeros(count + 1, np.int64)
    np.cumsum(np.bincount(pair_major, minlength=count), out=starts[1:])
    return order, starts


def _clean_hint(hint: np.ndarray | None, fits: np.ndarray) -> np.ndarray | None:
    """``hint`` with every request on a pair outside ``fits`` deferred instead."""
    if hint is None:
        return None
    unit = np.maximum(hint, 0)
    return np.where((hint >= 0) & fits[np.arange(hint.shape[0]), unit], hint, -1)


def build_prefill_model(
    problem: PrefillWindow, *, hint: np.ndarray | None, deadline: float
) -> WindowModel:
    """Build ``x[i, j]`` (request i on unit j, only pairs that fit alone), ``d[i]`` (deferred,
    absent when guarded), one step variable per instance, room and KV rows, and the objective
    ``sum_g step_g + sum_i P_i d_i`` in ticks.

    Parameters
    ----------
    hint : int64[N], optional
        Unit per request (-1 deferred); pairs that do not fit are deferred in the hint.
    deadline : float
        ``time.perf_counter()`` value after which building stops with :class:`BuildTimeout`.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([30, 20], [0, 0], [0.0, 0.0], capacity_tokens=[64, 64],
    ...                               coefficients=c)
    >>> built = build_prefill_model(w, hint=None, deadline=time.perf_counter() + 5.0)
    >>> built.pair_i.tolist(), built.pair_j.tolist(), len(built.model.proto.variables)
    ([0, 0, 1, 1], [0, 1, 0, 1], 7)
    """
    n, units, groups = problem.n_requests, problem.n_units, problem.n_instances
    tokens, blocks = problem.new_tokens, problem.kv_blocks
    room, free = problem.room_tokens, problem.free_kv_blocks
    inst = problem.instance
    fits = fits_alone(problem)
    total = float(problem.cost_us.sum() + problem.residual_us.max() + problem.penalty_us.sum())
    scale = 100.0 if total * 100.0 < _MAX_TOTAL else _MAX_TOTAL / max(total, 1.0)
    cost = to_int_us(problem.cost_us * scale)
    resid = to_int_us(problem.residual_us * scale)
    pen = to_int_us(problem.penalty_us * scale)
    pair_i, pair_j = np.nonzero(fits)
    model = cp_model.CpModel()
    out = _Writer(model)
    x = out.bools(pair_i.size)
    free_rows = np.flatnonzero(~problem.guarded)
    d = out.bools(free_rows.size)
    step_hi = int(resid.max() + cost.sum()) + 1
    step_lo = np.array([int(resid[inst == g].max()) for g in range(groups)], np.int64)
    step = out.int_vars(step_lo, np.full(groups, step_hi, np.int64))
    _check(deadline)
    # exactly one of the request's pairs, or its deferral (guarded: no deferral literal)
    row_of = np.concatenate([pair_i, free_rows])
    order, starts = _csr(row_of, n)
    out.exactly_one(np.concatenate([x, d])[order], starts)
    infeasible = bool((problem.guarded & (np.diff(starts) == 0)).any())
    _check(deadline)
    by_unit, unit_starts = _csr(pair_j, units)
    for j in range(units):
        mine = by_unit[unit_starts[j]:unit_starts[j + 1]]
        req = pair_i[mine]
        if tokens[req].sum() > room[j]:
            out.linear(x[mine], tokens[req], 0, int(room[j]))
        if blocks[req].sum() > free[j]:
            out.linear(x[mine], blocks[req], 0, int(free[j]))
        # step_g - sum cost x >= resid_j
        out.linear(np.concatenate([[step[inst[j]]], x[mine]]),
                   np.concatenate([[1], -cost[req]]), int(resid[j]), _INT_MAX)
    _check(deadline)
    # redundant averaging cut (J_g * step_g >= total work of g): gives the LP the total/units bound
    for g in range(groups):
        members = inst == g
        chosen = np.flatnonzero(members[pair_j])
        out.linear(np.concatenate([[step[g]], x[chosen]]),
                   np.concatenate([[int(members.sum())], -cost[pair_i[chosen]]]),
                   int(resid[members].sum()), _INT_MAX)
    _check(deadline)
    constant = groups * problem.base_us
    out.minimize(np.concatenate([step, d]),
                 np.concatenate([np.ones(groups, np.int64), pen[free_rows]]))
    hint = _clean_hint(hint, fits)
    if hint is not None:
        placed = hint >= 0
        time_j = resid + np.bincount(hint[placed], weights=cost[placed], minlength=units)
        out.hint(np.concatenate([
            (hint[pair_i] == pair_j), hint[free_rows] < 0,
            [int(time_j[inst == g].max()) for g in range(groups)],
        ]).astype(np.int64))
    return WindowModel(model, pair_i, pair_j, scale, n + groups, constant, infeasible)


class _Response(Protocol):
    """What :func:`read_assignment` reads of CP-SAT's ``CpSolverResponse``."""

    @property
    def solution(self) -> Sequence[int]: ...


def read_assignment(response: _Response, built: WindowModel, n: int) -> np.ndarray:
    """Unit per request (-1 deferred) from a CP-SAT response holding a solution."""
    size = built.pair_i.size
    values = np.fromiter(response.solution, np.int64, count=len(response.solution))[:size]
    assignment = np.full(n, -1, np.int64)
    chosen = values > 0
    assignment[built.pair_i[chosen]] = built.pair_j[chosen]
    return assignment
