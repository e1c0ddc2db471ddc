"""One entry point, :func:`solve`, over a registry of backends.

Backends (``greedy``, ``cpsat``, ``auto``) follow :class:`Backend`: a name, the phases they
handle, ``is_available()`` and ``run()``. :func:`register` adds one and refuses duplicates.

``cpsat`` starts from the greedy (the better of it with and without local search), improves
that by ruin and recreate (``greedy.ruin_recreate``) and the exchange search
(``greedy.exchange_search``) on prefill windows whose requests fill the room, hands
the result to CP-SAT as a complete hint, keeps the better of the two answers and searches
CP-SAT's once more by exchanges (the polish). ``auto`` does the same but stops at the first
answer its own bound proves optimal. How the budget is shared between these steps and the
bounds after them is a :class:`~sbsopt.window.budget.BudgetPlan`, computed once per call;
model building counts against the budget, and a step that no longer fits returns the answer
so far with status ``TIMEOUT``.

CP-SAT runs on one thread with a fixed ``random_seed``, its stop rule the deterministic time
with the wall clock as a hard cap; an answer repeats unless the search runs to that cap
(deterministic seconds pass slower than wall ones), which the option ``deterministic_time_s``
below the budget prevents. Below half a second of budget it skips presolve and root probing
(both come before its first decision and can outlast a short budget), and from
``_LNS_MIN_PAIRS`` request-unit pairs it runs neighbourhood search from the hint only, which
proves nothing. :func:`solve` pauses Python's cyclic garbage collector while it runs: a full
collection of a large heap takes longer than a window's budget. Call
:func:`~sbsopt.window.warm_up` first: a Numba kernel's first call in a process loads it inside
the budget. ``docs/decisions/window-budget.md`` has the measurements behind these choices.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from sbsopt._seed import as_int_seed
from sbsopt._validate import check_positive_time_limit
from sbsopt.errors import InvalidInputError
from sbsopt.window.bounds import analytic_bound, lp_bound, split_bound
from sbsopt.window.budget import BudgetPlan, full_search, plan_budget
from sbsopt.window.decode import build_decode_model
from sbsopt.window.greedy import (
    chunk_after,
    exchange_search,
    greedy_decode,
    greedy_prefill,
    ruin_recreate,
)
from sbsopt.window.host_bound import host_bound
from sbsopt.window.objective import objective
from sbsopt.window.options import SolveOptions, as_options
from sbsopt.window.prefill import BuildTimeout, build_prefill_model, read_assignment
from sbsopt.window.problem import DecodeWindow, PrefillWindow
from sbsopt.window.result import SolveResult, SolveStatus, relative_gap

__all__ = ["Backend", "Answer", "BACKENDS", "register", "available_methods", "solve"]

_WINDOWS = (PrefillWindow, DecodeWindow)
#: From this many request-unit pairs, CP-SAT below its full-search budget runs neighbourhood
#: search only: the full search spends a short budget on its start-up and first LP.
_LNS_MIN_PAIRS = 1024
#: Interleaved LNS subsolvers (one thread, deterministic interleaving).
_LNS_SUBSOLVERS = 2
_SEARCHES_INSTEAD = ("window too large for CP-SAT in the budget (its least time over half of "
                     "it): ruin and recreate and the exchange search took it")
#: Answers found by the searches after the greedy (``stats["variant"]``), and what those
#: searches report in ``stats``.
_SEARCH_VARIANTS = ("ruin-recreate", "exchange")
_SEARCH_STATS = ("ruin_recreate_iterations", "exchange_moves", "exchange_work", "exchange_s")


@dataclass
class Answer:
    """What a backend hands back; :func:`solve` adds objective, bound, gap and wall time."""

    assignment: np.ndarray
    chunks: dict[int, int]
    status: SolveStatus
    bound: float = -np.inf
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    #: the objective of ``assignment``/``chunks`` when the backend already computed it
    value: float | None = None
    #: True when ``bound`` already includes the analytic bound (it is not computed again)
    analytic_included: bool = False


class Backend(Protocol):
    """A window solver: ``run`` answers by ``deadline`` (``time.perf_counter()`` seconds),
    spending the budget as ``plan`` says."""

    name: ClassVar[str]
    phases: ClassVar[frozenset[str]]

    def is_available(self) -> bool: ...

    def run(self, problem: PrefillWindow | DecodeWindow, *, deadline: float, seed: int,
            hint: np.ndarray | None, options: SolveOptions, plan: BudgetPlan) -> Answer: ...


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add ``backend`` to the registry; a name already present is refused.

    Examples
    --------
    >>> register(BACKENDS["greedy"])
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: method = 'greedy': expected a name not yet registered
    """
    if backend.name in BACKENDS:
        raise InvalidInputError("method", backend.name, "a name not yet registered")
    BACKENDS[backend.name] = backend
    return backend


