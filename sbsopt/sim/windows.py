"""Window problems the simulator builds itself, without the public constructors' validation.

``PrefillWindow.from_arrays`` and ``DecodeWindow.from_arrays`` validate and copy every array
of a caller's window: about 100 us, which at a trace's own light rate (every request its own
window) is most of the simulator's time. The simulator's arrays are well-formed by construction,
so it fills the same frozen dataclasses directly, computing the derived arrays with the same
formulas (tests check field-for-field equality with ``from_arrays``), and calls the greedy
directly: with default options ``solve(method="greedy")`` returns the greedy's assignment
unchanged (no searches are planned for it).
"""

from __future__ import annotations

import numpy as np

# the KV-block helpers and defaults from_arrays itself uses, wherever they live
from sbsopt.window.problem import (
    _NO_KV_LIMIT,
    KV_BLOCK_TOKENS,
    DecodeWindow,
    PrefillWindow,
    prefill_chunk_cost_us,
    request_kv_blocks,
)

__all__ = ["trusted_prefill_window", "trusted_decode_window"]

# from_arrays' defaults, which the simulator never overrides
_AGE_SCALE_S = 1.0
_DEFER_FACTOR = 1.0
_DEFER_COST_US = 1000.0


def _ro(array: np.ndarray) -> np.ndarray:
    # the kernels are compiled for read-only arrays; a writeable one would compile a second variant
    array.setflags(write=False)
    return array


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
    cost = prefill_chunk_cost_us(new, cached, coefficients)
    residual = prefill_chunk_cost_us(load, 0.0, coefficients)
    weight = 1.0 + np.maximum(now_s - arrival, 0.0) / _AGE_SCALE_S
    penalty = weight * (_DEFER_FACTOR * cost + _DEFER_COST_US)
    return PrefillWindow(
        new_tokens=_ro(new), cached_tokens=_ro(cached), arrival_s=_ro(arrival), deadline_s=_ro(deadline),
        kv_blocks=_ro(request_kv_blocks(new, KV_BLOCK_TOKENS)), capacity_tokens=_ro(capacity),
        load_tokens=_ro(load), free_kv_blocks=_ro(np.full(units, _NO_KV_LIMIT, np.int64)), instance=_ro(inst),
        n_instances=groups, now_s=float(now_s), coefficients=coefficients, allow_chunking=True,
        min_chunk_tokens=1, cost_us=_ro(cost), residual_us=_ro(residual),
        room_tokens=_ro(np.maximum(capacity - load, 0)), weight=_ro(weight), penalty_us=_ro(penalty),
        guarded=_ro(deadline <= now_s + 0.0), base_us=float(coefficients.base_us),
    )


def trusted_decode_window(context: np.ndarray, blocks: np.ndarray, *, batch: np.ndarray, max_batch: int,
                          used: np.ndarray, capacity_blocks: int, block_tokens: int, coefficients,
                          iqr_k: float) -> DecodeWindow:
    """``DecodeWindow.from_arrays(context, blocks, batch_size=batch, max_batch_size=[max_batch]*J,
    kv_blocks_used=used, free_kv_blocks=capacity_blocks - used, coefficients=coefficients,
    iqr_k=iqr_k, kv_block_tokens=block_tokens)`` for int64 arrays the caller owns."""
    units = batch.shape[0]
    per_request = float(coefficients.us_per_request)
    per_token = float(coefficients.us_per_kv_token)
    penalty = per_request + per_token * context.astype(np.float64) + _DEFER_COST_US
    return DecodeWindow(
        context_tokens=_ro(context), kv_blocks=_ro(blocks), batch_size=_ro(batch),
        max_batch_size=_ro(np.full(units, max_batch, np.int64)), kv_blocks_used=_ro(used),
        free_kv_blocks=_ro(capacity_blocks - used), kv_tokens=_ro(used * block_tokens),
        instance=_ro(np.zeros(units, np.int64)), n_instances=1, coefficients=coefficients,
        iqr_k=float(iqr_k), penalty_us=_ro(penalty), base_us=float(coefficients.base_us),
        us_per_request=per_request, us_per_kv_token=per_token,
    )
