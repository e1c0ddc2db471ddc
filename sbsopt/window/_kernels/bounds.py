"""The analytic lower bounds of prefill and decode windows, compiled
(``sbsopt.window.bounds`` Notes; its ``_prefill_analytic`` and ``_decode_analytic`` are the
numpy references)."""

from __future__ import annotations

import math

import numpy as np

from sbsopt._jit import njit
from sbsopt.window._kernels.relaxation import (
    choice_dual,
    fraction_terms,
    knapsack_gain_nb,
    remainder_terms,
)

__all__ = ["prefill_analytic_bound", "decode_analytic_bound"]


@njit(nogil=True)
def decode_analytic_bound(batch, max_batch, kv, free, instance, n_inst, base, a, b, context,
                          blocks, pen):  # pragma: no cover - compiled
    """The analytic decode bound of ``sbsopt.window.bounds`` in one compiled pass."""
    units = batch.shape[0]
    n = context.shape[0]
    size = np.zeros(n_inst, np.int64)
    bmax = np.full(n_inst, -np.inf)
    kmax = np.full(n_inst, -np.inf)
    bsum = np.zeros(n_inst, np.float64)
    ksum = np.zeros(n_inst, np.float64)
    slots_total = 0.0
    free_total = 0.0
    for j in range(units):
        g = instance[j]
        size[g] += 1
        bmax[g] = max(bmax[g], batch[j])
        kmax[g] = max(kmax[g], kv[j])
        bsum[g] += batch[j]
        ksum[g] += kv[j]
        slots_total += max(max_batch[j] - batch[j], 0)
        free_total += free[j]
    batch_max = bmax.sum()
    kv_max = kmax.sum()
    batch_mean = 0.0
    kv_mean = 0.0
    for g in range(n_inst):
        batch_mean += bsum[g] / size[g]
        kv_mean += ksum[g] / size[g]
    total_base = n_inst * base
    if n == 0:
        return total_base + a * batch_max + b * kv_max
    units_max = size.max()
    gain_a = np.zeros(n, np.float64)
    gain_b = np.zeros(n, np.float64)
    ones = np.ones(n, np.float64)
    blk = blocks.astype(np.float64)
    for i in range(n):
        for j in range(units):
            if batch[j] < max_batch[j] and blocks[i] <= free[j]:
                gain_a[i] = pen[i]
                gain_b[i] = pen[i] - (a + b * context[i]) / units_max
                break
    pen_total = pen.sum()
    none = np.empty(0, np.int64)
    floor_a = pen_total - min(knapsack_gain_nb(gain_a, ones, slots_total, none),
                              knapsack_gain_nb(gain_a, blk, free_total, none))
    floor_b = pen_total - min(knapsack_gain_nb(gain_b, ones, slots_total, none),
                              knapsack_gain_nb(gain_b, blk, free_total, none))
    return max(total_base + a * batch_max + b * kv_max + floor_a,
               total_base + a * batch_mean + b * kv_mean + floor_b)


