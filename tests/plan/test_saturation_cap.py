"""Capacity answers never exceed the saturation throughput, and a burst is not a steady state."""

from __future__ import annotations

from sbsopt.cli import main
from sbsopt.plan import SLO, max_rate, min_instances
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


def test_min_instances_burst_is_refused_and_flagged(capsys):
    # 200 requests at 400 req/s arrive within 0.5 s: any cluster drains that burst within 2 s
    code = main(["plan", "instances", "--trace", "azure-conv", "--limit", "200", "--rate", "400",
                 "--duration-s", "10", "--ttft-slo-ms", "2000", "--backend", "serial", "--json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--limit" in err and "burst" in err and "400" in err
    plan = min_instances(load_trace("azure-conv", limit=200), 400.0, SLO(ttft_ms=2000), "least_tokens",
                         max_prefill=1, max_decode=1, duration_s=10.0, backend="serial")
    assert plan.burst == burst_reason(200, 400.0, 10.0, 2000)
    d = plan.as_dict()
    assert d["steady"] is False and "burst" in d["message"]
