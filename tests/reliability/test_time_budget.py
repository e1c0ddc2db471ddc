"""Time budgets on adversarial windows (the instances of ``benchmarks/budget.py``).

Two things are asserted, neither a tight timing: (1) when CP-SAT cannot prove anything within
its budget, the answer is the greedy one, valid, with status ``TIMEOUT``; (2) no solve returns
later than its budget plus a generous stated overhead, ``_OVERHEAD_S``.  The measured
distribution (p50/p99/max) is what ``benchmarks/budget.py`` prints and the README reports.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from _benchmarks import load_benchmark

from sbsopt import window

# Generous on purpose: a loaded 2-core CI box, model building in Python, OR-Tools start-up.
_OVERHEAD_S = 1.0

budget = load_benchmark("budget")


def _timed(problem: object, **kwargs: object) -> tuple[object, float]:
    start = time.perf_counter()
    result = window.solve(problem, **kwargs)
    return result, time.perf_counter() - start


def _check_valid(problem: object, result: object, n: int, j: int) -> None:
    assignment = np.asarray(result.assignment)
    assert assignment.shape == (n,)
    assert np.all((assignment >= -1) & (assignment < j))
    np.testing.assert_array_equal(np.sort(result.deferred), np.flatnonzero(assignment == -1))


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("kind", budget.KINDS)
def test_cpsat_that_proves_nothing_returns_the_greedy_answer_as_timeout(
    phase: str, kind: str
) -> None:
    n, j = 512, 32
    problem = budget.adversarial_windows(n, j, kind=kind, phase=phase, seed=1)
    # CP-SAT starts from the better of the plain greedy and the greedy with its hint's local
    # search, the latter only when the budget holds it (stats["hint_local_search"] == 0: not)
    from sbsopt.window.budget import HINT_LOCAL_SEARCH

    plain = window.solve(problem, method="greedy", seed=0)
    searched = window.solve(problem, method="greedy", seed=0,
                            options={"local_search": HINT_LOCAL_SEARCH})
    for method in ("cpsat", "auto"):
        result, wall = _timed(problem, method=method, time_limit_s=1e-3, seed=0)
        _check_valid(problem, result, n, j)
        assert wall <= 1e-3 + _OVERHEAD_S, (method, wall)
        if result.status == window.SolveStatus.OPTIMAL:
            # Allowed only when the bound already proves the greedy answer optimal.
            assert float(result.gap) <= 1e-9, result
            continue
        assert result.status == window.SolveStatus.TIMEOUT, (method, result.status)
        greedy = plain
        if phase == "prefill" and result.stats.get("hint_local_search") != 0:
            greedy = min(plain, searched, key=lambda r: r.objective)
        assert float(result.objective) == pytest.approx(float(greedy.objective), rel=1e-9)
        np.testing.assert_array_equal(np.sort(result.deferred), np.sort(greedy.deferred))


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("time_limit_s", [0.01, 0.05])
def test_budget_plus_overhead_is_never_exceeded(phase: str, time_limit_s: float) -> None:
    for kind in budget.KINDS:
        n, j = 256, 32
        problem = budget.adversarial_windows(n, j, kind=kind, phase=phase, seed=2)
        for method in ("cpsat", "auto"):
            result, wall = _timed(problem, method=method, time_limit_s=time_limit_s, seed=0)
            _check_valid(problem, result, n, j)
            assert wall <= time_limit_s + _OVERHEAD_S, (kind, method, wall)
            assert float(result.wall_time_s) <= wall + 1e-3
            if result.status == window.SolveStatus.TIMEOUT:
                assert np.isfinite(float(result.objective))


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_budget_on_the_largest_windows(phase: str) -> None:
    for kind in budget.KINDS:
        n, j = 1024, 64
        problem = budget.adversarial_windows(n, j, kind=kind, phase=phase, seed=3)
        for method in ("cpsat", "auto"):
            result, wall = _timed(problem, method=method, time_limit_s=0.05, seed=0)
            _check_valid(problem, result, n, j)
            assert wall <= 0.05 + _OVERHEAD_S, (kind, method, wall)
