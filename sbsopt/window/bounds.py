"""Lower bounds on the optimal objective of a window, microseconds.

Analytic bounds are vectorised and cost a few microseconds (the greedy path reports them);
the LP relaxation (OR-Tools GLOP) is tighter on capacity-bound windows and costs milliseconds.

Notes
-----
Prefill (``G`` instances, ``J_g`` units in instance ``g``, ``J* = max_g J_g``):

* residual: ``sum_g (base + max_{j in g} r_j) + sum of forced deferral penalties`` (a request
  that fits no unit alone must be deferred, unless chunking may split it);
* averaging (total / units): ``G*base + sum_g mean_{j in g} r_j + sum_i min(c_i / J*, P_i)``;
* capacity (fractional knapsack): the assigned requests fit in the total token room (and the
  total free KV blocks), so in both forms above the penalties of the requests that cannot be
  assigned are at least the LP optimum of the knapsack "keep the requests whose assignment
  saves the most per token", solved exactly by sorting on the ratio;
* chunking: request ``i`` is deferred (``P_i``), whole where it fits the largest room, or a
  first chunk of the share ``a`` (``k = a*n_i`` tokens, at most ``n_i - 1`` and that room).
  The chunk costs ``gamma + lin'_i*a + quad_i*a**2`` (``lin'_i = alpha*n_i + beta*n_i*p_i``,
  ``quad_i = beta*n_i**2/2``, ``lin_i = lin'_i + gamma``) and its remainder is priced as the
  objective prices it (``objective.remainder_price_us``): ``(1 - a) P_i + e_i(a)`` with
  ``e_i(a) = w_i*defer_factor*(quad_i*a*(1 - a) + gamma*a)``, concave, back to 0 at ``a = 1``.
  Chunk plus remainder is then not convex in ``a``, so no bound assumes a convex shape: the
  averaging form (cost spread over ``J*`` units) is the Lagrangian dual of the token (or KV)
  capacity over each request's three options (``_kernels.relaxation.choice_dual``). For any
  multiplier the sum of each request's least option, a one-dimensional quadratic on the chunk
  interval, is a bound by weak duality whatever the options' shape; the dual is concave in
  the multiplier, so bisection on the sign of ``used - capacity`` finds its best. The
  residual form's knapsack gives a request that fits no unit the gain ``P_i*a - e_i(a)`` at
  its largest share (convex in ``a``, 0 at 0: its chord from 0 is the concave envelope of
  what the request gains per token); one that fits gains ``P_i`` whole (its chunks lie below
  that line). Every option is priced at or above the earlier relaxation (remainder at its
  token share, ``gamma`` as ``a*gamma``), so no bound is lower than it was;
* largest item (one instance, no chunking): ``base + max_i min(min_{j fits} r_j + c_i,
  max_j r_j + P_i)``; with chunking (any number of instances), request ``i`` as a chunk of
  ``a`` on unit ``j`` raises its instance's step to at least ``r_j + gamma + lin'_i*a +
  quad_i*a**2`` and its remainder costs ``(1 - a) P_i + e_i(a)``, so ``sum_g (base +
  max_{j in g} r_j) + max_i min(P_i, max(0, s + c_i) where it fits, min_a [max(0, s + gamma +
  lin'_i*a + quad_i*a**2) + (1 - a) P_i + e_i(a)])`` with ``s`` the least
  ``r_j - max_{j' in g(j)} r_j'`` over units with room is a bound; on the chunk interval the
  function is concave where the raise is 0 and a quadratic beyond, so its least is at the
  interval's end, where the raise starts, or the quadratic's stationary point (closed form).

Step split (one instance, :func:`split_bound`; hundreds of microseconds, so not on the
greedy's path): for a step ``S``, request ``i`` can have at most the fraction ``cap_i(S)``
placed that one unit runs within ``S`` (``min_j r_j + lin_i*a + quad_i*a**2 <= S``, over
units with room), so the objective is at least ``base + max(S + least penalty with those
caps, averaging form with those caps)``. Cutting ``[max_j r_j, ...)`` into ranges and taking,
in each, its low end for ``S`` and the caps of its high end gives a bound; the least over the
ranges is the bound (its averaging form prices remainders as above; its least penalties
keep their token share, a lower price). It sees what the averaging form cannot: one long
prompt (quadratic attention) runs on one unit. The least penalty is also taken hosted: the request ``h`` that
takes longest at its cap runs as the fraction ``a`` on one unit ``j``, every other token costs
at least ``alpha``, so with ``S <= high`` unit ``j`` holds beyond ``h`` at most
``(high - r_j - lin_h*a - quad_h*a**2) / alpha`` tokens and the rest of its room is lost to
every request; the penalty is then at least ``(1 - a) P_h`` plus the others' least penalty in
the total room less ``a*n_h`` and that loss (least over the units that can host it). Over
``HOST_GRID`` ranges of ``a``, each priced at its low end for the room and its high end for
``h``, the least value is a bound on the penalty (a long cached-prefix prompt whose unit
cannot also be filled: Mooncake 16x4 worst gap 6.3% -> 4.0%).

Decode has the same residual and averaging forms with ``a = us_per_request`` and
``b = us_per_kv_token``: an assigned request adds ``(a + b*k_i) / J*`` on average.
"""