@njit(nogil=True)
def prefill_analytic_bound(residual, instance, n_inst, base, cost, pen, tokens, cached, blocks,
                           room, free, chunking, alpha, beta, gamma, carry, by_density,
                           by_saving):  # pragma: no cover - compiled
    """The analytic prefill bound of ``sbsopt.window.bounds`` in one compiled pass.

    ``carry``: per request ``w * defer_factor``, the weight on a chunk remainder's cost.
    ``by_density`` / ``by_saving``: the requests by decreasing ``pen / tokens`` and
    ``(pen - cost / units_max) / tokens`` when the caller has them (the greedy's orders), else
    empty (the token knapsacks then sort for themselves)."""
    none = np.empty(0, np.int64)
    units = residual.shape[0]
    n = cost.shape[0]
    size = np.zeros(n_inst, np.int64)
    gmax = np.full(n_inst, -np.inf)
    gsum = np.zeros(n_inst, np.float64)
    room_total = 0.0
    free_total = 0.0
    for j in range(units):
        g = instance[j]
        size[g] += 1
        gmax[g] = max(gmax[g], residual[j])
        gsum[g] += residual[j]
        room_total += room[j]
        free_total += free[j]
    units_max = size.max()
    resid_max = gmax.sum()
    resid_mean = 0.0
    for g in range(n_inst):
        resid_mean += gsum[g] / size[g]
    total_base = n_inst * base
    if n == 0:
        return total_base + resid_max
    can = np.ones(n, np.bool_)
    if not chunking:
        for i in range(n):
            ok = False
            for j in range(units):
                if tokens[i] <= room[j] and blocks[i] <= free[j]:
                    ok = True
                    break
            can[i] = ok
    pen_total = pen.sum()
    gain_a = np.where(can, pen, 0.0)
    tok = tokens.astype(np.float64)
    blk = blocks.astype(np.float64)
    if chunking:
        lin, quad, top = fraction_terms(tokens, cached, room, alpha, beta, gamma)
        whole, hi, e1, e2 = remainder_terms(tokens, quad, top, carry, gamma)
        if (top < 1.0).any():
            # a request that fits no unit: its largest chunk, less the remainder's extra price
            # (the chord of the convex gain ``pen*a - e1*a + e2*a**2``), so no known order
            gain_r = gain_a.copy()
            for i in range(n):
                if top[i] < 1.0:
                    gain_r[i] = pen[i] * top[i] - e1[i] * top[i] + e2[i] * top[i] * top[i]
            floor_a = pen_total - min(
                knapsack_gain_nb(gain_r, tok * top, room_total, none),
                knapsack_gain_nb(gain_r, blk * top, free_total, none))
        else:
            floor_a = pen_total - min(knapsack_gain_nb(gain_a, tok, room_total, by_density),
                                      knapsack_gain_nb(gain_a, blk, free_total, none))
        # averaging form: the chunk's cost spread over the instance's units; a capacity the
        # options cannot fill leaves the dual at its value at 0, which the other one reaches
        g0 = np.full(n, gamma / units_max)
        lin_u = (lin - gamma) / units_max
        quad_u = quad / units_max
        kv_binds = free_total < 2.0**61 and (blk * top).sum() > free_total
        dual = choice_dual(g0, lin_u, quad_u, whole, pen, e1, e2, tok, hi, room_total)
        if kv_binds:
            dual = max(dual, choice_dual(g0, lin_u, quad_u, whole, pen, e1, e2, blk, hi,
                                         free_total))
        floor_b = pen_total + dual
    else:
        gain_b = np.where(can, pen - cost / units_max, 0.0)
        floor_a = pen_total - min(knapsack_gain_nb(gain_a, tok, room_total, by_density),
                                  knapsack_gain_nb(gain_a, blk, free_total, none))
        floor_b = pen_total - min(knapsack_gain_nb(gain_b, tok, room_total, by_saving),
                                  knapsack_gain_nb(gain_b, blk, free_total, none))
    bound = max(total_base + resid_max + floor_a, total_base + resid_mean + floor_b)
    if n_inst == 1 and not chunking:
        forced = 0.0
        largest = -np.inf
        for i in range(n):
            if not can[i]:
                forced += pen[i]
                continue
            best = np.inf
            for j in range(units):
                if tokens[i] <= room[j] and blocks[i] <= free[j]:
                    best = min(best, residual[j] + cost[i])
            largest = max(largest, min(best, resid_max + pen[i]))
        if largest > -np.inf:
            bound = max(bound, total_base + largest + forced)
    if chunking:
        bound = max(bound, total_base + resid_max + _largest_fraction(
            residual, instance, n_inst, room, lin, quad, pen, gamma, whole, hi, e1, e2))
    return bound


@njit(nogil=True)
def _chunk_least(slack, gamma, b1, q, pen, e1, e2, hi):  # pragma: no cover - compiled
    """Least over chunks ``a`` in ``(0, hi]`` of ``max(0, r(a)) + pen*(1 - a) + e1*a - e2*a**2``
    with ``r(a) = slack + gamma + b1*a + q*a**2`` (increasing): concave where ``r <= 0``, a
    quadratic beyond, so the least is at ``hi``, where ``r`` turns positive, or the stationary
    point of the quadratic beyond (``a -> 0`` costs at least ``pen``: deferral's value)."""
    c0 = slack + gamma
    if c0 >= 0.0:
        start = 0.0
    elif q > 0.0:
        start = (-b1 + math.sqrt(b1 * b1 - 4.0 * q * c0)) / (2.0 * q)
    elif b1 > 0.0:
        start = -c0 / b1
    else:
        start = np.inf
    best = np.inf
    for k in range(3):
        if k == 0:
            a = hi
        elif k == 1:
            a = min(start, hi)
        else:
            curve = q - e2
            if curve <= 0.0:
                continue
            a = min(max(-(b1 + e1 - pen) / (2.0 * curve), start), hi)
        if a <= 0.0:
            continue
        value = max(0.0, c0 + b1 * a + q * a * a) + pen * (1.0 - a) + e1 * a - e2 * a * a
        best = min(best, value)
    return best


@njit(nogil=True)
def _largest_fraction(residual, instance, n_inst, room, lin, quad, pen, gamma, whole, hi, e1,
                      e2):  # pragma: no cover - compiled
    """Largest-item form with chunking: the least step raise plus deferral that request ``i``
    alone forces, maximised over ``i`` (``sbsopt.window.bounds`` Notes; ``lin``, ``quad`` from
    :func:`fraction_terms`, the rest from :func:`remainder_terms`): deferred, whole where it
    fits, or a chunk with its remainder's price (:func:`_chunk_least`)."""
    units = residual.shape[0]
    gmax = np.full(n_inst, -np.inf)
    for j in range(units):
        gmax[instance[j]] = max(gmax[instance[j]], residual[j])
    slack = np.inf  # min over units with room of (residual - its instance's step floor)
    for j in range(units):
        if room[j] > 0:
            slack = min(slack, residual[j] - gmax[instance[j]])
    best = 0.0
    if slack == np.inf:
        return best
    for i in range(lin.shape[0]):
        value = pen[i]
        if whole[i]:
            value = min(value, max(0.0, slack + lin[i] + quad[i]))
        if hi[i] > 0.0:
            value = min(value, _chunk_least(slack, gamma, lin[i] - gamma, quad[i], pen[i], e1[i],
                                            e2[i], hi[i]))
        best = max(best, value)
    return best
