"""Relaxations the compiled bounds share: the fractional knapsack, and the Lagrangian bound
of deferring, placing whole or placing first chunks of the requests
(``sbsopt.window.bounds`` Notes; ``sbsopt.window.relaxation`` holds the numpy forms)."""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit

__all__ = ["knapsack_gain_nb", "fraction_terms", "remainder_terms", "choice_dual"]


@njit(nogil=True)
def knapsack_gain_nb(gain, weight, capacity, order):  # pragma: no cover - compiled
    """max sum(gain*a) s.t. sum(weight*a) <= capacity, 0 <= a <= 1 (fractional knapsack);
    ``order``: the items by decreasing ``gain / weight`` if already known, else empty."""
    total_w = 0.0
    total_g = 0.0
    for i in range(gain.shape[0]):
        if gain[i] > 0:
            total_w += weight[i]
            total_g += gain[i]
    if total_w <= capacity:
        return total_g
    if order.shape[0] == 0:
        ratio = np.empty(gain.shape[0], np.float64)
        for i in range(gain.shape[0]):
            ratio[i] = -np.inf if weight[i] <= 0 else -gain[i] / weight[i]
        order = np.argsort(ratio)
    used = 0.0
    total = 0.0
    for q in range(order.shape[0]):
        i = order[q]
        if gain[i] <= 0:
            continue
        if used + weight[i] <= capacity:
            used += weight[i]
            total += gain[i]
        else:
            total += gain[i] * max(capacity - used, 0.0) / weight[i]
            break
    return total


@njit(nogil=True)
def fraction_terms(tokens, cached, room, alpha, beta, gamma):  # pragma: no cover - compiled
    """Per request, for the chunked bounds: ``lin`` and ``quad`` (a fraction ``a`` of the
    request costs at least ``lin*a + quad*a**2``) and ``top``, the largest fraction one window
    places (one chunk, on one unit: 1 when it fits the largest room whole, else that room's
    share of it, at most ``n - 1`` tokens)."""
    n = tokens.shape[0]
    room_max = 0
    for j in range(room.shape[0]):
        room_max = max(room_max, room[j])
    lin = np.empty(n, np.float64)
    quad = np.empty(n, np.float64)
    top = np.ones(n, np.float64)
    for i in range(n):
        lin[i] = gamma + alpha * tokens[i] + beta * tokens[i] * cached[i]
        quad[i] = beta * tokens[i] * tokens[i] / 2.0
        if tokens[i] > room_max:
            top[i] = max(min(tokens[i] - 1, room_max), 0) / tokens[i]
    return lin, quad, top


@njit(nogil=True)
def remainder_terms(tokens, quad, cap, carry, gamma):  # pragma: no cover - compiled
    """Per request, what a chunk's remainder adds to its token share of the penalty
    (``sbsopt.window.bounds`` Notes, chunking): ``(whole, hi, e1, e2)``, ``whole`` whether the
    request may be placed whole (``cap`` 1), ``hi`` the largest chunk share (``cap``, at most
    ``n - 1`` tokens), and the remainder's extra price ``e1*a - e2*a**2`` for a chunk of the
    share ``a`` (``e1 = carry*(quad + gamma)``, ``e2 = carry*quad``, ``carry = w*defer_factor``)."""
    n = tokens.shape[0]
    whole = np.zeros(n, np.bool_)
    hi = np.zeros(n, np.float64)
    e1 = np.empty(n, np.float64)
    e2 = np.empty(n, np.float64)
    for i in range(n):
        whole[i] = cap[i] >= 1.0 - 1e-12
        if tokens[i] > 1:
            hi[i] = max(min(cap[i], (tokens[i] - 1.0) / tokens[i]), 0.0)
        e1[i] = carry[i] * (quad[i] + gamma)
        e2[i] = carry[i] * quad[i]
    return whole, hi, e1, e2


@njit(nogil=True)
def _choice_value(g0, s1, s2, whole, pen, e1, e2, weight, hi, lam):  # pragma: no cover - compiled
    """``(sum_i least option value, sum_i weight used by it)`` at the multiplier ``lam``
    (:func:`choice_dual`)."""
    value = 0.0
    used = 0.0
    for i in range(g0.shape[0]):
        best = 0.0  # deferred whole
        take = 0.0
        if whole[i]:
            v = g0[i] + s1[i] + s2[i] - pen[i] + lam * weight[i]
            if v < best:
                best, take = v, weight[i]
        if hi[i] > 0.0:
            b = s1[i] - pen[i] + e1[i] + lam * weight[i]
            q = s2[i] - e2[i]
            a = hi[i]
            if q > 0.0:
                a = min(max(-b / (2.0 * q), 0.0), hi[i])
            v = g0[i] + b * a + q * a * a
            if v < best:
                best, take = v, weight[i] * a
        value += best
        used += take
    return value, used


@njit(nogil=True)
def choice_dual(g0, s1, s2, whole, pen, e1, e2, weight, hi,
                capacity):  # pragma: no cover - compiled
    """Lagrangian lower bound of ``min sum_i v_i`` under ``sum_i weight_i a_i <= capacity``
    (``sbsopt.window.bounds`` Notes, chunking), each request ``i`` deferred (``a = 0``,
    ``v = 0``), whole where ``whole_i`` (``a = 1``, ``v = g0 + s1 + s2 - pen``) or a chunk of
    ``a`` in ``(0, hi_i]`` (``v = g0 + s1*a + s2*a**2 - pen*a + e1*a - e2*a**2``: its step
    cost and the remainder's price beyond the penalty). The options need not be convex: for
    every multiplier ``lam >= 0`` the least ``sum_i min_option (v_i + lam*weight_i*a_i) -
    lam*capacity`` is a bound (weak duality); the dual is concave in ``lam`` with supergradient
    ``used - capacity``, so bisection on its sign finds the best, and the best value met is
    returned. ``capacity >= 2**61`` means unlimited."""
    value, used = _choice_value(g0, s1, s2, whole, pen, e1, e2, weight, hi, 0.0)
    if capacity >= 2.0**61 or used <= capacity:
        return value
    lo = 0.0
    top = 0.0  # a multiplier at which every request with weight is deferred
    for i in range(g0.shape[0]):
        if weight[i] > 0:
            need = pen[i] - s1[i] - e1[i] - min(s2[i] - e2[i], 0.0) * hi[i]
            if whole[i]:
                need = max(need, pen[i] - g0[i] - s1[i] - s2[i])
            top = max(top, need / weight[i])
    best = value
    for _ in range(64):
        lam = (lo + top) / 2.0
        value, used = _choice_value(g0, s1, s2, whole, pen, e1, e2, weight, hi, lam)
        best = max(best, value - lam * capacity)
        if used > capacity:
            lo = lam
        else:
            top = lam
        if top - lo <= 1e-10 * top:
            break
    return best
