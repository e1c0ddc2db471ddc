"""Production-shaped immediate routing (:class:`sbsopt.sim.router.RouterPool`): router replicas
with views of their own, and DP ranks picked by the engine (``SchedulerConfig.router_replicas``,
``dp_pinning``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.sim import IMMEDIATE_ROUTERS, ClusterConfig, SchedulerConfig, simulate
from sbsopt.sim.router import RouterPool, RouterView, pick_unit, router_pools
from sbsopt.workload import Workload, synthetic_arrivals


def _cluster() -> ClusterConfig:
    return ClusterConfig(prefill_instances=2, decode_instances=2, prefill_ep=4, decode_ep=3,
                         chunk_tokens=2048, max_decode_batch=16)


def _workload(n: int = 300, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload.from_arrays(synthetic_arrivals(n, rate=40.0, seed=seed), rng.integers(1, 3000, n),
                                rng.integers(2, 40, n), name="synthetic")


def _run(router: str, wl: Workload, **scheduler) -> pd.DataFrame:
    return simulate(wl, cluster=_cluster(), router=router, scheduler=SchedulerConfig(**scheduler)).requests


@pytest.mark.parametrize(("field", "value", "match"), [
    ("dp_pinning", "engnie", "dp_pinning = 'engnie': expected one of router, engine, bootstrap_room"),
    ("router_replicas", 0, "router_replicas = 0"),
    ("router_replicas", 1.5, "router_replicas = 1.5"),
])
def test_a_bad_value_is_an_error_naming_the_field(field, value, match):
    with pytest.raises(InvalidInputError, match=match):
        SchedulerConfig(**{field: value})


@pytest.mark.parametrize("policy", IMMEDIATE_ROUTERS)
def test_one_replica_with_router_pinning_is_pick_unit_on_one_view(policy):
    rng = np.random.default_rng(3)
    pool, view = RouterPool(3, 4), RouterView(3, 4)
    alive = np.repeat([True, False, True], 4)
    for rid in range(60):
        if rid % 7 == 0:
            report = rng.integers(0, 5000, 12), rng.integers(0, 4, 12), rng.integers(0, 4, 12)
            pool.report(*report)
            view.report(*report)
        mask = alive if rid >= 30 else None
        tokens = float(rng.integers(1, 4000))
        assert pool.pick(rid, policy, tokens, alive=mask) == pick_unit(view, policy, tokens, alive=mask)
    np.testing.assert_array_equal(pool.views[0].tokens, view.tokens)


def test_a_replica_sees_only_its_own_virtual_updates():
    pool = RouterPool(2, 1, replicas=2)
    # replica 0 sends rid 0 to unit 0; replica 1 has not seen it and sends rid 1 there too
    assert [pool.pick(rid, "least_tokens", 100.0) for rid in range(4)] == [0, 0, 1, 1]
    np.testing.assert_array_equal(pool.views[0].tokens, [100.0, 100.0])
    np.testing.assert_array_equal(pool.views[1].tokens, [100.0, 100.0])
    one = RouterPool(2, 1)
    assert [one.pick(rid, "least_tokens", 100.0) for rid in range(4)] == [0, 1, 0, 1]
    # a report reaches every replica and replaces what each had added
    pool.report(np.array([5.0, 0.0]), np.zeros(2), np.zeros(2))
    for view in pool.views:
        np.testing.assert_array_equal(view.tokens, [5.0, 0.0])


def test_engine_pinning_routes_whole_instances_and_the_engine_round_robins_its_ranks():
    pool = RouterPool(2, 3, pinning="engine")
    assert len(pool.views[0].tokens) == 2  # the router sees instances
    pool.report(np.array([9.0, 9, 9, 0, 0, 1]), np.zeros(6), np.zeros(6))
    np.testing.assert_array_equal(pool.views[0].tokens, [27.0, 1.0])
    units = [pool.pick(rid, "least_tokens", 10.0) for rid in range(5)]
    # instance 1 (fewest tokens) takes rids 0..2 on its ranks 0, 1, 2 (31 > 27 tokens then),
    # instance 0 takes rid 3 (37 > 31), and instance 1's next request wraps to its rank 0
    assert units == [3, 4, 5, 0, 3]


def test_engine_pinning_skips_dead_instances():
    pool = RouterPool(2, 2, pinning="engine")
    alive = np.array([False, False, True, True])
    assert [pool.pick(rid, "round_robin", 1.0, alive=alive) for rid in range(4)] == [2, 3, 2, 3]


def test_in_a_simulation_each_instance_round_robins_its_ranks():
    wl = _workload()
    req = _run("least_tokens", wl, dp_pinning="engine")
    ep = _cluster().prefill_ep
    for _, units in req.groupby(req["prefill_unit"] // ep)["prefill_unit"]:
        ranks = (units % ep).to_numpy()  # rows in arrival order: the dispatch order
        np.testing.assert_array_equal(ranks, np.arange(len(ranks)) % ep)
    dep = _cluster().decode_ep
    counts = req.groupby([req["decode_unit"] // dep, req["decode_unit"] % dep]).size()
    assert counts.groupby(level=0).agg(lambda c: c.max() - c.min()).max() <= 1


def test_bootstrap_room_draws_prefill_ranks_from_the_seed():
    wl = _workload()
    a = simulate(wl, cluster=_cluster(), router="least_tokens", seed=1,
                 scheduler=SchedulerConfig(dp_pinning="bootstrap_room")).requests
    b = simulate(wl, cluster=_cluster(), router="least_tokens", seed=1,
                 scheduler=SchedulerConfig(dp_pinning="bootstrap_room")).requests
    c = simulate(wl, cluster=_cluster(), router="least_tokens", seed=2,
                 scheduler=SchedulerConfig(dp_pinning="bootstrap_room")).requests
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["prefill_unit"] % 4, c["prefill_unit"] % 4)
    ranks = a.groupby(a["prefill_unit"] // 4)["prefill_unit"].apply(lambda u: list(u % 4))
    assert any(r != [i % 4 for i in range(len(r))] for r in ranks)  # not the round robin
    assert set(a["prefill_unit"] % 4) == {0, 1, 2, 3}


def test_replicas_change_immediate_results_and_stay_deterministic():
    wl = _workload()
    one = _run("least_tokens", wl)
    four = _run("least_tokens", wl, router_replicas=4)
    pd.testing.assert_frame_equal(four, _run("least_tokens", wl, router_replicas=4))
    assert not one["prefill_unit"].equals(four["prefill_unit"])


def test_sbs_ignores_replicas_and_pinning():
    wl = _workload(120)
    pd.testing.assert_frame_equal(_run("sbs", wl),
                                  _run("sbs", wl, router_replicas=4, dp_pinning="bootstrap_room"))


def test_a_request_keeps_its_seeded_replica_for_prefill_and_decode():
    config = SchedulerConfig(router_replicas=3, dp_pinning="bootstrap_room")
    prefill, decode = router_pools((2, 1), (4, 3), config, "least_tokens", 5, 200)
    assert prefill.replica_of is decode.replica_of
    assert set(prefill.replica_of.tolist()) == {0, 1, 2}
    again, _ = router_pools((2, 1), (4, 3), config, "least_tokens", 5, 200)
    np.testing.assert_array_equal(again.replica_of, prefill.replica_of)
    assert (prefill.pinning, decode.pinning) == ("bootstrap_room", "engine")
    sbs = router_pools((2, 1), (4, 3), config, "sbs", 5, 200)
    assert [(len(p.views), p.pinning) for p in sbs] == [(1, "router"), (1, "router")]
