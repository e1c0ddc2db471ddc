"""The host bound never exceeds the enumerated optimum (or, with chunking, any answer found),
and sees what the LP averages away."""

from __future__ import annotations

import dataclasses
import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from sbsopt.window import PrefillWindow, lower_bound, lp_bound, solve
from sbsopt.window.host_bound import host_bound, long_requests

LINEAR_QUADRATIC = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.01,
                                   gamma_us_per_request=0.0)


def _long_and_short(rng: np.random.Generator, cat, j: int, *, guard_last: bool = False,
                    **kwargs) -> PrefillWindow:
    """2-3 long prompts and short ones onto units that hold about one long prompt each."""
    longs, shorts = int(rng.integers(2, 4)), int(rng.integers(2, 5))
    new = np.concatenate([rng.integers(5000, 8000, longs), rng.integers(200, 2500, shorts)])
    deadline = np.full(new.size, np.inf)
    if guard_last:  # a guarded short request must be placed
        deadline[-1] = 0.1
    options = {"capacity_tokens": rng.integers(8000, 12_000, j),
               "load_tokens": rng.integers(0, 1500, j), "now_s": 0.25, "deadline_s": deadline,
               "coefficients": cat.PREFILL, "allow_chunking": False,
               "defer_factor": float(rng.uniform(0.5, 1.2))}
    options.update(kwargs)
    return PrefillWindow.from_arrays(new, np.zeros(new.size, np.int64),
                                     np.sort(rng.uniform(0.0, 0.2, new.size)), **options)


@pytest.mark.parametrize("seed", range(16))
def test_host_bound_below_enumerated_optimum(cat, seed: int) -> None:
    rng = np.random.default_rng(5000 + seed)
    j = int(rng.integers(2, 4))
    kwargs: dict = {"guard_last": seed % 4 == 2}
    if seed % 3 == 1:
        kwargs["free_kv_blocks"] = rng.integers(80, 200, j)
    problem = _long_and_short(rng, cat, j, **kwargs)
    best, _ = cat.brute_force(problem)
    if not np.isfinite(best):
        pytest.skip("infeasible instance")
    answer = solve(problem, method="greedy")
    for upper in (best, max(best, answer.objective), 1.5 * best):
        assert host_bound(problem, upper) <= best * (1 + 1e-9)


def test_some_instances_have_long_requests_and_a_tighter_bound(cat) -> None:
    # the property test above is only as good as its instances: most must exercise the bound
    rng = np.random.default_rng(77)
    applies = tighter = 0
    for _ in range(16):
        problem = _long_and_short(rng, cat, int(rng.integers(2, 4)))
        best, _ = cat.brute_force(problem)
        if long_requests(problem, best).size >= 2:
            applies += 1
            tighter += host_bound(problem, best) > lp_bound(problem) * (1 + 1e-6)
    assert applies >= 8
    assert tighter >= 3


def test_long_prompts_each_fill_their_own_unit() -> None:
    w = PrefillWindow.from_arrays([80, 80] + [20] * 6, [0] * 8, [0.0] * 8,
                                  capacity_tokens=[100] * 3, coefficients=LINEAR_QUADRATIC,
                                  allow_chunking=False)
    assert long_requests(w, 134.0).tolist() == [0, 1]
    # hosts: 2S >= 112 + 112 + 22 (the other unit holds at most five 20s) -> S >= 123
    assert host_bound(w, 134.0) == pytest.approx(123.0, rel=1e-6)
    assert lp_bound(w) == pytest.approx(356.0 / 3.0, rel=1e-6)
    assert lower_bound(w, upper=134.0) >= 123.0 * (1 - 1e-6)


def test_no_answer_better_than_the_upper_proves_it() -> None:
    # with the upper at the optimum, every case is infeasible or no lower: the bound is the upper
    w = PrefillWindow.from_arrays([80, 80, 80], [0] * 3, [0.0] * 3, capacity_tokens=[100] * 3,
                                  coefficients=LINEAR_QUADRATIC, allow_chunking=False)
    assert host_bound(w, 112.0) == pytest.approx(112.0, rel=1e-6)


def test_where_the_host_bound_does_not_apply(cat, rng) -> None:
    whole = _long_and_short(rng, cat, 3)
    upper = solve(whole, method="greedy").objective
    two = _long_and_short(np.random.default_rng(1), cat, 4, instance=[0, 0, 1, 1])
    short = PrefillWindow.from_arrays([300] * 12, [0] * 12, [0.0] * 12,
                                      capacity_tokens=[16_384] * 3, coefficients=cat.PREFILL,
                                      allow_chunking=False)
    decode = cat.random_decode(rng, 4, 2)
    for problem in (two, decode):
        assert host_bound(problem, upper) == -np.inf
    assert long_requests(short, solve(short, method="greedy").objective).size == 0
    assert host_bound(short, solve(short, method="greedy").objective) == -np.inf


