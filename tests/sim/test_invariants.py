"""Nothing is lost: completed + rejected + in flight == requests over random workloads."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbsopt.kvblocks import request_kv_blocks
from sbsopt.sim import ClusterConfig, SchedulerConfig, routers_for, simulate
from sbsopt.sim.config import INTERVALS
from sbsopt.workload import Workload


@st.composite
def _workloads(draw):
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.05), min_size=n, max_size=n))
    inputs = draw(st.lists(st.integers(1, 6000), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    return Workload.from_arrays(np.cumsum(gaps), inputs, outputs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    wl=_workloads(),
    router=st.sampled_from(routers_for("disaggregated")),
    interval=st.sampled_from(INTERVALS),
    horizon=st.one_of(st.none(), st.floats(0.01, 2.0)),
    report=st.sampled_from([0.0, 0.01, 0.2]),
    idle_stepping=st.booleans(),
    kv_tokens=st.sampled_from([2048, 10**6]),
)
def test_requests_are_conserved(fake_model, wl, router, interval, horizon, report, idle_stepping,
                                kv_tokens):
    model, _ = fake_model(base_us=5000.0, per_token_us=1.0, dbase_us=2000.0, per_kv_us=0.01,
                          transfer_us=300.0)
    cluster = ClusterConfig(prefill_instances=2, decode_instances=2, prefill_ep=2, decode_ep=3,
                            chunk_tokens=2048, max_decode_batch=4, kv_capacity_tokens=kv_tokens,
                            max_prompt_tokens=5000, idle_stepping=idle_stepping)
    res = simulate(wl, cluster=cluster, scheduler=SchedulerConfig(report_period_s=report),
                   router=router, interval=interval, horizon_s=horizon, cost_models=(model, model))
    s = res.summary()
    assert s["completed"] + s["rejected"] + s["in_flight"] == len(wl)
    t = res.requests
    done = t["status"] == "completed"
    # causality: first token after arrival, completion after first token
    assert (t.loc[done, "ttft_s"] > 0).all()
    assert (t.loc[done, "e2e_s"] >= t.loc[done, "ttft_s"] - 1e-12).all()
    assert (t.loc[t["sched_wait_s"].notna(), "sched_wait_s"] >= 0).all()
    if horizon is None:
        assert s["in_flight"] == 0
        kv_too_large = (wl.output_tokens > 1) & (
            request_kv_blocks(wl.input_tokens + wl.output_tokens, cluster.kv_block_tokens)
            > kv_tokens // cluster.kv_block_tokens
        )  # a single-token answer comes from prefill and never needs decode KV
        too_long = (wl.input_tokens > 5000) | kv_too_large
        assert s["rejected"] == int(too_long.sum())


def test_mtp_acceptance_shortens_decode_per_token() -> None:
    """With MTP a decode step yields 1 + acceptance tokens: TPOT falls though each step is longer."""
    from sbsopt.sim import ClusterConfig, simulate
    from sbsopt.workload import load_trace

    wl = load_trace("azure-conv", limit=40).with_rate(20.0)
    tpot = {}
    for rate in (0.0, 0.9):
        cluster = ClusterConfig(prefill_instances=1, decode_instances=1, mtp_acceptance=rate)
        summary = simulate(wl, cluster=cluster, router="round_robin", seed=0).summary()
        assert summary["completed"] == 40
        tpot[rate] = summary["tpot_ms"]["mean"]
    assert tpot[0.9] < tpot[0.0]
