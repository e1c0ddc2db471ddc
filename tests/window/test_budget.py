"""The time budget's plan: shares, reserves and decisions, computed from the window alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sbsopt.window import PrefillWindow, SolveOptions, solve
from sbsopt.window import budget as b
from sbsopt.window.budget import SearchPlan, host_time_s, plan_budget

_DEFAULT = SolveOptions()


def _hosted_window(cat, long: int, units: int) -> PrefillWindow:
    """``long`` 7,000-token prompts among short ones, 8 requests a unit, whole-request: each
    long prompt must fill its own unit with short ones."""
    rng = np.random.default_rng(0)
    n = 8 * units
    new = np.concatenate([rng.integers(7000, 7500, long), rng.integers(100, 3000, n - long)])
    return PrefillWindow.from_arrays(new, np.zeros(n, np.int64), np.sort(rng.uniform(0, 0.1, n)),
                                     capacity_tokens=np.full(units, 16_384), now_s=0.12,
                                     load_tokens=rng.integers(0, 4096, units),
                                     coefficients=cat.PREFILL, allow_chunking=False)


def _windows(cat) -> dict[str, object]:
    rng = np.random.default_rng(7)
    return {
        "full chunked 40x4": cat.random_prefill(rng, 40, 4, capacity_tokens=np.full(4, 6000),
                                                allow_chunking=True),
        "full whole 200x16": cat.random_prefill(rng, 200, 16, capacity_tokens=np.full(16, 6000)),
        "full 1024x64": cat.random_prefill(rng, 1024, 64, capacity_tokens=np.full(64, 4000)),
        "roomy 8x4": cat.random_prefill(rng, 8, 4, capacity_tokens=np.full(4, 60_000)),
        "hosted 128x16": _hosted_window(cat, 4, 16),
        "decode 64x8": cat.random_decode(rng, 64, 8),
    }


@pytest.mark.parametrize("method", ["cpsat", "auto"])
def test_the_shares_fit_in_the_budget(cat, method: str) -> None:
    for name, window in _windows(cat).items():
        for budget in (0.002, 0.01, 0.05, 0.2, 2.0):
            plan = plan_budget(window, method, budget, _DEFAULT)
            searches = plan.searches.ruin_recreate_s + plan.searches.exchange_s
            if plan.cpsat.runs and searches:
                run, cpsat = plan.searches, plan.cpsat
                assert run.ruin_recreate_s <= b.RUIN_SHARE * budget + 1e-12, (name, budget)
                assert run.exchange_s <= b.EXCHANGE_SHARE * budget + 1e-12, (name, budget)
                used = plan.host_reserve_s + searches + cpsat.polish_s + cpsat.least_s
                assert used <= budget * (1 + 1e-9), (name, budget)
                assert plan.cpsat_s >= cpsat.least_s - 1e-12, (name, budget)
                assert run.stop_s == pytest.approx(cpsat.least_s + cpsat.polish_s)
            else:
                assert searches <= b.SEARCHES_ALONE_SHARE * plan.backend_s * (1 + 1e-9)
            assert plan.host_reserve_s <= b.HOST_MOST_SHARE * budget


def test_the_plan_depends_on_its_arguments_only(cat) -> None:
    for window in _windows(cat).values():
        first = plan_budget(window, "auto", 0.05, _DEFAULT)
        assert plan_budget(window, "auto", 0.05, _DEFAULT) == first


def test_cpsat_is_skipped_when_its_least_time_is_over_half_the_budget(cat) -> None:
    # 256 x 32 whole-request in 50 ms: the searches then take 80% of the budget and leave
    # the host bound its time; with a second CP-SAT runs after them and the polish
    w = _hosted_window(cat, long=8, units=32)
    tight = plan_budget(w, "auto", 0.05, _DEFAULT)
    assert not tight.cpsat.runs and tight.cpsat.least_s > 0.5 * tight.backend_s
    assert tight.cpsat_s == 0.0 and tight.cpsat.polish_s == 0.0
    assert tight.searches.stop_s == b.STOP_LATENCY_S
    assert tight.searches.ruin_recreate_s + tight.searches.exchange_s == pytest.approx(
        b.SEARCHES_ALONE_SHARE * tight.backend_s, rel=1e-3)
    ample = plan_budget(w, "auto", 1.0, _DEFAULT)
    assert ample.cpsat.runs
    assert ample.cpsat.polish_s == pytest.approx(b.POLISH_SHARE * ample.backend_s)
    # without the exchange search CP-SAT is tried whenever its least time fits
    assert plan_budget(w, "auto", 0.05, SolveOptions(exchange=0)).cpsat.runs


def test_searches_run_by_default_only_where_the_room_is_full(cat) -> None:
    windows = _windows(cat)
    full = plan_budget(windows["full whole 200x16"], "cpsat", 0.05, _DEFAULT)
    assert full.searches.ruin_recreate > 0 and full.searches.exchange > 0
    roomy = plan_budget(windows["roomy 8x4"], "cpsat", 0.05, _DEFAULT)
    assert roomy.searches == SearchPlan(hint_local_search=b.HINT_LOCAL_SEARCH,
                                        hint_s=roomy.searches.hint_s, stop_s=roomy.searches.stop_s)
    assert roomy.cpsat.polish_s == 0.0
    for method in ("greedy", "cpsat"):  # an option replaces the size, on prefill windows only
        asked = SolveOptions(ruin_recreate=7, exchange=9)
        plan = plan_budget(windows["roomy 8x4"], method, 0.05, asked)
        assert (plan.searches.ruin_recreate, plan.searches.exchange) == (7, 9)
        plan = plan_budget(windows["decode 64x8"], method, 0.05, asked)
        assert (plan.searches.ruin_recreate, plan.searches.exchange) == (0, 0)
        assert plan.cpsat.polish_s == 0.0
    greedy = plan_budget(windows["full whole 200x16"], "greedy", 0.05, _DEFAULT)
    assert greedy.searches == SearchPlan() and not greedy.cpsat.runs


def test_the_host_reserve_is_kept_where_cpsat_would_take_its_time(cat) -> None:
    w = _hosted_window(cat, long=4, units=16)
    assert 0.004 < plan_budget(w, "cpsat", 0.05, _DEFAULT).host_reserve_s <= 0.03
    # not when its time is over 60% of the budget, nor when asked not to, nor for greedy
    assert plan_budget(w, "cpsat", 0.01, _DEFAULT).host_reserve_s == 0.0
    assert plan_budget(w, "cpsat", 0.05, SolveOptions(host_bound=False)).host_reserve_s == 0.0
    assert plan_budget(w, "greedy", 0.05, _DEFAULT).host_reserve_s == 0.0
    # nor without long requests
    even = PrefillWindow.from_arrays([300] * 12, [0] * 12, [0.0] * 12,
                                     capacity_tokens=[16_384] * 3, coefficients=cat.PREFILL,
                                     allow_chunking=False)
    assert plan_budget(even, "cpsat", 10.0, _DEFAULT).host_reserve_s == 0.0
    # nor where the searches alone leave it the time: 256 x 32 in 50 ms
    large = _hosted_window(cat, long=8, units=32)
    assert host_time_s(large) <= (1 - b.SEARCHES_ALONE_SHARE) * 0.05
    assert plan_budget(large, "auto", 0.05, _DEFAULT).host_reserve_s == 0.0
    assert plan_budget(large, "auto", 1.0, _DEFAULT).host_reserve_s == host_time_s(large)


def test_the_reserve_gives_the_host_bound_its_time_in_a_solve(cat) -> None:
    from sbsopt.window import lp_bound
    from sbsopt.window.host_bound import host_bound

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


def test_the_bounds_after_the_backend_run_in_the_budget_left_unless_asked_for(cat) -> None:
    windows = _windows(cat)
    whole, chunked = windows["full whole 200x16"], windows["full chunked 40x4"]
    auto = plan_budget(whole, "auto", 0.05, _DEFAULT)
    for rule in (auto.split_bound, auto.host_bound, auto.lp_bound):
        assert rule.due(1.0) and not rule.due(0.0)
        assert rule.time_limit_s(1.0) == pytest.approx(1.0 - b.STOP_LATENCY_S)
    assert not plan_budget(chunked, "auto", 0.05, _DEFAULT).lp_bound.run  # weaker there
    greedy = plan_budget(whole, "greedy", 0.05, _DEFAULT)
    assert not (greedy.split_bound.run or greedy.host_bound.run or greedy.lp_bound.run)
    asked = plan_budget(whole, "greedy", 0.05, SolveOptions(lp_bound=True, host_bound=True))
    for rule in (asked.host_bound, asked.lp_bound):
        assert rule.due(-1.0) and rule.time_limit_s(-1.0) is None
    assert not plan_budget(windows["decode 64x8"], "auto", 0.05, _DEFAULT).host_bound.run


def test_cpsat_is_given_the_budget_less_the_searches_at_their_slowest(cat) -> None:
    plan = plan_budget(_windows(cat)["full whole 200x16"], "cpsat", 0.05, _DEFAULT)
    spent = plan.searches.ruin_recreate_s + 100 * b.EXCHANGE_WORK_S + plan.cpsat.polish_s
    assert plan.cpsat_deterministic_s(0.01, 100) == pytest.approx(plan.backend_s - spent)
    asked = plan_budget(_windows(cat)["full whole 200x16"], "cpsat", 0.05,
                        SolveOptions(deterministic_time_s=0.002))
    assert asked.cpsat_deterministic_s(0.01, 100) == 0.002
    roomy = plan_budget(_windows(cat)["roomy 8x4"], "cpsat", 0.05, _DEFAULT)
    assert roomy.cpsat_deterministic_s(0.01, 0) == 0.01  # no search: the time left
    # the wall limit stops it early enough, and 2% more in its full search
    assert roomy.cpsat.wall_s(0.05) == pytest.approx(0.05 - b.STOP_LATENCY_S
                                                     - roomy.cpsat.load_s)
    assert roomy.cpsat.wall_s(2.0) == pytest.approx(2.0 * (1 - b.FULL_SEARCH_STOP_SHARE)
                                                    - b.STOP_LATENCY_S - roomy.cpsat.load_s)


def test_the_hint_search_is_planned_per_pair_and_more_on_whole_request_windows(cat) -> None:
    windows = _windows(cat)
    whole = windows["full 1024x64"]
    plan = plan_budget(whole, "cpsat", 0.05, _DEFAULT)
    assert plan.searches.hint_local_search == b.HINT_LOCAL_SEARCH
    assert plan.searches.hint_s == pytest.approx(b.HINT_WHOLE_PAIR_REQUEST_S * 1024**2 * 64)
    chunked = plan_budget(windows["full chunked 40x4"], "cpsat", 0.05, _DEFAULT)
    assert chunked.searches.hint_s == pytest.approx(b.HINT_PAIR_S * 40 * 4)
    for window, method, options in ((whole, "cpsat", SolveOptions(local_search=5)),
                                    (whole, "greedy", _DEFAULT),
                                    (windows["decode 64x8"], "cpsat", _DEFAULT)):
        assert plan_budget(window, method, 0.05, options).searches.hint_local_search == 0


def test_a_window_too_large_for_cpsat_leaves_the_searches_the_budget(cat) -> None:
    plan = plan_budget(_windows(cat)["full 1024x64"], "auto", 0.05, _DEFAULT)
    assert not plan.cpsat.runs and not plan.cpsat.builds(plan.backend_s)
    assert plan.searches.ruin_recreate > 0 and plan.searches.exchange > 0
    assert math.isclose(plan.searches.stop_s, b.STOP_LATENCY_S)
