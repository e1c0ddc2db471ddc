"""Batching policies: Sarathi stall-free and FairBatching, checked on random engine snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.sim.batching import (
    EngineSnapshot,
    FairBatchingPolicy,
    IterationCostModel,
    IterationPlan,
    SarathiPolicy,
    fairbatching_plan,
    load_estimate_us,
    make_iteration_policy,
    sarathi_plan,
)

COST = IterationCostModel(prefill_base_us=3000.0, us_per_prefill_token=12.0, us_per_pair=0.002,
                          us_per_prefill_request=40.0, decode_base_us=2500.0, us_per_decode=60.0,
                          us_per_kv_token=0.01, ep=1)
TPOT_S = 0.05


def _cost(ep: int) -> IterationCostModel:
    return IterationCostModel(**{**COST.__dict__, "ep": ep})


def _random_snapshot(rng: np.random.Generator, ep: int, *, decodes: int | None = None) -> EngineSnapshot:
    d = int(rng.integers(0, 60)) if decodes is None else decodes
    p = int(rng.integers(0, 12))
    now = 10.0
    started = rng.random(p) < 0.3
    done = np.where(started, rng.integers(1, 2000, p), 0)
    return EngineSnapshot.from_arrays(
        now_s=now,
        decode_deadline_s=now + rng.uniform(-0.05, 0.3, d),
        decode_context_tokens=rng.integers(10, 8000, d),
        decode_skips=rng.integers(0, 6, d),
        decode_rank=rng.integers(0, ep, d),
        prefill_remaining_tokens=rng.integers(1, 6000, p),
        prefill_done_tokens=done,
        prefill_deadline_s=now + rng.uniform(-1.0, 3.0, p),
        prefill_kv_tokens=np.where(started, 0, rng.integers(10, 9000, p)),
        prefill_rank=rng.integers(0, ep, p),
        kv_free_tokens=rng.integers(0, 40_000, ep),
    )


def _per_rank(values: np.ndarray, ranks: np.ndarray, ep: int) -> np.ndarray:
    return np.bincount(ranks, weights=values, minlength=ep)


def _check_plan_is_consistent(snap: EngineSnapshot, plan: IterationPlan) -> None:
    d = snap.decode_deadline_s.size
    everything = np.sort(np.concatenate([plan.decode_run, plan.decode_skipped]))
    assert everything.tolist() == list(range(d)), "each decode either runs or is skipped"
    assert len(set(plan.prefill_index.tolist())) == plan.prefill_index.size
    assert (plan.prefill_chunk_tokens >= 1).all()
    assert (plan.prefill_chunk_tokens <= snap.prefill_remaining_tokens[plan.prefill_index]).all()
    kv_used = _per_rank(snap.prefill_kv_tokens[plan.prefill_index].astype(float),
                        snap.prefill_rank[plan.prefill_index], snap.ep)
    assert (kv_used <= snap.kv_free_tokens).all()
    if d or snap.prefill_remaining_tokens.size:
        startable = (d > 0) or (snap.prefill_kv_tokens <= snap.kv_free_tokens[snap.prefill_rank]).any()
        if startable:
            assert plan.decode_run.size + plan.prefill_index.size > 0, "no progress"


@pytest.mark.parametrize("ep", [1, 4])
def test_sarathi_runs_every_decode_and_respects_budget_cap_and_fcfs(ep: int) -> None:
    rng = np.random.default_rng(1)
    cost = _cost(ep)
    for _ in range(300):
        snap = _random_snapshot(rng, ep)
        plan = sarathi_plan(snap, cost, token_budget=512, max_requests=16)
        _check_plan_is_consistent(snap, plan)
        assert plan.decode_skipped.size == 0
        assert plan.decode_run.size == snap.decode_deadline_s.size
        tokens = _per_rank(plan.prefill_chunk_tokens.astype(float), snap.prefill_rank[plan.prefill_index], ep)
        decodes = np.bincount(snap.decode_rank, minlength=ep)
        assert (tokens <= np.maximum(512 - decodes, 0)).all()
        for j in range(ep):
            queue = np.flatnonzero(snap.prefill_rank == j)
            chosen = np.isin(queue, plan.prefill_index)
            # FCFS: chunks go to a prefix of the rank's queue
            assert not (chosen[1:] & ~chosen[:-1]).any()
            new = np.isin(queue, plan.prefill_index) & (snap.prefill_done_tokens[queue] == 0)
            started = (snap.prefill_done_tokens[queue] > 0).sum()
            assert decodes[j] + started + new.sum() <= max(16, decodes[j] + started)
        assert plan.predicted_us == pytest.approx(cost.plan_us(snap, plan))


@pytest.mark.parametrize("ep", [1, 3])
def test_fairbatching_never_predicts_a_violation_a_smaller_budget_would_avoid(ep: int) -> None:
    """An included decode is predicted late only if the mandatory part alone makes it late."""
    rng = np.random.default_rng(2)
    cost = _cost(ep)
    skips_bound = 4
    for _ in range(400):
        snap = _random_snapshot(rng, ep)
        plan = fairbatching_plan(snap, cost, tpot_slo_s=TPOT_S, max_consecutive_skips=skips_bound)
        _check_plan_is_consistent(snap, plan)
        d = snap.decode_deadline_s.size
        if d == 0:
            continue
        slack_us = (snap.decode_deadline_s - snap.now_s) * 1e6
        mandatory = snap.decode_skips >= skips_bound
        mandatory[np.argmin(slack_us)] = True
        mand_plan = IterationPlan(decode_run=np.flatnonzero(mandatory), decode_skipped=np.zeros(0, np.int64),
                                  prefill_index=np.zeros(0, np.int64), prefill_chunk_tokens=np.zeros(0, np.int64),
                                  predicted_us=0.0, budget_us=0.0, token_budget=0)
        t_mand = cost.plan_us(snap, mand_plan)
        assert np.isin(np.flatnonzero(mandatory), plan.decode_run).all()
        late = plan.decode_run[slack_us[plan.decode_run] < plan.predicted_us - 1e-6]
        assert (slack_us[late] < t_mand + 1e-6).all(), "a smaller budget would have saved these"
        assert plan.predicted_us <= max(plan.budget_us, t_mand) + 1e-6


def test_fairbatching_budget_is_the_largest_that_fits() -> None:
    """One rank, one decode, a big prefill: one more prefill token would break the budget."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        slack = rng.uniform(0.004, 0.2)
        snap = EngineSnapshot.from_arrays(now_s=0.0, decode_deadline_s=[slack],
                                          decode_context_tokens=[int(rng.integers(1, 5000))],
                                          prefill_remaining_tokens=[100_000],
                                          prefill_done_tokens=[int(rng.integers(0, 3000))])
        plan = fairbatching_plan(snap, COST, tpot_slo_s=TPOT_S, max_tokens=1 << 30, min_chunk_tokens=1)
        assert plan.budget_us == pytest.approx(slack * 1e6)
        chunk = int(plan.prefill_chunk_tokens.sum())
        assert plan.predicted_us <= plan.budget_us + 1e-6
        bigger = IterationPlan(decode_run=plan.decode_run, decode_skipped=plan.decode_skipped,
                               prefill_index=np.array([0]), prefill_chunk_tokens=np.array([chunk + 1]),
                               predicted_us=0.0, budget_us=0.0, token_budget=0)
        assert COST.plan_us(snap, bigger) > plan.budget_us
        if snap.prefill_done_tokens[0] == 0:
            assert plan.token_budget == chunk + 1, "the decode token plus the chunk the budget allows"