def test_a_spent_time_limit_gives_no_bound(cat) -> None:
    problem = _long_and_short(np.random.default_rng(3), cat, 3)
    upper = cat.brute_force(problem)[0]
    assert long_requests(problem, upper).size >= 2
    assert host_bound(problem, upper, time_limit_s=1e-9) == -np.inf


@pytest.mark.parametrize("seed", range(12))
def test_chunked_host_bound_below_every_answer_found(cat, seed: int) -> None:
    from sbsopt.window import objective

    rng = np.random.default_rng(6000 + seed)
    j = int(rng.integers(2, 4))
    problem = _long_and_short(rng, cat, j, allow_chunking=True,
                              free_kv_blocks=rng.integers(80, 200, j) if seed % 3 == 1 else None)
    whole = dataclasses.replace(problem, allow_chunking=False)
    # a whole-request answer is a chunked answer: the enumerated optimum is one
    best = cat.brute_force(whole)[0]
    for _ in range(300):
        answer = cat.random_chunked_answer(problem, rng)
        if answer is not None:
            best = min(best, objective(problem, *answer))
    for method in ("greedy", "cpsat"):
        best = min(best, solve(problem, method=method, time_limit_s=0.2).objective)
    assert np.isfinite(best)
    for upper in (best, 1.5 * best):
        assert host_bound(problem, upper) <= best * (1 + 1e-9)


def test_chunked_bound_counts_one_chunk_per_unit(cat) -> None:
    # without the count, slivers of every request would run without their attention term
    problem = _long_and_short(np.random.default_rng(11), cat, 3, allow_chunking=True)
    upper = solve(problem, method="cpsat", time_limit_s=0.2).objective
    assert long_requests(problem, upper).size >= 2
    assert host_bound(problem, upper) >= lp_bound(problem)


def _chunked_optimum(problem: PrefillWindow) -> float:
    """Optimum with chunking on two units by enumeration: whole placements, then at most one
    chunk per unit (of a deferred request, every size, its remainder at its own price)."""
    n, units = problem.n_requests, problem.n_units
    assert units == 2
    from sbsopt.window.objective import remainder_price_us
    from sbsopt.window.problem import prefill_chunk_cost_us

    best = np.inf
    for combo in itertools.product(range(-1, units), repeat=n):
        a = np.array(combo, np.int64)
        placed = a >= 0
        tokens = np.bincount(a[placed], weights=problem.new_tokens[placed], minlength=units)
        left = problem.room_tokens - tokens
        if (left < 0).any():
            continue
        time = problem.residual_us + np.bincount(a[placed], weights=problem.cost_us[placed],
                                                 minlength=units)
        pen = float(problem.penalty_us[~placed].sum())
        deferred = np.nonzero(~placed)[0]
        # per unit: no chunk, or a chunk of k tokens of one deferred request
        options = []
        for j in range(units):
            extra, saved, who = [0.0], [0.0], [-1]
            for i in deferred:
                k = np.arange(1, min(int(problem.new_tokens[i]) - 1, int(left[j])) + 1)
                cost = prefill_chunk_cost_us(k, np.full(k.size, problem.cached_tokens[i]),
                                             problem.coefficients)
                extra += list(cost)
                # the remainder is priced as a deferral of its own (objective.remainder_price_us)
                saved += list(problem.penalty_us[i]
                              - remainder_price_us(problem, np.full(k.size, i), k))
                who += [int(i)] * k.size
            options.append((np.array(extra), np.array(saved), np.array(who)))
        (e0, s0, w0), (e1, s1, w1) = options
        step = np.maximum(time[0] + e0[:, None], time[1] + e1[None, :])
        value = problem.base_us + step + pen - s0[:, None] - s1[None, :]
        value[(w0[:, None] == w1[None, :]) & (w0[:, None] >= 0)] = np.inf  # one chunk a request
        best = min(best, float(value.min()))
    return best


@pytest.mark.parametrize("seed", range(10))
def test_chunked_host_bound_below_the_enumerated_chunked_optimum(seed: int) -> None:
    rng = np.random.default_rng(7000 + seed)
    coefficients = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.05,
                                   gamma_us_per_request=0.0)
    new = np.concatenate([rng.integers(25, 40, 2), rng.integers(8, 25, int(rng.integers(2, 4)))])
    problem = PrefillWindow.from_arrays(
        new, np.zeros(new.size, np.int64), np.zeros(new.size), capacity_tokens=[40, 40],
        load_tokens=rng.integers(0, 10, 2), coefficients=coefficients, allow_chunking=True,
        defer_factor=float(rng.uniform(1.0, 2.0)), defer_cost_us=0.0)
    best = _chunked_optimum(problem)
    assert long_requests(problem, best).size >= 2
    # slightly above the optimum, long requests' chunks may share a unit: caught only by the
    # cases with fewer hosts than placed long requests (and the chunks' own cost rows)
    for upper in (best, 1.02 * best):
        assert host_bound(problem, upper) <= best * (1 + 1e-9)


