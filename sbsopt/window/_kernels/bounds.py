"""The analytic lower bounds of prefill and decode windows, compiled
(``sbsopt.window.bounds`` Notes; its ``_prefill_analytic`` and ``_decode_analytic`` are the
numpy references)."""

from __future__ import annotations

import math

import numpy as np

from sbsopt._jit import njit
from sbsopt.window._kernels.relaxation import fraction_dual, fraction_terms, knapsack_gain_nb

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
                           room, free, chunking, alpha, beta, gamma, by_density,
                           by_saving):  # pragma: no cover - compiled
    """The analytic prefill bound of ``sbsopt.window.bounds`` in one compiled pass.

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
        if (top < 1.0).any():
            floor_a = pen_total - min(
                knapsack_gain_nb(gain_a * top, tok * top, room_total, by_density),
                knapsack_gain_nb(gain_a * top, blk * top, free_total, none))
        else:
            floor_a = pen_total - min(knapsack_gain_nb(gain_a, tok, room_total, by_density),
                                      knapsack_gain_nb(gain_a, blk, free_total, none))
        # averaging form: the fraction's cost spread over the instance's units; a capacity the
        # fractions cannot fill leaves the dual at its value at 0, which the other one reaches
        lin_u = lin / units_max
        quad_u = quad / units_max
        kv_binds = free_total < 2.0**61 and (blk * top).sum() > free_total
        dual = fraction_dual(lin_u, quad_u, pen, tok, top, room_total)
        if kv_binds:
            dual = max(dual, fraction_dual(lin_u, quad_u, pen, blk, top, free_total))
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
            residual, instance, n_inst, room, lin, quad, top, pen))
    return bound


@njit(nogil=True)
def _largest_fraction(residual, instance, n_inst, room, lin, quad, top,
                      pen):  # pragma: no cover - compiled
    """Largest-item form with chunking: the least step raise plus deferral that request ``i``
    alone forces, maximised over ``i`` (``sbsopt.window.bounds`` Notes; ``lin``, ``quad``,
    ``top`` from :func:`fraction_terms`)."""
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
        # h(a) = max(0, slack + lin*a + quad*a**2) + (1 - a)*pen: convex, least at the larger
        # of the point where the raise starts and the stationary point of the raised part
        b, q = lin[i], quad[i]
        if q > 0.0:
            start = (-b + math.sqrt(b * b - 4.0 * q * slack)) / (2.0 * q)
            stationary = (pen[i] - b) / (2.0 * q)
        else:
            start = -slack / b if b > 0.0 else np.inf
            stationary = top[i] if pen[i] > b else 0.0
        a = min(max(max(start, stationary), 0.0), top[i])
        value = max(0.0, slack + b * a + q * a * a) + (1.0 - a) * pen[i]
        best = max(best, value)
    return best
