"""How one solve spends its time budget: a :class:`BudgetPlan`, computed once per call by
:func:`plan_budget` from the window, the method, the budget and the options.

``greedy`` takes what it needs. ``cpsat`` and ``auto`` split the budget, in this order: the
greedy hint (with a local search when the budget holds it), ruin and recreate and the exchange
search (sized in iterations and work at their slowest rate, not by the clock, so that a seeded
answer repeats), CP-SAT (at least its build, load and stop time) and the polish (the exchange
search on CP-SAT's answer); the host bound's reserve is kept after them. Where CP-SAT's least
time is over half the budget, the searches take the budget instead. The bounds after the
backend run in what is left. The plan's sizes and decisions do not read the clock; its
methods that take the time left are the guards the solve checks on the way. The measurements
behind each constant are in ``docs/decisions/window-budget.md``.

Examples
--------
>>> from sbsopt.costmodel import PrefillCoefficients
>>> from sbsopt.window.options import SolveOptions
>>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
...                         gamma_us_per_request=0.0)
>>> full = PrefillWindow.from_arrays([30, 20, 20, 10], [0] * 4, [0.0] * 4,
...                                  capacity_tokens=[32, 32], coefficients=c)
>>> plan = plan_budget(full, "auto", 0.05, SolveOptions())
>>> plan.cpsat.runs, plan.searches.ruin_recreate > 0, plan.searches.exchange > 0
(True, True, True)
>>> round(plan.host_reserve_s, 6), round(plan.cpsat.polish_s, 6)  # a tenth of what is left
(0.0048, 0.00452)
>>> plan_budget(full, "greedy", 0.05, SolveOptions()).searches.ruin_recreate
0
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbsopt.window.greedy import EXCHANGE_WORK_S, greedy_prefill, ruin_iteration_s
from sbsopt.window.host_bound import long_requests
from sbsopt.window.options import SolveOptions
from sbsopt.window.problem import DecodeWindow, PrefillWindow

__all__ = ["BoundPlan", "SearchPlan", "CpSatPlan", "BudgetPlan", "plan_budget", "host_time_s",
           "full_search"]

#: Building a CP-SAT model, per request-unit pair at the slowest measured.
PAIR_BUILD_S = 2e-6
#: CP-SAT's least solve: its load and presolve cannot be interrupted.
MIN_SOLVE_S = 0.008
#: CP-SAT's time past its wall limit per request-unit pair (loading the model and the hint).
STOP_PAIR_S = 1.2e-6
#: How long CP-SAT, GLOP and HiGHS may run past a limit: each is stopped this much earlier.
STOP_LATENCY_S = 0.004
#: From this much time left CP-SAT runs its full search (presolve, probing, LP at the nodes);
#: below it the search starts from the hint at once.
FULL_SEARCH_S = 0.5
#: The full search stops later past its wall limit: the limit is also this share earlier.
FULL_SEARCH_STOP_SHARE = 0.02
#: The least deterministic time CP-SAT is given after the searches.
MIN_DETERMINISTIC_S = 1e-3
#: The LP bound, built in Python (not interruptible), runs with 3 times this per pair left,
#: plus the margin.
LP_PAIR_S = 10e-6
LP_MARGIN_S = 0.005
#: The step-split bound (not interruptible) runs with this much left, fixed and per request.
SPLIT_FIXED_S = 0.001
SPLIT_REQUEST_S = 4e-6
#: The host bound's time, fixed and per request, (whole-request, with chunking): above the
#: most measured, so that keeping it is enough.
HOST_FIXED_S = (2.1e-3, 0.0)
HOST_REQUEST_S = (8e-6, 200e-6)
#: The most of the budget kept for the host bound.
HOST_MOST_SHARE = 0.6
#: Local-search rounds of the greedy that hints CP-SAT.
HINT_LOCAL_SEARCH = 1000
#: Time left needed for those rounds, per request-unit pair, and on whole-request windows per
#: pair and request (their exchanges with the deferred requests grow with their number).
HINT_PAIR_S = 60e-9
HINT_WHOLE_PAIR_REQUEST_S = 2e-9
#: Shares of the budget ruin and recreate and the exchange search may take before CP-SAT.
RUIN_SHARE = 0.3
EXCHANGE_SHARE = 0.3
#: Their share together (split as above) when CP-SAT does not run: they are the only search.
SEARCHES_ALONE_SHARE = 0.8
#: Ruin and recreate has converged by then.
RUIN_MAX_ITERATIONS = 20_000
#: The least share of the room a window's requests fill for the exchange search to run by
#: default: there units end full and their packing decides the step.
EXCHANGE_MIN_FILL = 0.9
#: The share kept after CP-SAT for the exchange search on its answer (the polish), and how
#: long before the deadline the polish ends (its clock reads and the objective after it).
POLISH_SHARE = 0.1
POLISH_MARGIN_S = 0.0005
#: After the searches, CP-SAT runs only when its least time is at most this share of the
#: budget; else the searches do better with all of it.
CPSAT_MOST_SHARE = 0.5
#: The methods that split the budget between the searches and CP-SAT.
_SHARED = frozenset({"cpsat", "auto"})


@dataclass(frozen=True)
class BoundPlan:
    """Whether a bound runs after the backend, and the budget it needs left then.

    Attributes
    ----------
    run : bool
        Whether it runs at all.
    least_left_s : float
        The budget that must be left for it to run; it is then limited to that budget less
        the stop latency. ``-inf`` where the option asked for it: it runs without a limit.

    Examples
    --------
    >>> rule = BoundPlan(True, 0.002)
    >>> rule.due(0.001), rule.due(0.01), round(rule.time_limit_s(0.01), 6)
    (False, True, 0.006)
    >>> BoundPlan(True).time_limit_s(0.0) is None
    True
    """

    run: bool
    least_left_s: float = -math.inf

    def due(self, left_s: float) -> bool:
        """Whether the bound runs with ``left_s`` of the budget left."""
        return self.run and left_s > self.least_left_s

    def time_limit_s(self, left_s: float) -> float | None:
        """Its time limit with ``left_s`` left (``None``: none)."""
        return None if self.least_left_s == -math.inf else left_s - STOP_LATENCY_S


_NEVER = BoundPlan(False)
_ASKED = BoundPlan(True)


@dataclass(frozen=True)
class SearchPlan:
    """The searches after the greedy.

    Attributes
    ----------
    hint_local_search : int
        Local-search rounds of the second greedy that may hint CP-SAT (0: not tried).
    hint_s : float
        The budget left those rounds need to run.
    ruin_recreate, exchange : int
        Ruin-and-recreate iterations and exchange-search work (0 where they do not apply:
        decode windows, empty windows).
    ruin_recreate_s, exchange_s : float
        The most those take, at their slowest rate.
    stop_s : float
        How long before the backend's deadline they must end (CP-SAT's least time and the
        polish, or the stop latency where CP-SAT does not follow).
    """

    hint_local_search: int = 0
    hint_s: float = 0.0
    ruin_recreate: int = 0
    ruin_recreate_s: float = 0.0
    exchange: int = 0
    exchange_s: float = 0.0
    stop_s: float = 0.0


_NO_SEARCHES = SearchPlan()


@dataclass(frozen=True)
class CpSatPlan:
    """CP-SAT's part: whether it runs, its least times and the polish after it.

    Attributes
    ----------
    runs : bool
        Whether CP-SAT runs after the searches (False where they took its time, and for
        methods without CP-SAT).
    build_s : float
        The most building its model takes.
    load_s : float
        Its time past its wall limit (loading the model and the hint).
    polish_s : float
        Kept after it for the exchange search on its answer.
    deterministic_time_s : float or None
        Its deterministic time from the options (``None``: from the budget).
    polish_margin_s : float
        How long before the deadline the polish ends.
    """

    runs: bool = False
    build_s: float = 0.0
    load_s: float = 0.0
    polish_s: float = 0.0
    deterministic_time_s: float | None = None
    polish_margin_s: float = POLISH_MARGIN_S

    @property
    def least_s(self) -> float:
        """Its least time: building, loading, its shortest solve and its stop."""
        return self.build_s + self.load_s + MIN_SOLVE_S + STOP_LATENCY_S

    def builds(self, left_s: float) -> bool:
        """Whether ``left_s`` holds building the model and the least solve."""
        return left_s >= self.build_s + self.load_s + MIN_SOLVE_S

    def solves(self, left_s: float) -> bool:
        """Whether ``left_s``, after building, holds the least solve."""
        return left_s >= MIN_SOLVE_S + self.load_s

    def wall_s(self, left_s: float) -> float:
        """The wall limit with ``left_s`` left: early enough for its stop."""
        latency = STOP_LATENCY_S + (FULL_SEARCH_STOP_SHARE * left_s if full_search(left_s)
                                    else 0.0)
        return left_s - latency - self.load_s


_NO_CPSAT = CpSatPlan()


@dataclass(frozen=True)
class BudgetPlan:
    """How one solve spends its budget (seconds throughout).

    Attributes
    ----------
    budget_s : float
        The call's budget, ``time_limit_s``.
    host_reserve_s : float
        Kept after the backend for the host bound (0: none kept).
    searches : SearchPlan
        The searches after the greedy.
    cpsat : CpSatPlan
        CP-SAT and the polish after it.
    split_bound, host_bound, lp_bound : BoundPlan
        When the bounds after the backend run.
    """

    budget_s: float
    host_reserve_s: float
    searches: SearchPlan
    cpsat: CpSatPlan
    split_bound: BoundPlan
    host_bound: BoundPlan
    lp_bound: BoundPlan

    @property
    def backend_s(self) -> float:
        """The backend's budget: the call's less the host reserve."""
        return self.budget_s - self.host_reserve_s

    @property
    def cpsat_s(self) -> float:
        """CP-SAT's share: the backend's budget less the most the searches take and the
        polish (0 where it does not run)."""
        if not self.cpsat.runs:
            return 0.0
        searches = self.searches.ruin_recreate_s + self.searches.exchange_s
        return self.backend_s - searches - self.cpsat.polish_s

    def cpsat_deterministic_s(self, left_s: float, exchange_done: int) -> float:
        """CP-SAT's deterministic time with ``left_s`` left after the searches, the exchange
        search having done ``exchange_done`` work: the option, else after the searches the
        backend's budget less the most they can take and the polish (their wall time
        varies, CP-SAT's stop rule must not), else ``left_s``."""
        if self.cpsat.deterministic_time_s is not None:
            return self.cpsat.deterministic_time_s
        if not self.searches.ruin_recreate and not exchange_done:
            return left_s
        spent = (self.searches.ruin_recreate_s + exchange_done * EXCHANGE_WORK_S
                 + self.cpsat.polish_s)
        return max(self.backend_s - spent, MIN_DETERMINISTIC_S)