@pytest.mark.parametrize("chunking", [False, True])
def test_a_request_without_new_tokens_leaves_the_bound_valid(cat, chunking: bool) -> None:
    # a chunk fraction capped below zero once made every case infeasible, so the bound
    # claimed the upper given was optimal
    coefficients = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.01,
                                   gamma_us_per_request=5.0)
    problem = PrefillWindow.from_arrays([80, 80, 0] + [20] * 6, [0] * 9, [0.0] * 9,
                                        capacity_tokens=[100] * 3, coefficients=coefficients,
                                        allow_chunking=chunking)
    best = cat.brute_force(dataclasses.replace(problem, allow_chunking=False))[0]
    for upper in (best, 1.05 * best, 1.2 * best):
        assert long_requests(problem, upper).size >= 2
        assert host_bound(problem, upper) <= best * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_chunk_points_never_cost_more_than_the_chunks_they_mix(seed: int) -> None:
    from sbsopt.window.host_bound import CHUNK_POINTS, _chunk_point_costs

    rng = np.random.default_rng(seed)
    lin, quad, top = rng.uniform(0.1, 10.0, 3), rng.uniform(0.0, 20.0, 3), rng.uniform(0.2, 1.0, 3)
    step = top / CHUNK_POINTS
    costs = _chunk_point_costs(lin, quad, step)
    for k in range(3):
        # the cheapest mix making a chunk of ``a``: the chord between the neighbouring points
        points = np.concatenate([[0.0], step[k] * np.arange(1, CHUNK_POINTS + 1)])
        a = np.linspace(0.0, top[k], 4001)
        mixed = np.interp(a, points, np.concatenate([[0.0], costs[k]]))
        exact = lin[k] * a + quad[k] * a * a
        assert (mixed <= exact + 1e-9).all()
        # and no further below it than the chord rule allows
        assert (exact - mixed).max() <= quad[k] * step[k] ** 2 + 1e-9


def _many_long(seed: int, cat) -> PrefillWindow:
    """Five long prompts and twenty short ones on six units, chunking on: 16 cases."""
    rng = np.random.default_rng(seed)
    new = np.concatenate([rng.integers(5000, 8000, 5), rng.integers(200, 2500, 20)])
    return PrefillWindow.from_arrays(
        new, np.zeros(new.size, np.int64), np.sort(rng.uniform(0.0, 0.2, new.size)),
        capacity_tokens=rng.integers(8000, 12_000, 6), load_tokens=rng.integers(0, 1500, 6),
        now_s=0.25, coefficients=cat.PREFILL, allow_chunking=True, defer_factor=0.8)


@pytest.mark.parametrize("seed", range(4))
def test_dual_screen_bounds_every_case_below_its_lp(cat, seed: int) -> None:
    import highspy

    from sbsopt.window.host_bound import (
        _HOST_CHUNKS,
        _HOST_TIME,
        _HOSTS,
        _OTHER_CHUNKS,
        _OTHER_TIME,
        _PLACED,
        _DualScreen,
        _host_lp,
    )

    problem = _many_long(seed, cat)
    upper = solve(problem, method="greedy").objective * 1.05
    long = long_requests(problem, upper)
    assert long.size >= 3
    lp, _constant = _host_lp(problem, long, upper)
    solver = highspy.Highs()
    solver.setOptionValue("output_flag", False)
    solver.passModel(lp)
    screen = _DualScreen(lp, problem.n_units)
    units, values = problem.n_units, {}
    for placed in range(long.size, -1, -1):
        for hosts in (range(placed, 0, -1) if placed else (0,)):
            solver.changeCoeff(_HOST_TIME, 0, -float(hosts))
            solver.changeCoeff(_OTHER_TIME, 0, -float(units - hosts))
            solver.changeRowBounds(_HOSTS, hosts, hosts)
            solver.changeRowBounds(_PLACED, placed, placed)
            solver.changeRowBounds(_HOST_CHUNKS, -highspy.kHighsInf, hosts)
            solver.changeRowBounds(_OTHER_CHUNKS, -highspy.kHighsInf, units - hosts)
            solver.run()
            if solver.getModelStatus() == highspy.HighsModelStatus.kOptimal:
                values[placed, hosts] = solver.getInfo().objective_function_value
                screen.add(np.asarray(solver.getSolution().row_dual))
    assert len(values) >= 5
    for (placed, hosts), value in values.items():
        screened = screen.bound(placed, hosts)
        assert screened <= value + 1e-6 * abs(value)
    # a case's own duals give back its value
    last = list(values)[-1]
    assert screen.bound(*last) == pytest.approx(values[last], rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_screening_cases_leaves_the_bound_unchanged(cat, seed: int, monkeypatch) -> None:
    from sbsopt.window.host_bound import _DualScreen

    problem = _many_long(seed, cat)
    upper = solve(problem, method="greedy").objective
    screened = host_bound(problem, upper)
    monkeypatch.setattr(_DualScreen, "bound", lambda self, placed, hosts: -np.inf)
    assert host_bound(problem, upper) == pytest.approx(screened, rel=1e-6)
    assert screened > lp_bound(problem)
