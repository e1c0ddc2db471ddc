"""The SBS TTFT guard: a request past it goes first, and is never queued behind a full forward."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from sbsopt.sim import ClusterConfig, SchedulerConfig, simulate
from sbsopt.sim.router import allocate_prefill
from sbsopt.workload import Workload

_COEF = SimpleNamespace(base_us=100_000.0, alpha_us_per_token=100.0, beta_us_per_pair=0.0,
                        gamma_us_per_request=0.0)


def test_a_guarded_request_without_room_stays_buffered():
    # both units' next forward is full: the guarded request (arrived at 0) waits for the next
    # window, where it goes first, instead of being queued behind a forward it cannot join
    got = allocate_prefill(np.array([500, 500]), np.zeros(2, np.int64), np.array([0.0, 0.9]),
                           capacity_tokens=np.full(2, 1000), load_tokens=np.array([1000, 1000]),
                           now_s=1.0, guard_s=0.5, coefficients=_COEF, solver="greedy", seed=0)
    assert got.tolist() == [-1, -1]


def test_a_guarded_request_takes_the_room_before_a_younger_one():
    got = allocate_prefill(np.array([500, 500]), np.zeros(2, np.int64), np.array([0.9, 0.0]),
                           capacity_tokens=np.full(2, 1000), load_tokens=np.array([1000, 500]),
                           now_s=1.0, guard_s=0.5, coefficients=_COEF, solver="greedy", seed=0)
    assert got.tolist() == [-1, 1]


def test_a_guarded_long_prompt_is_not_starved_by_short_ones():
    # 3000 tokens fit no unit whole (1000 of room each) and 24 younger short prompts fill both
    # at less deferral price: unguarded, the long prompt waits; past its guard, it runs its
    # first chunk in this window
    new = np.array([3000] + [100] * 24)
    arrival = np.array([0.85] + [0.95] * 24)
    for guard_s, placed in ((10.0, False), (0.1, True)):
        chunks: dict[int, int] = {}
        got = allocate_prefill(new, np.zeros(25, np.int64), arrival,
                               capacity_tokens=np.full(2, 1000), load_tokens=np.zeros(2, np.int64),
                               now_s=1.0, guard_s=guard_s, coefficients=_COEF, solver="greedy",
                               seed=0, chunks=chunks)
        assert (got[0] >= 0 and chunks.get(0, 0) > 0) == placed


def test_a_burst_is_served_in_arrival_order_with_no_engine_queue(fake_model):
    """A burst of 40 equal prompts, 10 forwards' worth of a 2 x 2-rank prefill pool: most
    requests pass the 0.3 s guard in the buffer. Each window fills the next forward of the
    instance that frees, oldest first, so no request waits in an engine queue and none starts
    after a younger one (forcing guarded requests onto a full instance would queue them there
    while the other instance served younger ones)."""
    wl = Workload.from_arrays(np.linspace(0.0, 0.1, 40), np.full(40, 500), np.full(40, 2))
    cluster = ClusterConfig(prefill_instances=2, prefill_ep=2, decode_instances=1, decode_ep=2,
                            chunk_tokens=1000, prefix_cache_blocks=0)
    res = simulate(wl, cluster=cluster, scheduler=SchedulerConfig(ttft_guard_s=0.3), router="sbs",
                   cost_models=fake_model(base_us=100_000.0, per_token_us=100.0))
    t = res.requests
    assert res.summary()["completed"] == 40
    assert (t["sched_wait_s"] > 0.3).sum() >= 20  # the guard was passed
    assert np.allclose(t["engine_wait_s"], 0.0)
    start = (t["arrival_s"] + t["sched_wait_s"] + t["engine_wait_s"]).to_numpy()
    assert (np.diff(start) >= -1e-9).all()