from __future__ import annotations

import time

import numpy as np

from sbsopt.window import _kernels
from sbsopt.window.fits import fits_alone, fits_any_unit
from sbsopt.window.host_bound import host_bound
from sbsopt.window.problem import DecodeWindow, PrefillWindow
from sbsopt.window.relaxation import (
    fraction_terms,
    knapsack_gain,
    largest_share,
    penalty_floor,
    remainder_terms,
)

__all__ = ["analytic_bound", "split_bound", "lp_bound", "lower_bound"]

_LP_PAIR_S = 10e-6
_NONE = np.empty(0, np.int64)  # "not sorted yet" for the compiled bound's knapsacks


def _group_stats(values: np.ndarray, instance: np.ndarray, groups: int) -> tuple[float, float]:
    """(sum over groups of max, sum over groups of mean)."""
    if groups == 1:
        return float(values.max()), float(values.mean())
    maxima = np.full(groups, -np.inf)
    np.maximum.at(maxima, instance, values)
    means = np.bincount(instance, weights=values, minlength=groups) / np.bincount(
        instance, minlength=groups
    )
    return float(maxima.sum()), float(means.sum())


def _chunk_overcount(problem: PrefillWindow) -> np.ndarray:
    """Per request, how much ``a * c_i`` can overstate the cost of a chunk of ``a * n_i`` tokens.

    ``a*c_i - cost(a*n_i) = beta*n_i**2*a*(1 - a)/2 - gamma*(1 - a) <= beta*k*(n_i - k)/2``
    with ``k = a*n_i`` at most the largest unit room and ``k*(n_i - k)`` largest at ``n_i/2``.
    """
    n = problem.new_tokens.astype(np.float64)
    k = np.minimum(np.floor(n / 2.0), float(problem.room_tokens.max()))
    return problem.coefficients.beta_us_per_pair * k * (n - k) / 2.0


def _choice_dual(problem: PrefillWindow, units: int, weight: np.ndarray, cap: np.ndarray,
                 capacity: float) -> float:
    """Reference of ``_kernels.relaxation.choice_dual`` for a window's requests, their shares
    capped at ``cap``, the step cost spread over ``units`` (module Notes)."""
    lin, quad = fraction_terms(problem)
    gamma = float(problem.coefficients.gamma_us_per_request)
    whole, hi, e1, e2 = remainder_terms(problem, cap)
    return _choice_dual_parts(np.full(lin.size, gamma / units), (lin - gamma) / units,
                              quad / units, whole, problem.penalty_us, e1, e2,
                              weight.astype(np.float64), hi, capacity)


