"""Planning in colocated mode with FairBatching/Sarathi engines, on the real colocated simulator."""

from __future__ import annotations

import json

import pytest

from sbsopt.cli import main
from sbsopt.plan import SLO, Policy, max_rate, run_one, sweep
from sbsopt.sim import ClusterConfig, simulate
from sbsopt.sim.batching import make_iteration_policy
from sbsopt.sim.colocated import default_colocated_ep
from sbsopt.workload import load_trace

EP = default_colocated_ep()
SEARCH = {"rate_min": 1.0, "rate_max": 1000.0, "tolerance_req_s": 25.0, "duration_s": 2.0, "backend": "serial"}
FAIR = Policy(router="fair_load", batching="fairbatching", mode="colocated")
SLO_2S = SLO(ttft_ms=2000, tpot_ms=100)


@pytest.fixture(scope="module")
def trace():
    return load_trace("azure-conv", limit=600)


@pytest.fixture(scope="module")
def one_engine(trace):
    return max_rate(trace, ClusterConfig(prefill_instances=1, prefill_ep=EP), FAIR, SLO_2S, **SEARCH)


def _rerun(trace, rate):
    return run_one({"workload": trace, "limit": None, "rate": rate, "duration_s": SEARCH["duration_s"],
                    "mode": "colocated", "router": "fair_load", "batching": "fairbatching", "instances": 1,
                    "ep": EP, "ttft_slo_ms": 2000, "tpot_slo_ms": 100})


def test_colocated_fairbatching_max_rate_is_confirmed_and_bracketed(trace, one_engine):
    s = one_engine.search
    assert s.feasible and s.rate_req_s <= one_engine.saturation_req_s
    assert one_engine.gpus == EP and s.confirm["gpus"] == EP
    passing = _rerun(trace, s.rate_req_s)
    assert SLO_2S.meets(passing) and passing["slo_attainment"] == s.confirm["slo_attainment"]
    if s.bounded:
        assert s.fail_rate_req_s - s.rate_req_s <= s.tolerance_req_s
        assert not SLO_2S.meets(_rerun(trace, s.fail_rate_req_s))
    else:  # the SLO held up to saturation: the answer is capped there, never above it
        assert one_engine.capped and not one_engine.bounded


def test_colocated_more_engines_do_not_lower_the_rate(trace, one_engine):
    two = max_rate(trace, ClusterConfig(prefill_instances=2, prefill_ep=EP), FAIR, SLO_2S, **SEARCH)
    assert two.search.rate_req_s >= one_engine.search.rate_req_s and two.gpus == 2 * EP


def test_run_one_passes_mode_and_policy_to_the_simulator(trace):
    row = _rerun(trace, 100.0)
    direct = simulate(trace.head(201), cluster=ClusterConfig(prefill_instances=1, prefill_ep=EP), router="fair_load",
                      rate=100.0, mode="colocated", batching=make_iteration_policy("fairbatching", tpot_slo_s=0.1))
    summary = direct.summary(ttft_slo_ms=2000, tpot_slo_ms=100)
    assert row["ttft_p90_ms"] == summary["ttft_ms"]["p90"] and row["completed"] == summary["completed"]
    assert row["slo_attainment"] == summary["slo_attainment"]


def test_colocated_sweep_over_batching_policies():
    table = sweep([{"mode": "colocated", "router": "fair_load", "batching": b, "instances": 2, "limit": 40,
                    "rate": 10.0, "ttft_slo_ms": 2000, "tpot_slo_ms": 100, "seed": seed}
                   for b in ("sarathi", "fairbatching") for seed in (0, 1)], backend="serial")
    assert list(table["batching"]) == ["sarathi", "sarathi", "fairbatching", "fairbatching"]
    assert (table["gpus"] == 2 * EP).all() and (table["completed"] == 40).all()
    assert table["slo_attainment"].between(0, 1).all()
    # The engine policy really reaches the simulator: the two policies batch differently.
    assert table.loc[0, "tpot_p90_ms"] != table.loc[2, "tpot_p90_ms"]


def test_plan_cli_colocated_fairbatching(capsys):
    # 2 s TTFT: the window must span 4 s of arrivals to be a steady state, not a burst
    argv = ["--trace", "azure-conv", "--limit", "600", "--duration-s", "4", "--router", "fair_load",
            "--mode", "colocated", "--batching", "fairbatching", "--backend", "serial", "--json"]
    assert main(["plan", "capacity", *argv, "--instances", "1", "--ep", str(EP), "--tolerance", "25",
                 "--rate-min", "1", "--rate-max", "1000"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["gpus"] == EP and d["max_rate_req_s"] > 0 and d["slo"]["ttft_ms"] == 2000
    assert d["policy"]["mode"] == "colocated" and d["policy"]["batching"] == "fairbatching"
    assert main(["plan", "instances", *argv, "--rate", "140", "--max-prefill", "3"]) == 0  # 600 requests span 4.3 s
    d = json.loads(capsys.readouterr().out)
    assert d["feasible"] and d["decode_instances"] == 0 and d["gpus"] == d["prefill_instances"] * EP


def test_sweep_cli_engine_flags_fill_base_parameters(capsys, tmp_path):
    grid = tmp_path / "batching.toml"
    grid.write_text('[base]\nlimit = 30\nrate = 10.0\n[grid]\nbatching = ["sarathi", "fairbatching"]\n')
    assert main(["sweep", "--grid", str(grid), "--backend", "serial", "--mode", "colocated", "--router", "fair_load",
                 "--instances", "2", "--ttft-slo-ms", "2000", "--tpot-slo-ms", "100", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["batching"] for r in rows] == ["sarathi", "fairbatching"]
    assert all(r["mode"] == "colocated" and r["gpus"] == 2 * EP and r["completed"] == 30 for r in rows)
    assert all("prefill_instances" not in r for r in rows)  # flags left at their defaults are not injected


def test_colocated_instance_plan_speaks_of_engines():
    from sbsopt.plan.planner import InstancePlan
    from sbsopt.plan.search import search_min_instances

    policy = Policy(router="fair_load", mode="colocated", batching="fairbatching")
    found = search_min_instances(lambda pts: [(p >= 3, {}) for p, _ in pts], max_prefill=5,
                                 max_decode=1, gpus=lambda p, d: 16 * p)
    d = InstancePlan(found, None, 10.0, SLO(), policy).as_dict()
    assert (d["prefill_instances"], d["decode_instances"]) == (3, 0)
    assert d["message"].startswith("3 colocated engines") and "decode" not in d["message"]
    none = search_min_instances(lambda pts: [(False, {}) for _ in pts], max_prefill=5,
                                max_decode=1, gpus=lambda p, d: 16 * p)
    d = InstancePlan(none, None, 10.0, SLO(), policy).as_dict()
    assert d["decode_instances"] is None and "decode" not in d["message"]