def full_search(left_s: float) -> bool:
    """Whether CP-SAT given ``left_s`` runs its full search (presolve, probing) by default.

    Examples
    --------
    >>> full_search(0.05), full_search(2.0)
    (False, True)
    """
    return left_s > FULL_SEARCH_S


def host_time_s(problem: PrefillWindow) -> float:
    """The time the host bound may take on ``problem``, its stop latency included.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([30, 20], [0, 0], [0.0, 0.0], capacity_tokens=[64],
    ...                               coefficients=c, allow_chunking=False)
    >>> round(host_time_s(w), 6)
    0.006116
    """
    chunking = int(problem.allow_chunking)
    return HOST_FIXED_S[chunking] + HOST_REQUEST_S[chunking] * problem.n_requests + STOP_LATENCY_S


def plan_budget(problem: PrefillWindow | DecodeWindow, method: str, time_limit_s: float,
                options: SolveOptions) -> BudgetPlan:
    """The plan of one solve of ``problem`` by ``method`` within ``time_limit_s``.

    Parameters
    ----------
    problem : PrefillWindow or DecodeWindow
    method : str
        ``cpsat`` and ``auto`` split the budget; any other method runs the searches the
        options ask for and no CP-SAT.
    time_limit_s : float
        The call's budget, positive.
    options : SolveOptions
        Explicit ``ruin_recreate``, ``exchange`` and ``local_search`` replace the sizes the
        plan would choose; ``host_bound``, ``lp_bound`` and ``deterministic_time_s`` apply as
        documented there.

    Returns
    -------
    BudgetPlan
        The same for the same arguments: nothing here reads the clock.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> roomy = PrefillWindow.from_arrays([30, 20], [0, 0], [0.0, 0.0], capacity_tokens=[64, 64],
    ...                                   coefficients=c)
    >>> plan = plan_budget(roomy, "cpsat", 0.05, SolveOptions(exchange=1000))
    >>> plan.searches.ruin_recreate, plan.searches.exchange, plan.cpsat.runs, plan.lp_bound.run
    (0, 1000, True, False)
    """
    asked = options.ruin_recreate or options.exchange
    if method == "greedy" and not asked:
        return _greedy_plan(time_limit_s, options.host_bound, options.lp_bound,
                            isinstance(problem, PrefillWindow))
    n, pairs = problem.n_requests, problem.n_requests * problem.n_units
    timed = method != "greedy"  # the bounds after the backend, in the budget left
    # with chunking the LP is weaker than the analytic bound on every window measured
    lp_default = timed and not (isinstance(problem, PrefillWindow) and problem.allow_chunking)
    lp_least = 3 * LP_PAIR_S * pairs + LP_MARGIN_S if lp_default else None
    bounds = (
        BoundPlan(True, SPLIT_FIXED_S + SPLIT_REQUEST_S * n) if timed else _NEVER,
        _bound_plan(options.host_bound, host_time_s(problem) / 2 if timed else None)
        if isinstance(problem, PrefillWindow) else _NEVER,
        _bound_plan(options.lp_bound, lp_least),
    )
    if method not in _SHARED:  # the searches the options ask for, no CP-SAT
        searches = (_searches(problem, options.ruin_recreate or 0, options.exchange or 0)
                    if isinstance(problem, PrefillWindow) and n and asked else _NO_SEARCHES)
        return BudgetPlan(time_limit_s, 0.0, searches, _NO_CPSAT, *bounds)
    build_s, load_s = pairs * PAIR_BUILD_S, pairs * STOP_PAIR_S
    least = CpSatPlan(build_s=build_s, load_s=load_s).least_s
    reserve, iterations, work = 0.0, 0, 0
    if isinstance(problem, PrefillWindow) and n:
        fill = _fill(problem)
        reserve = _host_reserve(problem, time_limit_s, options, fill, least)
        iterations, work = _search_sizes(problem, time_limit_s - reserve, fill, least)
        iterations = iterations if options.ruin_recreate is None else options.ruin_recreate
        work = work if options.exchange is None else options.exchange
    backend_s = time_limit_s - reserve
    fits = _cpsat_fits(least, backend_s, work > 0)
    polish = POLISH_SHARE * backend_s if fits and work else 0.0
    hint, hint_s = 0, 0.0
    if isinstance(problem, PrefillWindow) and options.local_search is None:
        per_pair = HINT_PAIR_S
        if not problem.allow_chunking:
            per_pair = max(per_pair, HINT_WHOLE_PAIR_REQUEST_S * n)
        hint, hint_s = HINT_LOCAL_SEARCH, per_pair * pairs
    searches = _searches(problem, iterations, work, hint_local_search=hint, hint_s=hint_s,
                         stop_s=least + polish if fits else STOP_LATENCY_S)
    cpsat = CpSatPlan(runs=fits or not work, build_s=build_s, load_s=load_s, polish_s=polish,
                      deterministic_time_s=options.deterministic_time_s)
    return BudgetPlan(time_limit_s, reserve, searches, cpsat, *bounds)


