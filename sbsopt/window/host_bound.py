"""Host bound: a lower bound that keeps a window's longest requests on units of their own,
microseconds.

On a capacity-bound prefill window whose every unit ends full, the LP relaxation spreads each
long prompt (and its quadratic attention) over all units and averages the units' mixes of
long and short requests. In an answer, a long prompt runs on one unit, which must then be
filled with the cheapest tokens to keep up with the others, and there are only so many of
those. This bound keeps that.

Notes
-----
One instance. Let ``U`` be the objective of a known answer and ``phi`` the least total penalty
the token and KV capacities force (a fractional knapsack). An answer better than ``U`` has its
step ``S <= S_max = U - base - phi``. The ``K`` costliest requests of which no two fit
together in ``S_max - min_j r_j`` are the *long* requests; a unit holding one is a *host*.
Every answer has some number ``q`` of long requests placed (whole or, with chunking, as a
chunk) on ``m <= q`` hosts. For each case ``(q, m)``:

* the ``m`` hosts together run their residuals, the long requests and the short requests they
  take within ``m*S``, and hold them within their rooms and free KV blocks; the other
  ``J - m`` units likewise within ``(J - m)*S``;
* relaxing which units host (``h_j`` in [0, 1], ``sum h_j = m``), which long requests are
  placed and how much of each short request each group takes, the least
  ``base + S + sum of penalties`` is an LP (HiGHS) with a few rows beyond the requests' own.

Without chunking, no two long requests share a unit in an answer better than ``U``, so only
the cases ``m = q`` (``q = K..0``) remain. With chunking, every case counts, and a request's
share in a group is whole (cost ``c_i`` per unit share) or chunks: a fraction ``a`` of it
counted ``z`` against the group's one chunk per unit, costing at least the perspective
``z*f(a/z)`` of its convex chunk cost ``f(a) = lin*a + quad*a**2`` (bounds.py Notes).
Without the count, many small fractions would run without their quadratic attention. The
perspective is kept by ``CHUNK_POINTS`` columns per share, one per point ``a_k = k*h`` up to
the largest share (``h`` the step): a column is one chunk of ``a_k``, costing ``f(a_k)``
less the most a chord between neighbouring points rises above ``f`` (``quad*h**2/4``; from
the origin, ``quad*h**2``: the first point costs ``lin*h``). Its penalty is the remainder's
price, ``(1 - a_k) P`` plus ``e(a_k) = w*defer_factor*(quad*a_k*(1 - a_k) + gamma*a_k)``
(``objective.remainder_price_us``); ``e`` is concave with ``e(0) = 0``, so its chords lie
below it. Any mix of the columns then costs at most the chunks it makes, so the LP stays a
relaxation, and ``z`` and ``a`` need no rows of their own (tangent cuts need six rows per
share: measured twice as slow).
A long request also has an empty chunk: placed, but too small for its first point.

The bound is ``min(U, min over cases)`` (a case with no answer better than ``U`` is
infeasible). Only the case rows' bounds and two coefficients of ``S`` change with the case,
and every column is bounded, so the row duals of each case solved give every other case a
Lagrangian bound (``_DualScreen``) at a few operations; a case whose bound is already at
least the best found is not solved. Measured: of 11-37 cases with chunking, 1-7 are solved.

Whole-request, the bound equals on every window measured the LP with the ``K`` long
requests' assignments kept integral (a mixed-integer program HiGHS needs 12-90 s for at
128 x 16), since both groups' short requests are fractional anyway: a 128 x 16 window whose
four 7,400-token prompts must each fill their unit with short ones goes from 3.38% to 0.94%
above the bound. Cost on the benchmark's windows (``budget.HOST_REQUEST_S``), at most:
2.4 / 3.0 / 3.8 ms whole-request at 64 x 8 / 128 x 16 / 256 x 32, and 9.5 / 23 / 47 ms with
chunking (about 2,300 columns and 150 rows at 128 x 16; the first case takes most of it).
"""

from __future__ import annotations

import time
from typing import Any

import highspy
import numpy as np

from sbsopt.window.fits import fits_any_unit
from sbsopt.window.problem import DecodeWindow, PrefillWindow
from sbsopt.window.relaxation import (
    fraction_terms,
    largest_share,
    penalty_floor,
    remainder_terms,
)

