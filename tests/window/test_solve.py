"""The entry point: registry, errors, hints, statuses."""

from __future__ import annotations

import numpy as np
import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.window import BACKENDS, SolveStatus, analytic_bound, available_methods, register, solve


def test_registry_refuses_duplicates_and_lists_methods() -> None:
    assert {"greedy", "cpsat", "auto"} <= set(available_methods())
    with pytest.raises(InvalidInputError, match="cpsat"):
        register(BACKENDS["cpsat"])


def test_bad_arguments_name_the_field(cat, rng) -> None:
    problem = cat.random_prefill(rng, 4, 2)
    with pytest.raises(InvalidInputError, match="method = 'simplex'"):
        solve(problem, method="simplex")
    with pytest.raises(InvalidInputError, match="time_limit_s = 0"):
        solve(problem, time_limit_s=0)
    with pytest.raises(InvalidInputError, match="hint"):
        solve(problem, method="cpsat", hint=[0, 1])
    with pytest.raises(InvalidInputError, match="problem"):
        solve({"requests": []})
    with pytest.raises(InvalidInputError, match="seed"):
        solve(problem, seed=-1)


def test_hint_is_used_and_result_fields_are_present(cat, rng) -> None:
    problem = cat.random_prefill(rng, 8, 3)
    greedy = solve(problem, method="greedy")
    hinted = solve(problem, method="cpsat", hint=greedy.assignment, time_limit_s=2.0)
    assert hinted.objective <= greedy.objective + 1e-6
    for result in (greedy, hinted):
        assert result.assignment.dtype == np.int64
        assert 0.0 <= result.gap <= 1.0 and result.bound <= result.objective + 1e-6
        assert result.wall_time_s > 0 and result.method in ("greedy", "cpsat")


def test_auto_stops_after_an_optimal_greedy(cat) -> None:
    from types import SimpleNamespace

    from sbsopt.window import PrefillWindow

    c = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
                        gamma_us_per_request=0.0)
    w = PrefillWindow.from_arrays([10] * 8, [0] * 8, [0.0] * 8, capacity_tokens=[100] * 4,
                                  coefficients=c)
    result = solve(w, method="auto")
    assert result.status is SolveStatus.OPTIMAL and result.stats["stage"] == "greedy"


def test_chunking_places_the_head_of_an_oversized_request(cat) -> None:
    from sbsopt.window import PrefillWindow, validate_assignment

    w = PrefillWindow.from_arrays([20_000], [0], [0.0], capacity_tokens=[8192, 8192],
                                  coefficients=cat.PREFILL)
    for method in ("greedy", "cpsat", "auto"):
        result = solve(w, method=method, time_limit_s=0.5)
        validate_assignment(w, result)
        assert list(result.chunks.values()) == [8192], method
        assert result.deferred.size == 0


@pytest.mark.parametrize("seed", range(30))
def test_greedy_objective_from_the_kernels_matches_the_reference(cat, seed: int) -> None:
    from sbsopt.window.objective import objective

    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 6))
    kw: dict = {"instance": np.arange(j) % 2} if seed % 3 == 0 and j > 1 else {}
    if seed % 2:
        problem = cat.random_decode(rng, int(rng.integers(0, 40)), j, **kw)
    else:
        problem = cat.random_prefill(rng, int(rng.integers(0, 40)), j,
                                     allow_chunking=bool(seed % 4), **kw)
    for method in ("greedy", "auto"):
        r = solve(problem, method=method, time_limit_s=0.05)
        expected = objective(problem, r.assignment, r.chunks)
        assert r.objective == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # the greedy's bound comes from the same compiled call: it is the analytic bound
    # (its token knapsacks reuse the greedy's sorts: equal up to summation order)
    assert solve(problem, method="greedy").bound == pytest.approx(analytic_bound(problem),
                                                                  rel=1e-12)


def test_cpsat_skips_the_hint_search_that_its_budget_cannot_hold(cat, rng) -> None:
    problem = cat.random_prefill(rng, 1024, 64, capacity_tokens=np.full(64, 4000))
    tight = solve(problem, method="cpsat", time_limit_s=0.002, seed=0)
    assert tight.stats["hint_local_search"] == 0  # 65536 pairs need about 4 ms
    ample = solve(problem, method="cpsat", time_limit_s=0.5, seed=0)
    assert "hint_local_search" not in ample.stats


