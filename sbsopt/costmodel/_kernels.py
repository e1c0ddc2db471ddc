"""Numba kernels of the vectorized lock-step step time (plain-Python references alongside).

Inputs are contiguous float64 arrays ``[S, ep]``; tables are uniform grids (``step`` tokens
apart) of per-micro-batch layer times, linearly interpolated and linearly extrapolated past
their end.  The constants vector ``c`` is laid out by ``sbsopt.costmodel.step``.
"""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit

__all__ = ["step_many", "step_many_reference", "interp_uniform"]

# layout of the constants vector
C_STEP, C_MB, C_PAIR, C_REQ, C_KV, C_COMM0, C_COMM1, C_HEAD0, C_HEAD1, C_MOE_LAYERS, C_DENSE_LAYERS = range(11)
N_CONSTANTS = 11


@njit(fastmath=False)
def interp_uniform(table: np.ndarray, step: float, x: float) -> float:
    """Linear interpolation of ``table`` sampled at ``0, step, 2*step...`` (extrapolates)."""
    position = x / step
    last = table.shape[0] - 1
    index = int(position)
    if index >= last:
        index = last - 1
    frac = position - index
    return table[index] + frac * (table[index + 1] - table[index])


@njit()
def step_many(
    load: np.ndarray, pairs: np.ndarray, requests: np.ndarray,
    own: np.ndarray, routed: np.ndarray, dense: np.ndarray, c: np.ndarray,
) -> np.ndarray:
    """Step time (us) of every row of ``[S, ep]`` per-rank loads.

    ``load`` is tokens per rank (prefill new tokens, or decode batch x query tokens),
    ``pairs`` the per-rank attention work (prefill causal pairs, or decode KV tokens read),
    ``requests`` the per-rank request count.
    """
    samples, ranks = load.shape
    step = c[C_STEP]
    m = c[C_MB]
    out = np.empty(samples)
    for s in range(samples):
        worst_moe = 0.0
        worst_dense = 0.0
        total = 0.0
        most = 0.0
        most_requests = 0.0
        for j in range(ranks):
            n = load[s, j] / m
            extra = (c[C_PAIR] * pairs[s, j] + c[C_REQ] * requests[s, j]) / m
            a = interp_uniform(own, step, n) + extra
            d = interp_uniform(dense, step, n) + extra
            if a > worst_moe:
                worst_moe = a
            if d > worst_dense:
                worst_dense = d
            total += load[s, j]
            if load[s, j] > most:
                most = load[s, j]
            if requests[s, j] > most_requests:
                most_requests = requests[s, j]
        compute = worst_moe + interp_uniform(routed, step, total / ranks / m)
        comm = c[C_COMM0] + c[C_COMM1] * most / m
        if m >= 2:
            layer = m * max(compute, comm)
            fill = min(compute, comm)
        else:
            layer = compute + comm
            fill = 0.0
        head = c[C_HEAD0] + c[C_HEAD1] * most_requests
        out[s] = c[C_MOE_LAYERS] * layer + c[C_DENSE_LAYERS] * m * worst_dense + fill + head
    return out


def step_many_reference(load, pairs, requests, own, routed, dense, c) -> np.ndarray:
    """Plain-numpy reference of :func:`step_many` (same semantics, used by the tests)."""
    step, m = c[C_STEP], c[C_MB]
    grid = np.arange(own.shape[0]) * step

    def lookup(table, x):
        inside = np.interp(x, grid, table)
        slope = (table[-1] - table[-2]) / step
        return np.where(x > grid[-1], table[-1] + (x - grid[-1]) * slope, inside)

    n = load / m
    extra = (c[C_PAIR] * pairs + c[C_REQ] * requests) / m
    worst_moe = np.max(lookup(own, n) + extra, axis=1)
    worst_dense = np.max(lookup(dense, n) + extra, axis=1)
    compute = worst_moe + lookup(routed, load.mean(axis=1) / m)
    comm = c[C_COMM0] + c[C_COMM1] * load.max(axis=1) / m
    if m >= 2:
        layer, fill = m * np.maximum(compute, comm), np.minimum(compute, comm)
    else:
        layer, fill = compute + comm, np.zeros_like(compute)
    head = c[C_HEAD0] + c[C_HEAD1] * requests.max(axis=1)
    return c[C_MOE_LAYERS] * layer + c[C_DENSE_LAYERS] * m * worst_dense + fill + head