def _choice_dual_parts(g0: np.ndarray, s1: np.ndarray, s2: np.ndarray, whole: np.ndarray,
                       pen: np.ndarray, e1: np.ndarray, e2: np.ndarray, weight: np.ndarray,
                       hi: np.ndarray, capacity: float) -> float:
    """Lagrangian bound (weak duality, any options) of ``min sum_i v_i`` with
    ``sum weight*a <= capacity``, each request deferred (0), whole where ``whole``
    (``g0 + s1 + s2 - pen``) or a chunk ``a`` in ``(0, hi]`` (``g0 + (s1 - pen + e1)*a +
    (s2 - e2)*a**2``), by bisection on the multiplier."""

    def relaxed(lam: float) -> tuple[float, float]:
        whole_v = np.where(whole, g0 + s1 + s2 - pen + lam * weight, np.inf)
        b = s1 - pen + e1 + lam * weight
        q = s2 - e2
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(q > 0, np.clip(-b / (2.0 * q), 0.0, hi), hi)
        chunk_v = np.where(hi > 0, g0 + b * a + q * a * a, np.inf)
        take_whole = (whole_v < 0) & (whole_v <= chunk_v)
        take_chunk = ~take_whole & (chunk_v < 0)
        value = np.where(take_whole, whole_v, np.where(take_chunk, chunk_v, 0.0))
        used = np.where(take_whole, weight, np.where(take_chunk, weight * a, 0.0))
        return float(value.sum()) - lam * capacity, float(used.sum())

    value, used = relaxed(0.0)
    if capacity >= 2**61 or used <= capacity:
        return value
    positive = weight > 0
    need = pen - s1 - e1 - np.minimum(s2 - e2, 0.0) * hi
    need = np.where(whole, np.maximum(need, pen - g0 - s1 - s2), need)
    lo, hi_lam = 0.0, float(max((need[positive] / weight[positive]).max(initial=0.0), 0.0))
    best = value
    for _ in range(200):
        mid = (lo + hi_lam) / 2.0
        value, used = relaxed(mid)
        best = max(best, value)
        lo, hi_lam = (mid, hi_lam) if used > capacity else (lo, mid)
    return best


def _prefill_analytic(problem: PrefillWindow) -> float:
    """Reference (numpy) statement of ``_kernels.bounds.prefill_analytic_bound``."""
    groups = problem.n_instances
    units_max = int(np.bincount(problem.instance).max())
    resid_max, resid_mean = _group_stats(problem.residual_us, problem.instance, groups)
    base = groups * problem.base_us
    if problem.n_requests == 0:
        return base + resid_max
    pen = problem.penalty_us
    if problem.allow_chunking:
        fits = None
        can = np.ones(problem.n_requests, bool)  # every request may be (partly) placed
    else:
        fits = fits_alone(problem)
        can = np.any(fits, axis=1)
    work = problem.cost_us
    room = float(problem.room_tokens.sum())
    free = float(problem.free_kv_blocks.sum(dtype=np.float64))
    args = (problem.new_tokens, room, problem.kv_blocks, free)
    pen_total = float(pen.sum())
    # averaging form: assigning costs c_i / J* on average
    spread = penalty_floor(np.where(can, pen - work / units_max, 0.0), pen_total, *args)
    if problem.allow_chunking:
        top = largest_share(problem)
        _, _, e1, e2 = remainder_terms(problem, top)
        # residual form: at most the share `top` of a request is placed, at no step cost, and
        # below 1 its remainder costs e1*top - e2*top**2 beyond the share
        gain = np.where(top < 1.0, pen * top - e1 * top + e2 * top * top, pen)
        forced = penalty_floor(gain, pen_total, problem.new_tokens * top, room,
                               problem.kv_blocks * top, free)
        spread = pen_total + max(
            _choice_dual(problem, units_max, problem.new_tokens, top, room),
            _choice_dual(problem, units_max, problem.kv_blocks, top, free))
    else:
        # residual form: assigning costs nothing beyond the residual max, deferring costs P_i
        forced = penalty_floor(np.where(can, pen, 0.0), pen_total, *args)
    bound = max(base + resid_max + forced, base + resid_mean + spread)
    forced = 0.0 if problem.allow_chunking else float(pen[~can].sum())
    if groups == 1 and fits is not None and can.any():
        finish = np.where(fits, problem.residual_us[None, :] + problem.cost_us[:, None], np.inf)
        largest = np.minimum(finish.min(axis=1), resid_max + pen)[can]
        bound = max(bound, base + float(largest.max()) + forced)
    if problem.allow_chunking:
        bound = max(bound, base + resid_max + _largest_fraction(problem))
    return bound


