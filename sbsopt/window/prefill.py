"""CP-SAT model of the prefill window (whole-request placement; see ``problem`` Notes).

Costs are integer ticks of ``1 / scale`` microseconds (``to_int_us(cost_us * scale)``, rounded
up). Each rounding overstates a term by less than one tick, so a scaled objective exceeds the
true one by less than ``N + G`` ticks and ``(cp_bound - N - G) / scale`` (+ the constant
base) is a proven bound of the true problem. ``scale`` is 100 ticks per microsecond unless
the total would pass 2**52, where it shrinks.

Chunking is not modelled: a chunk is a post-pass of the greedy kind (``_kernels.chunk_fill``)
applied to the requests CP-SAT defers, so CP-SAT's proof covers whole-request placement only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from sbsopt._scaling import to_int_us
from sbsopt.window.problem import PrefillWindow

__all__ = ["PrefillModel", "build_prefill_model", "read_assignment", "set_hint", "BuildTimeout"]

_MAX_TOTAL = float(2**52)


class BuildTimeout(Exception):
    """Model building passed its deadline (internal: the caller falls back to the greedy)."""


@dataclass
class PrefillModel:
    """A built model with its variables and the scaling needed to read its bound back."""

    model: cp_model.CpModel
    x: dict[tuple[int, int], cp_model.IntVar]
    scale: float
    slack_ticks: int
    constant_us: float
    trivially_infeasible: bool


def _check(deadline: float) -> None:
    if time.perf_counter() > deadline:
        raise BuildTimeout


def _assignment_vars(
    model: cp_model.CpModel, fits: np.ndarray, deadline: float
) -> tuple[
    dict[tuple[int, int], cp_model.IntVar],
    list[list[cp_model.IntVar]],
    list[list[int]],
    list[cp_model.IntVar],
]:
    """One boolean x[i, j] per request/unit pair allowed by ``fits`` (an N x J bool matrix).

    Returns the variables by pair, by request (rows), the requests per unit (cols) and in
    creation order; the deadline is checked while building, since large windows take a while.
    """
    n, units = fits.shape
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    rows: list[list[cp_model.IntVar]] = [[] for _ in range(n)]
    cols: list[list[int]] = [[] for _ in range(units)]
    pair_i, pair_j = np.nonzero(fits)
    pairs: list[cp_model.IntVar] = []
    for k, (i, j) in enumerate(zip(pair_i.tolist(), pair_j.tolist(), strict=True)):
        x[i, j] = model.new_bool_var(f"x[{i},{j}]")
        pairs.append(x[i, j])
        rows[i].append(x[i, j])
        cols[j].append(i)
        if k % 256 == 255:
            _check(deadline)
    _check(deadline)
    return x, rows, cols, pairs


def build_prefill_model(
    problem: PrefillWindow, *, hint: np.ndarray | None, deadline: float
) -> PrefillModel:
    """Build ``x[i, j]`` (request i on unit j, only pairs that fit alone), ``d[i]`` (deferred,
    absent when guarded), one step variable per instance, room and KV rows, and the objective
    ``sum_g step_g + sum_i P_i d_i`` in ticks; hinted with ``hint`` (unit per request, -1
    deferred)."""
    n, units, groups = problem.n_requests, problem.n_units, problem.n_instances
    tokens, blocks = problem.new_tokens, problem.kv_blocks
    room, free = problem.room_tokens, problem.free_kv_blocks
    fits = (tokens[:, None] <= room[None, :]) & (blocks[:, None] <= free[None, :])
    total = float(problem.cost_us.sum() + problem.residual_us.max() + problem.penalty_us.sum())
    scale = 100.0 if total * 100.0 < _MAX_TOTAL else _MAX_TOTAL / max(total, 1.0)
    cost = to_int_us(problem.cost_us * scale)
    resid = to_int_us(problem.residual_us * scale)
    pen = to_int_us(problem.penalty_us * scale)
    model = cp_model.CpModel()
    x, rows, cols, pairs = _assignment_vars(model, fits, deadline)
    pair_i, pair_j = np.nonzero(fits)  # the order of `pairs`
    infeasible = False
    deferred_terms: list[tuple[cp_model.IntVar, int, int]] = []
    for i in range(n):
        if i % 64 == 63:
            _check(deadline)
        if problem.guarded[i]:
            infeasible = infeasible or not rows[i]
            model.add_exactly_one(rows[i])
        else:
            d = model.new_bool_var(f"d[{i}]")
            model.add_exactly_one([*rows[i], d])
            deferred_terms.append((d, int(pen[i]), i))
    _check(deadline)
    step_hi = int(resid.max() + cost.sum()) + 1
    step = [model.new_int_var(0, step_hi, f"step[{g}]") for g in range(groups)]
    for j in range(units):
        mine = cols[j]
        vars_j = [x[i, j] for i in mine]
        if tokens[mine].sum() > room[j]:
            model.add(cp_model.LinearExpr.weighted_sum(vars_j, tokens[mine].tolist()) <= int(room[j]))
        if blocks[mine].sum() > free[j]:
            model.add(cp_model.LinearExpr.weighted_sum(vars_j, blocks[mine].tolist()) <= int(free[j]))
        model.add(step[problem.instance[j]] >= int(resid[j])
                  + cp_model.LinearExpr.weighted_sum(vars_j, cost[mine].tolist()))
    _check(deadline)
    # redundant averaging cut (J_g * step_g >= total work of g): gives the LP the total/units bound
    for g in range(groups):
        members = problem.instance == g
        idx = np.flatnonzero(members[pair_j])
        chosen = pairs if groups == 1 else [pairs[k] for k in idx.tolist()]
        model.add(int(members.sum()) * step[g] >= int(resid[members].sum())
                  + cp_model.LinearExpr.weighted_sum(chosen, cost[pair_i[idx]].tolist()))
        _check(deadline)
    model.minimize(
        cp_model.LinearExpr.sum(step)
        + cp_model.LinearExpr.weighted_sum([d for d, _, _ in deferred_terms],
                                           [p for _, p, _ in deferred_terms])
    )
    _check(deadline)
    if hint is not None:
        # a complete hint (auxiliary variables included) is accepted without search
        hint = np.where(fits[np.arange(n), np.maximum(hint, 0)] & (hint >= 0), hint, -1)
        placed = hint >= 0
        time_j = resid + np.bincount(hint[placed], weights=cost[placed], minlength=units)
        deferred_index = np.array([i for _, _, i in deferred_terms], np.int64)
        set_hint(model, [*pairs, *(d for d, _, _ in deferred_terms), *step],
                 (hint[pair_i] == pair_j).astype(np.int64).tolist()
                 + (hint[deferred_index] < 0).astype(np.int64).tolist()
                 + [int(time_j[problem.instance == g].max()) for g in range(groups)])
    return PrefillModel(model, x, scale, n + groups, groups * problem.base_us, infeasible)


def set_hint(model: cp_model.CpModel, variables: list, values: list[int]) -> None:
    """Write a solution hint straight into the proto (``add_hint`` costs microseconds each)."""
    hint = model.proto.solution_hint
    hint.vars.extend([v.index for v in variables])
    hint.values.extend(values)


def read_assignment(solver: cp_model.CpSolver, built: PrefillModel, n: int) -> np.ndarray:
    """Unit per request from a solved model (-1 deferred)."""
    assignment = np.full(n, -1, np.int64)
    for (i, j), var in built.x.items():
        if solver.boolean_value(var):
            assignment[i] = j
    return assignment
