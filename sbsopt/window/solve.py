"""One entry point, :func:`solve`, over a registry of backends.

Backends (``greedy``, ``cpsat``, ``auto``) follow :class:`Backend`: a name, the phases they
handle, ``is_available()`` and ``run()``. :func:`register` adds one and refuses duplicates.

CP-SAT starts from the better of the plain greedy and the greedy with 1000 local-search rounds
(``_HINT_LOCAL_SEARCH``, run when the budget holds ``_HINT_PAIR_S`` per request-unit pair, and
on whole-request windows ``_HINT_WHOLE_PAIR_REQUEST_S`` per pair and request; the option
``local_search`` overrides it), improved on a window with more tokens or KV blocks than
room by ruin and recreate (``greedy.ruin_recreate``; ``_RUIN_SHARE`` of the budget, sized in
iterations; the option ``ruin_recreate`` overrides it) and then the exchange search
(``greedy.exchange_search``: up to two requests of a unit for up to two of another or of the
deferred ones; ``_EXCHANGE_SHARE`` of the budget, sized in work; the option ``exchange``
overrides it), given as a complete hint, and returns whichever of that start and its own
answer is better, that answer searched once more by exchanges within ``_POLISH_SHARE`` of the
budget kept from CP-SAT. Determinism: one search
thread and a fixed ``random_seed``; presolve is off when less than 0.5 s remains (option
``presolve``), because it can outlast a window's budget and yields no solution until it ends;
the stop rule is the deterministic time ``max_deterministic_time`` (equal to the remaining
budget in seconds, CP-SAT's "deterministic seconds"; after ruin and recreate and the exchange
search, the budget less the slowest time their iterations and work can take and the polish's
share), with the wall clock ``max_time_in_seconds`` as a
hard cap. Deterministic seconds pass slower than wall seconds (0.9 of them on a 128 x 16
window here), so when the search runs to the cap the answer can differ between runs; the
option ``deterministic_time_s`` set below the budget makes it repeat.

:func:`solve` pauses Python's cyclic garbage collector for its duration (and restores it): in
a process with a large heap (the benchmarks': 174k tracked objects, the traces, OR-Tools and
Numba) a full collection takes 67-70 ms, and one that fell inside a timed solve overran a
50 ms budget by 20-40 ms. The call's own garbage is collected after it, at the next
threshold. Search mode (option ``lns``): below 0.5 s and from
``_LNS_MIN_PAIRS`` request-unit pairs, CP-SAT runs only neighbourhood search from the hint
(``_LNS_SUBSOLVERS`` LNS subsolvers interleaved in one thread, no symmetry detection),
because the full search spends a 50 ms budget on its start-up and first LP; it proves nothing
then (status ``TIMEOUT`` unless the bound of :func:`solve` is met). Below 0.5 s root probing is
off in both modes. Extra
``SatParameters`` fields pass through the option ``cpsat_parameters`` (a dict). Model building
counts against the budget: it checks the clock between phases and falls back to the greedy
answer (status ``TIMEOUT``) when the budget is gone; a window is not handed to CP-SAT at all
when its pair count makes building alone likely to exceed the budget (about 2 microseconds
per request-unit pair; measured 0.6-1.2 from 128 x 16 to 1024 x 64), nor when less than 8 ms is
left after building (CP-SAT's load and presolve are not interruptible); CP-SAT's wall limit is
the remaining budget minus its stop latency (4 ms + 1.2 us per pair, and above 0.5 s, where
it runs its full search, 2% of the budget more; the host and LP bounds after it keep 4 ms). On
a one-instance prefill window where an answer at the analytic bound shows long requests
(:mod:`sbsopt.window.host_bound`), ``cpsat``/``auto`` keep the host bound's time out of the
budget when that is at most ``_HOST_MOST_SHARE`` of it and CP-SAT would take it. When the
budget cannot hold a CP-SAT model, ruin and recreate and the exchange search may take
``_RUIN_ALONE_SHARE`` of it; otherwise they share what CP-SAT's least time and the polish
leave. Measured after :func:`~sbsopt.window.warm_up` (``benchmarks/budget.py``, 864 solves
up to 1024 x 64, idle machine): the latest 0.45 and 1.26 ms early in two runs (two rounds
before, three runs: one solve in 2,592 returned late, by 1.3 ms, and 14-19 ms early when
repeated, the machine's preemption).
With 3 ms, three runs of five had one solve 0.4-0.9 ms late; with 4 ms but the LP bound given
all that was left, decode ``auto`` was up to 2.0 ms late under a 200 ms budget. Without
``warm_up``, the first call of each Numba kernel in a process loads it, 5-15 ms inside the
budget.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from sbsopt._seed import as_int_seed
from sbsopt._validate import check_int, check_positive_time_limit
from sbsopt.errors import InvalidInputError
from sbsopt.window.bounds import analytic_bound, lp_bound, split_bound
from sbsopt.window.decode import build_decode_model
from sbsopt.window.greedy import (
    EXCHANGE_WORK_S,
    chunk_after,
    exchange_search,
    greedy_decode,
    greedy_prefill,
    ruin_iteration_s,
    ruin_recreate,
)
from sbsopt.window.host_bound import host_bound, long_requests
from sbsopt.window.objective import objective
from sbsopt.window.prefill import BuildTimeout, build_prefill_model, read_assignment
from sbsopt.window.problem import DecodeWindow, PrefillWindow
from sbsopt.window.result import SolveResult, SolveStatus, relative_gap

__all__ = ["Backend", "Answer", "BACKENDS", "register", "available_methods", "solve"]

_PAIR_BUILD_S = 2e-6
_MIN_SOLVE_S = 0.008
_LP_PAIR_S = 10e-6
#: Time the host bound takes, fixed and per request, whole-request and with chunking (above
#: the most measured on the benchmark's windows, given the greedy's answer or its analytic
#: bound: whole-request 2.4 / 3.0 / 3.8 ms at 64 x 8 / 128 x 16 / 256 x 32, with chunking
#: 9.5 / 23 / 47 ms). ``cpsat``/``auto`` keep that much of the budget (and the stop latency)
#: for it when an answer at the analytic bound shows long requests, CP-SAT would otherwise
#: take the time, and that is at most ``_HOST_MOST_SHARE`` of the budget: at 128 x 16 with
#: chunking, 30 ms of 50 (README cut: proven within 1% in the budget on 12 windows of 12,
#: against 8 with a quarter; its worst gap against the best bound known 0.96% against 0.89%,
#: as CP-SAT then no longer fits and the searches take the rest).
_HOST_FIXED_S = (2.1e-3, 0.0)
_HOST_REQUEST_S = (8e-6, 200e-6)
_HOST_MOST_SHARE = 0.6
_STOP_LATENCY_S = 0.004
#: Above 0.5 s CP-SAT runs its full search (presolve, LP at the nodes), which stops later past
#: its wall limit (measured at 128 x 16: up to 4.7 ms at 0.6 s, 22.7 ms at 2 s; solves 3-11 ms
#: late): its limit is also this share of the budget earlier.
_FULL_SEARCH_STOP_SHARE = 0.02
_WINDOWS = (PrefillWindow, DecodeWindow)
#: The step-split bound is added when 1 ms plus this much per request of budget is left
#: (measured at most 0.37 ms at 128 x 16, 0.94 ms at 256 x 32, 2.9 ms at 1024 x 64, on the
#: Mooncake and heavy-tailed windows; 0.05-0.6 ms on the Azure ones).
_SPLIT_REQUEST_S = 4e-6
#: CP-SAT's wall time under a 1 ms limit (loading the model, accepting the hint) grows with
#: it: measured 0.6-1.1 microseconds per request-unit pair from 128 x 16 to 1024 x 64.
_STOP_PAIR_S = 1.2e-6
#: Local-search rounds of the greedy that hints CP-SAT (``local_search`` overrides).
_HINT_LOCAL_SEARCH = 1000
#: Budget per request-unit pair needed before that search runs (measured 40 ns per pair for
#: 1000 rounds: 0.67 ms at 512 x 32, 2.6 ms at 1024 x 64 on adversarial windows), and on
#: whole-request windows this much per pair and request: there the exchanges with the
#: deferred requests grow with their number (measured at most 62, 227, 804 and 1,417 ns per
#: pair from 128 x 16 to 1024 x 64, on the Azure and Mooncake windows: 93 ms at 1024 x 64,
#: which overran a 50 ms budget when only the per-pair time was allowed; fewer rounds do not
#: help, 30 rounds took a third of that).
_HINT_PAIR_S = 60e-9
_HINT_WHOLE_PAIR_REQUEST_S = 2e-9
#: From this many request-unit pairs, a budget under 0.5 s runs CP-SAT as neighbourhood search.
_LNS_MIN_PAIRS = 1024
#: Interleaved LNS subsolvers (one thread, deterministic interleaving).
_LNS_SUBSOLVERS = 2
#: Ruin and recreate before CP-SAT on a capacity-bound prefill window (option
#: ``ruin_recreate`` overrides): the share of the budget it may take, which with the slowest
#: iteration time (``greedy.ruin_iteration_s``) sets its iteration count
#: from the budget (so that the answer does not depend on the clock unless the machine is
#: slower than that), and a cap (more did not help: it has converged by then). Followed by the
#: exchange search, 0.3 did better than 0.6 (README cut, 128 x 16, 50 ms: worst gap against
#: the best known bound 0.79 / 0.89% whole-request / with chunking, against 0.92 / 0.97%) and
#: than 0.14 (0.97 / 0.98%); without it, 2.23 / 1.73%.
_RUIN_SHARE = 0.3
#: The share it and the exchange search take together (split by their shares) when the
#: budget cannot hold a CP-SAT model (a 1024 x 64 window in 50 ms): they are then the only
#: search.
_RUIN_ALONE_SHARE = 0.8
_RUIN_MAX_ITERATIONS = 20_000
#: The exchange search (``greedy.exchange_search``) after ruin and recreate on a prefill window
#: that fills ``_EXCHANGE_MIN_FILL`` of its room, and again on CP-SAT's answer (option
#: ``exchange``, its work each time, overrides): the share of the budget its work may take (sized with the slowest
#: time per unit of work, ``greedy.EXCHANGE_WORK_S``, so that the answer does not depend on
#: the clock), and the share kept after CP-SAT for the second run.
_EXCHANGE_SHARE = 0.3
_POLISH_SHARE = 0.1
#: The least share of the room (tokens or KV blocks) a window's requests fill for the
#: exchange search to run by default: there units end full and their packing decides the
#: step (a 64 x 8 window at 0.99: -1.07% from the greedy answer; on windows at half their
#: room it gained at most 0.03% and took 10-20 ms at 128 x 16, where CP-SAT alone is within
#: 0.02%).
_EXCHANGE_MIN_FILL = 0.9
#: After the exchange search, CP-SAT runs only when its least time (building, loading,
#: stopping: ``_cpsat_reserve``) is at most this share of the budget; else the searches take
#: ``_RUIN_ALONE_SHARE`` of it. Measured on the 5 capacity-bound whole-request windows of
#: 256 x 32 in 50 ms (CP-SAT's least time 38 ms): gap 0.48-0.87% against 0.69-1.37% with
#: CP-SAT after searches that the model's time left at 7 ms.
_CPSAT_MOST_SHARE = 0.5
_SEARCHES_INSTEAD = ("window too large for CP-SAT in the budget (its least time over half of "
                     "it): ruin and recreate and the exchange search took it")
#: The polish ends this long before the deadline: the search reads the clock every 0.05 ms
#: or so of work, then the answer's objective is computed.
_POLISH_MARGIN_S = 0.0005
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
        rounds = options.get("local_search", 0)
        if type(rounds) is not int or rounds != 0:  # the default skips the check: hot path
            rounds = check_int("options.local_search", rounds)
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
    name = "greedy"
    phases = frozenset({"prefill", "decode"})

    def is_available(self) -> bool:
        return True

    def run(self, problem, *, deadline, seed, hint, options):
        return _search(problem, _greedy_answer(problem, options), options, seed=seed,
                       deadline=deadline)


class _CpSat:
    name = "cpsat"
    phases = frozenset({"prefill", "decode"})

    def is_available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("ortools") is not None

    def run(self, problem, *, deadline, seed, hint, options):
        left = deadline - time.perf_counter()
        fallback = _greedy_start(problem, options, deadline)
        fallback = _search(problem, fallback, options, seed=seed,
                           deadline=_search_deadline(problem, deadline, left, options))
        if _searches_instead(problem, options, left):
            return _timeout(fallback, _SEARCHES_INSTEAD)
        polish = _polish_reserve(problem, options, left)
        answer = _cpsat_improve(problem, fallback, deadline=deadline - polish, seed=seed,
                                hint=hint, options=_after_search(problem, options, left, fallback))
        return _polish(problem, answer, options, deadline=deadline)


class _Auto:
    name = "auto"
    phases = frozenset({"prefill", "decode"})

    def is_available(self) -> bool:
        return BACKENDS["cpsat"].is_available()

    def run(self, problem, *, deadline, seed, hint, options):
        left = deadline - time.perf_counter()
        first = _greedy_start(problem, options, deadline)
        if _meets_bound(first):
            first.stats["stage"] = "greedy"
            return first
        first = _search(problem, first, options, seed=seed,
                        deadline=_search_deadline(problem, deadline, left, options))
        if _meets_bound(first) or _searches_instead(problem, options, left):
            first.stats["stage"] = "search"
            return first if _meets_bound(first) else _timeout(first, _SEARCHES_INSTEAD)
        polish = _polish_reserve(problem, options, left)
        answer = _cpsat_improve(problem, first, deadline=deadline - polish, seed=seed,
                                hint=hint, options=_after_search(problem, options, left, first))
        kept = answer.stats.get("kept") == "greedy"
        answer.stats["stage"] = ("cpsat" if not kept else
                                 "search" if first.stats.get("variant") in _SEARCH_VARIANTS
                                 else "greedy")
        return _polish(problem, answer, options, deadline=deadline)


def _meets_bound(answer: Answer) -> bool:
    """A feasible answer whose objective its own bound already proves optimal."""
    return answer.status is SolveStatus.FEASIBLE and answer.value <= answer.bound * (1 + 1e-12)


def _host_time(problem: PrefillWindow) -> float:
    """Time the host bound may take on ``problem``, its stop latency included (seconds)."""
    chunking = int(problem.allow_chunking)
    return (_HOST_FIXED_S[chunking] + _HOST_REQUEST_S[chunking] * problem.n_requests
            + _STOP_LATENCY_S)


def _host_reserve(problem: PrefillWindow | DecodeWindow, budget: float,
                  options: dict[str, Any]) -> float:
    """Budget kept after ``cpsat``/``auto`` for the host bound: on a one-instance prefill
    window with long requests given an answer as good as the greedy's analytic bound (the
    most any answer shows), when its time is at most ``_HOST_MOST_SHARE`` of the budget and
    CP-SAT would take it (where CP-SAT does not run, the searches leave ``1 -
    _RUIN_ALONE_SHARE`` of the budget, enough for it whole-request); else 0 (from the budget,
    not the clock, so that the answer repeats)."""
    if (not options.get("host_bound", True) or not isinstance(problem, PrefillWindow)
            or problem.n_instances != 1 or problem.n_requests < 2):
        return 0.0
    need = _host_time(problem)
    searched = bool(options.get("exchange", _fill(problem) >= _EXCHANGE_MIN_FILL))
    if (need > _HOST_MOST_SHARE * budget or (not _cpsat_fits(problem, budget, searched)
                                             and need <= (1 - _RUIN_ALONE_SHARE) * budget)):
        return 0.0
    start = greedy_prefill(problem)  # microseconds, with the analytic bound
    if start.unplaced_guarded:
        return 0.0
    # the better the answer, the more requests are long: at the bound, the most there can be
    return need if long_requests(problem, start.bound).size >= 2 else 0.0


def _greedy_start(problem: PrefillWindow | DecodeWindow, options: dict[str, Any],
                  deadline: float) -> Answer:
    """The greedy answer CP-SAT starts from: without an explicit ``local_search`` option, the
    better of the plain greedy and the greedy with ``_HINT_LOCAL_SEARCH`` rounds of local
    search (which balances whole requests and can leave less room for chunks), the latter
    only when the budget has room for it (``_HINT_PAIR_S`` per request-unit pair, more on
    whole-request windows)."""
    if "local_search" in options or not isinstance(problem, PrefillWindow):
        return _greedy_answer(problem, options)
    plain = _greedy_answer(problem, options)
    per_pair = _HINT_PAIR_S
    if not problem.allow_chunking:
        per_pair = max(per_pair, _HINT_WHOLE_PAIR_REQUEST_S * problem.n_requests)
    if time.perf_counter() + per_pair * problem.n_requests * problem.n_units > deadline:
        plain.stats["hint_local_search"] = 0
        return plain
    searched = _greedy_answer(problem, {**options, "local_search": _HINT_LOCAL_SEARCH})
    if plain.status is SolveStatus.INFEASIBLE or searched.status is SolveStatus.INFEASIBLE:
        return searched if plain.status is SolveStatus.INFEASIBLE else plain
    return plain if plain.value < searched.value else searched


def _cpsat_reserve(problem: PrefillWindow | DecodeWindow) -> float:
    """Seconds CP-SAT needs at least: building the model, its shortest solve, its stop."""
    pairs = problem.n_requests * problem.n_units
    return pairs * (_PAIR_BUILD_S + _STOP_PAIR_S) + _MIN_SOLVE_S + _STOP_LATENCY_S


def _fill(problem: PrefillWindow) -> float:
    """The larger share of the units' room the requests take, in tokens or in KV blocks
    (above 1: some requests must wait; ``inf`` when an empty room is asked for anything)."""
    def share(need: float, room: float) -> float:
        return need / room if room > 0 else (np.inf if need > 0 else 0.0)

    return max(share(float(problem.new_tokens.sum()), float(problem.room_tokens.sum())),
               share(problem.kv_blocks.sum(dtype=np.float64),
                     problem.free_kv_blocks.sum(dtype=np.float64)))


def _search_sizes(problem: PrefillWindow | DecodeWindow, budget: float) -> tuple[int, int]:
    """Default ruin-and-recreate iterations and exchange-search work of ``cpsat``/``auto``:
    ruin and recreate on a capacity-bound prefill window, the exchange search on one whose
    requests fill ``_EXCHANGE_MIN_FILL`` of the room; each up to its share of the budget at
    its slowest rate, together within what CP-SAT and the polish leave (split by their
    shares), or ``_RUIN_ALONE_SHARE`` of it when the budget cannot hold a CP-SAT model."""
    if not isinstance(problem, PrefillWindow) or problem.n_requests == 0:
        return 0, 0
    fill = _fill(problem)
    ruin = _RUIN_SHARE if fill > 1.0 else 0.0  # more tokens or KV blocks than room
    exchange = _EXCHANGE_SHARE if fill >= _EXCHANGE_MIN_FILL else 0.0
    if not ruin and not exchange:
        return 0, 0
    if _cpsat_fits(problem, budget, exchange > 0):
        spare = budget - _cpsat_reserve(problem) - (_POLISH_SHARE * budget if exchange else 0.0)
        ruin_s = min(ruin * budget, spare * ruin / (ruin + exchange))
        exchange_s = min(exchange * budget, spare - ruin_s) if exchange else 0.0
    else:  # the searches are all there is
        ruin_s = _RUIN_ALONE_SHARE * budget * ruin / (ruin + exchange)
        exchange_s = _RUIN_ALONE_SHARE * budget - ruin_s if exchange else 0.0
    iterations = int(min(max(ruin_s, 0.0) / ruin_iteration_s(problem), _RUIN_MAX_ITERATIONS))
    return iterations, int(max(exchange_s, 0.0) / EXCHANGE_WORK_S)


def _cpsat_fits(problem: PrefillWindow | DecodeWindow, left: float, searched: bool) -> bool:
    """Whether CP-SAT runs in the budget ``left``: its least time fits, and after the exchange
    search (``searched``) with the polish, and in at most ``_CPSAT_MOST_SHARE`` of it."""
    reserve = _cpsat_reserve(problem)
    if not searched:
        return reserve <= left
    return reserve + _POLISH_SHARE * left <= left and reserve <= _CPSAT_MOST_SHARE * left


def _searches_instead(problem: PrefillWindow | DecodeWindow, options: dict[str, Any],
                      left: float) -> bool:
    """The exchange search ran where CP-SAT's least time would take more than
    ``_CPSAT_MOST_SHARE`` of the budget ``left`` (or leave no polish): its answer stands."""
    return bool(options.get("exchange", 0)) and not _cpsat_fits(problem, left, True)


def _search_deadline(problem: PrefillWindow | DecodeWindow, deadline: float, left: float,
                     options: dict[str, Any]) -> float:
    """When ruin and recreate and the exchange search must stop: early enough for CP-SAT and
    the polish to run, unless the budget ``left`` cannot hold them anyway."""
    if not _cpsat_fits(problem, left, bool(options.get("exchange", 0))):
        return deadline - _STOP_LATENCY_S
    return deadline - _cpsat_reserve(problem) - _polish_reserve(problem, options, left)


def _after_search(problem: PrefillWindow | DecodeWindow, options: dict[str, Any], left: float,
                  start: Answer) -> dict[str, Any]:
    """``options`` for CP-SAT after ruin and recreate and the exchange search: its
    deterministic time is the budget ``left`` when the backend started less the slowest time
    their iterations and work can take and the time kept for the polish, not what the clock
    shows after them (their wall time varies, CP-SAT's stop rule must not)."""
    iterations = options.get("ruin_recreate", 0)
    work = start.stats.get("exchange_work", 0)
    if ((not iterations and not work) or "deterministic_time_s" in options
            or not isinstance(problem, PrefillWindow)):
        return options
    spent = (iterations * ruin_iteration_s(problem) + work * EXCHANGE_WORK_S
             + _polish_reserve(problem, options, left))
    return {**options, "deterministic_time_s": max(left - spent, 1e-3)}


def _search(problem: PrefillWindow | DecodeWindow, start: Answer, options: dict[str, Any], *,
            seed: int, deadline: float) -> Answer:
    """``start`` improved by ruin and recreate, then the exchange search (options
    ``ruin_recreate`` and ``exchange``; prefill only)."""
    answer = _ruin_recreate_answer(problem, start, options, seed=seed, deadline=deadline)
    return _exchange_answer(problem, answer, options, deadline=deadline, whole=True)


def _taken_whole(problem: PrefillWindow | DecodeWindow, answer: Answer) -> np.ndarray:
    """``answer``'s assignment with its chunked requests whole where they fit their unit's room
    and free KV blocks beside its whole requests (a request the step trim made a chunk of),
    else deferred (a new array when it has chunks)."""
    if not answer.chunks:
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


def _search_option(problem: PrefillWindow | DecodeWindow, start: Answer,
                   options: dict[str, Any], name: str) -> int:
    """The option ``name`` (a search's iterations or work, checked), or 0 where searches after
    the greedy do not apply (decode, an empty window, an answer missing guarded requests)."""
    value = options.get(name, 0)
    if type(value) is not int or value != 0:  # the default skips the check
        value = check_int(f"options.{name}", value, minimum=0)
    if (not isinstance(problem, PrefillWindow) or problem.n_requests == 0
            or start.status is SolveStatus.INFEASIBLE):
        return 0
    return value


def _exchange_answer(problem: PrefillWindow | DecodeWindow, start: Answer,
                     options: dict[str, Any], *, deadline: float, whole: bool) -> Answer:
    """``start`` improved by the exchange search (option ``exchange``: its work, prefill
    only) when that finds a better answer. ``whole``: on ``start`` taken whole (chunked
    requests whole where they fit, else deferred), with chunks added after as CP-SAT's are;
    else the chunks stay.
    ``stats["exchange_moves"]``, ``stats["exchange_work"]`` and ``stats["exchange_s"]`` say
    what it did."""
    work = _search_option(problem, start, options, "exchange")
    if not work:
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


def _polish_reserve(problem: PrefillWindow | DecodeWindow, options: dict[str, Any],
                    left: float) -> float:
    """Time kept after CP-SAT for the exchange search on its answer: ``_POLISH_SHARE`` of the
    budget ``left``, when the exchange search is on and the budget holds CP-SAT with it."""
    on = bool(options.get("exchange", 0))
    return _POLISH_SHARE * left if on and _cpsat_fits(problem, left, True) else 0.0


def _polish(problem: PrefillWindow | DecodeWindow, answer: Answer, options: dict[str, Any], *,
            deadline: float) -> Answer:
    """CP-SAT's answer, unless proven optimal, improved by the exchange search with its chunks
    kept, ending ``_POLISH_MARGIN_S`` before ``deadline`` (the search before CP-SAT has seen
    the start, so an answer CP-SAT did not improve is left)."""
    if (answer.stats.get("cpsat") not in ("OPTIMAL", "FEASIBLE")
            or answer.stats.get("kept") == "greedy"
            or answer.status in (SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE)):
        return answer
    return _exchange_answer(problem, answer, options, deadline=deadline - _POLISH_MARGIN_S,
                            whole=False)


def _ruin_recreate_answer(problem: PrefillWindow | DecodeWindow, start: Answer,
                          options: dict[str, Any], *, seed: int, deadline: float) -> Answer:
    """``start`` improved by the option ``ruin_recreate`` (iterations, prefill only) when that
    finds a better answer before ``deadline``; ``stats["ruin_recreate_iterations"]`` says how
    many ran."""
    iterations = _search_option(problem, start, options, "ruin_recreate")
    if not iterations:
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
                    remaining: float, options: dict[str, Any]) -> None:
    params.num_workers = check_int("options.num_workers", options.get("num_workers", 1),
                                   minimum=1)
    params.random_seed = seed
    params.max_deterministic_time = float(options.get("deterministic_time_s", remaining))
    pairs = problem.n_requests * problem.n_units
    latency = _STOP_LATENCY_S + (_FULL_SEARCH_STOP_SHARE * remaining if remaining > 0.5 else 0.0)
    params.max_time_in_seconds = remaining - latency - pairs * _STOP_PAIR_S
    # presolve alone can take longer than a window's budget and returns nothing until it
    # ends; below half a second the search starts from the hint at once
    params.cp_model_presolve = bool(options.get("presolve", remaining > 0.5))
    if remaining <= 0.5:
        # root probing takes ~10 ms at 128 x 16 before the first decision (measured: decode
        # 64 x 8 in 50 ms proves 7/12 windows optimal without it, 5/12 with it)
        params.cp_model_probing_level = 0
    lns = options.get("lns")
    if lns is None:
        lns = remaining <= 0.5 and pairs >= _LNS_MIN_PAIRS
    if lns:
        # the full search spends a short budget on its start-up and first LP; neighbourhood
        # search from the hint improves it at once (measured: decode 128 x 16 gap p50
        # 0.66% -> 0.31% in 50 ms). It proves nothing.
        params.interleave_search = True
        params.num_workers = _LNS_SUBSOLVERS
        params.use_lns_only = True
        params.symmetry_level = 0
    extra = options.get("cpsat_parameters", {})
    if not isinstance(extra, dict):
        raise InvalidInputError("options.cpsat_parameters", extra, "a dict of SatParameters fields")
    for key, value in extra.items():
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
                   seed: int, hint: np.ndarray | None, options: dict[str, Any]) -> Answer:
    """Run CP-SAT from ``hint`` (default: ``fallback``, the greedy's answer) within the
    deadline; the better of CP-SAT's and ``fallback``'s answers is returned."""
    from ortools.sat.python import cp_model

    # the model places whole requests: a chunked request is whole where it fits, else deferred
    start_hint = _taken_whole(problem, fallback) if hint is None else hint
    pairs = problem.n_requests * problem.n_units
    if time.perf_counter() + pairs * (_PAIR_BUILD_S + _STOP_PAIR_S) + _MIN_SOLVE_S > deadline:
        return _timeout(fallback, "window too large to build a CP-SAT model in the budget")
    build = build_prefill_model if isinstance(problem, PrefillWindow) else build_decode_model
    t0 = time.perf_counter()
    try:
        built = build(problem, hint=start_hint, deadline=deadline)
    except BuildTimeout:
        return _timeout(fallback, "the budget ran out while building the CP-SAT model")
    build_s = time.perf_counter() - t0
    if built.trivially_infeasible:
        return Answer(fallback.assignment, fallback.chunks, SolveStatus.INFEASIBLE,
                      bound=fallback.bound, message="a guarded request fits no unit",
                      stats={"cpsat": "INFEASIBLE", "cpsat_build_s": build_s},
                      value=fallback.value, analytic_included=fallback.analytic_included)
    remaining = deadline - time.perf_counter()
    if remaining < _MIN_SOLVE_S + pairs * _STOP_PAIR_S:
        # CP-SAT's load/presolve alone takes milliseconds and cannot be interrupted
        return _timeout(fallback, "too little budget left after building the CP-SAT model",
                        {"cpsat_build_s": build_s})
    solver = cp_model.CpSolver()
    _sat_parameters(solver.parameters, problem, seed=seed, remaining=remaining, options=options)
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
    if fallback.status is not SolveStatus.INFEASIBLE and fallback.value < value:
        answer.assignment, answer.chunks = fallback.assignment, fallback.chunks
        answer.value = fallback.value
        answer.stats["kept"] = "greedy"
    if status == cp_model.OPTIMAL and not exact:
        answer.status = SolveStatus.FEASIBLE
        answer.message = "whole-request placement optimal; chunks added after"
    return answer


