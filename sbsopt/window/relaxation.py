"""Relaxations the lower bounds share (``sbsopt.window.bounds`` Notes), in numpy: the
fractional knapsack of the token and KV capacities, and the fractions (first chunks) of the
requests a window can place.

``sbsopt.window.bounds`` and ``sbsopt.window.host_bound`` both build on these; neither
imports the other for them.
"""

from __future__ import annotations

import numpy as np

from sbsopt.window.problem import PrefillWindow

__all__ = ["knapsack_gain", "penalty_floor", "fraction_terms", "largest_share", "remainder_terms"]


def knapsack_gain(gain: np.ndarray, weight: np.ndarray, capacity: float) -> float:
    """max sum(gain*a) s.t. sum(weight*a) <= capacity, 0 <= a <= 1 (fractional knapsack).

    Examples
    --------
    >>> knapsack_gain(np.array([6.0, 4.0]), np.array([3.0, 4.0]), 5.0)  # all of 0, half of 1
    8.0
    """
    keep = gain > 0
    gain, weight = gain[keep], weight[keep].astype(np.float64)
    if weight.sum() <= capacity:  # the capacity does not bind (the usual window)
        return float(gain.sum())
    ratio = np.divide(gain, weight, out=np.full(gain.shape, np.inf), where=weight > 0)
    order = np.argsort(-ratio, kind="stable")
    gain, weight = gain[order], weight[order]
    used = np.cumsum(weight)
    full = used <= capacity
    total = float(gain[full].sum())
    k = int(full.sum())
    if k < gain.size:
        left = capacity - (used[k - 1] if k else 0.0)
        total += float(gain[k] * max(left, 0.0) / weight[k])
    return total


def penalty_floor(gain: np.ndarray, pen_total: float, tokens: np.ndarray, room: float,
                  blocks: np.ndarray, free: float) -> float:
    """Least total of penalty-minus-gain that the token and KV capacities allow (``free`` of
    ``2**61`` or more: no KV limit)."""
    best = knapsack_gain(gain, tokens, room)
    if free < 2**61:
        best = min(best, knapsack_gain(gain, blocks, free))
    return pen_total - best


def fraction_terms(problem: PrefillWindow) -> tuple[np.ndarray, np.ndarray]:
    """``(lin, quad)``: a fraction ``a`` of request ``i`` costs at least ``lin_i*a +
    quad_i*a**2``."""
    c = problem.coefficients
    n = problem.new_tokens.astype(np.float64)
    lin = (c.gamma_us_per_request + c.alpha_us_per_token * n
           + c.beta_us_per_pair * n * problem.cached_tokens)
    return lin, c.beta_us_per_pair * n * n / 2.0


def largest_share(problem: PrefillWindow) -> np.ndarray:
    """Largest fraction of each request one window can place: a request has one chunk, on
    one unit, of at most ``n_i - 1`` tokens and the unit's room (1 when it fits whole)."""
    n = problem.new_tokens.astype(np.float64)
    room_max = float(problem.room_tokens.max())
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.maximum(np.minimum(n - 1.0, room_max), 0.0) / n
    return np.where(n <= room_max, 1.0, share)


def remainder_terms(problem: PrefillWindow, cap: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray, np.ndarray]:
    """``(whole, hi, e1, e2)`` for placed shares capped at ``cap``: whether a request may be
    placed whole, its largest chunk share (at most ``n_i - 1`` tokens), and the coefficients
    of what its remainder costs beyond the penalty's token share, ``e1*a - e2*a**2`` for a
    chunk of the share ``a < 1`` (``objective.remainder_price_us``: ``w*defer_factor*(beta*k*
    (n - k)/2 + gamma*k/n)`` with ``k = a*n``)."""
    c = problem.coefficients
    n = problem.new_tokens.astype(np.float64)
    quad = c.beta_us_per_pair * n * n / 2.0
    carry = problem.weight * problem.defer_factor
    with np.errstate(divide="ignore", invalid="ignore"):
        hi = np.where(n > 1, np.maximum(np.minimum(cap, (n - 1.0) / n), 0.0), 0.0)
    return (cap >= 1.0 - 1e-12, hi, carry * (quad + c.gamma_us_per_request), carry * quad)
