import numpy as np
import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.sim import ClusterConfig, SchedulerConfig, simulate
from sbsopt.workload import Workload, synthetic_arrivals

IMMEDIATE = ["round_robin", "least_requests", "least_tokens", "vllm_score", "shortest_queue"]


def _small_cluster(**kwargs):
    base = dict(prefill_instances=2, decode_instances=1, prefill_ep=2, decode_ep=2,
                chunk_tokens=1024, max_decode_batch=8,
                mtp_acceptance=0.0)  # one token per step: the step-by-step references
    base.update(kwargs)
    return ClusterConfig(**base)


def _workload(n=200, rate=20.0, seed=0, max_in=3000, max_out=40):
    rng = np.random.default_rng(seed)
    return Workload.from_arrays(
        synthetic_arrivals(n, rate=rate, seed=seed), rng.integers(1, max_in, n),
        rng.integers(1, max_out, n), name="synthetic",
    )


def test_lock_step_forward_lasts_the_max_over_ranks(fake_model):
    # two requests at t=0 on two ranks of one instance: one forward, as long as the larger rank
    wl = Workload.from_arrays([0.0, 0.0], [100, 1000], [1, 1])
    models = fake_model(base_us=1000.0, per_token_us=10.0)
    cluster = _small_cluster(prefill_instances=1, chunk_tokens=4096)
    res = simulate(wl, cluster=cluster, router="round_robin", cost_models=models, record_timeline=True)
    ttft = res.requests["ttft_s"].to_numpy()
    np.testing.assert_allclose(ttft, [0.011, 0.011])
    (start, instance, step_s, new), = res.timeline
    assert new.tolist() == [100.0, 1000.0] and step_s == pytest.approx(0.011)
    assert res.summary()["bubble_fraction"] == pytest.approx(900 * 10 / (2 * 11000))


def test_chunked_prefill_spreads_a_long_prompt_over_forwards(fake_model):
    wl = Workload.from_arrays([0.0], [2500], [1])
    models = fake_model(base_us=1000.0, per_token_us=1.0)
    res = simulate(wl, cluster=_small_cluster(prefill_instances=1, chunk_tokens=1000),
                   router="round_robin", cost_models=models, record_timeline=True)
    assert [int(r[3].max()) for r in res.timeline] == [1000, 1000, 500]
    assert res.requests["ttft_s"][0] == pytest.approx(0.002 + 0.002 + 0.0015)


def test_decode_epochs_match_a_step_by_step_reference(fake_model):
    # affine decode step in KV: epochs (arithmetic series) must equal per-step accumulation
    dbase, per_kv = 1000.0, 0.5
    wl = Workload.from_arrays([0.0, 0.0005], [100, 300], [30, 12])
    models = fake_model(base_us=100.0, dbase_us=dbase, per_kv_us=per_kv)
    cluster = _small_cluster(prefill_instances=1, decode_ep=1, prefill_ep=2)
    res = simulate(wl, cluster=cluster, router="round_robin", cost_models=models)
    t = res.requests
    first_token = t["arrival_s"] + t["ttft_s"]
    # reference: one decode rank, admission at step boundaries, one token per step
    start = list(first_token)
    remaining = [29, 11]
    context = [101, 301]
    done = [None, None]
    now, running = start[0], []
    while None in done:
        for i in (0, 1):
            if i not in running and done[i] is None and start[i] <= now + 1e-12:
                running.append(i)
        if not running:
            now = min(start[i] for i in (0, 1) if done[i] is None)
            continue
        step = (dbase + per_kv * sum(context[i] for i in running)) * 1e-6
        now += step
        for i in list(running):
            remaining[i] -= 1
            context[i] += 1
            if remaining[i] == 0:
                done[i] = now
                running.remove(i)
    e2e = (t["arrival_s"] + t["e2e_s"]).to_numpy()
    np.testing.assert_allclose(e2e, done, rtol=1e-9)


@pytest.mark.parametrize("router", IMMEDIATE)
def test_immediate_routers_complete_everything(router, fake_model):
    wl = _workload()
    res = simulate(wl, cluster=_small_cluster(), router=router,
                   cost_models=fake_model(base_us=2000.0, per_token_us=2.0, dbase_us=5000.0))
    s = res.summary()
    assert s["completed"] == len(wl) and s["rejected"] == 0 and s["in_flight"] == 0
    assert set(res.requests["prefill_unit"]) <= set(range(4))


