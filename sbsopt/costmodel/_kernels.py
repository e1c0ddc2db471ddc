"""Numba kernels of the vectorized lock-step step time (plain-Python references alongside).

Inputs are contiguous float64 arrays ``[S, ep]``; tables are uniform grids (``step`` tokens
apart) of per-micro-batch stage times, linearly interpolated and linearly extrapolated past
their end.  The constants vector ``c`` is laid out by ``sbsopt.costmodel.step``.
"""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit

__all__ = ["step_many", "step_many_reference", "interp_uniform"]

# layout of the constants vector
(C_STEP, C_MB, C_PAIR, C_REQ, C_XD0, C_XD1, C_XC0, C_XC1, C_HEAD0, C_HEAD1, C_MOE_LAYERS,
 C_DENSE_LAYERS, C_DECODE, C_IMBALANCE, C_SPREAD) = range(15)
N_CONSTANTS = 15


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
    load: np.ndarray, pairs: np.ndarray, requests: np.ndarray, a0: np.ndarray, a1: np.ndarray,
    shared: np.ndarray, routed: np.ndarray, dense: np.ndarray, c: np.ndarray,
) -> np.ndarray:
    """Step time (us) of every row of ``[S, ep]`` per-rank loads.

    ``load`` is tokens per rank (prefill new tokens, or decode batch x query tokens),
    ``pairs`` the per-rank attention work (prefill causal pairs, or decode KV tokens read),
    ``requests`` the per-rank request count.  Every stage waits for its slowest rank (an
    all-to-all separates the stages); the routed experts see the busiest rank's expected rows.
    """
    samples, ranks = load.shape
    step = c[C_STEP]
    m = c[C_MB]
    out = np.empty(samples)
    for s in range(samples):
        w0 = 0.0
        w1 = 0.0
        wsh = 0.0
        wdense = 0.0
        total = 0.0
        most = 0.0
        most_requests = 0.0
        for j in range(ranks):
            n = load[s, j] / m
            extra = (c[C_PAIR] * pairs[s, j] + c[C_REQ] * requests[s, j]) / m
            v0 = interp_uniform(a0, step, n)
            v1 = interp_uniform(a1, step, n) + extra
            vs = interp_uniform(shared, step, n)
            vd = interp_uniform(dense, step, n) + extra
            if v0 > w0:
                w0 = v0
            if v1 > w1:
                w1 = v1
            if vs > wsh:
                wsh = vs
            if vd > wdense:
                wdense = vd
            total += load[s, j]
            if load[s, j] > most:
                most = load[s, j]
            if requests[s, j] > most_requests:
                most_requests = requests[s, j]
        mean = total / ranks / m
        busiest = c[C_IMBALANCE] * mean + c[C_SPREAD] * np.sqrt(mean)
        mo = interp_uniform(routed, step, busiest)
        xd = c[C_XD0] + c[C_XD1] * most / m
        xc = c[C_XC0] + c[C_XC1] * most / m
        if m >= 2:
            if c[C_DECODE] > 0:
                pair = 2.0 * (max(wsh + w0, xd) + mo + max(w1, xc))
            else:
                a = w0 + w1
                pair = max(a + wsh, xc) + max(a, xd) + max(mo, xd) + max(mo + wsh, xc)
            layer = pair * m / 2.0
            fill = xc
        else:
            layer = w0 + w1 + wsh + mo + xd + xc
            fill = 0.0
        head = c[C_HEAD0] + c[C_HEAD1] * most_requests
        out[s] = c[C_MOE_LAYERS] * layer + c[C_DENSE_LAYERS] * m * wdense + fill + head
    return out


def step_many_reference(load, pairs, requests, a0, a1, shared, routed, dense, c) -> np.ndarray:
    """Plain-numpy reference of :func:`step_many` (same semantics, used by the tests)."""
    step, m = c[C_STEP], c[C_MB]
    grid = np.arange(a0.shape[0]) * step

    def lookup(table, x):
        inside = np.interp(x, grid, table)
        slope = (table[-1] - table[-2]) / step
        return np.where(x > grid[-1], table[-1] + (x - grid[-1]) * slope, inside)

    n = load / m
    extra = (c[C_PAIR] * pairs + c[C_REQ] * requests) / m
    w0 = np.max(lookup(a0, n), axis=1)
    w1 = np.max(lookup(a1, n) + extra, axis=1)
    wsh = np.max(lookup(shared, n), axis=1)
    wdense = np.max(lookup(dense, n) + extra, axis=1)
    mean = load.mean(axis=1) / m
    mo = lookup(routed, c[C_IMBALANCE] * mean + c[C_SPREAD] * np.sqrt(mean))
    xd = c[C_XD0] + c[C_XD1] * load.max(axis=1) / m
    xc = c[C_XC0] + c[C_XC1] * load.max(axis=1) / m
    if m >= 2:
        if c[C_DECODE] > 0:
            pair = 2.0 * (np.maximum(wsh + w0, xd) + mo + np.maximum(w1, xc))
        else:
            a = w0 + w1
            pair = (np.maximum(a + wsh, xc) + np.maximum(a, xd) + np.maximum(mo, xd)
                    + np.maximum(mo + wsh, xc))
        layer, fill = pair * m / 2.0, xc
    else:
        layer, fill = w0 + w1 + wsh + mo + xd + xc, np.zeros_like(mo)
    head = c[C_HEAD0] + c[C_HEAD1] * requests.max(axis=1)
    return c[C_MOE_LAYERS] * layer + c[C_DENSE_LAYERS] * m * wdense + fill + head