def _largest_fraction(problem: PrefillWindow) -> float:
    """Reference of ``_kernels.bounds._largest_fraction`` (module Notes): per request the least
    of deferring, placing whole where it fits, and a chunk with its remainder's price, the
    chunk's on a grid of shares refined around the best point."""
    inst, groups = problem.instance, problem.n_instances
    floor = np.full(groups, -np.inf)
    np.maximum.at(floor, inst, problem.residual_us)
    has_room = problem.room_tokens > 0
    if not has_room.any():
        return 0.0
    slack = float((problem.residual_us - floor[inst])[has_room].min())
    gamma = float(problem.coefficients.gamma_us_per_request)
    lin, quad = fraction_terms(problem)
    whole, hi, e1, e2 = remainder_terms(problem, largest_share(problem))
    best = 0.0
    for i, pen in enumerate(problem.penalty_us):
        value = float(pen)
        if whole[i]:
            value = min(value, max(0.0, slack + lin[i] + quad[i]))
        if hi[i] > 0:

            def h(a: np.ndarray, i: int = i, pen: float = pen) -> np.ndarray:
                raise_ = np.maximum(0.0, slack + gamma + (lin[i] - gamma) * a + quad[i] * a * a)
                return raise_ + pen * (1.0 - a) + e1[i] * a - e2[i] * a * a

            grid = np.linspace(0.0, hi[i], 2001)[1:]
            k = int(np.argmin(h(grid)))
            fine = np.linspace(grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)], 2001)
            value = min(value, float(h(fine).min()))
        best = max(best, value)
    return best


def _decode_analytic(problem: DecodeWindow) -> float:
    """Reference (numpy) statement of ``_kernels.bounds.decode_analytic_bound``."""
    groups, inst = problem.n_instances, problem.instance
    units_max = int(np.bincount(inst).max())
    a, b = problem.us_per_request, problem.us_per_kv_token
    batch_max, batch_mean = _group_stats(problem.batch_size.astype(np.float64), inst, groups)
    kv_max, kv_mean = _group_stats(problem.kv_tokens.astype(np.float64), inst, groups)
    base = groups * problem.base_us
    if problem.n_requests == 0:
        return base + a * batch_max + b * kv_max
    fits_any = fits_any_unit(problem)
    pen = problem.penalty_us
    add = (a + b * problem.context_tokens.astype(np.float64)) / units_max
    ones = np.ones(problem.n_requests, np.int64)
    slots_total = float(np.maximum(problem.max_batch_size - problem.batch_size, 0).sum(dtype=np.float64))
    free_total = float(problem.free_kv_blocks.sum(dtype=np.float64))
    pen_total = float(pen.sum())
    floors = []
    for gain in (np.where(fits_any, pen, 0.0), np.where(fits_any, pen - add, 0.0)):
        floors.append(pen_total - min(knapsack_gain(gain, ones, slots_total),
                                      knapsack_gain(gain, problem.kv_blocks, free_total)))
    return max(
        base + a * batch_max + b * kv_max + floors[0],
        base + a * batch_mean + b * kv_mean + floors[1],
    )