def available_methods() -> list[str]:
    """Names of the registered backends whose dependencies are importable."""
    return sorted(name for name, b in BACKENDS.items() if b.is_available())


def _greedy_answer(problem: PrefillWindow | DecodeWindow, rounds: int) -> Answer:
    """The greedy's answer, with ``rounds`` of local search on a prefill window."""
    if isinstance(problem, PrefillWindow):
        answer = greedy_prefill(problem, local_search=rounds)
        if answer.unplaced_guarded:
            missed = problem.guarded & (answer.assignment < 0)
            return Answer(answer.assignment, answer.chunks, SolveStatus.INFEASIBLE,
                          bound=answer.bound, message="guarded requests not placed: "
                          f"{np.flatnonzero(missed).tolist()}",
                          stats={"variant": answer.variant}, value=answer.objective,
                          analytic_included=True)
    else:
        answer = greedy_decode(problem)
    return Answer(answer.assignment, answer.chunks, SolveStatus.FEASIBLE, bound=answer.bound,
                  stats={"variant": answer.variant}, value=answer.objective,
                  analytic_included=True)


class _Greedy:
    name: ClassVar[str] = "greedy"
    phases: ClassVar[frozenset[str]] = frozenset({"prefill", "decode"})

    def is_available(self) -> bool:
        return True

    def run(self, problem: PrefillWindow | DecodeWindow, *, deadline: float, seed: int,
            hint: np.ndarray | None, options: SolveOptions, plan: BudgetPlan) -> Answer:
        start = _greedy_answer(problem, options.local_search or 0)
        return _search(problem, start, plan, seed=seed, deadline=deadline)


class _CpSat:
    name: ClassVar[str] = "cpsat"
    phases: ClassVar[frozenset[str]] = frozenset({"prefill", "decode"})

    def is_available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("ortools") is not None

    def run(self, problem: PrefillWindow | DecodeWindow, *, deadline: float, seed: int,
            hint: np.ndarray | None, options: SolveOptions, plan: BudgetPlan) -> Answer:
        fallback = _greedy_start(problem, options, plan, deadline)
        fallback = _search(problem, fallback, plan, seed=seed,
                           deadline=deadline - plan.searches.stop_s)
        if not plan.cpsat.runs:
            return _timeout(fallback, _SEARCHES_INSTEAD)
        answer = _cpsat_improve(problem, fallback, deadline=deadline - plan.cpsat.polish_s,
                                seed=seed, hint=hint, options=options, plan=plan)
        return _polish(problem, answer, plan, deadline=deadline)


