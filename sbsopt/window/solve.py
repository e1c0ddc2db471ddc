"""One entry point, :func:`solve`, over a registry of backends.

Backends (``greedy``, ``cpsat``, ``auto``) follow :class:`Backend`: a name, the phases they
handle, ``is_available()`` and ``run()``. :func:`register` adds one and refuses duplicates.

CP-SAT determinism: one search worker (``num_workers=1``) and a fixed ``random_seed`` make the
search reproducible; presolve is off when less than 0.5 s remains (option ``presolve``),
because it can outlast a window's budget and yields no solution until it ends; the stop rule is the deterministic time ``max_deterministic_time`` (equal
to the remaining budget in seconds, CP-SAT's "deterministic seconds"), with the wall clock
``max_time_in_seconds`` as a hard cap. Model building counts against the budget: it checks the
clock between phases and falls back to the greedy answer (status ``TIMEOUT``) when the budget
is gone; a window is not handed to CP-SAT at all when its pair count makes building alone
likely to exceed the budget (about 8 microseconds per request-unit pair), nor when less than
8 ms is left after building (CP-SAT's load and presolve are not interruptible); CP-SAT's wall
limit is the remaining budget minus 3 ms for its stop latency. Measured overshoot beyond the
budget: a few milliseconds on an idle machine, up to about 15 ms on a loaded one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from sbsopt._seed import as_int_seed
from sbsopt._validate import check_int, check_positive_time_limit
from sbsopt.errors import InvalidInputError
from sbsopt.window import _kernels
from sbsopt.window.bounds import analytic_bound, lp_bound
from sbsopt.window.decode import build_decode_model
from sbsopt.window.greedy import greedy_decode, greedy_prefill
from sbsopt.window.objective import objective
from sbsopt.window.prefill import BuildTimeout, build_prefill_model, read_assignment
from sbsopt.window.problem import DecodeWindow, PrefillWindow
from sbsopt.window.result import SolveResult, SolveStatus, relative_gap

__all__ = ["Backend", "Answer", "BACKENDS", "register", "available_methods", "solve"]

_PAIR_BUILD_S = 8e-6
_MIN_SOLVE_S = 0.008
_LP_PAIR_S = 10e-6
_STOP_LATENCY_S = 0.003


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


class Backend(Protocol):
    """A window solver."""

    name: ClassVar[str]
    phases: ClassVar[frozenset[str]]

    def is_available(self) -> bool: ...

    def run(self, problem: PrefillWindow | DecodeWindow, *, deadline: float, seed: int,
            hint: np.ndarray | None, options: dict[str, Any]) -> Answer: ...


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


def _greedy_answer(problem: PrefillWindow | DecodeWindow, options: dict[str, Any]) -> Answer:
    if isinstance(problem, PrefillWindow):
        rounds = check_int("options.local_search", options.get("local_search", 0))
        assignment, chunks, value, variant = greedy_prefill(problem, local_search=rounds)
        missed = problem.guarded & (assignment < 0)
        if missed.any():
            return Answer(assignment, chunks, SolveStatus.INFEASIBLE,
                          message=f"guarded requests not placed: {np.flatnonzero(missed).tolist()}",
                          stats={"variant": variant}, value=value)
    else:
        assignment, chunks, value, variant = greedy_decode(problem)
    return Answer(assignment, chunks, SolveStatus.FEASIBLE, stats={"variant": variant},
                  value=value)


class _Greedy:
    name = "greedy"
    phases = frozenset({"prefill", "decode"})

    def is_available(self) -> bool:
        return True

    def run(self, problem, *, deadline, seed, hint, options):
        return _greedy_answer(problem, options)


def _chunk_after(problem: PrefillWindow, assignment: np.ndarray) -> tuple[np.ndarray, dict]:
    """Apply the greedy chunk post-pass to an exact whole-request assignment."""
    if not problem.allow_chunking or not (assignment < 0).any():
        return assignment, {}
    placed = assignment >= 0
    room = problem.room_tokens - np.bincount(
        assignment[placed], weights=problem.new_tokens[placed], minlength=problem.n_units
    ).astype(np.int64)
    free = problem.free_kv_blocks - np.bincount(
        assignment[placed], weights=problem.kv_blocks[placed], minlength=problem.n_units
    ).astype(np.int64)
    unit_time = problem.residual_us + np.bincount(
        assignment[placed], weights=problem.cost_us[placed], minlength=problem.n_units
    )
    inst_max = np.full(problem.n_instances, -np.inf)
    np.maximum.at(inst_max, problem.instance, unit_time)
    order = np.lexsort((-problem.cost_us, problem.arrival_s, ~problem.guarded))
    c = problem.coefficients
    chunk_unit, chunk_tokens = _kernels.chunk_fill(
        order[assignment[order] < 0], problem.new_tokens, problem.cached_tokens,
        problem.kv_blocks, problem.penalty_us, room, free, unit_time, problem.instance,
        inst_max, float(c.alpha_us_per_token), float(c.beta_us_per_pair),
        float(c.gamma_us_per_request), problem.min_chunk_tokens,
    )
    idx = np.flatnonzero(chunk_unit >= 0)
    assignment = assignment.copy()
    assignment[idx] = chunk_unit[idx]
    return assignment, dict(zip(idx.tolist(), chunk_tokens[idx].tolist(), strict=True))


class _CpSat:
    name = "cpsat"
    phases = frozenset({"prefill", "decode"})

    def is_available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("ortools") is not None

    def run(self, problem, *, deadline, seed, hint, options):
        from ortools.sat.python import cp_model

        fallback = _greedy_answer(problem, options)
        start_hint = fallback.assignment if hint is None else hint
        if hint is None and fallback.chunks:
            # the model places whole requests: a chunked request is deferred in the hint
            start_hint = start_hint.copy()
            start_hint[list(fallback.chunks)] = -1
        pairs = problem.n_requests * problem.n_units
        if time.perf_counter() + pairs * _PAIR_BUILD_S > deadline:
            return _timeout(fallback, "window too large to build a CP-SAT model in the budget")
        try:
            if isinstance(problem, PrefillWindow):
                built = build_prefill_model(problem, hint=start_hint, deadline=deadline)
            else:
                built = build_decode_model(problem, hint=start_hint, deadline=deadline)
        except BuildTimeout:
            return _timeout(fallback, "the budget ran out while building the CP-SAT model")
        if built.trivially_infeasible:
            return Answer(fallback.assignment, fallback.chunks, SolveStatus.INFEASIBLE,
                          message="a guarded request fits no unit", stats={"cpsat": "INFEASIBLE"})
        remaining = deadline - time.perf_counter()
        if remaining < _MIN_SOLVE_S:
            # CP-SAT's load/presolve alone takes milliseconds and cannot be interrupted
            return _timeout(fallback, "too little budget left after building the CP-SAT model")
        solver = cp_model.CpSolver()
        params = solver.parameters
        params.num_workers = check_int("options.num_workers", options.get("num_workers", 1),
                                       minimum=1)
        params.random_seed = seed
        params.max_deterministic_time = float(options.get("deterministic_time_s", remaining))
        params.max_time_in_seconds = remaining - _STOP_LATENCY_S
        # presolve alone can take longer than a window's budget and returns nothing until it
        # ends; below half a second the search starts from the hint at once
        params.cp_model_presolve = bool(options.get("presolve", remaining > 0.5))
        status = solver.solve(built.model)
        name = solver.status_name(status)
        stats = {"cpsat": name, "cpsat_wall_s": solver.wall_time,
                 "cpsat_deterministic_time": solver.deterministic_time,
                 "cpsat_branches": solver.num_branches, "scale": built.scale}
        if status == cp_model.INFEASIBLE:
            return Answer(fallback.assignment, fallback.chunks, SolveStatus.INFEASIBLE,
                          message="CP-SAT proved the guards infeasible", stats=stats)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return _timeout(fallback, f"CP-SAT stopped with {name}", stats)
        bound = built.constant_us + (solver.best_objective_bound - built.slack_ticks) / built.scale
        assignment = read_assignment(solver, built, problem.n_requests)
        chunks: dict[int, int] = {}
        if isinstance(problem, PrefillWindow):
            assignment, chunks = _chunk_after(problem, assignment)
            if problem.allow_chunking:
                # CP-SAT's proof covers whole-request placement; chunks may beat it.
                bound = -np.inf
        exact = status == cp_model.OPTIMAL and not chunks and np.isfinite(bound)
        answer = Answer(assignment, chunks, SolveStatus.OPTIMAL if exact else SolveStatus.TIMEOUT,
                        bound=bound, stats=stats)
        if fallback.status is not SolveStatus.INFEASIBLE and objective(
            problem, fallback.assignment, fallback.chunks
        ) < objective(problem, assignment, chunks):
            answer.assignment, answer.chunks = fallback.assignment, fallback.chunks
            answer.stats["kept"] = "greedy"
        if status == cp_model.OPTIMAL and not exact:
            answer.status = SolveStatus.FEASIBLE
            answer.message = "whole-request placement optimal; chunks added after"
        return answer


class _Auto:
    name = "auto"
    phases = frozenset({"prefill", "decode"})

    def is_available(self) -> bool:
        return BACKENDS["cpsat"].is_available()

    def run(self, problem, *, deadline, seed, hint, options):
        first = _greedy_answer(problem, options)
        if first.status is SolveStatus.FEASIBLE:
            if first.value <= analytic_bound(problem) * (1 + 1e-12):
                first.stats["stage"] = "greedy"
                return first
        answer = BACKENDS["cpsat"].run(problem, deadline=deadline, seed=seed,
                                       hint=first.assignment if hint is None else hint,
                                       options=options)
        answer.stats["stage"] = "cpsat"
        return answer


def _timeout(fallback: Answer, message: str, stats: dict | None = None) -> Answer:
    status = SolveStatus.INFEASIBLE if fallback.status is SolveStatus.INFEASIBLE else SolveStatus.TIMEOUT
    return Answer(fallback.assignment, fallback.chunks, status, message=message,
                  stats={**fallback.stats, **(stats or {})}, value=fallback.value)


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
    options: dict[str, Any] | None = None,
) -> SolveResult:
    """Solve one window with ``method`` within ``time_limit_s``.

    Parameters
    ----------
    problem : PrefillWindow or DecodeWindow
    method : {"auto", "greedy", "cpsat"} or a registered name
        ``greedy``: PBAA/LPT water-filling (prefill) or IQR-lex (decode), microseconds.
        ``cpsat``: OR-Tools CP-SAT, hinted with the greedy, deterministic.
        ``auto``: greedy, then CP-SAT on the remaining budget unless the greedy meets its bound.
    time_limit_s : float
        Budget for the whole call (model building included); see the module docstring.
    seed : int, Generator or None
        CP-SAT's ``random_seed``; the greedy is deterministic.
    hint : array of int, optional
        A starting assignment for CP-SAT (unit per request, -1 deferred).
    options : dict, optional
        ``local_search`` (int, move/swap changes after the greedy, default 0), ``lp_bound``
        (bool: True adds the LP relaxation to the bound whatever it costs; by default
        ``cpsat``/``auto`` add it only within the remaining budget and ``greedy`` never),
        ``num_workers`` (CP-SAT, default 1), ``deterministic_time_s``, ``presolve`` (bool).

    Returns
    -------
    SolveResult
        Objective (microseconds), the best proven bound (analytic, LP, CP-SAT), gap, status.

    Examples
    --------
    >>> from types import SimpleNamespace as C
    >>> c = C(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0, gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([30, 20, 20, 10], [0] * 4, [0.0] * 4,
    ...                               capacity_tokens=[64, 64], coefficients=c)
    >>> r = solve(w, method="greedy")
    >>> r.status.name, r.objective, r.bound, r.assignment.tolist()
    ('OPTIMAL', 40.0, 40.0, [0, 1, 1, 0])
    """
    start = time.perf_counter()
    if not isinstance(problem, PrefillWindow | DecodeWindow):
        raise InvalidInputError("problem", problem, "a PrefillWindow or a DecodeWindow")
    backend = BACKENDS.get(method) if isinstance(method, str) else None
    if backend is None or problem.phase not in backend.phases:
        raise InvalidInputError("method", method, f"one of {sorted(BACKENDS)}")
    if not backend.is_available():
        from sbsopt.errors import BackendUnavailableError

        raise BackendUnavailableError(f"method {method!r} is not available here")
    budget = check_positive_time_limit("time_limit_s", time_limit_s)
    options = dict(options or {})
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**31 - 1:
        int_seed = seed  # the common case, without building a Generator to validate it
    else:
        int_seed = as_int_seed(seed)
    answer = backend.run(problem, deadline=start + budget, seed=int_seed,
                         hint=_check_hint(hint, problem), options=options)
    value = answer.value
    if value is None:
        value = objective(problem, answer.assignment, answer.chunks)
    bound = max(answer.bound, analytic_bound(problem))
    if options.get("lp_bound", method != "greedy") and answer.status is not SolveStatus.INFEASIBLE:
        # the LP runs only inside what is left of the budget (unless asked for explicitly)
        left = None if options.get("lp_bound") else start + budget - time.perf_counter()
        # building the LP in Python is the slow part and cannot be interrupted: keep a margin
        if left is None or left > 3 * _LP_PAIR_S * problem.n_requests * problem.n_units + 0.005:
            bound = max(bound, lp_bound(problem, time_limit_s=left))
    status = answer.status
    if status in (SolveStatus.FEASIBLE, SolveStatus.TIMEOUT) and value <= bound * (1 + 1e-12):
        status = SolveStatus.OPTIMAL  # the bound proves it
    deferred = np.flatnonzero(answer.assignment < 0)
    return SolveResult(
        assignment=answer.assignment, deferred=deferred, chunks=answer.chunks, status=status,
        objective=value, bound=bound,
        gap=relative_gap(value, bound) if status is not SolveStatus.INFEASIBLE else float("nan"),
        method=method, wall_time_s=time.perf_counter() - start, message=answer.message,
        stats=answer.stats,
    )