__all__ = ["host_bound", "long_requests", "CHUNK_POINTS", "MOST_LONG_REQUESTS"]

#: The long requests kept with chunking (the costliest): any subset of them leaves the bound
#: valid, and there the cases grow as ``K**2 / 2``, most of them screened (256 x 32 windows
#: with 12-14 instead of 8: gap to the bound 3.05 -> 1.75%, 41 -> 46 ms at most). Without
#: chunking, where the cases grow as ``K``, all are kept.
MOST_LONG_REQUESTS = 16

#: Chunk points per request and group (module Notes): with ``h`` the largest share over this
#: count, a chunk's cost is understated by at most ``quad*h**2/4``, or ``quad*a**2`` below ``h``.
CHUNK_POINTS = 8
#: HiGHS' optimality tolerance, relative: shaved off the LP values so that they stay bounds.
_TOLERANCE = 1e-7
_NO_KV_LIMIT = 2**61
#: The host LP's first rows (:func:`_host_lp`): time, tokens and KV of the hosts and of the
#: other units, how many units host, how many long requests are placed, and the chunks each
#: group holds (the last four change with the case).
(_HOST_TIME, _OTHER_TIME, _HOST_TOKENS, _OTHER_TOKENS, _HOST_KV, _OTHER_KV, _HOSTS, _PLACED,
 _HOST_CHUNKS, _OTHER_CHUNKS) = range(10)
#: Then one row per request, and with chunking one per long request.
_FIRST_REQUEST_ROW = 10


def long_requests(problem: PrefillWindow, upper: float) -> np.ndarray:
    """The costliest requests (with chunking at most ``MOST_LONG_REQUESTS``) of which no two fit
    together on a unit in an answer better than ``upper`` (module Notes), costliest first;
    empty when fewer than two.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([60, 50, 40, 10], [0] * 4, [0.0] * 4,
    ...                               capacity_tokens=[128] * 3, coefficients=c)
    >>> long_requests(w, upper=85.0).tolist()  # 50 + 40 > 85: the 10 may share
    [0, 1, 2]
    """
    fits = fits_any_unit(problem)
    floor = penalty_floor(np.where(fits, problem.penalty_us, 0.0), float(problem.penalty_us.sum()),
                          problem.new_tokens, float(problem.room_tokens.sum()),
                          problem.kv_blocks, float(problem.free_kv_blocks.sum(dtype=np.float64)))
    step_most = upper - problem.base_us - floor - float(problem.residual_us.min())
    order = np.argsort(-problem.cost_us, kind="stable")
    order = order[fits[order]]
    cost = problem.cost_us[order]
    count = 1
    most = min(order.size, MOST_LONG_REQUESTS) if problem.allow_chunking else order.size
    while count < most and cost[count - 1] + cost[count] > step_most:
        count += 1
    return order[:count] if count >= 2 else order[:0]


def host_bound(problem: PrefillWindow | DecodeWindow, upper: float, *,
               time_limit_s: float | None = None) -> float:
    """Host bound (module Notes) given ``upper``, the objective of a known answer,
    microseconds; ``-inf`` where it does not apply (decode, several instances, fewer than two
    long requests) or, with ``time_limit_s``, when HiGHS does not finish.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> from sbsopt.window import lp_bound
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.01,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([80, 80] + [20] * 6, [0] * 8, [0.0] * 8,
    ...                               capacity_tokens=[100] * 3, coefficients=c,
    ...                               allow_chunking=False)
    >>> round(lp_bound(w), 2), round(host_bound(w, upper=134.0), 2)  # optimum: 112 + 22
    (118.67, 123.0)
    """
    start = time.perf_counter()
    if not isinstance(problem, PrefillWindow) or problem.n_instances != 1:
        return -np.inf
    long = long_requests(problem, upper)
    if long.size == 0:
        return -np.inf
    lp, constant = _host_lp(problem, long, upper)
    solver = highspy.Highs()
    solver.setOptionValue("output_flag", False)
    solver.setOptionValue("threads", 1)
    # measured at 128 x 16 with chunking: the first case in 8 ms without presolve, 17 with it
    solver.setOptionValue("presolve", "off")
    solver.passModel(lp)
    screen = _DualScreen(lp, problem.n_units)
    units = problem.n_units
    best = upper
    for placed in range(long.size, -1, -1):
        hosts = range(placed, 0, -1) if problem.allow_chunking and placed else (placed,)
        for host_count in hosts:
            if screen.bound(placed, host_count) + constant >= best:
                continue  # no answer of this case is better than one already bounded
            if time_limit_s is not None:
                left = time_limit_s - (time.perf_counter() - start)
                if left <= 0.0:
                    return -np.inf
                # HiGHS' clock runs on over every solve of this instance
                solver.setOptionValue("time_limit", solver.getRunTime() + left)
            solver.changeCoeff(_HOST_TIME, 0, -float(host_count))
            solver.changeCoeff(_OTHER_TIME, 0, -float(units - host_count))
            solver.changeRowBounds(_HOSTS, float(host_count), float(host_count))
            solver.changeRowBounds(_PLACED, float(placed), float(placed))
            solver.changeRowBounds(_HOST_CHUNKS, -highspy.kHighsInf, float(host_count))
            solver.changeRowBounds(_OTHER_CHUNKS, -highspy.kHighsInf, float(units - host_count))
            status = _run(solver)
            if status == highspy.HighsModelStatus.kInfeasible:
                continue  # no answer better than ``upper`` is of this case
            if status != highspy.HighsModelStatus.kOptimal:
                return -np.inf
            value = solver.getInfo().objective_function_value + constant
            best = min(best, value - _TOLERANCE * abs(value))
            screen.add(np.asarray(solver.getSolution().row_dual))
    return float(best)


