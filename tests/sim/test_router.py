"""The SBS prefill allocation: one window problem per release, multi-instance when several
instances are idle."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from sbsopt.sim.router import allocate_prefill
from sbsopt.window import PrefillWindow, solve

_COEF = SimpleNamespace(base_us=50_000.0, alpha_us_per_token=80.0, beta_us_per_pair=0.01,
                        gamma_us_per_request=600.0)


def test_a_window_over_two_idle_instances_is_one_multi_instance_problem():
    rng = np.random.default_rng(7)
    new = rng.integers(200, 6000, 24)
    arrival = np.sort(rng.uniform(0.0, 0.05, 24))
    load = rng.integers(0, 3000, 8)
    instance = np.repeat([0, 1], 4)
    args = dict(capacity_tokens=np.full(8, 16_384), load_tokens=load, now_s=0.06,
                coefficients=_COEF)
    got = allocate_prefill(new, np.zeros(24, np.int64), arrival, guard_s=10.0, solver="greedy",
                           seed=0, instance=instance, **args)
    window = PrefillWindow.from_arrays(new, np.zeros(24, np.int64), arrival, deadline_s=arrival + 10.0,
                                       allow_chunking=True, instance=instance, **args)
    np.testing.assert_array_equal(got, solve(window, method="greedy").assignment)
    # the per-instance objective is not the one-group one: the answers differ here
    flat = allocate_prefill(new, np.zeros(24, np.int64), arrival, guard_s=10.0, solver="greedy",
                            seed=0, **args)
    assert (flat >= 0).all() and (got >= 0).all()
    assert not np.array_equal(flat, got)


def test_multi_instance_windows_count_the_prefix_hits_every_instance_holds(monkeypatch):
    """At a low load a timed window often finds both prefill instances idle: one window over
    both. A Mooncake prompt's prefix cached on both instances is counted there (the least of
    the instances' hits), not taken as uncached."""
    import sbsopt.sim.simulator as simulator
    from sbsopt.sim import ClusterConfig, simulate
    from sbsopt.workload import load_trace

    seen = []

    def spy(new, cached, *args, **kwargs):
        if kwargs.get("instance") is not None:
            seen.append(np.asarray(cached).copy())
        return allocate_prefill(new, cached, *args, **kwargs)

    monkeypatch.setattr(simulator, "allocate_prefill", spy)
    wl = load_trace("mooncake-conv", limit=400)
    res = simulate(wl, cluster=ClusterConfig(prefill_instances=2, decode_instances=1),
                   router="sbs", interval="fixed:20", load=0.05)
    assert res.summary()["completed"] == 400
    assert len(seen) >= 5
    assert sum(bool((c > 0).any()) for c in seen) >= len(seen) // 2


def test_window_forwards_scales_the_room_an_sbs_window_fills(monkeypatch):
    import sbsopt.sim.simulator as simulator
    from sbsopt.sim import ClusterConfig, SchedulerConfig, simulate
    from sbsopt.workload import load_trace

    wl = load_trace("mooncake-conv", limit=300)
    cluster = ClusterConfig(prefill_instances=2, decode_instances=1)
    summaries = {}
    for forwards in (1.0, 2.0):
        capacities = set()

        def spy(new, cached, arrival, *, capacity_tokens, capacities=capacities, **kwargs):
            capacities.update(np.asarray(capacity_tokens).tolist())
            return allocate_prefill(new, cached, arrival, capacity_tokens=capacity_tokens,
                                    **kwargs)

        monkeypatch.setattr(simulator, "allocate_prefill", spy)
        # lookahead off: its lean forward is solved with rooms cut to the longest request
        res = simulate(wl, cluster=cluster, router="sbs", load=0.7,
                       scheduler=SchedulerConfig(window_forwards=forwards, lookahead_release=False))
        assert capacities == {int(cluster.chunk_tokens * forwards)}
        summaries[forwards] = res.summary()
        assert summaries[forwards]["completed"] == 300
    # a window that may queue a second forward starts long prompts earlier
    assert summaries[2.0]["ttft_ms"]["mean"] != summaries[1.0]["ttft_ms"]["mean"]
