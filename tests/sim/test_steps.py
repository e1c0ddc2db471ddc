"""The simulator's unchecked step times equal the cost model's public methods."""

from __future__ import annotations

import math

import numpy as np

from sbsopt.costmodel import load_cost_model
from sbsopt.sim.chunking import PrefillTask, get_chunking
from sbsopt.sim.engine import DecodeInstance, PrefillInstance
from sbsopt.sim.epochs import close_slots, plan_epoch
from sbsopt.sim.steps import StepTimes


def test_step_times_equal_the_public_methods():
    prefill, decode = load_cost_model(ep=32), load_cost_model(ep=144)
    rng = np.random.default_rng(3)
    for q in (1, 2):
        times = StepTimes(prefill, decode, q)
        assert times.trusted_prefill and times.trusted_decode
        for case in range(200):
            busy = rng.random(32) < rng.random()
            new = np.where(busy, rng.integers(1, 8193, 32), 0).astype(np.float64)
            pairs = new * (rng.integers(0, 20_000, 32) + new / 2.0)
            reqs = np.where(busy, rng.integers(1, 9, 32), 0).astype(np.float64)
            assert times.prefill_us(new, pairs, reqs) == prefill.prefill_step_us(new, pairs, reqs)
            batch = rng.integers(0, 129, 144).astype(np.float64) * (rng.random(144) < rng.random())
            kv = batch * rng.uniform(0, 9000, 144) + (case % 2) * 0.85
            assert times.decode_us(batch, kv) == decode.decode_step_us(batch, kv, q)


def test_step_times_call_the_public_methods_of_other_models():
    class Model:
        def prefill_step_us(self, new, pairs, reqs):
            return 1.0 + new.sum()

        def decode_step_us(self, batch, kv, q):
            return 2.0 * q + batch.sum()

    times = StepTimes(Model(), Model(), 2)
    assert not times.trusted_prefill and not times.trusted_decode
    assert times.prefill_us(np.ones(2), np.zeros(2), np.ones(2)) == 3.0
    assert times.decode_us(np.ones(2), np.zeros(2)) == 6.0