class _DualScreen:
    """Lower bounds of the host LP's cases from the row duals of the cases solved (module
    Notes): for any multipliers ``y`` (of the sign each row's bounds allow), ``y'(row bounds)
    + sum_j min(d_j*lower_j, d_j*upper_j)`` with ``d = cost - A'y`` bounds the LP, since
    every column is bounded. Only the case rows' bounds and ``S``'s two coefficients change
    with the case, so each dual costs a few operations per case once added."""

    _CASE_ROWS = [_HOSTS, _PLACED, _HOST_CHUNKS, _OTHER_CHUNKS]

    def __init__(self, lp: highspy.HighsLp, units: int) -> None:
        self.cost, self.lower, self.upper = (np.asarray(part) for part in (
            lp.col_cost_, lp.col_lower_, lp.col_upper_))
        row_lower, row_upper = np.asarray(lp.row_lower_), np.asarray(lp.row_upper_)
        self.has_lower = row_lower > -highspy.kHighsInf
        self.has_upper = row_upper < highspy.kHighsInf
        self.row_lower = np.where(self.has_lower, row_lower, 0.0)
        self.row_upper = np.where(self.has_upper, row_upper, 0.0)
        matrix = lp.a_matrix_
        self.index, self.value = np.asarray(matrix.index_), np.asarray(matrix.value_)
        self.column = np.repeat(np.arange(lp.num_col_), np.diff(matrix.start_))
        self.units = units
        self.duals: list[tuple[float, np.ndarray]] = []

    def add(self, dual: np.ndarray) -> None:
        """Keep the bound terms of the row duals ``dual`` that do not change with the case."""
        y = np.where(((dual > 0) & ~self.has_lower) | ((dual < 0) & ~self.has_upper), 0.0, dual)
        reduced = self.cost - np.bincount(self.column, self.value * y[self.index],
                                          minlength=self.cost.size)
        rows = np.where(y > 0, y * self.row_lower, y * self.row_upper)
        rows[self._CASE_ROWS] = 0.0
        fixed = float(rows.sum() + np.minimum(reduced[1:] * self.lower[1:],
                                              reduced[1:] * self.upper[1:]).sum())
        self.duals.append((fixed, y[[_HOST_TIME, _OTHER_TIME, *self._CASE_ROWS]]))

    def bound(self, placed: int, hosts: int) -> float:
        """The best bound the duals kept give the case ``(placed, hosts)``; ``-inf`` if none."""
        best = -np.inf
        others = self.units - hosts
        for fixed, (host_time, other_time, host_rows, placed_row, host_chunks,
                    other_chunks) in self.duals:
            reduced = 1.0 + hosts * host_time + others * other_time  # S's cost is 1
            value = (fixed + host_rows * hosts + placed_row * placed + host_chunks * hosts
                     + other_chunks * others
                     + min(reduced * self.lower[0], reduced * self.upper[0]))
            best = max(best, value)
        return best


