"""Search logic on synthetic monotone evaluations (cheap, deterministic, exact answers known)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbsopt.errors import InvalidInputError
from sbsopt.plan import search_max_rate, search_min_instances


def _threshold(limit: float, calls: list | None = None):
    def evaluate(rates):
        if calls is not None:
            calls.append(list(rates))
        return [(r <= limit, {"rate": r}) for r in rates]

    return evaluate


@settings(max_examples=60, deadline=None)
@given(limit=st.floats(0.5, 500.0), tol=st.floats(0.01, 5.0), parallel=st.integers(1, 4),
       initial=st.floats(0.2, 900.0))
def test_max_rate_brackets_the_threshold_within_tolerance(limit, tol, parallel, initial):
    r = search_max_rate(_threshold(limit), rate_min=0.2, rate_max=1000.0, tolerance_req_s=tol,
                        initial=initial, parallel=parallel)
    assert r.feasible and r.bounded
    assert r.rate_req_s <= limit < r.fail_rate_req_s
    assert r.fail_rate_req_s - r.rate_req_s <= tol + 1e-9
    # the answer is verified: one passing evaluation at the rate, one failing just above it
    assert r.confirm == {"rate": r.rate_req_s} and r.fail == {"rate": r.fail_rate_req_s}
    assert r.evaluated[r.rate_req_s][0] and not r.evaluated[r.fail_rate_req_s][0]


def test_max_rate_infeasible_at_smallest_rate_is_explicit():
    r = search_max_rate(_threshold(0.1), rate_min=1.0, rate_max=10.0, tolerance_req_s=0.1)
    assert not r.feasible and r.rate_req_s is None and r.confirm is None
    assert "infeasible" in r.message


def test_max_rate_unbounded_when_the_largest_rate_passes():
    r = search_max_rate(_threshold(1e9), rate_min=1.0, rate_max=64.0, tolerance_req_s=0.1)
    assert r.feasible and not r.bounded and r.rate_req_s == 64.0 and r.fail_rate_req_s is None


def test_max_rate_memoises_and_batches_by_parallel():
    calls: list = []
    r = search_max_rate(_threshold(7.3, calls), rate_min=1.0, rate_max=100.0, tolerance_req_s=0.05, parallel=3)
    flat = [x for batch in calls for x in batch]
    assert len(flat) == len(set(flat)) == r.evaluations
    assert all(len(batch) <= 3 for batch in calls[1:])
    serial: list = []
    search_max_rate(_threshold(7.3, serial), rate_min=1.0, rate_max=100.0, tolerance_req_s=0.05, parallel=1)
    assert len(calls) < len(serial)  # fewer rounds with parallel points


def test_max_rate_is_monotone_in_the_threshold():
    answers = [search_max_rate(_threshold(x), rate_min=0.5, rate_max=100.0, tolerance_req_s=0.01).rate_req_s
               for x in (3.0, 5.0, 5.5, 40.0)]
    assert answers == sorted(answers)


@pytest.mark.parametrize("kwargs, field", [
    ({"rate_min": 0.0}, "rate_min"), ({"rate_max": 0.5}, "rate_max"), ({"tolerance_req_s": 0.0}, "tolerance_req_s"),
    ({"growth": 1.0}, "growth"), ({"parallel": 0}, "parallel"),
])
def test_max_rate_bad_input_names_the_field(kwargs, field):
    args = {"rate_min": 1.0, "rate_max": 10.0, "tolerance_req_s": 0.1, **kwargs}
    with pytest.raises(InvalidInputError, match=field):
        search_max_rate(_threshold(3.0), **args)


def _grid_feasible(need):
    def evaluate(points):
        return [(need(p, d), {"p": p, "d": d}) for p, d in points]

    return evaluate


def _brute_force(need, max_p, max_d, gpus):
    feasible = [(gpus(p, d), p, d) for p, d in itertools.product(range(1, max_p + 1), range(1, max_d + 1))
                if need(p, d)]
    return min(feasible) if feasible else None


@settings(max_examples=80, deadline=None)
@given(a=st.floats(0.5, 12.0), b=st.floats(0.5, 12.0), c=st.floats(0.0, 40.0), pep=st.integers(1, 64),
       dep=st.integers(1, 160), parallel=st.integers(1, 3))
def test_min_instances_matches_brute_force_with_fewer_evaluations(a, b, c, pep, dep, parallel):
    def need(p, d):  # monotone in p and d
        return p >= a and d >= b and p * d >= c

    def gpus(p, d):
        return p * pep + d * dep

    max_p, max_d = 10, 8
    r = search_min_instances(_grid_feasible(need), max_prefill=max_p, max_decode=max_d, gpus=gpus,
                             parallel=parallel)
    best = _brute_force(need, max_p, max_d, gpus)
    if best is None:
        assert not r.feasible and r.prefill_instances is None
        return
    assert r.feasible and need(r.prefill_instances, r.decode_instances)
    assert gpus(r.prefill_instances, r.decode_instances) == best[0]
    assert r.evaluations <= max_p + max_d + 1 + parallel * max_p
    assert r.evaluated[(r.prefill_instances, r.decode_instances)][0]
    for p, d in r.frontier:  # frontier points are minimal: one fewer decode instance fails
        assert need(p, d) and (d == 1 or not need(p, d - 1))


def test_min_instances_prunes_most_of_a_large_grid():
    r = search_min_instances(_grid_feasible(lambda p, d: p * d >= 40), max_prefill=40, max_decode=40,
                             gpus=lambda p, d: p + d)
    assert (r.prefill_instances * r.decode_instances >= 40) and r.prefill_instances + r.decode_instances == 13
    assert r.evaluations < 100 < 40 * 40


def test_min_instances_infeasible_grid_is_explicit():
    r = search_min_instances(_grid_feasible(lambda p, d: False), max_prefill=3, max_decode=2, gpus=lambda p, d: p + d)
    assert not r.feasible and r.frontier == () and "infeasible" in r.message and r.evaluations == 1