def test_the_hint_search_on_whole_request_windows_is_sized_by_the_deferred_requests(cat,
                                                                                    rng) -> None:
    # there its exchanges with the deferred requests took up to 93 ms at 1024 x 64
    problem = cat.random_prefill(rng, 1024, 64, capacity_tokens=np.full(64, 4000))
    assert not problem.allow_chunking and problem.new_tokens.sum() > problem.room_tokens.sum()
    answer = solve(problem, method="cpsat", time_limit_s=0.05, seed=0)
    assert answer.stats["hint_local_search"] == 0  # 2 ns x 1024 requests x 65536 pairs: 134 ms
    assert answer.wall_time_s < 0.05 + 1.0  # timing is measured in benchmarks/budget.py


def test_ruin_recreate_takes_the_budget_that_cannot_hold_a_cpsat_model(cat, rng) -> None:
    problem = cat.random_prefill(rng, 1024, 64, capacity_tokens=np.full(64, 4000))
    answer = solve(problem, method="auto", time_limit_s=0.05, seed=0)
    assert answer.message.startswith("window too large")
    assert answer.stats["ruin_recreate_iterations"] > 0
    assert answer.objective <= solve(problem, method="greedy").objective


def _hosted_window(cat, long: int, units: int):
    """``long`` 7,000-token prompts among short ones, 8 requests a unit, whole-request: each
    long prompt must fill its own unit with short ones."""
    from sbsopt.window import PrefillWindow

    rng = np.random.default_rng(0)
    n = 8 * units
    new = np.concatenate([rng.integers(7000, 7500, long), rng.integers(100, 3000, n - long)])
    return PrefillWindow.from_arrays(new, np.zeros(n, np.int64), np.sort(rng.uniform(0, 0.1, n)),
                                     capacity_tokens=np.full(units, 16_384), now_s=0.12,
                                     load_tokens=rng.integers(0, 4096, units),
                                     coefficients=cat.PREFILL, allow_chunking=False)


def test_cpsat_leaves_the_host_bound_its_time_when_the_budget_holds_it(cat) -> None:
    from sbsopt.window import PrefillWindow, lp_bound
    from sbsopt.window.host_bound import host_bound
    from sbsopt.window.solve import _host_reserve

    w = _hosted_window(cat, long=4, units=16)
    # a short search leaves the bound ample time, also on a loaded machine
    short = {"deterministic_time_s": 0.03}
    for method in ("cpsat", "auto"):
        answer = solve(w, method=method, time_limit_s=0.5, seed=0, options=short)
        assert answer.bound >= host_bound(w, answer.objective) * (1 - 1e-9)
        assert answer.bound > lp_bound(w) * 1.01
        off = solve(w, method=method, time_limit_s=0.5, seed=0,
                    options={**short, "host_bound": False})
        assert off.bound < answer.bound
    # the budget keeps its time when it holds it (at most 60%), not otherwise, nor when asked
    # not to, nor without long requests
    assert 0.004 < _host_reserve(w, 0.05, {}) <= 0.03
    assert _host_reserve(w, 0.01, {}) == 0.0
    assert _host_reserve(w, 0.05, {"host_bound": False}) == 0.0
    even = PrefillWindow.from_arrays([300] * 12, [0] * 12, [0.0] * 12,
                                     capacity_tokens=[16_384] * 3, coefficients=cat.PREFILL,
                                     allow_chunking=False)
    assert _host_reserve(even, 10.0, {}) == 0.0


def test_no_host_reserve_where_the_searches_alone_leave_it_time(cat) -> None:
    from sbsopt.window.solve import _cpsat_fits, _host_reserve, _host_time

    # 256 x 32 in 50 ms: CP-SAT's least time is over half the budget, so ruin and recreate and
    # the exchange search run alone and leave a fifth of it, more than the host bound needs
    w = _hosted_window(cat, long=8, units=32)
    assert not _cpsat_fits(w, 0.05, True) and _host_time(w) <= 0.2 * 0.05
    assert _host_reserve(w, 0.05, {}) == 0.0
    assert _host_reserve(w, 1.0, {}) == _host_time(w)  # CP-SAT would take that budget