class _Auto:
    name: ClassVar[str] = "auto"
    phases: ClassVar[frozenset[str]] = frozenset({"prefill", "decode"})

    def is_available(self) -> bool:
        return BACKENDS["cpsat"].is_available()

    def run(self, problem: PrefillWindow | DecodeWindow, *, deadline: float, seed: int,
            hint: np.ndarray | None, options: SolveOptions, plan: BudgetPlan) -> Answer:
        first = _greedy_start(problem, options, plan, deadline)
        if _meets_bound(first):
            first.stats["stage"] = "greedy"
            return first
        first = _search(problem, first, plan, seed=seed, deadline=deadline - plan.searches.stop_s)
        if _meets_bound(first) or not plan.cpsat.runs:
            first.stats["stage"] = "search"
            return first if _meets_bound(first) else _timeout(first, _SEARCHES_INSTEAD)
        answer = _cpsat_improve(problem, first, deadline=deadline - plan.cpsat.polish_s, seed=seed,
                                hint=hint, options=options, plan=plan)
        kept = answer.stats.get("kept") == "greedy"
        answer.stats["stage"] = ("cpsat" if not kept else
                                 "search" if first.stats.get("variant") in _SEARCH_VARIANTS
                                 else "greedy")
        return _polish(problem, answer, plan, deadline=deadline)


def _meets_bound(answer: Answer) -> bool:
    """A feasible answer whose objective its own bound already proves optimal."""
    return (answer.status is SolveStatus.FEASIBLE and answer.value is not None
            and answer.value <= answer.bound * (1 + 1e-12))


def _ranked(answer: Answer) -> float:
    """``answer``'s objective to compare answers by; one without it ranks last."""
    return math.inf if answer.value is None else answer.value


def _greedy_start(problem: PrefillWindow | DecodeWindow, options: SolveOptions,
                  plan: BudgetPlan, deadline: float) -> Answer:
    """The greedy answer CP-SAT starts from: where the plan tries it, the better of the plain
    greedy and the greedy with its local search (which balances whole requests and can leave
    less room for chunks), the latter only when the budget left holds it."""
    plain = _greedy_answer(problem, options.local_search or 0)
    if not plan.searches.hint_local_search:
        return plain
    if time.perf_counter() + plan.searches.hint_s > deadline:
        plain.stats["hint_local_search"] = 0
        return plain
    searched = _greedy_answer(problem, plan.searches.hint_local_search)
    if plain.status is SolveStatus.INFEASIBLE or searched.status is SolveStatus.INFEASIBLE:
        return searched if plain.status is SolveStatus.INFEASIBLE else plain
    return plain if _ranked(plain) < _ranked(searched) else searched


def _search(problem: PrefillWindow | DecodeWindow, start: Answer, plan: BudgetPlan, *,
            seed: int, deadline: float) -> Answer:
    """``start`` improved by the plan's ruin and recreate, then its exchange search."""
    answer = _ruin_recreate_answer(problem, start, plan.searches.ruin_recreate, seed=seed,
                                   deadline=deadline)
    return _exchange_answer(problem, answer, plan.searches.exchange, deadline=deadline, whole=True)


def _taken_whole(problem: PrefillWindow | DecodeWindow, answer: Answer) -> np.ndarray:
    """``answer``'s assignment with its chunked requests whole where they fit their unit's room
    and free KV blocks beside its whole requests (a request the step trim made a chunk of),
    else deferred (a new array when it has chunks)."""
    if not answer.chunks or not isinstance(problem, PrefillWindow):  # decode answers have none
        return answer.assignment
    whole = answer.assignment.copy()
    chunked = np.fromiter(answer.chunks, np.int64, len(answer.chunks))
    whole[chunked] = -1
    placed = whole >= 0
    units = problem.n_units
    tokens = np.bincount(whole[placed], weights=problem.new_tokens[placed], minlength=units)
    blocks = np.bincount(whole[placed], weights=problem.kv_blocks[placed], minlength=units)
    unit = answer.assignment[chunked]  # one chunk a unit: the chunks do not compete
    fits = ((tokens[unit] + problem.new_tokens[chunked] <= problem.room_tokens[unit])
            & (blocks[unit] + problem.kv_blocks[chunked] <= problem.free_kv_blocks[unit]))
    whole[chunked[fits]] = unit[fits]
    return whole


