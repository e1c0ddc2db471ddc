"""The greedy's request orders: PBAA, LPT, penalty density and knapsack-first."""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit

__all__ = ["ORDER_PBAA", "ORDER_LPT", "ORDER_DENSITY", "ORDER_KNAPSACK", "prefill_orders"]


#: Codes of the greedy's request orders (``sbsopt.window.greedy`` names them).
ORDER_PBAA, ORDER_LPT, ORDER_DENSITY, ORDER_KNAPSACK = 0, 1, 2, 3


@njit(nogil=True)
def _refine_order(order, guarded, key, tie):  # pragma: no cover - compiled
    """``order`` (indices sorted by ``key``) made ``np.lexsort((tie, key, ~guarded))``: runs
    of equal keys (rare) are insertion-sorted by ``tie`` then index, guarded requests first."""
    n = key.shape[0]
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and key[order[stop]] == key[order[start]]:
            stop += 1
        for q in range(start + 1, stop):
            i = order[q]
            p = q
            while p > start and (tie[order[p - 1]] > tie[i]
                                 or (tie[order[p - 1]] == tie[i] and order[p - 1] > i)):
                order[p] = order[p - 1]
                p -= 1
            order[p] = i
        start = stop
    if not guarded.any():
        return order
    out = np.empty_like(order)
    m = 0
    for q in range(n):
        if guarded[order[q]]:
            out[m] = order[q]
            m += 1
    for q in range(n):
        if not guarded[order[q]]:
            out[m] = order[q]
            m += 1
    return out


@njit(nogil=True)
def _priority_order(guarded, key, tie):  # pragma: no cover - compiled
    """``np.lexsort((tie, key, ~guarded))``: guarded first, then ``key``, then ``tie``, then
    index, ascending, with one sort on ``key`` (none when ``key`` is already in order, as
    arrival times of a buffer usually are)."""
    n = key.shape[0]
    for i in range(1, n):
        if key[i] < key[i - 1]:
            return _refine_order(np.argsort(key), guarded, key, tie)
    return _refine_order(np.arange(n), guarded, key, tie)


@njit(nogil=True)
def _knapsack_first(lpt, guarded, tokens, by_saving, saving,
                    room_total):  # pragma: no cover - compiled
    """``lpt`` with the requests a fractional knapsack keeps moved to the front (stable,
    guarded requests still first): value ``saving`` (``penalty - cost / units_max``, what
    assigning a request saves under the averaging bound), weight its tokens, capacity the
    total room; ``by_saving`` lists the requests by decreasing ``saving / tokens``."""
    n = tokens.shape[0]
    keep = np.zeros(n, np.bool_)
    used = 0.0
    for i in by_saving:
        if saving[i] <= 0.0 or used + tokens[i] > room_total:
            break
        used += tokens[i]
        keep[i] = True
    out = np.empty_like(lpt)
    m = 0
    for group in range(4):  # guarded and kept, guarded, kept, the rest
        for q in range(n):
            i = lpt[q]
            if (0 if guarded[i] else 2) + (0 if keep[i] else 1) == group:
                out[m] = i
                m += 1
    return out


@njit(nogil=True)
def prefill_orders(cost, tokens, blocks, penalty, guarded, arrival, room, free, units_max,
                   chunking):  # pragma: no cover - compiled
    """The greedy's request orders and their codes, guarded requests first in each, and the
    requests by decreasing ``penalty / tokens`` and ``(penalty - cost / units_max) / tokens``
    when those were sorted (for the bound's knapsacks; empty otherwise).

    Usual window: PBAA (oldest, then largest) and LPT (largest, then oldest). Capacity-bound
    window (more tokens or KV blocks than the units have room for): knapsack (LPT with the
    requests a fractional knapsack keeps first, taken by saving per token, or with chunking by
    deferral penalty per token, the sort the density order needs anyway: same gaps on the
    benchmark windows, one sort fewer) and, with chunking, density (deferral penalty per
    token, then oldest), else LPT. Measured on 204 capacity-bound windows cut from the
    Azure code and Mooncake traces (``benchmarks/window.py`` windows, with and without
    chunking), these two orders lose at most 0.01 points of median gap against the best of
    PBAA, LPT, density and knapsack together (PBAA was the best on 1 window)."""
    n = cost.shape[0]
    neg_cost = -cost
    none = np.empty(0, np.int64)
    room_total = room.astype(np.float64).sum()
    capacity_bound = tokens.sum() > room_total or (
        blocks.astype(np.float64).sum() > free.astype(np.float64).sum())
    lpt = _priority_order(guarded, neg_cost, arrival)
    orders = np.empty((2, n), np.int64)
    if not capacity_bound:
        orders[0] = _priority_order(guarded, arrival, neg_cost)
        orders[1] = lpt
        return orders, np.array([ORDER_PBAA, ORDER_LPT]), none, none
    # the knapsack sorts are shared with the bound's token knapsacks (same ratios when every
    # request has a token; a zero-token request would be keyed differently)
    positive = tokens.min() >= 1
    saving = penalty - cost / units_max
    if not chunking:
        by_saving = np.argsort(-saving / np.maximum(tokens, 1))
        orders[0] = _knapsack_first(lpt, guarded, tokens, by_saving, saving, room_total)
        orders[1] = lpt
        return orders, np.array([ORDER_KNAPSACK, ORDER_LPT]), none, by_saving if positive else none
    # with chunking the bound needs no saving sort, and the knapsack order keeps requests in
    # deferral-penalty density order (saving differs from penalty by cost / units_max): one sort
    density = -penalty / np.maximum(tokens, 1)
    by_density = np.argsort(density)
    orders[0] = _knapsack_first(lpt, guarded, tokens, by_density, saving, room_total)
    orders[1] = _refine_order(by_density.copy(), guarded, density, arrival)
    return (orders, np.array([ORDER_KNAPSACK, ORDER_DENSITY]), by_density if positive else none,
            none)