def _timeout(fallback: Answer, message: str, stats: dict | None = None) -> Answer:
    status = SolveStatus.INFEASIBLE if fallback.status is SolveStatus.INFEASIBLE else SolveStatus.TIMEOUT
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
    options: dict[str, Any] | None = None,
) -> SolveResult:
    """Solve one window with ``method`` within ``time_limit_s``.

    Parameters
    ----------
    problem : PrefillWindow or DecodeWindow
    method : {"auto", "greedy", "cpsat"} or a registered name
        ``greedy``: PBAA/LPT water-filling (prefill) or IQR-lex (decode), microseconds.
        ``cpsat``: OR-Tools CP-SAT, hinted with the greedy, deterministic.
        ``auto``: greedy (and ruin and recreate), then CP-SAT on the remaining budget unless
        that meets its bound.
    time_limit_s : float
        Budget for the whole call (model building included); see the module docstring.
    seed : int, Generator or None
        CP-SAT's ``random_seed``; the greedy is deterministic.
    hint : array of int, optional
        A starting assignment for CP-SAT (unit per request, -1 deferred).
    options : dict, optional
        ``local_search`` (int, local-search changes after the greedy, default 0),
        ``ruin_recreate`` (int, ruin-and-recreate iterations after the greedy; default 0 for
        ``greedy``, and for ``cpsat``/``auto`` sized from the budget on prefill windows with
        more tokens or KV blocks than room, else 0), ``exchange`` (int, the work of the
        exchange search after that, in subsets visited, about 3-10 ns each; default 0 for
        ``greedy``, and for ``cpsat``/``auto`` sized from the budget on prefill windows whose
        requests fill at least 90% of the room; ``cpsat``/``auto`` run it again on CP-SAT's
        answer), ``lp_bound``
        (bool: True adds the LP relaxation to the bound whatever it costs; by default
        ``cpsat``/``auto`` add it only within the remaining budget and only to whole-request
        windows, ``greedy`` never), ``host_bound`` (bool, the same for the host bound of
        :mod:`sbsopt.window.host_bound`, on one-instance prefill windows; by default its time
        is kept out of the budget when an answer at the analytic bound shows long requests,
        CP-SAT would otherwise take that time and it is at most 60% of the budget),
        ``num_workers`` (CP-SAT threads, default 1; more run a portfolio whose workers can
        overrun the budget: measured +60 ms once in 24 solves at 16 x 4 with 2 workers, which a
        stop request at the deadline did not shorten), ``deterministic_time_s``, ``presolve``
        (bool),
        ``lns`` (bool, default by size and budget: module docstring),
        ``cpsat_parameters`` (dict of extra ``SatParameters`` fields).

    Returns
    -------
    SolveResult
        Objective (microseconds), the best proven bound (analytic; for ``cpsat``/``auto`` also
        step split, LP, host and CP-SAT), gap, status.

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
    collecting = gc.isenabled()
    if collecting:
        gc.disable()  # a full collection of a large heap takes tens of ms (module docstring)
    try:
        return _solve(problem, method, time_limit_s, seed, hint, options)
    finally:
        if collecting:
            gc.enable()


def _solve(problem: PrefillWindow | DecodeWindow, method: str, time_limit_s: float,
           seed: int | np.random.Generator | None, hint: Any,
           options: dict[str, Any] | None) -> SolveResult:
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
    options = dict(options or {})
    reserve = 0.0
    if method in ("cpsat", "auto"):
        reserve = _host_reserve(problem, budget, options)
        iterations, work = _search_sizes(problem, budget - reserve)
        options.setdefault("ruin_recreate", iterations)
        options.setdefault("exchange", work)
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**31 - 1:
        int_seed = seed  # the common case, without building a Generator to validate it
    else:
        int_seed = as_int_seed(seed)
    answer = backend.run(problem, deadline=start + budget - reserve, seed=int_seed,
                         hint=_check_hint(hint, problem), options=options)
    value = answer.value
    if value is None:
        value = objective(problem, answer.assignment, answer.chunks)
    bound = answer.bound if answer.analytic_included else max(answer.bound, analytic_bound(problem))
    if method != "greedy" and (start + budget - time.perf_counter()
                               > 0.001 + _SPLIT_REQUEST_S * problem.n_requests):
        bound = max(bound, split_bound(problem))
    if (options.get("host_bound", method != "greedy") and isinstance(problem, PrefillWindow)
            and value > bound * (1 + 1e-12) and answer.status is not SolveStatus.INFEASIBLE):
        # before the LP: cheaper, stronger on the windows it applies to, and CP-SAT left it time
        left = None if options.get("host_bound") else start + budget - time.perf_counter()
        # its time limit guards the budget: run it if half its estimate (the most measured,
        # about twice the median) is left
        if left is None or left > _host_time(problem) / 2:
            bound = max(bound, host_bound(problem, value, time_limit_s=None if left is None
                                          else left - _STOP_LATENCY_S))
    # with chunking the LP (whole-request rows less a chunk allowance) is weaker than the
    # analytic bound on every window measured, so by default it is not spent on them
    default_lp = method != "greedy" and not getattr(problem, "allow_chunking", False)
    if options.get("lp_bound", default_lp) and answer.status is not SolveStatus.INFEASIBLE:
        # the LP runs only inside what is left of the budget (unless asked for explicitly)
        left = None if options.get("lp_bound") else start + budget - time.perf_counter()
        # building the LP in Python is the slow part and cannot be interrupted: keep a margin
        if left is None or left > 3 * _LP_PAIR_S * problem.n_requests * problem.n_units + 0.005:
            # GLOP can run past its limit as CP-SAT can: the same stop latency is kept
            bound = max(bound, lp_bound(problem, time_limit_s=None if left is None
                                        else left - _STOP_LATENCY_S))
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