def _exchange_answer(problem: PrefillWindow | DecodeWindow, start: Answer, work: int, *,
                     deadline: float, whole: bool) -> Answer:
    """``start`` improved by ``work`` of the exchange search when that finds a better answer.
    ``whole``: on ``start`` taken whole (chunked requests whole where they fit, else
    deferred), with chunks added after as CP-SAT's are; else the chunks stay.
    ``stats["exchange_moves"]``, ``stats["exchange_work"]`` and ``stats["exchange_s"]`` say
    what it did. Prefill only: the plan gives decode windows no searches."""
    if not work or start.status is SolveStatus.INFEASIBLE or not isinstance(problem, PrefillWindow):
        return start
    assignment, chunks = ((_taken_whole(problem, start), {}) if whole
                          else (start.assignment, start.chunks))
    began = time.perf_counter()
    assignment, value, moves, done = exchange_search(problem, assignment, chunks, work,
                                                     deadline=deadline)
    start.stats["exchange_s"] = start.stats.get("exchange_s", 0.0) + time.perf_counter() - began
    if whole:
        assignment, chunks = chunk_after(problem, assignment)
        value = objective(problem, assignment, chunks)
    start.stats["exchange_moves"] = start.stats.get("exchange_moves", 0) + moves
    start.stats["exchange_work"] = start.stats.get("exchange_work", 0) + done
    if start.value is not None and not value < start.value - 1e-12 * abs(start.value):
        return start
    return Answer(assignment, chunks, start.status, bound=start.bound,
                  stats={**start.stats, "variant": "exchange"}, value=value,
                  message=start.message, analytic_included=start.analytic_included)


def _polish(problem: PrefillWindow | DecodeWindow, answer: Answer, plan: BudgetPlan, *,
            deadline: float) -> Answer:
    """CP-SAT's answer, unless proven optimal, improved by the exchange search with its chunks
    kept, ending the plan's margin before ``deadline`` (the search before CP-SAT has seen the
    start, so an answer CP-SAT did not improve is left)."""
    if (answer.stats.get("cpsat") not in ("OPTIMAL", "FEASIBLE")
            or answer.stats.get("kept") == "greedy"
            or answer.status in (SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE)):
        return answer
    return _exchange_answer(problem, answer, plan.searches.exchange,
                            deadline=deadline - plan.cpsat.polish_margin_s, whole=False)


def _ruin_recreate_answer(problem: PrefillWindow | DecodeWindow, start: Answer,
                          iterations: int, *, seed: int, deadline: float) -> Answer:
    """``start`` improved by ``iterations`` of ruin and recreate when that finds a better
    answer before ``deadline``; ``stats["ruin_recreate_iterations"]`` says how many ran.
    Prefill only: the plan gives decode windows no searches."""
    if (not iterations or start.status is SolveStatus.INFEASIBLE
            or not isinstance(problem, PrefillWindow)):
        return start
    assignment, chunks, value, ran = ruin_recreate(problem, _taken_whole(problem, start),
                                                   iterations, seed=seed, deadline=deadline)
    start.stats["ruin_recreate_iterations"] = ran
    if start.value is not None and not value < start.value - 1e-12 * abs(start.value):
        return start  # (the kernels and the objective round differently)
    return Answer(assignment, chunks, SolveStatus.FEASIBLE, bound=start.bound,
                  stats={**start.stats, "variant": "ruin-recreate"}, value=value,
                  analytic_included=start.analytic_included)


