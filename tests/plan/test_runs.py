"""run_one: scheduler parameters reach the simulator; the TTFT split and decode balance columns."""

from __future__ import annotations

import dataclasses

import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.plan import SCHEDULER_PARAMETERS, SLO, max_rate, run_one, step_params
from sbsopt.sim import ClusterConfig, SchedulerConfig, simulate
from sbsopt.workload import load_trace

PRODUCTION = {"router_replicas": 3, "dp_pinning": "bootstrap_room"}
BASE = {"trace": "azure-conv", "limit": 600, "rate": 150.0, "prefill_instances": 1, "decode_instances": 1,
        "ttft_slo_ms": 2000.0, "tpot_slo_ms": 100.0}


def test_scheduler_parameters_are_run_parameters():
    assert {"router_replicas", "dp_pinning"} <= set(SCHEDULER_PARAMETERS)
    assert set(SCHEDULER_PARAMETERS) == {f.name for f in dataclasses.fields(SchedulerConfig)}


def test_production_routing_reaches_the_simulator_and_sbs_ignores_it():
    wl = load_trace("azure-conv", limit=600)
    expected = simulate(wl, cluster=ClusterConfig(prefill_instances=1, decode_instances=1), router="least_tokens",
                        rate=150.0, scheduler=SchedulerConfig(**PRODUCTION)).summary()
    row = run_one({**BASE, "router": "least_tokens", **PRODUCTION})
    assert row["ttft_p99_ms"] == pytest.approx(expected["ttft_ms"]["p99"])
    assert row["ttft_p99_ms"] != run_one({**BASE, "router": "least_tokens"})["ttft_p99_ms"]
    assert run_one({**BASE, "router": "sbs", **PRODUCTION})["ttft_p99_ms"] == \
        run_one({**BASE, "router": "sbs"})["ttft_p99_ms"]


def test_colocated_runs_refuse_scheduler_parameters():
    with pytest.raises(InvalidInputError, match="scheduler.*colocated"):
        run_one({"trace": "azure-conv", "limit": 20, "rate": 10.0, "mode": "colocated", **PRODUCTION})


def test_rows_carry_the_ttft_split_and_the_decode_batches():
    row = run_one({**BASE, "router": "sbs"})
    assert row["sched_wait_ms"] > 0 and row["engine_wait_ms"] >= 0 and row["exec_ms"] > 0
    assert 0 < row["decode_batch_mean"] and row["decode_batch_imbalance"] >= 1
    assert 0 <= row["slo_attainment"] <= min(row["slo_attainment_ttft"], row["slo_attainment_tpot"])


def test_max_rate_steps_with_a_scheduler_are_step_params_rows():
    wl = load_trace("azure-conv", limit=600)
    one = ClusterConfig(prefill_instances=1, decode_instances=1)
    plan = max_rate(wl, one, "least_tokens", SLO(), scheduler=SchedulerConfig(**PRODUCTION), duration_s=2.5,
                    rate_min=20, rate_max=200, tolerance_req_s=40, backend="serial")
    rate = plan.search.rate_req_s
    row = run_one(step_params(wl, one, "least_tokens", SLO(), rate, scheduler=SchedulerConfig(**PRODUCTION),
                              duration_s=2.5))
    assert row["router_replicas"] == 3 and row["slo_attainment"] == plan.search.confirm["slo_attainment"]
