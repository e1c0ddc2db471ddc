"""The simulator under random instance failures: nothing lost, deterministic, TTFT cost measured.

A fixed-cost stand-in model keeps runs fast: the properties are about bookkeeping under faults
(every request completed, rejected with a reason, or in flight at the horizon), not about the
calibrated step times.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbsopt.costmodel import DecodeCoefficients, PrefillCoefficients
from sbsopt.sim import ClusterConfig, FaultSpec, SchedulerConfig, simulate
from sbsopt.workload import Workload, synthetic_arrivals


class _FixedModel:
    """Prefill step = 20 ms + 10 us per token of the fullest rank; decode step = 5 ms."""

    kv_capacity_tokens_per_rank = 200_000

    def prefill_step_us(self, new_tokens, attn_pairs, requests=None):
        return 20_000.0 + 10.0 * float(np.max(new_tokens))

    def decode_step_us(self, batch, kv_tokens, query_tokens=1):
        return 5_000.0

    def prefill_coefficients(self):
        return PrefillCoefficients(base_us=20_000.0, alpha_us_per_token=10.0, beta_us_per_pair=0.0,
                                   gamma_us_per_request=0.0)

    def decode_coefficients(self, query_tokens=1):
        return DecodeCoefficients(base_us=5_000.0, us_per_request=0.0, us_per_kv_token=0.0)

    def kv_transfer_us(self, tokens):
        return 2_000.0


_MODELS = (_FixedModel(), _FixedModel())
_CLUSTER = ClusterConfig(prefill_instances=2, decode_instances=2, prefill_ep=2, decode_ep=2,
                         chunk_tokens=1024, max_decode_batch=8)


def _workload(n=150, seed=0):
    rng = np.random.default_rng(seed)
    return Workload.from_arrays(synthetic_arrivals(n, rate=30.0, seed=seed), rng.integers(1, 3000, n),
                                rng.integers(2, 60, n), name="synthetic")


_fault = st.builds(
    FaultSpec,
    st.sampled_from(["prefill", "decode"]),
    st.integers(0, 1),
    st.floats(0.0, 6.0, allow_nan=False),
    st.one_of(st.none(), st.floats(0.05, 3.0, allow_nan=False)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(faults=st.lists(_fault, max_size=5), router=st.sampled_from(["sbs", "round_robin", "least_tokens"]),
       horizon=st.sampled_from([None, 4.0]), retries=st.integers(0, 2))
def test_no_request_is_lost_under_random_faults(faults, router, horizon, retries):
    wl = _workload(n=80)
    res = simulate(wl, cluster=_CLUSTER, router=router, cost_models=_MODELS, faults=faults, horizon_s=horizon,
                   scheduler=SchedulerConfig(fault_max_retries=retries))
    s = res.summary()
    assert s["completed"] + s["rejected"] + s["in_flight"] == s["requests"] == len(wl)
    table = res.requests
    rejected = table[table["status"] == "rejected"]
    assert (rejected["reject_reason"] != "").all()
    if horizon is None:
        assert s["in_flight"] == 0
    assert len(s["faults"]) == len(faults)


def test_faults_are_deterministic():
    faults = ["prefill:0@1s+0.5s", "decode:1@2s", "prefill:1@2.5s+1s"]
    runs = [json.dumps({k: v for k, v in simulate(_workload(), cluster=_CLUSTER, cost_models=_MODELS,
                                                   faults=faults, slow_ranks=["decode:0:1:1.5"]).summary().items()
                        if k != "sim_wall_s"}, sort_keys=True) for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("router", ["sbs", "least_tokens"])
def test_ttft_impact_of_a_prefill_failure(router):
    wl = _workload(n=300)
    base = simulate(wl, cluster=_CLUSTER, router=router, cost_models=_MODELS).summary()
    hit = simulate(wl, cluster=_CLUSTER, router=router, cost_models=_MODELS, faults=["prefill:0@2s+3s"]).summary()
    assert hit["completed"] == base["completed"] == len(wl)
    assert hit["redispatched"] > 0
    assert hit["ttft_ms"]["mean"] > base["ttft_ms"]["mean"]
    assert hit["ttft_ms"]["p99"] > base["ttft_ms"]["p99"]
