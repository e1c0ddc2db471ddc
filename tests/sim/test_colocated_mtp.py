"""Multi-token prediction in colocated engines: 2 query tokens + the MTP layer, 1 + a tokens."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from sbsopt.sim.batching import IterationCostModel
from sbsopt.sim.colocated import simulate_colocated


def _workload(n: int, rate: float, seed: int) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(arrival_s=np.cumsum(rng.exponential(1.0 / rate, n)),
                           input_tokens=rng.integers(50, 2000, n), output_tokens=rng.integers(2, 300, n))


@pytest.mark.parametrize("batching", ["sarathi", "fairbatching"])
def test_mtp_tokens_are_counted_fractionally_and_every_request_completes(batching: str) -> None:
    plain = IterationCostModel(prefill_base_us=3000.0, us_per_prefill_token=12.0, us_per_pair=0.002,
                               us_per_prefill_request=40.0, decode_base_us=2500.0, us_per_decode=60.0,
                               us_per_kv_token=0.01)
    mtp = dataclasses.replace(plain, mtp_acceptance=0.85)
    wl = _workload(200, 4.0, 1)
    runs = {c.mtp_acceptance: simulate_colocated(wl, ep=1, cost=c, batching=batching, tpot_slo_ms=60)
            for c in (plain, mtp)}
    for res in runs.values():
        assert (res.requests["status"] == "completed").all()
    # same iteration prices, 1.85 tokens per decode iteration: the decode iterations of a
    # request fall from n_out - 1 to ceil((n_out - 1) / 1.85)
    decoding = runs[0.0].iterations["decodes"].sum()
    assert runs[0.85].iterations["decodes"].sum() == pytest.approx(decoding / 1.85, rel=0.1)
    assert runs[0.85].requests["tpot_s"].median() < runs[0.0].requests["tpot_s"].median()


def test_tpot_falls_with_mtp_on_the_real_cost_model() -> None:
    from sbsopt.sim import ClusterConfig

    wl = _workload(120, 20.0, 2)
    tpot, step = {}, {}
    for rate in (0.0, 0.85):
        cluster = ClusterConfig(prefill_instances=1, prefill_ep=32, mtp_acceptance=rate)
        res = simulate_colocated(wl, cluster=cluster, batching="sarathi")
        assert (res.requests["status"] == "completed").all()
        tpot[rate] = res.requests["tpot_s"].median()
        it = res.iterations
        step[rate] = it.loc[it["prefill_tokens"] == 0, "predicted_us"].median()
    # an MTP iteration costs more (2 query tokens, one more MoE layer) but yields 1.85 tokens
    assert step[0.85] > step[0.0]
    assert tpot[0.85] < tpot[0.0]