def test_instances_write_their_report_figures_into_the_pool_arrays():
    policy = get_chunking("default")
    pool = np.zeros((3, 4))
    a, b = (PrefillInstance(k, 2, 100, policy, pool[:, 2 * k:2 * k + 2]) for k in range(2))
    b.enqueue(1, PrefillTask(7, 150, 0))
    chunks, *_ = b.form_forward()
    assert pool.tolist() == [[0, 0, 0, 150], [0, 0, 0, 1], [0, 0, 0, 1]]
    b.finish_forward(chunks)
    assert pool.tolist() == [[0, 0, 0, 50], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert a.queued_tokens.base is pool and not a.has_work()
    counts, blocks = np.zeros((2, 6)), np.zeros((2, 6), np.int64)
    d = DecodeInstance(1, 3, 4, 10, policy, counts[:, 3:], blocks[:, 3:])
    d.batch[0], d.waiting_blocks[2] = 2, 5
    d.clear()
    d.waiting_count[1] = 1
    assert counts.tolist() == [[0] * 6, [0, 0, 0, 0, 1, 0]] and not blocks.any()


def test_prefill_forward_equals_the_public_method_and_the_numpy_statistics():
    prefill = load_cost_model(ep=32)
    pc = prefill.prefill_coefficients()
    rng = np.random.default_rng(5)
    trusted = StepTimes(prefill, load_cost_model(ep=144), 1)
    public = StepTimes(_Public(prefill), load_cost_model(ep=144), 1)
    assert trusted.trusted_prefill and not public.trusted_prefill
    for _ in range(200):
        busy = rng.random(32) < rng.random()
        new = np.where(busy, rng.integers(1, 8193, 32), 0).astype(np.float64)
        pairs = new * (rng.integers(0, 20_000, 32) + new / 2.0)
        reqs = np.where(busy, rng.integers(1, 9, 32), 0).astype(np.float64)
        slow = np.float64(rng.choice([1.0, 1.5, 3.0]))
        us = prefill.prefill_step_us(new, pairs, reqs)
        step_us = us * 1e-6 * slow * 1e6
        rank_us = pc.base_us + pc.alpha_us_per_token * new + pc.beta_us_per_pair * pairs + pc.gamma_us_per_request * reqs
        expected = (us, float(np.maximum(step_us - rank_us, 0.0).sum()), float(new.sum()))
        assert trusted.prefill_forward(new, pairs, reqs, slow, pc) == expected
        assert public.prefill_forward(new, pairs, reqs, slow, pc) == expected


def test_plan_epoch_equals_the_public_decode_step():
    decode = load_cost_model(ep=144)
    rng = np.random.default_rng(11)
    for q, y in ((1, 1.0), (2, 1.85)):
        t = StepTimes(decode, decode, q).decode_tables
        for case in range(200):
            batch = rng.integers(0, 129, 144).astype(np.float64) * (rng.random(144) < rng.random())
            kv = batch * rng.uniform(0, 9000, 144) + (case % 2) * 0.85
            high = int(rng.integers(0, 40))
            active = rng.random(40) < 0.5
            remaining = rng.uniform(0.1, 300.0, 40)
            steps, first, last = plan_epoch(high, active, remaining, y, batch, kv, q, t.a0, t.a1, t.shared, t.routed,
                                            t.dense, t.constants)
            live = remaining[:high][active[:high]]
            if not live.size:
                assert steps == 0
                continue
            assert steps == max(1, math.ceil(float(live.min()) / y - 1e-9))
            assert first == decode.decode_step_us(batch, kv, q)
            assert last == decode.decode_step_us(batch, kv + (steps - 1) * y * batch, q)


def _close_reference(inst, produced, tbt_s, blocks_need, tbt_max_s):
    """The epoch close as numpy statements (the simulator's before it was compiled)."""
    active = inst.slot_active[:inst.high].nonzero()[0]
    inst.slot_remaining[active] -= produced
    inst.slot_context[active] += produced
    inst.kv_tokens += produced * inst.batch
    rids = inst.slot_rid[active]
    tbt_max_s[rids] = np.maximum(tbt_max_s[rids], tbt_s)
    done = active[inst.slot_remaining[active] <= 0]
    if len(done):
        ranks = inst.slot_rank[done]
        inst.batch -= np.bincount(ranks, minlength=inst.ep)
        inst.kv_tokens -= np.bincount(ranks, weights=inst.slot_context[done], minlength=inst.ep)
        inst.kv_tokens[inst.batch <= 0] = 0.0
        np.maximum(inst.kv_tokens, 0.0, out=inst.kv_tokens)
        done_rids = inst.slot_rid[done]
        inst.blocks_used -= np.bincount(ranks, weights=blocks_need[done_rids], minlength=inst.ep).astype(np.int64)
        inst.slot_active[done] = False
    return done


def test_close_slots_equals_the_numpy_statements():
    rng = np.random.default_rng(2)
    policy = get_chunking("default")
    for case in range(200):
        ep, n = int(rng.choice([1, 3, 16])), 80
        insts = [DecodeInstance(0, ep, 4, 10_000, policy) for _ in range(2)]
        blocks_need = rng.integers(1, 50, n)
        slots = rng.permutation(ep * 4)[:int(rng.integers(0, ep * 4 + 1))]
        rids = rng.permutation(n)[:len(slots)]
        for inst in insts:
            for slot, rid in zip(slots.tolist(), rids.tolist(), strict=True):
                j = slot % ep
                inst.slot_active[slot], inst.slot_rid[slot], inst.slot_rank[slot] = True, rid, j
                inst.slot_remaining[slot] = rng.uniform(0.0, 9.0) if inst is insts[0] else insts[0].slot_remaining[slot]
                inst.slot_context[slot] = 100.0 + slot
                inst.batch[j] += 1
                inst.kv_tokens[j] += 100.0 + slot + (case % 3) * 0.3
                inst.blocks_used[j] += blocks_need[rid]
            inst.high = ep * 4
        produced, tbt_s = float(rng.choice([1.0, 1.85, 3.7])), float(rng.uniform(0.01, 0.05))
        tbt_ref = rng.uniform(0, 0.05, n)
        tbt = tbt_ref.copy()
        status, done_s = np.zeros(n, np.int8), np.full(n, np.nan)
        expected = _close_reference(insts[0], produced, tbt_s, blocks_need, tbt_ref)
        a, b = insts
        got = close_slots(b.high, produced, tbt_s, 7.5, 1, b.slot_active, b.slot_remaining, b.slot_context, b.slot_rid,
                          b.slot_rank, b.batch, b.kv_tokens, b.blocks_used, blocks_need, tbt, status, done_s)
        assert got.tolist() == expected.tolist()
        for name in ("slot_active", "slot_remaining", "slot_context", "batch", "kv_tokens", "blocks_used"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert np.array_equal(tbt, tbt_ref)
        finished = a.slot_rid[expected]
        assert (status[finished] == 1).all() and (status == 1).sum() == len(expected) and (done_s[finished] == 7.5).all()


class _Public:
    def __init__(self, model) -> None:
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)
