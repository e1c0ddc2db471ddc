"""The step-split bound of a one-instance prefill window, compiled (``sbsopt.window.bounds``
Notes; its ``_split_bound`` is the numpy reference)."""

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

__all__ = ["prefill_split_bound"]


@njit(nogil=True)
def _hosted_penalty(lin, quad, pen, tok, cap, residual, room, alpha, high, order,
                    grid):  # pragma: no cover - compiled
    """Least deferral penalty with the step at most ``high`` when the request ``h`` that takes
    longest at its cap runs as the fraction ``a`` on one unit: the others cost at least
    ``alpha`` a token, so that unit's room beyond ``h`` holds only what runs in the time left,
    and the room it cannot use is lost to every other request. On ``grid`` ranges of ``a``,
    each priced at its low end for the room and its high end for ``h``'s own deferral; the
    least over them. ``order``: the requests by decreasing ``pen / tok`` (zero tokens first);
    ``-inf`` when there is nothing to host."""
    n = lin.shape[0]
    h = 0
    longest = -1.0
    for i in range(n):
        t = lin[i] * cap[i] + quad[i] * cap[i] * cap[i]
        if t > longest:
            h, longest = i, t
    if alpha <= 0.0 or cap[h] <= 0.0 or grid < 1:
        return -np.inf
    gain = pen * cap
    gain[h] = 0.0
    weight = tok * cap
    rest = pen.sum() - pen[h]
    room_total = room.astype(np.float64).sum()
    best = np.inf
    for k in range(grid):
        a = cap[h] * k / grid
        capacity = room_total
        if k > 0:
            t = lin[h] * a + quad[h] * a * a
            lost = np.inf
            for j in range(room.shape[0]):
                if t <= high - residual[j] and a * tok[h] <= room[j]:
                    left = max(high - residual[j] - t, 0.0) / alpha
                    lost = min(lost, max(room[j] - a * tok[h] - left, 0.0))
            if lost == np.inf:
                break  # no unit runs this much of it within ``high``, nor any more
            capacity -= a * tok[h] + lost
        a_next = cap[h] * (k + 1) / grid
        value = (1.0 - a_next) * pen[h] + rest - knapsack_gain_nb(gain, weight,
                                                                    max(capacity, 0.0), order)
        best = min(best, value)
    return best


@njit(nogil=True)
def _split_range_value(low, high, last, lowest, lin, quad, pen, tok, top, cap, room_total,
                       resid_mean, units, residual, room, alpha, order, host_grid, tokens,
                       carry, gamma):  # pragma: no cover - compiled
    """Lower bound (without the base cost) over the steps ``S`` in ``[low, high]`` (``last``:
    ``[low, inf)``): ``max(low + least penalty, averaging form)`` with each request's placed
    fraction capped by what one unit runs within ``high``, the least penalty also as
    :func:`_hosted_penalty` gives it. The averaging form prices a chunk's remainder as the
    objective does (``choice_dual``); the least penalties keep its token share only."""
    n = lin.shape[0]
    for i in range(n):
        if last:
            cap[i] = top[i]
        elif quad[i] > 0.0:
            free = max(high - lowest, 0.0)
            a = (-lin[i] + math.sqrt(lin[i] * lin[i] + 4.0 * quad[i] * free)) / (2.0 * quad[i])
            cap[i] = min(max(a, 0.0), top[i])
        elif lin[i] > 0.0:
            cap[i] = min(max((high - lowest) / lin[i], 0.0), top[i])
        else:
            cap[i] = top[i]
    pen_total = pen.sum()
    least_pen = pen_total - knapsack_gain_nb(pen * cap, tok * cap, room_total, order)
    if not last:
        least_pen = max(least_pen, _hosted_penalty(lin, quad, pen, tok, cap, residual, room,
                                                   alpha, high, order, host_grid))
    whole, hi, e1, e2 = remainder_terms(tokens, quad, cap, carry, gamma)
    spread = resid_mean + pen_total + choice_dual(np.full(n, gamma / units), (lin - gamma) / units,
                                                  quad / units, whole, pen, e1, e2, tok, hi,
                                                  room_total)
    return max(low + least_pen, spread)


@njit(nogil=True)
def prefill_split_bound(residual, room, tokens, cached, pen, alpha, beta, gamma, carry, ranges,
                        splits, host_grid):  # pragma: no cover - compiled
    """Step-split bound of a one-instance prefill window without its base cost
    (``sbsopt.window.bounds`` Notes): ``ranges`` equal ranges of the step from the largest
    residual, plus the open last one; then ``splits`` times the range of least value is
    halved. The bound is the least value over the ranges."""
    n = tokens.shape[0]
    units = residual.shape[0]
    resid_max = residual.max()
    zero = False
    for i in range(n):
        zero = zero or tokens[i] == 0
    lowest = np.inf  # least residual of a unit a request can go to (zero-token ones: any)
    for j in range(units):
        if room[j] > 0 or zero:
            lowest = min(lowest, residual[j])
    if lowest == np.inf:
        return resid_max + pen.sum()
    lin, quad, top = fraction_terms(tokens, cached, room, alpha, beta, gamma)
    widest = (lin * top + quad * top * top).max()
    tok = tokens.astype(np.float64)
    room_total = room.astype(np.float64).sum()
    resid_mean = residual.mean()
    # the knapsacks' ratio (pen * cap) / (tok * cap) is pen / tok whatever the caps: one sort
    key = np.empty(n, np.float64)
    for i in range(n):
        key[i] = -np.inf if tokens[i] == 0 else -pen[i] / tok[i]
    order = np.argsort(key)
    cap = np.empty(n, np.float64)
    stop = max(lowest + widest, resid_max)
    size = ranges + 1 + splits
    lows = np.empty(size, np.float64)
    highs = np.empty(size, np.float64)
    values = np.empty(size, np.float64)
    for k in range(ranges + 1):
        lows[k] = resid_max + (stop - resid_max) * k / ranges
        highs[k] = resid_max + (stop - resid_max) * (k + 1) / ranges
        values[k] = _split_range_value(lows[k], highs[k], k == ranges, lowest, lin, quad, pen,
                                       tok, top, cap, room_total, resid_mean, units, residual,
                                       room, alpha, order, host_grid, tokens, carry, gamma)
    count = ranges + 1
    for _ in range(splits):
        k = -1
        for q in range(count):  # the open range (index ``ranges``) is never split
            if q != ranges and (k < 0 or values[q] < values[k]):
                k = q
        if k < 0 or values[ranges] <= values[k]:
            break  # the open range has the least value: halving others cannot raise the bound
        mid = (lows[k] + highs[k]) / 2.0
        lows[count], highs[count] = mid, highs[k]
        values[count] = _split_range_value(mid, highs[k], False, lowest, lin, quad, pen, tok,
                                           top, cap, room_total, resid_mean, units, residual,
                                           room, alpha, order, host_grid, tokens, carry, gamma)
        highs[k] = mid
        values[k] = _split_range_value(lows[k], mid, False, lowest, lin, quad, pen, tok, top,
                                       cap, room_total, resid_mean, units, residual, room,
                                       alpha, order, host_grid, tokens, carry, gamma)
        count += 1
    return values[:count].min()
