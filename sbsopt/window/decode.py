"""CP-SAT model of the decode window (see ``problem`` Notes).

The objective ``A * sum_g maxbatch_g + K * sum_g maxkv_g + sum_i P_i d_i`` is in ticks of
``1 / scale`` microseconds with ``A = to_int_us(us_per_request * scale)`` and
``K = to_int_us(us_per_kv_token * scale)``; ``scale`` makes the smaller positive coefficient
about 10**6 ticks (so rounding is below 1e-6 relative) unless the total would pass 2**52.
Rounding overstates by less than ``sum_g (maxbatch_g + maxkv_g) + N`` ticks, which is
subtracted from CP-SAT's bound with the variables' upper bounds.

Written in bulk like the prefill model (``sbsopt.window.prefill``).
"""

from __future__ import annotations

import numpy as np
from ortools.sat.python import cp_model

from sbsopt._scaling import to_int_us
from sbsopt.window.fits import fits_alone
from sbsopt.window.prefill import (
    _INT_MAX,
    WindowModel,
    _check,
    _clean_hint,
    _csr,
    _Writer,
)
from sbsopt.window.problem import DecodeWindow

__all__ = ["build_decode_model"]

_MAX_TOTAL = float(2**52)


def build_decode_model(
    problem: DecodeWindow, *, hint: np.ndarray | None, deadline: float
) -> WindowModel:
    """Build ``x[i, j]`` for the pairs that fit alone, ``d[i]``, per-instance max batch and max
    KV-token variables, batch-slot and KV-block rows; parameters as
    :func:`~sbsopt.window.prefill.build_prefill_model`.

    Examples
    --------
    >>> import time
    >>> from sbsopt.costmodel import DecodeCoefficients
    >>> c = DecodeCoefficients(base_us=100.0, us_per_request=5.0, us_per_kv_token=0.01)
    >>> d = DecodeWindow.from_arrays([640], [10], batch_size=[0, 1], max_batch_size=[4, 1],
    ...                              kv_blocks_used=[0, 3], free_kv_blocks=[50, 50],
    ...                              coefficients=c)
    >>> built = build_decode_model(d, hint=None, deadline=time.perf_counter() + 5.0)
    >>> built.pair_i.tolist(), built.pair_j.tolist()  # unit 1 has no free batch slot
    ([0], [0])
    """
    n, units, groups = problem.n_requests, problem.n_units, problem.n_instances
    blocks, free = problem.kv_blocks, problem.free_kv_blocks
    slots = problem.max_batch_size - problem.batch_size
    context = problem.context_tokens
    inst = problem.instance
    fits = fits_alone(problem)
    a, b = problem.us_per_request, problem.us_per_kv_token
    batch_hi = int(problem.max_batch_size.max())
    kv_hi = int(problem.kv_tokens.max() + context.sum())
    total = groups * (a * batch_hi + b * kv_hi) + float(problem.penalty_us.sum())
    positive = [c for c in (a, b) if c > 0]
    scale = 1e6 / min(positive) if positive else 1.0
    scale = min(scale, _MAX_TOTAL / max(total, 1.0))
    coef_batch, coef_kv = (int(v) for v in to_int_us(np.array([a, b]) * scale))
    pen = to_int_us(problem.penalty_us * scale)
    pair_i, pair_j = np.nonzero(fits)
    model = cp_model.CpModel()
    out = _Writer(model)
    x = out.bools(pair_i.size)
    d = out.bools(n)
    batch_lo = np.array([int(problem.batch_size[inst == g].max()) for g in range(groups)])
    kv_lo = np.array([int(problem.kv_tokens[inst == g].max()) for g in range(groups)])
    max_batch = out.int_vars(batch_lo, np.full(groups, batch_hi, np.int64))
    max_kv = out.int_vars(kv_lo, np.full(groups, kv_hi, np.int64))
    _check(deadline)
    order, starts = _csr(np.concatenate([pair_i, np.arange(n)]), n)
    out.exactly_one(np.concatenate([x, d])[order], starts)
    _check(deadline)
    by_unit, unit_starts = _csr(pair_j, units)
    for j in range(units):
        mine = by_unit[unit_starts[j]:unit_starts[j + 1]]
        req = pair_i[mine]
        ones = np.ones(mine.size, np.int64)
        if mine.size > slots[j]:
            out.linear(x[mine], ones, 0, int(slots[j]))
        if blocks[req].sum() > free[j]:
            out.linear(x[mine], blocks[req], 0, int(free[j]))
        g = inst[j]
        out.linear(np.concatenate([[max_batch[g]], x[mine]]), np.concatenate([[1], -ones]),
                   int(problem.batch_size[j]), _INT_MAX)
        out.linear(np.concatenate([[max_kv[g]], x[mine]]), np.concatenate([[1], -context[req]]),
                   int(problem.kv_tokens[j]), _INT_MAX)
    _check(deadline)
    # redundant averaging cuts: J_g * max >= total of g (the LP's total/units bound)
    for g in range(groups):
        members = inst == g
        chosen = np.flatnonzero(members[pair_j])
        size = int(members.sum())
        out.linear(np.concatenate([[max_batch[g]], x[chosen]]),
                   np.concatenate([[size], -np.ones(chosen.size, np.int64)]),
                   int(problem.batch_size[members].sum()), _INT_MAX)
        out.linear(np.concatenate([[max_kv[g]], x[chosen]]),
                   np.concatenate([[size], -context[pair_i[chosen]]]),
                   int(problem.kv_tokens[members].sum()), _INT_MAX)
    _check(deadline)
    constant = groups * problem.base_us
    out.minimize(np.concatenate([max_batch, max_kv, d]),
                 np.concatenate([np.full(groups, coef_batch), np.full(groups, coef_kv), pen]))
    hint = _clean_hint(hint, fits)
    if hint is not None:
        placed = hint >= 0
        batch = problem.batch_size + np.bincount(hint[placed], minlength=units)
        kv = problem.kv_tokens + np.bincount(hint[placed], weights=context[placed],
                                             minlength=units).astype(np.int64)
        masks = [inst == g for g in range(groups)]
        out.hint(np.concatenate([
            hint[pair_i] == pair_j, hint < 0,
            [int(batch[m].max()) for m in masks], [int(kv[m].max()) for m in masks],
        ]).astype(np.int64))
    slack = groups * (batch_hi + kv_hi) + n
    return WindowModel(model, pair_i, pair_j, scale, slack, constant, False)