def _prefill_analytic_fast(problem: PrefillWindow) -> float:
    c = problem.coefficients
    return float(_kernels.prefill_analytic_bound(
        problem.residual_us, problem.instance, problem.n_instances, problem.base_us,
        problem.cost_us, problem.penalty_us, problem.new_tokens, problem.cached_tokens,
        problem.kv_blocks, problem.room_tokens, problem.free_kv_blocks, problem.allow_chunking,
        float(c.alpha_us_per_token), float(c.beta_us_per_pair), float(c.gamma_us_per_request),
        problem.weight * problem.defer_factor, _NONE, _NONE))


def _decode_analytic_fast(problem: DecodeWindow) -> float:
    return float(_kernels.decode_analytic_bound(
        problem.batch_size, problem.max_batch_size, problem.kv_tokens, problem.free_kv_blocks,
        problem.instance, problem.n_instances, problem.base_us, problem.us_per_request,
        problem.us_per_kv_token, problem.context_tokens, problem.kv_blocks, problem.penalty_us))


def analytic_bound(problem: PrefillWindow | DecodeWindow) -> float:
    """Best of the analytic bounds (module Notes), microseconds.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([30, 20, 20, 10], [0] * 4, [0.0] * 4,
    ...                               capacity_tokens=[64, 64], coefficients=c)
    >>> analytic_bound(w)  # total / units
    40.0
    """
    if isinstance(problem, PrefillWindow):
        return _prefill_analytic_fast(problem)
    return _decode_analytic_fast(problem)


#: Equal ranges of the step in :func:`split_bound`, and how many times the range of least
#: value is then halved.
SPLIT_RANGES, SPLIT_HALVINGS = 12, 24
#: Fractions of the hosted request tried per range of the step split (module Notes).
HOST_GRID = 16


def split_bound(problem: PrefillWindow | DecodeWindow) -> float:
    """Step-split bound (module Notes) of a one-instance prefill window, microseconds;
    ``-inf`` for decode and multi-instance windows.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([60, 10, 10], [0] * 3, [0.0] * 3, capacity_tokens=[64] * 2,
    ...                               coefficients=c)
    >>> round(split_bound(w), 3)  # the optimum: the 60 alone on one unit
    60.0
    """
    if not isinstance(problem, PrefillWindow) or problem.n_instances != 1:
        return -np.inf
    if problem.n_requests == 0:
        return analytic_bound(problem)
    c = problem.coefficients
    return problem.base_us + float(_kernels.prefill_split_bound(
        problem.residual_us, problem.room_tokens, problem.new_tokens, problem.cached_tokens,
        problem.penalty_us, float(c.alpha_us_per_token), float(c.beta_us_per_pair),
        float(c.gamma_us_per_request), problem.weight * problem.defer_factor, SPLIT_RANGES,
        SPLIT_HALVINGS, HOST_GRID))