@pytest.mark.parametrize("ep", [1, 4])
def test_fairbatching_without_decodes_fills_the_budget_with_prefill(ep: int) -> None:
    rng = np.random.default_rng(4)
    cost = _cost(ep)
    for _ in range(200):
        p = int(rng.integers(1, 10))
        remaining = rng.integers(1, 4000, p)
        rank = rng.integers(0, ep, p)
        snap = EngineSnapshot.from_arrays(prefill_remaining_tokens=remaining, prefill_rank=rank,
                                          prefill_kv_tokens=remaining, kv_free_tokens=np.full(ep, 10**9))
        plan = fairbatching_plan(snap, cost, tpot_slo_s=TPOT_S, max_tokens=2048, min_chunk_tokens=1)
        got = _per_rank(plan.prefill_chunk_tokens.astype(float), rank[plan.prefill_index], ep)
        want = np.minimum(2048, _per_rank(remaining.astype(float), rank, ep))
        assert got.tolist() == want.tolist()
        assert np.isinf(plan.budget_us) and plan.token_budget == 2048


def test_fairbatching_orders_prefill_by_ttft_deadline_and_skips_decodes_with_slack() -> None:
    snap = EngineSnapshot.from_arrays(
        now_s=0.0, decode_deadline_s=[0.02, 0.5, 0.6], decode_context_tokens=[100, 100, 100],
        prefill_remaining_tokens=[3000, 3000], prefill_deadline_s=[5.0, 1.0])
    plan = fairbatching_plan(snap, COST, tpot_slo_s=TPOT_S)
    assert plan.prefill_index.tolist()[0] == 1, "earliest TTFT deadline first"
    assert plan.decode_run.tolist() == [0]
    assert plan.decode_skipped.tolist() == [1, 2]
    assert plan.predicted_us <= 0.02e6 + 1e-6
    # a skipped decode regains priority once its slack is short
    later = EngineSnapshot.from_arrays(now_s=0.47, decode_deadline_s=[0.5, 0.6], decode_context_tokens=[100, 100],
                                       prefill_remaining_tokens=[3000], prefill_deadline_s=[1.0])
    assert 0 in fairbatching_plan(later, COST, tpot_slo_s=TPOT_S).decode_run.tolist()


