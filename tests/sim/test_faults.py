"""Fault injection: spec parsing, re-dispatch, recovery, rejection with a reason, slow ranks."""

from __future__ import annotations

import numpy as np
import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.sim import (
    ClusterConfig,
    FaultSpec,
    SchedulerConfig,
    SlowRank,
    parse_fault,
    parse_slow_rank,
    simulate,
)
from sbsopt.workload import Workload, synthetic_arrivals


def _cluster(**kwargs):
    base = dict(prefill_instances=2, decode_instances=2, prefill_ep=2, decode_ep=2,
                chunk_tokens=1024, max_decode_batch=8, idle_stepping=False,
                mtp_acceptance=0.0)  # one token per step: the step-by-step references
    base.update(kwargs)
    return ClusterConfig(**base)


def _workload(n=120, rate=20.0, seed=0):
    rng = np.random.default_rng(seed)
    return Workload.from_arrays(synthetic_arrivals(n, rate=rate, seed=seed), rng.integers(1, 2000, n),
                                rng.integers(2, 40, n), name="synthetic")


def _accounted(summary):
    return summary["completed"] + summary["rejected"] + summary["in_flight"] == summary["requests"]


@pytest.mark.parametrize("text, expected", [
    ("prefill:0@300s", FaultSpec("prefill", 0, 300.0, None)),
    ("decode:2@600s+120s", FaultSpec("decode", 2, 600.0, 120.0)),
    ("decode:1@0.5+2", FaultSpec("decode", 1, 0.5, 2.0)),
])
def test_parse_fault(text, expected):
    assert parse_fault(text) == expected


@pytest.mark.parametrize("text", ["prefill:0", "gpu:0@1s", "prefill:-1@1s", "prefill:0@-5s", "prefill:0@1s+0s",
                                  "prefill:0@1s+-3s", "prefill:x@1s", "prefill:0@nans", "prefill:0@infs", ""])
def test_malformed_fault_names_flag_and_value(text):
    with pytest.raises(InvalidInputError) as info:
        parse_fault(text)
    assert info.value.field == "--fail" and info.value.value == text


@pytest.mark.parametrize("text", ["prefill:0:1", "prefill:0:1:0.5", "decode:a:1:2", "cpu:0:0:2", "prefill:0:0:inf"])
def test_malformed_slow_rank(text):
    with pytest.raises(InvalidInputError) as info:
        parse_slow_rank(text)
    assert info.value.field == "--slow-rank"
    assert parse_slow_rank("decode:1:0:2.5") == SlowRank("decode", 1, 0, 2.5)


def test_unknown_instance_or_rank_is_refused(fake_model):
    wl = _workload(n=5)
    for bad in (dict(faults=["prefill:2@1s"]), dict(faults=["decode:5@1s"]),
                dict(slow_ranks=["prefill:0:2:2"]), dict(slow_ranks=["decode:2:0:2"])):
        with pytest.raises(InvalidInputError):
            simulate(wl, cluster=_cluster(), cost_models=fake_model(), **bad)
    with pytest.raises(InvalidInputError):
        FaultSpec("prefill", 0, -1.0)


@pytest.mark.parametrize("router", ["sbs", "round_robin", "least_tokens"])
def test_prefill_failure_redispatches_and_nothing_is_lost(fake_model, router):
    models = fake_model(base_us=50_000.0, per_token_us=20.0, dbase_us=5_000.0)
    wl = _workload()
    res = simulate(wl, cluster=_cluster(), router=router, cost_models=models, faults=["prefill:0@1.5s"])
    s = res.summary()
    assert s["redispatched"] > 0 and s["completed"] == s["requests"] and _accounted(s)
    assert s["faults"] == [{"kind": "prefill", "index": 0, "at_s": 1.5, "recover_after_s": None}]
    # after the failure no request starts a prefill on instance 0 (units 0 and 1)
    t = res.requests
    late = t["arrival_s"] > 1.5
    assert (t.loc[late, "prefill_unit"] >= 2).all()


@pytest.mark.parametrize("router", ["sbs", "round_robin"])
def test_decode_failure_recomputes_through_prefill(fake_model, router):
    models = fake_model(base_us=20_000.0, dbase_us=20_000.0)
    wl = _workload()
    res = simulate(wl, cluster=_cluster(), router=router, cost_models=models, faults=["decode:1@2s"])
    s = res.summary()
    assert s["redispatched"] > 0 and s["completed"] == s["requests"]
    t = res.requests
    assert (t.loc[t["arrival_s"] > 2.5, "decode_unit"] < 2).all()
    base = simulate(wl, cluster=_cluster(), router=router, cost_models=models).summary()
    # recomputation costs prefill forwards
    assert s["prefill_forwards"] > base["prefill_forwards"]