@functools.lru_cache(maxsize=64)
def _greedy_plan(time_limit_s: float, host_bound: bool | None, lp_bound: bool | None,
                 prefill: bool) -> BudgetPlan:
    """``greedy``'s plan without searches, which depends on nothing else (cached: that solve
    takes microseconds)."""
    return BudgetPlan(time_limit_s, 0.0, _NO_SEARCHES, _NO_CPSAT, _NEVER,
                      _bound_plan(host_bound, None) if prefill else _NEVER,
                      _bound_plan(lp_bound, None))


def _searches(problem: PrefillWindow | DecodeWindow, iterations: int, work: int,
              **others: Any) -> SearchPlan:
    """The searches' plan for ``iterations`` of ruin and recreate and ``work`` of exchanges
    (both 0 on a decode window)."""
    ruin_s = (iterations * ruin_iteration_s(problem)
              if iterations and isinstance(problem, PrefillWindow) else 0.0)
    return SearchPlan(ruin_recreate=iterations, ruin_recreate_s=ruin_s, exchange=work,
                      exchange_s=work * EXCHANGE_WORK_S, **others)


def _bound_plan(asked: bool | None, least_left_s: float | None) -> BoundPlan:
    """A bound's plan: as the option asks (run whatever it costs, or never), else when
    ``least_left_s`` is left (``None``: not by default)."""
    if asked is None:
        return _NEVER if least_left_s is None else BoundPlan(True, least_left_s)
    return _ASKED if asked else _NEVER