def test_cpsat_and_auto_run_ruin_recreate_on_windows_with_more_tokens_than_room(cat, rng) -> None:
    """By default only there (a share of the budget, sized from it), the answer never worse
    than the greedy with local search, and the same for the same seed."""
    full = cat.random_prefill(rng, 40, 4, capacity_tokens=np.full(4, 6000))
    roomy = cat.random_prefill(rng, 8, 4, capacity_tokens=np.full(4, 60_000))
    searched = solve(full, method="greedy", options={"local_search": 1000})
    # a deterministic time that ends CP-SAT's search before its wall-clock cap
    short = {"deterministic_time_s": 0.002}
    for method in ("cpsat", "auto"):
        first = solve(full, method=method, time_limit_s=0.05, seed=3, options=short)
        assert first.stats["ruin_recreate_iterations"] > 0
        assert first.objective <= searched.objective + 1e-9
        again = solve(full, method=method, time_limit_s=0.05, seed=3, options=short)
        assert np.array_equal(again.assignment, first.assignment)
        assert "ruin_recreate_iterations" not in solve(roomy, method=method).stats
    off = solve(full, method="cpsat", time_limit_s=0.05, options={"ruin_recreate": 0})
    assert "ruin_recreate_iterations" not in off.stats
    with pytest.raises(InvalidInputError, match="options.ruin_recreate"):
        solve(full, method="greedy", options={"ruin_recreate": -1})


def test_cpsat_and_auto_run_the_exchange_search_on_windows_with_more_tokens_than_room(
        cat, rng) -> None:
    """By default only there (its work sized from the budget), after ruin and recreate and
    on CP-SAT's answer; ``greedy`` runs it when asked; the option 0 turns it off."""
    full = cat.random_prefill(rng, 40, 4, capacity_tokens=np.full(4, 6000))
    roomy = cat.random_prefill(rng, 8, 4, capacity_tokens=np.full(4, 60_000))
    short = {"deterministic_time_s": 0.002}
    for method in ("cpsat", "auto"):
        first = solve(full, method=method, time_limit_s=0.05, seed=3, options=short)
        assert first.stats["exchange_work"] > 0 and first.stats["exchange_s"] > 0
        assert "exchange_work" not in solve(roomy, method=method).stats
        off = solve(full, method=method, time_limit_s=0.05, seed=3,
                    options={**short, "exchange": 0})
        assert "exchange_work" not in off.stats
    plain = solve(full, method="greedy")
    searched = solve(full, method="greedy", options={"exchange": 10**6})
    assert searched.stats["exchange_work"] > 0 and searched.objective <= plain.objective
    assert "exchange_work" not in plain.stats
    with pytest.raises(InvalidInputError, match="options.exchange"):
        solve(full, method="greedy", options={"exchange": -1})


def test_solve_pauses_the_garbage_collector_and_restores_it(cat, rng) -> None:
    """A full collection of a large heap (67-70 ms measured) must not fall inside a budget;
    the collector is back as the caller had it afterwards, also after an error."""
    import gc

    from sbsopt.window.solve import Answer

    seen = []

    class Probe:
        name, phases = "gc-probe", frozenset({"prefill"})

        def is_available(self) -> bool:
            return True

        def run(self, problem, *, deadline, seed, hint, options):
            seen.append(gc.isenabled())
            if options.get("fail"):
                raise RuntimeError("probe")
            return Answer(np.full(problem.n_requests, -1), {}, SolveStatus.FEASIBLE)

    register(Probe())
    problem = cat.random_prefill(rng, 5, 2)
    try:
        assert gc.isenabled()
        solve(problem, method="gc-probe")
        with pytest.raises(RuntimeError):
            solve(problem, method="gc-probe", options={"fail": True})
        assert seen == [False, False] and gc.isenabled()
        gc.disable()
        solve(problem, method="gc-probe")
        assert not gc.isenabled()
    finally:
        gc.enable()
        BACKENDS.pop("gc-probe")


def test_a_chunk_is_taken_whole_where_it_fits_else_deferred(cat) -> None:
    # the searches and CP-SAT's hint start from whole requests: a chunk the step trim made of a
    # prompt that fits stays on its unit whole; one placed because it does not fit is deferred
    from sbsopt.window import PrefillWindow
    from sbsopt.window.result import SolveStatus
    from sbsopt.window.solve import Answer, _taken_whole

    w = PrefillWindow.from_arrays([9000, 20_000, 3000, 3000], [0] * 4, [0.0] * 4,
                                  capacity_tokens=[16_384, 16_384], coefficients=cat.PREFILL)
    answer = Answer(np.array([0, 1, 0, 1]), {0: 6000, 1: 10_000}, SolveStatus.FEASIBLE)
    assert _taken_whole(w, answer).tolist() == [0, -1, 0, 1]
    assert _taken_whole(w, Answer(np.array([0, 1, 0, 1]), {}, SolveStatus.FEASIBLE)).tolist() \
        == [0, 1, 0, 1]