def test_decode_failure_recomputes_the_generated_tokens_and_resumes(fake_model):
    """One request, 200 output tokens at 20 ms a decode step; its decode instance dies at 2 s,
    after about 97 tokens. The recompute prefills the prompt and those tokens, then decodes
    only the rest: it ends about 2 s after the failure, not 4 s (a full regeneration)."""
    models = fake_model(base_us=50_000.0, dbase_us=20_000.0)
    wl = Workload.from_arrays([0.0], [100], [200])
    cluster = _cluster(prefill_instances=1, decode_instances=2)
    clean = simulate(wl, cluster=cluster, router="round_robin", cost_models=models)
    decode_s = clean.requests["e2e_s"][0] - clean.requests["ttft_s"][0]
    assert decode_s == pytest.approx(199 * 0.02, rel=1e-6)
    unit = int(clean.requests["decode_unit"][0])
    res = simulate(wl, cluster=cluster, router="round_robin", cost_models=models,
                   faults=[f"decode:{unit // cluster.decode_ep}@2s"])
    s = res.summary()
    assert s["redispatched"] == 1 and s["completed"] == 1
    generated = int((2.0 - clean.requests["ttft_s"][0]) / 0.02) + 1  # prefill's token + steps
    left = 200 - generated  # the recompute's prefill makes one of them
    assert res.requests["e2e_s"][0] == pytest.approx(2.0 + 0.05 + (left - 1) * 0.02, abs=1e-6)
    assert res.requests["ttft_s"][0] == pytest.approx(clean.requests["ttft_s"][0])


@pytest.mark.parametrize("router", ["sbs", "least_tokens"])
def test_recovery_brings_the_instance_back(fake_model, router):
    models = fake_model(base_us=20_000.0, dbase_us=5_000.0)
    wl = _workload(n=200, rate=40.0)
    res = simulate(wl, cluster=_cluster(), router=router, cost_models=models,
                   faults=["prefill:0@1s+1s", "prefill:1@1s+1s"])
    s = res.summary()
    assert s["completed"] == s["requests"] and s["rejected"] == 0
    t = res.requests
    after = t[t["arrival_s"] > 2.5]
    assert (after["prefill_unit"] < 2).any()  # instance 0 takes work again
    during = t[(t["arrival_s"] > 1.0) & (t["arrival_s"] < 2.0)]
    assert (during["ttft_s"] + during["arrival_s"] >= 2.0).all()  # nothing prefilled while all dead


@pytest.mark.parametrize("router", ["sbs", "round_robin"])
def test_rejection_with_reason_when_nothing_is_alive(fake_model, router):
    models = fake_model(base_us=20_000.0, dbase_us=5_000.0)
    wl = _workload()
    s = simulate(wl, cluster=_cluster(decode_instances=1), router=router, cost_models=models,
                 faults=["decode:0@1s"]).summary()
    assert s["rejected"] > 0 and set(s["rejected_reasons"]) == {"no_live_instance"} and _accounted(s)
    assert s["in_flight"] == 0
    # a recovery after the horizon does not help either
    s = simulate(wl, cluster=_cluster(decode_instances=1), router=router, cost_models=models, horizon_s=5.0,
                 faults=["decode:0@1s+100s"]).summary()
    assert s["rejected_reasons"].get("no_live_instance", 0) > 0 and _accounted(s)


def test_retry_limit_rejects(fake_model):
    models = fake_model(base_us=200_000.0, dbase_us=5_000.0)
    wl = Workload.from_arrays([0.0], [100], [2])
    sched = SchedulerConfig(fault_max_retries=1)
    res = simulate(wl, cluster=_cluster(prefill_instances=1), router="round_robin", scheduler=sched,
                   cost_models=models, faults=["prefill:0@0.1s+0.05s", "prefill:0@0.2s+0.05s"])
    s = res.summary()
    assert s["redispatched"] == 1 and s["rejected_reasons"] == {"fault_retry_limit": 1}


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_slow_rank_slows_the_instance_step_by_the_factor(fake_model, kind):
    models = fake_model(base_us=10_000.0, dbase_us=4_000.0)
    wl = Workload.from_arrays([0.0], [100], [11])
    cluster = _cluster(prefill_instances=1, decode_instances=1)
    base = simulate(wl, cluster=cluster, router="round_robin", cost_models=models).requests
    slow = simulate(wl, cluster=cluster, router="round_robin", cost_models=models,
                    slow_ranks=[f"{kind}:0:1:2.5"]).requests
    col = "exec_s" if kind == "prefill" else "tpot_s"
    assert base[col].iloc[0] == pytest.approx(0.010 if kind == "prefill" else 0.004)
    assert slow[col].iloc[0] == pytest.approx(2.5 * base[col].iloc[0])


def test_colocated_refuses_faults(fake_model):
    with pytest.raises(InvalidInputError):
        simulate(_workload(n=3), mode="colocated", cost_models=fake_model(), faults=["prefill:0@1s"])