def test_skip_bound_forces_a_decode_back_in() -> None:
    snap = EngineSnapshot.from_arrays(now_s=0.0, decode_deadline_s=[0.01, 10.0], decode_context_tokens=[10, 10],
                                      decode_skips=[0, 3], prefill_remaining_tokens=[50_000])
    assert fairbatching_plan(snap, COST, tpot_slo_s=TPOT_S, max_consecutive_skips=4).decode_skipped.tolist() == [1]
    forced = fairbatching_plan(snap, COST, tpot_slo_s=TPOT_S, max_consecutive_skips=3)
    assert forced.decode_run.tolist() == [0, 1] and forced.forced_decodes == 1


def test_progress_when_every_decode_is_late() -> None:
    snap = EngineSnapshot.from_arrays(now_s=1.0, decode_deadline_s=[0.5, 0.6], decode_context_tokens=[10, 10],
                                      prefill_remaining_tokens=[50_000])
    plan = fairbatching_plan(snap, COST, tpot_slo_s=TPOT_S, late_floor_fraction=1.0)
    assert plan.budget_us == pytest.approx(TPOT_S * 1e6)
    assert plan.decode_run.tolist() == [0, 1] and plan.prefill_chunk_tokens.sum() > 0
    strict = fairbatching_plan(snap, COST, tpot_slo_s=TPOT_S, late_floor_fraction=0.0)
    assert strict.prefill_chunk_tokens.sum() == 0 and strict.decode_run.size >= 1


def test_chunk_tokens_within_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        avail = float(rng.uniform(0, 50_000))
        done = int(rng.integers(0, 20_000))
        remaining = int(rng.integers(1, 5000))
        n = COST.chunk_tokens_within(avail, done_tokens=done, remaining_tokens=remaining)
        sizes = np.arange(0, remaining + 1)
        times = COST.prefill_chunk_us(sizes, done)
        assert n == int(sizes[times <= avail].max())


def test_load_estimate_grows_with_queued_work() -> None:
    """One more prefill on every rank (lock-step: the busiest rank sets the drain time)."""
    rng = np.random.default_rng(6)
    for _ in range(100):
        snap = _random_snapshot(rng, 2)
        more = EngineSnapshot.from_arrays(
            now_s=snap.now_s, decode_deadline_s=snap.decode_deadline_s,
            decode_context_tokens=snap.decode_context_tokens, decode_rank=snap.decode_rank,
            prefill_remaining_tokens=np.append(snap.prefill_remaining_tokens, [1000, 1000]),
            prefill_done_tokens=np.append(snap.prefill_done_tokens, [0, 0]),
            prefill_rank=np.append(snap.prefill_rank, [0, 1]), kv_free_tokens=snap.kv_free_tokens)
        assert load_estimate_us(more, _cost(2), tpot_slo_s=TPOT_S) > load_estimate_us(snap, _cost(2), tpot_slo_s=TPOT_S)


def test_policies_do_not_mutate_the_snapshot() -> None:
    snap = _random_snapshot(np.random.default_rng(7), 2, decodes=20)
    before = {k: np.copy(v) for k, v in snap.__dict__.items() if isinstance(v, np.ndarray)}
    for policy in (SarathiPolicy(), FairBatchingPolicy(tpot_slo_s=TPOT_S)):
        policy.plan(snap, _cost(2))
    for k, v in before.items():
        assert np.array_equal(getattr(snap, k), v), k


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(InvalidInputError, match="batching = 'fifo'.*default, sarathi, fairbatching in colocated mode"):
        make_iteration_policy("fifo")
    with pytest.raises(InvalidInputError, match="sarathi option = 'max_tokens'"):
        make_iteration_policy("sarathi", max_tokens=1024)
    with pytest.raises(InvalidInputError, match="decode_rank"):
        EngineSnapshot.from_arrays(decode_deadline_s=[0.1], decode_context_tokens=[1], decode_rank=[2])
    with pytest.raises(InvalidInputError, match=r"prefill_remaining_tokens\[0\]"):
        EngineSnapshot.from_arrays(prefill_remaining_tokens=[0])
    with pytest.raises(InvalidInputError, match="tpot_slo_s"):
        fairbatching_plan(EngineSnapshot.from_arrays(), COST, tpot_slo_s=0.0)
    with pytest.raises(InvalidInputError, match="token_budget"):
        sarathi_plan(EngineSnapshot.from_arrays(), COST, token_budget=0)
    with pytest.raises(InvalidInputError, match="us_per_prefill_token"):
        IterationCostModel(prefill_base_us=0.0, us_per_prefill_token=0.0, us_per_pair=0.0,
                           us_per_prefill_request=0.0, decode_base_us=0.0, us_per_decode=0.0,
                           us_per_kv_token=0.0)