def _fill(problem: PrefillWindow) -> float:
    """The larger share of the units' room the requests take, in tokens or in KV blocks
    (above 1: some requests must wait; ``inf`` when an empty room is asked for anything)."""
    def share(need: float, room: float) -> float:
        return need / room if room > 0 else (np.inf if need > 0 else 0.0)

    return max(share(float(problem.new_tokens.sum()), float(problem.room_tokens.sum())),
               share(problem.kv_blocks.sum(dtype=np.float64),
                     problem.free_kv_blocks.sum(dtype=np.float64)))


def _cpsat_fits(least: float, left: float, searched: bool) -> bool:
    """Whether CP-SAT, needing ``least``, runs in the budget ``left``: after the exchange
    search (``searched``) with the polish, and in at most ``CPSAT_MOST_SHARE`` of it."""
    if not searched:
        return least <= left
    return least + POLISH_SHARE * left <= left and least <= CPSAT_MOST_SHARE * left


def _host_reserve(problem: PrefillWindow, budget: float, options: SolveOptions, fill: float,
                  least: float) -> float:
    """The host bound's time, kept after the backend on a one-instance window with long
    requests given an answer at the greedy's analytic bound (the most any answer shows), when
    that time is at most ``HOST_MOST_SHARE`` of the budget and CP-SAT would take it (the
    searches alone leave ``1 - SEARCHES_ALONE_SHARE`` of it); else 0."""
    if options.host_bound is False or problem.n_instances != 1 or problem.n_requests < 2:
        return 0.0
    need = host_time_s(problem)
    searched = fill >= EXCHANGE_MIN_FILL if options.exchange is None else options.exchange > 0
    if need > HOST_MOST_SHARE * budget or (not _cpsat_fits(least, budget, searched)
                                           and need <= (1 - SEARCHES_ALONE_SHARE) * budget):
        return 0.0
    start = greedy_prefill(problem)  # microseconds, with the analytic bound
    if start.unplaced_guarded:
        return 0.0
    return need if long_requests(problem, start.bound).size >= 2 else 0.0


