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
the cases ``m = q`` (``q = K..0``) remain. With chunking, every case is solved, and a request's
share in a group is whole (cost ``c_i`` per unit share) or a chunk: a fraction ``a`` of it,
counted ``z >= a`` against the group's one chunk per unit, costing at least the perspective
``z*f(a/z)`` of its convex chunk cost ``f(a) = lin*a + quad*a**2`` (bounds.py Notes), kept
through its tangents at ``CHUNK_TANGENTS`` points (linear in ``a`` and ``z``). Without the
count, many small fractions would run without their quadratic attention.

The bound is ``min(U, min over cases)`` (a case with no answer better than ``U`` is
infeasible). Whole-request, it equals on every window measured the LP with the ``K`` long
requests' assignments kept integral (a mixed-integer program HiGHS needs 12-90 s for at
128 x 16), since both groups' short requests are fractional anyway: a 128 x 16 window whose
four 7,400-token prompts must each fill their unit with short ones goes from 3.38% to 0.94%
above the bound. Cost at 128 x 16 (4-8 long requests): 3-5 ms whole-request (``K + 1``
LPs of about 270 columns, each warm-started from the last: 0.6 ms to build, 0.6 ms an LP),
65-185 ms with chunking (``1 + K*(K + 1)/2`` LPs of about 1,000 columns: 3.5 ms to build,
5 ms an LP).
"""

from __future__ import annotations

import time

import highspy
import numpy as np

from sbsopt.window.bounds import _fits, _fraction_terms, _largest_share, _penalty_floor
from sbsopt.window.problem import DecodeWindow, PrefillWindow

__all__ = ["host_bound", "long_requests", "CHUNK_TANGENTS", "MOST_LONG_REQUESTS"]

#: The long requests kept with chunking (the costliest): any subset of them leaves the bound
#: valid, and there the cases grow as ``K**2 / 2`` (a 128 x 16 window had at most 8; without
#: chunking, where the cases grow as ``K``, all are kept: 256 x 32 windows have more than 8).
MOST_LONG_REQUESTS = 8

#: Points in [0, 1] whose tangents keep a chunk's quadratic cost (module Notes): five points
#: understate ``quad*a**2`` by at most ``quad/64``.
CHUNK_TANGENTS = 5
#: HiGHS' optimality tolerance, relative: shaved off the LP values so that they stay bounds.
_TOLERANCE = 1e-7
_NO_KV_LIMIT = 2**61
#: The host LP's first rows (:func:`_host_lp`): time, tokens and KV of the hosts and of the
#: other units, how many units host, how many long requests are placed, and the chunks each
#: group holds (the last four change with the case).
(_HOST_TIME, _OTHER_TIME, _HOST_TOKENS, _OTHER_TOKENS, _HOST_KV, _OTHER_KV, _HOSTS, _PLACED,
 _HOST_CHUNKS, _OTHER_CHUNKS) = range(10)


def long_requests(problem: PrefillWindow, upper: float) -> np.ndarray:
    """The costliest requests (with chunking at most ``MOST_LONG_REQUESTS``) of which no two fit
    together on a unit in an answer better than ``upper`` (module Notes), costliest first;
    empty when fewer than two.

    Examples
    --------
    >>> from types import SimpleNamespace as C
    >>> c = C(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0, gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([60, 50, 40, 10], [0] * 4, [0.0] * 4,
    ...                               capacity_tokens=[128] * 3, coefficients=c)
    >>> long_requests(w, upper=85.0).tolist()  # 50 + 40 > 85: the 10 may share
    [0, 1, 2]
    """
    fits = _fits(problem.new_tokens, problem.kv_blocks, problem.room_tokens,
                 problem.free_kv_blocks).any(axis=1)
    floor = _penalty_floor(np.where(fits, problem.penalty_us, 0.0), float(problem.penalty_us.sum()),
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
    >>> from types import SimpleNamespace as C
    >>> from sbsopt.window import lp_bound
    >>> c = C(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.01, gamma_us_per_request=0.0)
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
    solver.passModel(lp)
    units = problem.n_units
    best = upper
    for placed in range(long.size, -1, -1):
        hosts = range(placed, 0, -1) if problem.allow_chunking and placed else (placed,)
        for host_count in hosts:
            if time_limit_s is not None:
                left = time_limit_s - (time.perf_counter() - start)
                if left <= 0.0:
                    return -np.inf
                solver.setOptionValue("time_limit", left)
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
    return float(best)


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


class _Matrix:
    """Column-wise build of an LP's matrix and bounds."""

    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.starts = [0]
        self.index: list[int] = []
        self.value: list[float] = []

    def column(self, cost: float, lower: float, upper: float,
               entries: list[tuple[int, float]]) -> None:
        self.cost.append(cost)
        self.lower.append(lower)
        self.upper.append(upper)
        for row, value in entries:
            self.index.append(row)
            self.value.append(value)
        self.starts.append(len(self.index))

    def lp(self, row_lower: list[float], row_upper: list[float]) -> highspy.HighsLp:
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = len(self.cost), len(row_lower)
        lp.col_cost_ = np.asarray(self.cost, np.float64)
        lp.col_lower_ = np.asarray(self.lower, np.float64)
        lp.col_upper_ = np.asarray(self.upper, np.float64)
        lp.row_lower_ = np.asarray(row_lower, np.float64)
        lp.row_upper_ = np.asarray(row_upper, np.float64)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.asarray(self.starts, np.int32)
        lp.a_matrix_.index_ = np.asarray(self.index, np.int32)
        lp.a_matrix_.value_ = np.asarray(self.value, np.float64)
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = lp.num_col_, lp.num_row_
        return lp


def _host_lp(problem: PrefillWindow, long: np.ndarray, upper: float) -> tuple[highspy.HighsLp,
                                                                               float]:
    """The host LP (module Notes) for the case ``(q, m) = (K, K)``; :func:`host_bound` changes
    the case in place. Columns: ``S``, ``h`` per unit, then per request and group (hosts for a
    long request, both for a short one) its whole share ``w`` and, with chunking, its chunk
    fraction ``a``, count ``z`` and cost ``t``. Rows (``_HOST_TIME`` ...): host and other time,
    tokens, KV; ``sum h``; long requests placed; host and other chunks; one per request; with
    chunking one per long request (placed at most once), then per share ``a <= z`` and the
    tangent cuts. Also returns the objective's constant."""
    n, units, count = problem.n_requests, problem.n_units, long.size
    cost, pen = problem.cost_us, problem.penalty_us
    tokens = problem.new_tokens.astype(np.float64)
    blocks = problem.kv_blocks.astype(np.float64)
    resid = problem.residual_us
    room = problem.room_tokens.astype(np.float64)
    free = problem.free_kv_blocks.astype(np.float64)
    if not (problem.free_kv_blocks < _NO_KV_LIMIT).all():  # an unlimited unit voids the KV rows
        free, blocks = np.zeros(units), np.zeros(n)
    whole_top = _fits(problem.new_tokens, problem.kv_blocks, problem.room_tokens,
                      problem.free_kv_blocks).any(axis=1).astype(np.float64)
    chunking = problem.allow_chunking
    lin, quad = _fraction_terms(problem)
    # a chunk is shorter than its request: no chunk of a 0- or 1-token request
    share_top = np.minimum(_largest_share(problem),
                           np.maximum(tokens - 1.0, 0.0) / np.maximum(tokens, 1.0))
    tangents = np.linspace(0.0, 1.0, CHUNK_TANGENTS)
    is_long = np.zeros(n, bool)
    is_long[long] = True

    matrix = _Matrix()
    row_lower: list[float] = []
    row_upper: list[float] = []
    inf = highspy.kHighsInf

    def row(lower: float, upper_: float) -> int:
        row_lower.append(lower)
        row_upper.append(upper_)
        return len(row_lower) - 1

    for lower, upper_ in ((-inf, 0.0), (-inf, -float(resid.sum())), (-inf, 0.0),
                          (-inf, float(room.sum())), (-inf, 0.0), (-inf, float(free.sum())),
                          (count, count), (count, count), (-inf, count), (-inf, units - count)):
        row(lower, upper_)
    # guarded requests cannot be deferred whole-request; with chunking the LP leaves them free
    must = problem.guarded & (not chunking)
    request_row = [row(1.0 if must[i] else -inf, 1.0) for i in range(n)]
    once_row = {int(k): row(-inf, 1.0) for k in long} if chunking else {}

    step_floor = float(resid.max())
    matrix.column(1.0, step_floor, max(upper - problem.base_us, step_floor),
                  [(_HOST_TIME, -float(count)), (_OTHER_TIME, -float(units - count))])
    for j in range(units):
        matrix.column(0.0, 0.0, 1.0, [(_HOST_TIME, resid[j]), (_OTHER_TIME, -resid[j]),
                                      (_HOST_TOKENS, -room[j]), (_OTHER_TOKENS, room[j]),
                                      (_HOST_KV, -free[j]), (_OTHER_KV, free[j]), (_HOSTS, 1.0)])
    for i in range(n):
        for host in ((True,) if is_long[i] else (True, False)):
            time_row, token_row, kv_row = ((_HOST_TIME, _HOST_TOKENS, _HOST_KV) if host
                                           else (_OTHER_TIME, _OTHER_TOKENS, _OTHER_KV))
            whole = [(time_row, cost[i]), (token_row, tokens[i]), (kv_row, blocks[i]),
                     (request_row[i], 1.0)]
            if is_long[i]:
                whole.append((_PLACED, 1.0))
                if chunking:
                    whole.append((once_row[i], 1.0))
            matrix.column(-pen[i], 0.0, whole_top[i], whole)
            if not chunking:
                continue
            bound_row = row(-inf, 0.0)  # a <= z
            cuts = [row(-inf, 0.0) for _ in tangents]
            matrix.column(-pen[i], 0.0, share_top[i],
                          [(token_row, tokens[i]), (kv_row, blocks[i]), (request_row[i], 1.0),
                           (bound_row, 1.0)]
                          + [(cut, lin[i] + 2.0 * quad[i] * t) for cut, t in zip(cuts, tangents, strict=True)])
            counted = [(_HOST_CHUNKS if host else _OTHER_CHUNKS, 1.0), (bound_row, -1.0)]
            if is_long[i]:
                counted += [(_PLACED, 1.0), (once_row[i], 1.0)]
            matrix.column(0.0, 0.0, 1.0, counted
                          + [(cut, -quad[i] * t * t) for cut, t in zip(cuts, tangents, strict=True)])
            matrix.column(0.0, 0.0, inf, [(time_row, 1.0)] + [(cut, -1.0) for cut in cuts])
    return (matrix.lp(row_lower, row_upper),
            problem.base_us + float(problem.penalty_us.sum()))
