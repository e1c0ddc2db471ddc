"""Window problems the simulator builds itself, without the public constructors' validation.

``PrefillWindow.from_arrays`` and ``DecodeWindow.from_arrays`` validate and copy every array
of a caller's window: about 100 us, which at a trace's own light rate (every request its own
window) is most of the simulator's time. The simulator's arrays are well-formed by construction,
so it hands them to the same assembly the constructors end with (``_assemble``: the derived
fields are computed there only; tests check field-for-field equality with ``from_arrays``), and
calls the greedy directly: with default options ``solve(method="greedy")`` returns the greedy's
assignment unchanged (no searches are planned for it). A decode window's greedy is one kernel
over the units' arrays, so :func:`greedy_decode_assignment` calls that kernel without building
the window object or the greedy's bound, and :func:`greedy_decode_window` runs one whole decode
window (the clipping of the router's view included) in one compiled call.
"""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit
from sbsopt.kvblocks import KV_BLOCK_TOKENS, request_kv_blocks
from sbsopt.window._kernels import decode_best_of, decode_value
from sbsopt.window.problem import (
    _DEFER_COST_US,
    _NO_KV_LIMIT,
    PrefillWindow,
    _decode_penalty_us,
    _read_only,
)

__all__ = [
    "trusted_prefill_window", "greedy_decode_assignment", "greedy_decode_window", "lone_decode_unit",
    "units_hold_nothing",
]


@njit()
def units_hold_nothing(tokens, units):  # pragma: no cover - compiled
    """Whether every unit's load truncates to 0 tokens (``allocate_prefill``'s lone-request
    shortcut: no unit of ``units`` holds a whole token once clipped to its room and truncated)."""
    for u in units:
        if not abs(tokens[u]) < 1.0:
            return False
    return True


def trusted_prefill_window(new: np.ndarray, cached: np.ndarray, arrival: np.ndarray, *,
                           capacity: np.ndarray, load: np.ndarray, deadline: np.ndarray, now_s: float,
                           coefficients, instance: np.ndarray | None) -> PrefillWindow:
    """``PrefillWindow.from_arrays(new, cached, arrival, capacity_tokens=capacity,
    load_tokens=load, deadline_s=deadline, now_s=now_s, coefficients=coefficients,
    allow_chunking=True, instance=instance)`` for int64 request/unit arrays the caller owns
    (they are made read-only, not copied)."""
    units = capacity.shape[0]
    if instance is None:
        inst, groups = np.zeros(units, np.int64), 1
    else:
        inst, groups = np.ascontiguousarray(instance, dtype=np.int64), int(instance.max()) + 1
    return PrefillWindow._assemble(
        new, cached, arrival, deadline, request_kv_blocks(new, KV_BLOCK_TOKENS), capacity, load,
        np.full(units, _NO_KV_LIMIT, np.int64), inst, groups, now_s=now_s, coefficients=coefficients,
        copy=False,
    )


def greedy_decode_assignment(context: np.ndarray, blocks: np.ndarray, *, batch: np.ndarray, max_batch: int,
                             used: np.ndarray, capacity_blocks: int, block_tokens: int, coefficients,
                             iqr_k: float) -> np.ndarray:
    """``greedy_decode(DecodeWindow.from_arrays(context, blocks, batch_size=batch,
    max_batch_size=[max_batch]*J, kv_blocks_used=used, free_kv_blocks=capacity_blocks - used,
    coefficients=coefficients, iqr_k=iqr_k, kv_block_tokens=block_tokens)).assignment`` for int64
    arrays the caller owns (made read-only): the kernel that picks the greedy's placement
    (``decode_best_of``), on the fields that window would hold."""
    units = batch.shape[0]
    _, assignment, _ = decode_best_of(
        _read_only(context), _read_only(blocks), _read_only(batch), _read_only(np.full(units, max_batch, np.int64)),
        _read_only(used * block_tokens), _read_only(capacity_blocks - used), _read_only(np.zeros(units, np.int64)),
        1, float(coefficients.base_us), float(coefficients.us_per_request), float(coefficients.us_per_kv_token),
        _read_only(_decode_penalty_us(context, coefficients)), float(iqr_k))
    return assignment