def _sat_parameters(params: Any, problem: PrefillWindow | DecodeWindow, *, seed: int,
                    remaining: float, deterministic_s: float, options: SolveOptions,
                    plan: BudgetPlan) -> None:
    """Set CP-SAT's ``params`` for a solve with ``remaining`` seconds left."""
    params.num_workers = options.num_workers
    params.random_seed = seed
    params.max_deterministic_time = deterministic_s
    params.max_time_in_seconds = plan.cpsat.wall_s(remaining)
    full = full_search(remaining)
    params.cp_model_presolve = full if options.presolve is None else options.presolve
    if not full:
        params.cp_model_probing_level = 0  # it delays the first decision by a short budget's share
    lns = options.lns
    if lns is None:
        lns = not full and problem.n_requests * problem.n_units >= _LNS_MIN_PAIRS
    if lns:
        params.interleave_search = True
        params.num_workers = _LNS_SUBSOLVERS
        params.use_lns_only = True
        params.symmetry_level = 0
    for key, value in options.cpsat_parameters.items():
        if not hasattr(params, key):
            raise InvalidInputError(f"options.cpsat_parameters.{key}", value,
                                    "a field of OR-Tools' SatParameters")
        try:
            if isinstance(value, list | tuple):  # a repeated field is extended, not assigned
                getattr(params, key).extend(value)
            else:
                setattr(params, key, value)
        except (TypeError, AttributeError, ValueError):
            raise InvalidInputError(f"options.cpsat_parameters.{key}", value,
                                    "a value of that SatParameters field's type") from None


def _cpsat_improve(problem: PrefillWindow | DecodeWindow, fallback: Answer, *, deadline: float,
                   seed: int, hint: np.ndarray | None, options: SolveOptions,
                   plan: BudgetPlan) -> Answer:
    """Run CP-SAT from ``hint`` (default: ``fallback``, the searches' answer) within the
    deadline; the better of CP-SAT's and ``fallback``'s answers is returned."""
    from ortools.sat.python import cp_model

    # the model places whole requests: a chunked request is whole where it fits, else deferred
    start_hint = _taken_whole(problem, fallback) if hint is None else hint
    if not plan.cpsat.builds(deadline - time.perf_counter()):
        return _timeout(fallback, "window too large to build a CP-SAT model in the budget")
    t0 = time.perf_counter()
    try:
        if isinstance(problem, PrefillWindow):
            built = build_prefill_model(problem, hint=start_hint, deadline=deadline)
        else:
            built = build_decode_model(problem, hint=start_hint, deadline=deadline)
    except BuildTimeout:
        return _timeout(fallback, "the budget ran out while building the CP-SAT model")
    build_s = time.perf_counter() - t0
    if built.trivially_infeasible:
        return Answer(fallback.assignment, fallback.chunks, SolveStatus.INFEASIBLE,
                      bound=fallback.bound, message="a guarded request fits no unit",
                      stats={"cpsat": "INFEASIBLE", "cpsat_build_s": build_s},
                      value=fallback.value, analytic_included=fallback.analytic_included)
    remaining = deadline - time.perf_counter()
    if not plan.cpsat.solves(remaining):
        # CP-SAT's load/presolve alone takes milliseconds and cannot be interrupted
        return _timeout(fallback, "too little budget left after building the CP-SAT model",
                        {"cpsat_build_s": build_s})
    solver = cp_model.CpSolver()
    deterministic_s = plan.cpsat_deterministic_s(remaining,
                                                 fallback.stats.get("exchange_work", 0))
    _sat_parameters(solver.parameters, problem, seed=seed, remaining=remaining,
                    deterministic_s=deterministic_s, options=options, plan=plan)
    status = solver.solve(built.model)
    name = solver.status_name(status)
    stats = {"cpsat": name, "cpsat_build_s": build_s, "cpsat_wall_s": solver.wall_time,
             "cpsat_deterministic_time": solver.deterministic_time,
             "cpsat_branches": solver.num_branches, "scale": built.scale}
    for key in _SEARCH_STATS:  # the searches that made the hint
        if key in fallback.stats:
            stats[key] = fallback.stats[key]
    if status == cp_model.INFEASIBLE:
        return Answer(fallback.assignment, fallback.chunks, SolveStatus.INFEASIBLE,
                      bound=fallback.bound, message="CP-SAT proved the guards infeasible",
                      stats=stats, value=fallback.value,
                      analytic_included=fallback.analytic_included)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return _timeout(fallback, f"CP-SAT stopped with {name}", stats)
    bound = built.constant_us + (solver.best_objective_bound - built.slack_ticks) / built.scale
    assignment = read_assignment(solver.response_proto, built, problem.n_requests)
    chunks: dict[int, int] = {}
    if isinstance(problem, PrefillWindow):
        assignment, chunks = chunk_after(problem, assignment)
        if problem.allow_chunking:
            # CP-SAT's proof covers whole-request placement; chunks may beat it.
            bound = -np.inf
    exact = status == cp_model.OPTIMAL and not chunks and np.isfinite(bound)
    value = objective(problem, assignment, chunks)
    answer = Answer(assignment, chunks, SolveStatus.OPTIMAL if exact else SolveStatus.TIMEOUT,
                    bound=max(bound, fallback.bound), stats=stats, value=value,
                    analytic_included=fallback.analytic_included)
    if fallback.status is not SolveStatus.INFEASIBLE and _ranked(fallback) < value:
        answer.assignment, answer.chunks = fallback.assignment, fallback.chunks
        answer.value = fallback.value
        answer.stats["kept"] = "greedy"
    if status == cp_model.OPTIMAL and not exact:
        answer.status = SolveStatus.FEASIBLE
        answer.message = "whole-request placement optimal; chunks added after"
    return answer


