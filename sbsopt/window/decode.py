"""CP-SAT model of the decode window (see ``problem`` Notes).

The objective ``A * sum_g maxbatch_g + K * sum_g maxkv_g + sum_i P_i d_i`` is in ticks of
``1 / scale`` microseconds with ``A = to_int_us(us_per_request * scale)`` and
``K = to_int_us(us_per_kv_token * scale)``; ``scale`` makes the smaller positive coefficient
about 10**6 ticks (so rounding is below 1e-6 relative) unless the total would pass 2**52.
Rounding overstates by less than ``sum_g (maxbatch_g + maxkv_g) + N`` ticks, which is
subtracted from CP-SAT's bound with the variables' upper bounds.
"""

from __future__ import annotations

import numpy as np
from ortools.sat.python import cp_model

from sbsopt._scaling import to_int_us
from sbsopt.window.prefill import PrefillModel, _assignment_vars, _check, set_hint
from sbsopt.window.problem import DecodeWindow

__all__ = ["build_decode_model"]

_MAX_TOTAL = float(2**52)


def build_decode_model(
    problem: DecodeWindow, *, hint: np.ndarray | None, deadline: float
) -> PrefillModel:
    """Build ``x[i, j]`` for the pairs that fit alone, ``d[i]``, per-instance max batch and max
    KV-token variables, batch-slot and KV-block rows; hinted with ``hint``."""
    n, units, groups = problem.n_requests, problem.n_units, problem.n_instances
    blocks, free = problem.kv_blocks, problem.free_kv_blocks
    slots = problem.max_batch_size - problem.batch_size
    context = problem.context_tokens
    fits = (blocks[:, None] <= free[None, :]) & (slots[None, :] > 0)
    a, b = problem.us_per_request, problem.us_per_kv_token
    batch_hi = int(problem.max_batch_size.max())
    kv_hi = int(problem.kv_tokens.max() + context.sum())
    total = groups * (a * batch_hi + b * kv_hi) + float(problem.penalty_us.sum())
    positive = [c for c in (a, b) if c > 0]
    scale = 1e6 / min(positive) if positive else 1.0
    scale = min(scale, _MAX_TOTAL / max(total, 1.0))
    coef_batch, coef_kv = (int(v) for v in to_int_us(np.array([a, b]) * scale))
    pen = to_int_us(problem.penalty_us * scale)
    model = cp_model.CpModel()
    x, rows, cols, pairs = _assignment_vars(model, fits, deadline)
    pair_i, pair_j = np.nonzero(fits)  # the order of `pairs`
    d = [model.new_bool_var(f"d[{i}]") for i in range(n)]
    for i in range(n):
        if i % 64 == 63:
            _check(deadline)
        model.add_exactly_one([*rows[i], d[i]])
    _check(deadline)
    max_batch = [model.new_int_var(0, batch_hi, f"maxbatch[{g}]") for g in range(groups)]
    max_kv = [model.new_int_var(0, kv_hi, f"maxkv[{g}]") for g in range(groups)]
    for j in range(units):
        mine = cols[j]
        vars_j = [x[i, j] for i in mine]
        if len(mine) > slots[j]:
            model.add(cp_model.LinearExpr.sum(vars_j) <= int(slots[j]))
        if blocks[mine].sum() > free[j]:
            model.add(cp_model.LinearExpr.weighted_sum(vars_j, blocks[mine].tolist()) <= int(free[j]))
        g = problem.instance[j]
        model.add(max_batch[g] >= int(problem.batch_size[j]) + cp_model.LinearExpr.sum(vars_j))
        model.add(max_kv[g] >= int(problem.kv_tokens[j])
                  + cp_model.LinearExpr.weighted_sum(vars_j, context[mine].tolist()))
        _check(deadline)
    # redundant averaging cuts: J_g * max >= total of g (the LP's total/units bound)
    for g in range(groups):
        members = problem.instance == g
        idx = np.flatnonzero(members[pair_j])
        chosen = pairs if groups == 1 else [pairs[k] for k in idx.tolist()]
        size = int(members.sum())
        model.add(size * max_batch[g] >= int(problem.batch_size[members].sum())
                  + cp_model.LinearExpr.sum(chosen))
        model.add(size * max_kv[g] >= int(problem.kv_tokens[members].sum())
                  + cp_model.LinearExpr.weighted_sum(chosen, context[pair_i[idx]].tolist()))
        _check(deadline)
    model.minimize(
        coef_batch * cp_model.LinearExpr.sum(max_batch)
        + coef_kv * cp_model.LinearExpr.sum(max_kv)
        + cp_model.LinearExpr.weighted_sum(d, pen.tolist())
    )
    _check(deadline)
    if hint is not None:
        # a complete hint (auxiliary variables included) is accepted without search
        hint = np.where(fits[np.arange(n), np.maximum(hint, 0)] & (hint >= 0), hint, -1)
        placed = hint >= 0
        batch = problem.batch_size + np.bincount(hint[placed], minlength=units)
        kv = problem.kv_tokens + np.bincount(hint[placed], weights=context[placed],
                                             minlength=units).astype(np.int64)
        masks = [problem.instance == g for g in range(groups)]
        set_hint(model, [*pairs, *d, *max_batch, *max_kv],
                 (hint[pair_i] == pair_j).astype(np.int64).tolist()
                 + (hint < 0).astype(np.int64).tolist()
                 + [int(batch[m].max()) for m in masks] + [int(kv[m].max()) for m in masks])
    slack = groups * (batch_hi + kv_hi) + n
    return PrefillModel(model, x, scale, slack, groups * problem.base_us, False)
