"""Relaxations the compiled bounds share: the fractional knapsack, and the Lagrangian bound
of placing fractions (first chunks) of the requests (``sbsopt.window.bounds`` Notes;
``sbsopt.window.relaxation`` holds the numpy forms)."""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit

__all__ = ["knapsack_gain_nb", "fraction_dual", "fraction_terms"]


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
def _fraction_value(lin, half_inv_quad, quad, pen, weight, top,
                    lam):  # pragma: no cover - compiled
    """``(sum_i min_a q_i(a), sum_i weight_i * argmin_a, -sum of slopes)`` over ``a`` in
    ``[0, top_i]`` of ``q_i(a) = quad_i*a**2 + (lin_i - pen_i + lam*weight_i)*a``
    (``half_inv_quad = 1 / (2*quad)``, 0 where ``quad`` is 0: no division in the loop)."""
    value = 0.0
    used = 0.0
    slope = 0.0
    for i in range(lin.shape[0]):
        s = lin[i] - pen[i] + lam * weight[i]
        if quad[i] > 0.0:
            a = -s * half_inv_quad[i]
            if a <= 0.0:
                a = 0.0
            elif a >= top[i]:
                a = top[i]
            else:
                slope += weight[i] * weight[i] * half_inv_quad[i]
        else:
            a = top[i] if s < 0.0 else 0.0
        value += quad[i] * a * a + s * a
        used += weight[i] * a
    return value, used, slope


@njit(nogil=True)
def fraction_dual(lin, quad, pen, weight, top, capacity):  # pragma: no cover - compiled
    """Lagrangian lower bound of ``min sum_i quad_i a_i**2 + (lin_i - pen_i) a_i`` over
    ``0 <= a_i <= top_i`` with ``sum_i weight_i a_i <= capacity``: the dual function at the
    multiplier where the relaxed answer just fills the capacity (safeguarded Newton steps on
    the piecewise-linear fill, from the step at 0; any multiplier gives a valid bound).
    ``capacity >= 2**61`` means unlimited."""
    n = lin.shape[0]
    half_inv_quad = np.zeros(n, np.float64)
    for i in range(n):
        if quad[i] > 0.0:
            half_inv_quad[i] = 0.5 / quad[i]
    value, used, slope = _fraction_value(lin, half_inv_quad, quad, pen, weight, top, 0.0)
    if capacity >= 2.0**61 or used <= capacity:
        return value
    lo = 0.0
    hi = 0.0
    for i in range(n):
        if weight[i] > 0:
            hi = max(hi, (pen[i] - lin[i]) / weight[i])
    lam = (used - capacity) / slope if slope > 0.0 else -1.0
    if not lo < lam < hi:
        lam = hi / 2.0
    best = value
    for _ in range(60):
        value, used, slope = _fraction_value(lin, half_inv_quad, quad, pen, weight, top, lam)
        best = max(best, value - lam * capacity)
        if abs(used - capacity) <= 1e-9 * capacity or hi - lo <= 1e-12 * hi:
            break
        if used > capacity:
            lo = lam
        else:
            hi = lam
        step = lam + (used - capacity) / slope if slope > 0.0 else -1.0
        lam = step if lo < step < hi else (lo + hi) / 2.0
    return best


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