def _split_bound(problem: PrefillWindow) -> float:
    """Reference (numpy, bisection) of :func:`split_bound`."""
    n = problem.new_tokens.astype(np.float64)
    lin, quad = fraction_terms(problem)
    pen, units = problem.penalty_us, problem.n_units
    room = float(problem.room_tokens.sum())
    resid = problem.residual_us
    reach = (problem.room_tokens > 0) | (problem.new_tokens == 0).any()
    if not reach.any():
        return problem.base_us + float(resid.max() + pen.sum())
    lowest = float(resid[reach].min())
    top = largest_share(problem)
    stop = max(lowest + float((lin * top + quad * top * top).max()), float(resid.max()))

    def value(low: float, high: float | None) -> float:
        if high is None:
            cap = top
        else:
            free = max(high - lowest, 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                a = np.where(quad > 0, (-lin + np.sqrt(lin * lin + 4 * quad * free)) / (2 * quad),
                             np.where(lin > 0, free / lin, np.inf))
            cap = np.clip(a, 0.0, top)
        least_pen = float(pen.sum()) - knapsack_gain(pen * cap, n * cap, room)
        if high is not None:
            least_pen = max(least_pen, _hosted_penalty(problem, lin, quad, cap, high))
        spread = float(resid.mean() + pen.sum()) + _choice_dual(problem, units, n, cap, room)
        return max(low + least_pen, spread)

    edges = np.linspace(float(resid.max()), stop, SPLIT_RANGES + 1)
    closed = [(lo, hi, value(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    open_value = value(float(edges[-1]), None)
    for _ in range(SPLIT_HALVINGS):
        k = min(range(len(closed)), key=lambda q: closed[q][2])
        if open_value <= closed[k][2]:
            break
        lo, hi, _ = closed[k]
        mid = (lo + hi) / 2.0
        closed[k] = (lo, mid, value(lo, mid))
        closed.append((mid, hi, value(mid, hi)))
    return problem.base_us + min(open_value, min(v for _, _, v in closed))


def _hosted_penalty(problem: PrefillWindow, lin: np.ndarray, quad: np.ndarray, cap: np.ndarray,
                    high: float) -> float:
    """Reference of ``_kernels.split._hosted_penalty`` (module Notes, step split): least penalty
    with the step at most ``high`` when the request that takes longest at its cap runs, as the
    fraction ``a``, on one unit, whose room beyond it holds only what runs in what is left."""
    n = problem.new_tokens.astype(np.float64)
    pen, resid = problem.penalty_us, problem.residual_us
    rooms = problem.room_tokens.astype(np.float64)
    alpha = float(problem.coefficients.alpha_us_per_token)
    h = int(np.argmax(lin * cap + quad * cap * cap))
    if alpha <= 0.0 or cap[h] <= 0.0 or HOST_GRID < 1:
        return -np.inf
    others = np.arange(n.size) != h
    gain, weight = (pen * cap)[others], (n * cap)[others]
    rest = float(pen[others].sum())
    best = np.inf
    for k in range(HOST_GRID):
        a = cap[h] * k / HOST_GRID
        capacity = float(rooms.sum())
        if k:
            t = lin[h] * a + quad[h] * a * a
            host = (t <= high - resid) & (a * n[h] <= rooms)
            if not host.any():
                break  # no unit runs this much of it within ``high``, nor any more
            left = np.maximum(high - resid - t, 0.0) / alpha
            capacity -= a * n[h] + float(np.maximum(rooms - a * n[h] - left, 0.0)[host].min())
        a_next = cap[h] * (k + 1) / HOST_GRID
        best = min(best, (1.0 - a_next) * pen[h] + rest
                   - knapsack_gain(gain, weight, max(capacity, 0.0)))
    return best


def lp_bound(problem: PrefillWindow | DecodeWindow, *, time_limit_s: float | None = None) -> float:
    """LP relaxation of the window's integer program (OR-Tools GLOP), microseconds.

    ``x_ij`` in [0, 1] for the pairs that fit, ``d_i`` in [0, 1] (0 when guarded), with the
    token-room, KV and batch constraints and continuous step-time variables per instance.
    With chunking allowed ``x_ij`` reads as the fraction of request ``i`` placed on ``j`` and
    the value is lowered by ``G`` times the largest chunk overcount (a unit holds at most one
    chunk, and only the step's unit matters per instance), which keeps it a bound of the chunked
    problem. Returns ``-inf`` if GLOP fails or, with ``time_limit_s``,
    when the model would not be built and solved in time (about 10 us per request-unit pair
    to build; GLOP gets the rest of the limit).
    """
    start = time.perf_counter()
    if time_limit_s is not None and problem.n_requests * problem.n_units * _LP_PAIR_S > time_limit_s:
        return -np.inf
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover - GLOP ships with OR-Tools
        return -np.inf
    n, units, groups = problem.n_requests, problem.n_units, problem.n_instances
    inst = problem.instance
    if isinstance(problem, PrefillWindow):
        tokens, blocks = problem.new_tokens, problem.kv_blocks
        room, free = problem.room_tokens, problem.free_kv_blocks
        fits = fits_alone(problem)
        cost = problem.cost_us
        overcount = 0.0
        if problem.allow_chunking:
            chunkable = (room > 0)[None, :] & ((free > 0)[None, :] | (blocks == 0)[:, None])
            fits = fits | chunkable
            overcount = groups * float(_chunk_overcount(problem).max(initial=0.0))
        can_defer = ~problem.guarded | problem.allow_chunking
    else:
        overcount = 0.0
        blocks, free = problem.kv_blocks, problem.free_kv_blocks
        slots = problem.max_batch_size - problem.batch_size
        fits = fits_alone(problem)
        can_defer = np.ones(n, bool)
    x = {(i, j): solver.NumVar(0.0, 1.0, "") for i, j in zip(*np.nonzero(fits), strict=True)}
    d = [solver.NumVar(0.0, 1.0 if can_defer[i] else 0.0, "") for i in range(n)]
    rows: dict[int, list] = {}
    for (i, _j), var in x.items():
        rows.setdefault(int(i), []).append(var)
    for i in range(n):
        solver.Add(sum(rows.get(i, [])) + d[i] == 1)
    cols: dict[int, list] = {}
    for (i, j), var in x.items():
        cols.setdefault(int(j), []).append((int(i), var))
    penalty = problem.penalty_us
    if isinstance(problem, PrefillWindow):
        step = [solver.NumVar(0.0, solver.infinity(), "") for _ in range(groups)]
        for j in range(units):
            col = cols.get(j, [])
            solver.Add(step[inst[j]] >= problem.residual_us[j] + sum(cost[i] * v for i, v in col))
            solver.Add(sum(float(tokens[i]) * v for i, v in col) <= float(room[j]))
            if free[j] < 2**61:
                solver.Add(sum(float(blocks[i]) * v for i, v in col) <= float(free[j]))
        total = groups * problem.base_us + sum(step)
    else:
        bmax = [solver.NumVar(0.0, solver.infinity(), "") for _ in range(groups)]
        kmax = [solver.NumVar(0.0, solver.infinity(), "") for _ in range(groups)]
        for j in range(units):
            col = cols.get(j, [])
            solver.Add(bmax[inst[j]] >= float(problem.batch_size[j]) + sum(v for _, v in col))
            solver.Add(kmax[inst[j]] >= float(problem.kv_tokens[j])
                       + sum(float(problem.context_tokens[i]) * v for i, v in col))
            solver.Add(sum(v for _, v in col) <= float(slots[j]))
            solver.Add(sum(float(blocks[i]) * v for i, v in col) <= float(free[j]))
        total = (groups * problem.base_us + problem.us_per_request * sum(bmax)
                 + problem.us_per_kv_token * sum(kmax))
    solver.Minimize(total + sum(float(penalty[i]) * d[i] for i in range(n)))
    if time_limit_s is not None:
        left_ms = int((time_limit_s - (time.perf_counter() - start)) * 1000)
        if left_ms <= 0:
            return -np.inf
        solver.SetTimeLimit(left_ms)
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return -np.inf
    # GLOP's tolerance: shave a relative 1e-7 so that the bound stays a bound
    value = solver.Objective().Value()
    return float(value - 1e-7 * abs(value) - overcount)


def lower_bound(problem: PrefillWindow | DecodeWindow, *, lp: bool = True,
                upper: float | None = None) -> float:
    """``max(analytic_bound, split_bound, lp_bound)`` (the LP only when ``lp``), and with
    ``upper`` (the objective of a known answer) the host bound, microseconds."""
    bound = max(analytic_bound(problem), split_bound(problem))
    if lp:
        bound = max(bound, lp_bound(problem))
    if upper is not None:
        bound = max(bound, host_bound(problem, upper))
    return bound