@njit()
def lone_decode_unit(ctx, blocks, batch, kv, free, max_batch, base, a, b, iqr_k):  # pragma: no cover - compiled
    """The unit ``decode_best_of`` gives a window of one request on one instance (-1: deferred),
    in one pass over the units without its sort and copies; -2 when this cannot tell.

    IQR-lex places the request on the lexicographic minimum of (batch, KV tokens, unit) among
    the candidates that the IQR fence keeps; a fence with ``iqr_k >= 0`` is at least the
    candidates' least KV, so when that minimum holds the least KV it is kept, and the answer.
    Otherwise (-2) the caller runs the full greedy. The least-step pass repeats
    ``decode_min_step`` operation for operation; the two answers are compared by
    ``decode_value`` itself.
    """
    m = batch.shape[0]
    lex = -1
    count = 0
    least_kv = np.inf
    max_b = 0.0
    max_k = 0.0
    for j in range(m):
        max_b = max(max_b, batch[j])
        max_k = max(max_k, kv[j])
        if batch[j] < max_batch and blocks <= free[j]:
            count += 1
            least_kv = min(least_kv, np.float64(kv[j]))
            if lex < 0 or batch[j] < batch[lex] or (batch[j] == batch[lex] and kv[j] < kv[lex]):
                lex = j
    if lex < 0:
        return -1  # no unit fits: both passes defer it
    if count >= 4 and not (iqr_k >= 0.0 and np.float64(kv[lex]) == least_kv):
        return -2
    top_b = max_b - 1.0
    top_k = max_k - ctx
    raise_us = np.empty(m)
    for j in range(m):
        r = a * max(0.0, np.float64(batch[j]) - top_b) + b * max(0.0, np.float64(kv[j]) - top_k)
        raise_us[j] = r if batch[j] < max_batch and blocks <= free[j] else np.inf
    least = raise_us.min()
    step = -1
    for j in range(m):
        if raise_us[j] == least and (step < 0 or batch[j] < batch[step]
                                     or (batch[j] == batch[step] and kv[j] < kv[step])):
            step = j
    if step == lex:
        return lex
    # the two answers' objectives, as the greedy compares them
    one, inst, none = np.full(1, ctx), np.zeros(m, np.int64), np.zeros(1)
    step_us = decode_value(np.full(1, step), one, batch, kv, inst, 1, base, a, b, none)
    lex_us = decode_value(np.full(1, lex), one, batch, kv, inst, 1, base, a, b, none)
    return step if step_us < lex_us else lex


@njit()
def _decode_window(rids, context, blocks_need, units, tokens, running, waiting, max_batch, capacity_blocks,
                   block_tokens, base, per_request, per_token, defer, iqr_k):  # pragma: no cover - compiled
    n = rids.shape[0]
    m = units.shape[0]
    ctx = np.empty(n, np.int64)
    blocks = np.empty(n, np.int64)
    penalty = np.empty(n)
    for i in range(n):
        ctx[i] = context[rids[i]]
        blocks[i] = blocks_need[rids[i]]
        penalty[i] = per_request + per_token * np.float64(ctx[i]) + defer
    batch = np.empty(m, np.int64)
    kv = np.empty(m, np.int64)
    free = np.empty(m, np.int64)
    for k in range(m):
        u = units[k]
        size = running[u] + waiting[u]
        batch[k] = np.int64(size if size < max_batch else max_batch)
        used = np.int64(tokens[u] if tokens[u] < capacity_blocks else capacity_blocks)
        kv[k] = used * block_tokens
        free[k] = capacity_blocks - used
    if n == 1:
        # a lone request (most windows at a light rate): the greedy's unit without its arrays
        unit = lone_decode_unit(ctx[0], blocks[0], batch, kv, free, max_batch, base, per_request, per_token, iqr_k)
        if unit != -2:
            return np.full(1, -1 if unit < 0 else units[unit], np.int64)
    _, assignment, _ = decode_best_of(ctx, blocks, batch, np.full(m, max_batch, np.int64), kv, free,
                                      np.zeros(m, np.int64), 1, base, per_request, per_token, penalty, iqr_k)
    for i in range(n):
        if assignment[i] >= 0:
            assignment[i] = units[assignment[i]]
    return assignment


def greedy_decode_window(rids: np.ndarray, context: np.ndarray, blocks_need: np.ndarray, units: np.ndarray, view,
                         *, max_batch: int, capacity_blocks: int, block_tokens: int, coefficients,
                         iqr_k: float) -> np.ndarray:
    """The unit (of ``units``, -1: deferred) of each request ``rids`` of a greedy decode window:
    ``allocate_decode(context[rids], blocks_need[rids], batch_size=(view.running +
    view.waiting)[units], max_batch_size=max_batch, kv_blocks_used=view.tokens[units], ...,
    solver="greedy")`` mapped back through ``units``, in one compiled call."""
    return _decode_window(rids, context, blocks_need, units, view.tokens, view.running, view.waiting, max_batch,
                          capacity_blocks, block_tokens, float(coefficients.base_us),
                          float(coefficients.us_per_request), float(coefficients.us_per_kv_token), _DEFER_COST_US,
                          float(iqr_k))
