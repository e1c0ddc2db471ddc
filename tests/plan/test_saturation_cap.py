"""Capacity answers never exceed the saturation throughput, and a burst is not a steady state."""

from __future__ import annotations

from sbsopt.cli import main
from sbsopt.plan import SLO, max_rate
from sbsopt.plan.planner import burst_reason
from sbsopt.sim import ClusterConfig, saturation_capacity
from sbsopt.workload import load_trace


def test_limit_burst_is_refused_naming_limit_and_duration(capsys):
    code = main(["plan", "capacity", "--limit", "2000", "--ttft-slo-ms", "4000", "--backend", "serial", "--json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--limit" in err and "--duration-s" in err and "burst" in err


def test_answer_is_capped_at_saturation_when_the_slo_always_holds():
    wl = load_trace("azure-conv", limit=3000)
    cluster = ClusterConfig()
    saturation = saturation_capacity(wl, cluster).req_s
    # a loose SLO holds at any rate; rate_max far above saturation is lowered to it
    plan = max_rate(wl, cluster, "least_tokens", SLO(ttft_ms=1000, attainment=0.05), rate_max=50 * saturation,
                    duration_s=3.0, backend="serial")
    d = plan.as_dict()
    assert d["max_rate_req_s"] <= saturation and d["saturation_req_s"] == saturation
    assert d["capped"] and not d["bounded"] and "saturation" in d["message"]


def test_burst_confirmation_is_flagged_unbounded():
    wl = load_trace("azure-conv", limit=400)
    plan = max_rate(wl, ClusterConfig(), "least_tokens", SLO(ttft_ms=2000), duration_s=10.0, backend="serial")
    assert plan.search.feasible and plan.search.rate_req_s <= plan.saturation_req_s
    assert plan.burst is not None and not plan.bounded and not plan.as_dict()["steady"]
    assert burst_reason(400, plan.search.rate_req_s, 10.0, 2000) == plan.burst