def _chunk_point_costs(lin: np.ndarray, quad: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Costs at the chunk points ``k*step`` (``k = 1..CHUNK_POINTS``, one row per share) of
    requests whose fraction ``a`` costs ``lin*a + quad*a**2``: below that cost by the most the
    chords between neighbouring points (and the origin) rise above it, so that every mix of
    the points and the origin costs at most the chunk it makes (module Notes).

    Examples
    --------
    >>> costs = _chunk_point_costs(np.array([1.0]), np.array([4.0]), np.array([1 / 8]))
    >>> costs[0, [0, -1]].tolist()  # lin*h; then f(a) - quad*h**2/4: 1 + 4 - 4/256
    [0.125, 4.984375]
    """
    share = step[:, None] * np.arange(1, CHUNK_POINTS + 1)
    costs = lin[:, None] * share + quad[:, None] * (share * share - step[:, None] ** 2 / 4.0)
    costs[:, 0] = lin * step  # the chord from the origin: the fraction's linear cost alone
    return costs


def _run(solver: highspy.Highs) -> highspy.HighsModelStatus:
    """Solve from the last case's basis, and once more from scratch if that ends undecided
    (measured: one chunked case in about 200 ended "unknown" warm and "infeasible" cold)."""
    solver.run()
    status = solver.getModelStatus()
    if status not in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kInfeasible,
                      highspy.HighsModelStatus.kTimeLimit):
        solver.clearSolver()
        solver.run()
        status = solver.getModelStatus()
    return status


def _host_lp(problem: PrefillWindow, long: np.ndarray, upper: float) -> tuple[highspy.HighsLp,
                                                                               float]:
    """The host LP (module Notes) for the case ``(q, m) = (K, K)``; :func:`host_bound` changes
    the case in place. Columns: ``S``, ``h`` per unit, then per share (a request in a group:
    the hosts for a long request, both groups for a short one) its whole part ``w``; with
    chunking, per long request its empty chunk, then per share its ``CHUNK_POINTS`` chunk
    points. Rows (``_HOST_TIME`` ...): host and other time, tokens, KV; ``sum h``; long
    requests placed; host and other chunks; one per request; with chunking one per long
    request (placed at most once). Every column is bounded (the dual screen needs it). Also
    returns the objective's constant."""
    n, units, count = problem.n_requests, problem.n_units, long.size
    tokens = problem.new_tokens.astype(np.float64)
    blocks = problem.kv_blocks.astype(np.float64)
    resid = problem.residual_us
    room = problem.room_tokens.astype(np.float64)
    free = problem.free_kv_blocks.astype(np.float64)
    if not (problem.free_kv_blocks < _NO_KV_LIMIT).all():  # an unlimited unit voids the KV rows
        free, blocks = np.zeros(units), np.zeros(n)
    chunking = problem.allow_chunking
    inf = highspy.kHighsInf
    # guarded requests cannot be deferred whole-request; with chunking the LP leaves them free
    must = problem.guarded & (not chunking)
    row_lower = np.concatenate([[-inf] * 6 + [count, count, -inf, -inf],
                                np.where(must, 1.0, -inf), [-inf] * (count if chunking else 0)])
    row_upper = np.concatenate([[0.0, -float(resid.sum()), 0.0, float(room.sum()), 0.0,
                                 float(free.sum()), count, count, count, units - count],
                                np.ones(n + (count if chunking else 0))])

    is_long = np.zeros(n, bool)
    is_long[long] = True
    once_row = np.full(n, -1)
    if chunking:
        once_row[long] = _FIRST_REQUEST_ROW + n + np.arange(count)
    # shares: every request with the hosts, then the short ones with the other units
    request = np.concatenate([np.arange(n), (~is_long).nonzero()[0]])
    host = np.arange(request.size) < n
    long_share = is_long[request]
    time_row = np.where(host, _HOST_TIME, _OTHER_TIME)
    token_row = np.where(host, _HOST_TOKENS, _OTHER_TOKENS)
    kv_row = np.where(host, _HOST_KV, _OTHER_KV)
    chunk_row = np.where(host, _HOST_CHUNKS, _OTHER_CHUNKS)
    placed_row = np.where(long_share, _PLACED, -1)
    long_once = once_row[request]

    columns = _Columns()
    step_floor = float(resid.max())
    columns.add([1.0], step_floor, max(upper - problem.base_us, step_floor),
                [(_HOST_TIME, -float(count)), (_OTHER_TIME, -float(units - count))])
    columns.add(np.zeros(units), 0.0, 1.0,
                [(_HOST_TIME, resid), (_OTHER_TIME, -resid), (_HOST_TOKENS, -room),
                 (_OTHER_TOKENS, room), (_HOST_KV, -free), (_OTHER_KV, free), (_HOSTS, 1.0)])
    whole_top = fits_any_unit(problem).astype(np.float64)[request]
    columns.add(-problem.penalty_us[request], 0.0, whole_top,
                [(time_row, problem.cost_us[request]), (token_row, tokens[request]),
                 (kv_row, blocks[request]), (_FIRST_REQUEST_ROW + request, 1.0),
                 (placed_row, 1.0), (long_once, 1.0)])
    if chunking:
        # a long request's chunk too small for its first point still counts as placed
        columns.add(np.zeros(count), 0.0, 1.0,
                    [(_HOST_CHUNKS, 1.0), (_PLACED, 1.0), (once_row[long], 1.0)])
        lin, quad = fraction_terms(problem)
        # a chunk is shorter than its request: no chunk of a 0- or 1-token request
        top = np.minimum(largest_share(problem),
                         np.maximum(tokens - 1.0, 0.0) / np.maximum(tokens, 1.0))[request]
        step = top / CHUNK_POINTS
        share = (step[:, None] * np.arange(1, CHUNK_POINTS + 1)).ravel()
        point = np.repeat(np.arange(request.size), CHUNK_POINTS)
        point_request = request[point]
        # a chunk's remainder costs e1*a - e2*a**2 beyond its token share: concave, so a
        # mix of neighbouring points (or of the origin and the first) prices it no higher
        _, _, e1, e2 = remainder_terms(problem, largest_share(problem))
        extra = e1[point_request] * share - e2[point_request] * share * share
        columns.add(-problem.penalty_us[point_request] * share + extra, 0.0, 1.0,
                    [(time_row[point],
                      _chunk_point_costs(lin[request], quad[request], step).ravel()),
                     (token_row[point], tokens[point_request] * share),
                     (kv_row[point], blocks[point_request] * share),
                     (_FIRST_REQUEST_ROW + point_request, share), (chunk_row[point], 1.0),
                     (placed_row[point], 1.0), (long_once[point], 1.0)])
    return (columns.lp(row_lower, row_upper),
            problem.base_us + float(problem.penalty_us.sum()))


class _Columns:
    """Column-wise build of an LP, a block of columns at a time."""

    def __init__(self) -> None:
        self.blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.count = 0

    def add(self, cost: Any, lower: Any, upper: Any,
            entries: list[tuple[Any, Any]]) -> None:
        """Columns with these costs and bounds; each entry gives per column a row (a negative
        row: no entry) and a value (scalars are broadcast)."""
        cost = np.asarray(cost, np.float64)
        size = cost.size
        column = self.count + np.arange(size)
        self.blocks.append((cost, np.broadcast_to(np.asarray(lower, np.float64), size),
                            np.broadcast_to(np.asarray(upper, np.float64), size)))
        for rows, values in entries:
            rows = np.broadcast_to(np.asarray(rows), size)
            kept = rows >= 0
            self.entries.append((column[kept], rows[kept],
                                 np.broadcast_to(np.asarray(values, np.float64), size)[kept]))
        self.count += size

    def lp(self, row_lower: np.ndarray, row_upper: np.ndarray) -> highspy.HighsLp:
        column, row, value = (np.concatenate(part) for part in zip(*self.entries, strict=True))
        order = np.argsort(column, kind="stable")
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = self.count, row_lower.size
        lp.col_cost_, lp.col_lower_, lp.col_upper_ = (
            np.concatenate(part) for part in zip(*self.blocks, strict=True))
        lp.row_lower_, lp.row_upper_ = row_lower, row_upper
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.concatenate(
            [[0], np.cumsum(np.bincount(column, minlength=self.count))]).astype(np.int32)
        lp.a_matrix_.index_ = row[order].astype(np.int32)
        lp.a_matrix_.value_ = value[order]
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = lp.num_col_, lp.num_row_
        return lp