def _timeout(fallback: Answer, message: str, stats: dict | None = None) -> Answer:
    infeasible = fallback.status is SolveStatus.INFEASIBLE
    status = SolveStatus.INFEASIBLE if infeasible else SolveStatus.TIMEOUT
    return Answer(fallback.assignment, fallback.chunks, status, bound=fallback.bound,
                  message=message, stats={**fallback.stats, **(stats or {})},
                  value=fallback.value, analytic_included=fallback.analytic_included)


for _backend in (_Greedy(), _CpSat(), _Auto()):
    register(_backend)


def _check_hint(hint: Any, problem: PrefillWindow | DecodeWindow) -> np.ndarray | None:
    if hint is None:
        return None
    array = np.asarray(hint)
    if array.shape != (problem.n_requests,) or array.dtype.kind not in "iu":
        raise InvalidInputError("hint", hint, f"{problem.n_requests} unit indices (-1: deferred)")
    if ((array < -1) | (array >= problem.n_units)).any():
        raise InvalidInputError("hint", hint, f"unit indices in [-1, {problem.n_units})")
    return array.astype(np.int64)


def solve(
    problem: PrefillWindow | DecodeWindow,
    *,
    method: str = "auto",
    time_limit_s: float = 0.05,
    seed: int | np.random.Generator | None = 0,
    hint: Any = None,
    options: SolveOptions | Mapping[str, Any] | None = None,
) -> SolveResult:
    """Solve one window with ``method`` within ``time_limit_s``.

    Parameters
    ----------
    problem : PrefillWindow or DecodeWindow
    method : {"auto", "greedy", "cpsat"} or a registered name
        ``greedy``: PBAA/LPT water-filling (prefill) or IQR-lex (decode), microseconds.
        ``cpsat``: OR-Tools CP-SAT, hinted with the greedy improved by the searches.
        ``auto``: the same, stopping at the first answer its bound proves optimal.
    time_limit_s : float
        Budget for the whole call (model building included), shared as
        :func:`~sbsopt.window.budget.plan_budget` plans.
    seed : int, Generator or None
        CP-SAT's and ruin and recreate's seed; the greedy is deterministic.
    hint : array of int, optional
        A starting assignment for CP-SAT (unit per request, -1 deferred).
    options : SolveOptions or mapping, optional
        :class:`~sbsopt.window.SolveOptions`, or a mapping of its field names.

    Returns
    -------
    SolveResult
        Objective (microseconds), the best proven bound (analytic; for ``cpsat``/``auto`` also
        step split, LP, host and CP-SAT), gap, status.

    Raises
    ------
    InvalidInputError
        For a bad argument, an unknown option or an option's bad value (naming it).
    BackendUnavailableError
        When ``method``'s dependencies are not installed.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([30, 20, 20, 10], [0] * 4, [0.0] * 4,
    ...                               capacity_tokens=[64, 64], coefficients=c)
    >>> r = solve(w, method="greedy")
    >>> r.status.name, r.objective, r.bound, r.assignment.tolist()
    ('OPTIMAL', 40.0, 40.0, [0, 1, 1, 0])
    """
    collecting = gc.isenabled()
    if collecting:
        gc.disable()  # a full collection of a large heap takes tens of ms
    try:
        return _solve(problem, method, time_limit_s, seed, hint, options)
    finally:
        if collecting:
            gc.enable()


