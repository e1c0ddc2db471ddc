"""max_rate and min_instances on the real simulator (small windows of the bundled Azure trace)."""

from __future__ import annotations

import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.plan import SLO, max_rate, min_instances, run_one
from sbsopt.sim import ClusterConfig
from sbsopt.workload import load_trace

ROUTER = "least_tokens"
SEARCH = {"rate_min": 2.0, "rate_max": 160.0, "tolerance_req_s": 8.0, "duration_s": 2.0, "backend": "serial"}
ONE = ClusterConfig(prefill_instances=1, decode_instances=1)


@pytest.fixture(scope="module")
def trace():
    return load_trace("azure-conv", limit=1000)


@pytest.fixture(scope="module")
def baseline(trace):
    return max_rate(trace, ONE, ROUTER, SLO(ttft_ms=1000, tpot_ms=100), **SEARCH)


def _rerun(trace, plan, rate):
    row = run_one({"workload": trace, "rate": rate, "duration_s": SEARCH["duration_s"], "limit": None,
                   "router": ROUTER, "prefill_instances": 1, "decode_instances": 1,
                   "ttft_slo_ms": plan.slo.ttft_ms, "tpot_slo_ms": plan.slo.tpot_ms})
    return plan.slo.meets(row), row


def test_max_rate_is_verified_by_a_passing_and_a_failing_simulation(trace, baseline):
    s = baseline.search
    assert s.feasible and s.bounded
    assert s.fail_rate_req_s - s.rate_req_s <= s.tolerance_req_s
    ok, row = _rerun(trace, baseline, s.rate_req_s)
    assert ok and row["slo_attainment"] == s.confirm["slo_attainment"]
    ok_above, _ = _rerun(trace, baseline, s.fail_rate_req_s)
    assert not ok_above
    d = baseline.as_dict()
    assert d["max_rate_req_s"] == s.rate_req_s and d["gpus"] == 32 + 144
    assert d["confirm"]["requests"] >= s.rate_req_s * SEARCH["duration_s"]
    assert d["cost_per_million_tokens"] > 0 and d["tokens_per_gpu_s"] > 0


def test_looser_slo_does_not_lower_the_rate(trace, baseline):
    looser = max_rate(trace, ONE, ROUTER, SLO(ttft_ms=3000, tpot_ms=100), **SEARCH)
    assert looser.search.rate_req_s >= baseline.search.rate_req_s


def test_more_prefill_instances_do_not_lower_the_rate(trace, baseline):
    bigger = max_rate(trace, ClusterConfig(prefill_instances=2, decode_instances=1), ROUTER,
                      SLO(ttft_ms=1000, tpot_ms=100), **SEARCH)
    assert bigger.search.rate_req_s >= baseline.search.rate_req_s
    assert bigger.gpus == 2 * 32 + 144


def test_infeasible_even_at_the_smallest_rate_is_an_answer(trace):
    plan = max_rate(trace, ONE, ROUTER, SLO(ttft_ms=1.0, tpot_ms=100), **SEARCH)
    assert not plan.search.feasible and plan.as_dict()["max_rate_req_s"] is None
    assert plan.search.evaluations <= 2 and "infeasible" in plan.search.message


@pytest.mark.parametrize("kwargs, field", [({"ttft_ms": 0}, "ttft_slo_ms"), ({"tpot_ms": -1}, "tpot_slo_ms"),
                                           ({"attainment": 1.5}, "attainment")])
def test_bad_slo(kwargs, field):
    with pytest.raises(InvalidInputError, match=field):
        SLO(**kwargs)


def test_min_instances_finds_a_minimal_cluster(trace, baseline):
    rate = 1.6 * baseline.search.rate_req_s  # more than one prefill instance sustains
    plan = min_instances(trace, rate, SLO(ttft_ms=1000, tpot_ms=100), ROUTER, max_prefill=4, max_decode=2,
                         duration_s=2.0, backend="serial")
    s = plan.search
    assert s.feasible and s.prefill_instances >= 2
    assert s.evaluations < 4 * 2
    seen = s.evaluated
    p, d = s.prefill_instances, s.decode_instances
    assert seen[(p, d)][0]
    assert not seen[(p - 1, d)][0] if (p - 1, d) in seen else not seen[(p - 1, 2)][0]
    out = plan.as_dict()
    assert out["gpus"] == p * 32 + d * 144 and out["cost_per_million_tokens"] > 0
    assert out["pd_ratio"] == p / d


def test_min_instances_infeasible_grid(trace):
    plan = min_instances(trace, 50.0, SLO(ttft_ms=1.0), ROUTER, max_prefill=2, max_decode=2, duration_s=1.0,
                         backend="serial")
    assert not plan.search.feasible and plan.as_dict()["prefill_instances"] is None
    with pytest.raises(InvalidInputError, match="rate"):
        min_instances(trace, 0.0)