def _search_sizes(problem: PrefillWindow, budget: float, fill: float,
                  least: float) -> tuple[int, int]:
    """Default ruin-and-recreate iterations (on a window with more tokens or KV blocks than
    room) and exchange-search work (on one filling ``EXCHANGE_MIN_FILL`` of it): each up to
    its share of ``budget`` at its slowest rate, together within what CP-SAT's ``least`` time
    and the polish leave, or ``SEARCHES_ALONE_SHARE`` of it where CP-SAT does not fit."""
    ruin = RUIN_SHARE if fill > 1.0 else 0.0
    exchange = EXCHANGE_SHARE if fill >= EXCHANGE_MIN_FILL else 0.0
    if not ruin and not exchange:
        return 0, 0
    if _cpsat_fits(least, budget, exchange > 0):
        spare = budget - least - (POLISH_SHARE * budget if exchange else 0.0)
        ruin_s = min(ruin * budget, spare * ruin / (ruin + exchange))
        exchange_s = min(exchange * budget, spare - ruin_s) if exchange else 0.0
    else:
        ruin_s = SEARCHES_ALONE_SHARE * budget * ruin / (ruin + exchange)
        exchange_s = SEARCHES_ALONE_SHARE * budget - ruin_s if exchange else 0.0
    iterations = int(min(max(ruin_s, 0.0) / ruin_iteration_s(problem), RUIN_MAX_ITERATIONS))
    return iterations, int(max(exchange_s, 0.0) / EXCHANGE_WORK_S)