def _solve(problem: PrefillWindow | DecodeWindow, method: str, time_limit_s: float,
           seed: int | np.random.Generator | None, hint: Any,
           options: SolveOptions | Mapping[str, Any] | None) -> SolveResult:
    start = time.perf_counter()
    if not isinstance(problem, _WINDOWS):
        raise InvalidInputError("problem", problem, "a PrefillWindow or a DecodeWindow")
    backend = BACKENDS.get(method) if isinstance(method, str) else None
    if backend is None or problem.phase not in backend.phases:
        raise InvalidInputError("method", method, f"one of {sorted(BACKENDS)}")
    if not backend.is_available():
        from sbsopt.errors import BackendUnavailableError

        raise BackendUnavailableError(f"method {method!r} is not available here")
    if type(time_limit_s) is float and 0.0 < time_limit_s < math.inf:
        budget = time_limit_s  # the common case, checked without the general validator
    else:
        budget = check_positive_time_limit("time_limit_s", time_limit_s)
    checked = as_options(options)
    plan = plan_budget(problem, method, budget, checked)
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**31 - 1:
        int_seed = seed  # the common case, without building a Generator to validate it
    else:
        int_seed = as_int_seed(seed)
    answer = backend.run(problem, deadline=start + plan.backend_s, seed=int_seed,
                         hint=_check_hint(hint, problem), options=checked, plan=plan)
    value = answer.value
    if value is None:
        value = objective(problem, answer.assignment, answer.chunks)
    bound = answer.bound if answer.analytic_included else max(answer.bound, analytic_bound(problem))
    end = start + budget
    if plan.split_bound.due(end - time.perf_counter()):
        bound = max(bound, split_bound(problem))
    # the host bound before the LP: cheaper, stronger on the windows it applies to
    if (plan.host_bound.run and value > bound * (1 + 1e-12)
            and answer.status is not SolveStatus.INFEASIBLE):
        left = end - time.perf_counter()
        if plan.host_bound.due(left):
            bound = max(bound, host_bound(problem, value,
                                          time_limit_s=plan.host_bound.time_limit_s(left)))
    if plan.lp_bound.run and answer.status is not SolveStatus.INFEASIBLE:
        left = end - time.perf_counter()
        if plan.lp_bound.due(left):
            bound = max(bound, lp_bound(problem, time_limit_s=plan.lp_bound.time_limit_s(left)))
    status = answer.status
    if status in (SolveStatus.FEASIBLE, SolveStatus.TIMEOUT) and value <= bound * (1 + 1e-12):
        status = SolveStatus.OPTIMAL  # the bound proves it
    deferred = (answer.assignment < 0).nonzero()[0]
    return SolveResult(
        assignment=answer.assignment, deferred=deferred, chunks=answer.chunks, status=status,
        objective=value, bound=bound,
        gap=relative_gap(value, bound) if status is not SolveStatus.INFEASIBLE else float("nan"),
        method=method, wall_time_s=time.perf_counter() - start, message=answer.message,
        stats=answer.stats,
    )