def test_round_robin_spreads_over_units(fake_model):
    wl = _workload(n=40)
    res = simulate(wl, cluster=_small_cluster(), router="round_robin", cost_models=fake_model())
    counts = np.bincount(res.requests["prefill_unit"], minlength=4)
    assert counts.tolist() == [10, 10, 10, 10]


def test_rejections_have_reasons(fake_model):
    wl = Workload.from_arrays([0.0, 0.1, 0.2], [100, 5000, 100], [5, 5, 5000])
    cluster = _small_cluster(max_prompt_tokens=4000, kv_capacity_tokens=4096, kv_block_tokens=64)
    res = simulate(wl, cluster=cluster, router="least_tokens", cost_models=fake_model())
    s = res.summary()
    assert s["completed"] == 1 and s["rejected"] == 2
    assert s["rejected_reasons"] == {"prompt_too_long": 1, "kv_exceeds_unit_capacity": 1}


def test_horizon_leaves_requests_in_flight(fake_model):
    wl = _workload(n=100, rate=10.0)
    res = simulate(wl, cluster=_small_cluster(), router="least_tokens", cost_models=fake_model(),
                   horizon_s=3.0)
    s = res.summary()
    assert s["in_flight"] > 0
    assert s["completed"] + s["rejected"] + s["in_flight"] == 100


def test_deterministic(fake_model):
    wl = _workload()
    a = simulate(wl, cluster=_small_cluster(), router="vllm_score", cost_models=fake_model(per_token_us=3.0))
    b = simulate(wl, cluster=_small_cluster(), router="vllm_score", cost_models=fake_model(per_token_us=3.0))
    np.testing.assert_array_equal(a.requests["ttft_s"], b.requests["ttft_s"])
    np.testing.assert_array_equal(a.requests["e2e_s"], b.requests["e2e_s"])


def test_bad_options_raise_naming_the_field(fake_model):
    wl = _workload(n=5)
    with pytest.raises(InvalidInputError, match="router"):
        simulate(wl, router="random", cost_models=fake_model())
    with pytest.raises(InvalidInputError, match="interval"):
        simulate(wl, interval="fixed:abc", cost_models=fake_model())
    with pytest.raises(InvalidInputError, match="mode"):
        simulate(wl, mode="hybrid", cost_models=fake_model())
    with pytest.raises(InvalidInputError, match="load"):
        simulate(wl, load=0.5, rate=3.0, cost_models=fake_model())
    with pytest.raises(InvalidInputError, match="adaptive_min_s"):
        SchedulerConfig(adaptive_min_s=1.0, adaptive_max_s=0.5)
    with pytest.raises(InvalidInputError, match="window_forwards"):
        SchedulerConfig(window_forwards=0.0)
    with pytest.raises(InvalidInputError, match="prefill_ep"):
        ClusterConfig(prefill_ep=0)


def test_real_cost_model_small_run():
    from sbsopt.workload import load_trace

    wl = load_trace("azure-conv", limit=300)
    res = simulate(wl, cluster=ClusterConfig(prefill_instances=2), router="least_tokens", load=0.5)
    s = res.summary()
    assert s["completed"] == 300
    split = s["ttft_split_ms"]
    assert split["sched_wait"] == 0.0
    assert split["engine_wait"] + split["exec"] == pytest.approx(s["ttft_ms"]["mean"], rel=1e-6)
    assert 0.0 <= s["bubble_fraction"] < 1.0 and 0.0 < s["chunk_utilization"] <= 1.0


def test_simulator_detects_a_lost_request(fake_model, monkeypatch):
    from sbsopt.errors import SimulationError
    from sbsopt.sim import simulator

    original = simulator._Simulation.on_decode_arrival

    def drop_one(self, rid, _=0):
        if rid == 3:
            self.in_transfer -= 1  # the request vanishes between prefill and decode
            return
        original(self, rid)

    monkeypatch.setattr(simulator._Simulation, "on_decode_arrival", drop_one)
    wl = _workload(n=10, max_out=20)
    wl = Workload.from_arrays(wl.arrival_s, wl.input_tokens, np.maximum(wl.output_tokens, 2))
    with pytest.raises(SimulationError, match="1 requests in flight but 0 found"):
        simulate(wl, cluster=_small_cluster(), router="least_tokens", cost_models=fake_model())
