"""The simulator's unchecked step times equal the cost model's public methods."""

from __future__ import annotations

import math

import numpy as np

from sbsopt.costmodel import load_cost_model
from sbsopt.sim.chunking import PrefillTask, get_chunking
from sbsopt.sim.engine import DecodeInstance, PrefillInstance, steps_done
from sbsopt.sim.epochs import admit_plan, close_slots, plan_epoch, seat
from sbsopt.sim.steps import StepTimes, pairwise_sum


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
        count = close_slots(b.high, produced, tbt_s, 7.5, 1, b.slot_active, b.slot_remaining, b.slot_context,
                            b.slot_rid, b.slot_rank, b.batch, b.kv_tokens, b.blocks_used, b.freed, blocks_need, tbt,
                            status, done_s)
        assert b.freed[:count].tolist() == expected.tolist()
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


def test_pairwise_sum_equals_numpy_sum():
    # the prefill forward's idle sum is compiled; numpy's pairwise order must be kept bit for bit
    rng = np.random.default_rng(5)
    for _ in range(3000):
        n = int(rng.integers(0, 400))
        a = rng.uniform(0, 1e4, n) * (rng.random(n) < 0.7) * rng.choice([1e-3, 1.0, 1e6])
        assert 0.0 + pairwise_sum(a, 0, n) == a.sum()
        lo = int(rng.integers(0, n + 1))
        assert 0.0 + pairwise_sum(a, lo, n - lo) == a[lo:].sum()


def _seat_reference(inst, admitted, now_s, out_left, context, blocks_need, decode_start_s):
    """The seating as the simulator's numpy statements (before it was compiled)."""
    for j, rid, slot in admitted.tolist():
        if slot >= inst.high:
            inst.high = slot + 1
        inst.slot_rank[slot] = j
        inst.slot_rid[slot] = rid
        inst.slot_remaining[slot] = out_left[rid] - 1
        inst.slot_context[slot] = context[rid] + 1
        inst.slot_active[slot] = True
        inst.batch[j] += 1
        inst.kv_tokens[j] += context[rid] + 1
        inst.blocks_used[j] += blocks_need[rid]
        inst.waiting_count[j] -= 1
        inst.waiting_blocks[j] -= blocks_need[rid]
        decode_start_s[rid] = now_s


def test_seat_and_admit_plan_equal_the_numpy_statements():
    decode = load_cost_model(ep=16)
    t = StepTimes(decode, decode, 2).decode_tables
    rng = np.random.default_rng(4)
    policy = get_chunking("default")
    for case in range(200):
        ep, n = 16, 60
        insts = [DecodeInstance(0, ep, 4, 10_000, policy) for _ in range(3)]
        out_left, context = rng.integers(1, 300, n), rng.integers(1, 9000, n)
        blocks_need = rng.integers(1, 50, n)
        free = rng.permutation(ep * 4)
        busy, rids = free[:int(rng.integers(0, 20))], rng.permutation(n)
        seats = free[len(busy):len(busy) + int(rng.integers(0, 20))]
        admitted = np.stack([rng.integers(0, ep, len(seats)), rids[len(busy):len(busy) + len(seats)], seats], axis=1)
        for inst in insts:
            for slot, rid in zip(busy.tolist(), rids.tolist(), strict=False):
                inst.slot_active[slot], inst.slot_rid[slot], inst.slot_rank[slot] = True, rid, slot % ep
                inst.slot_remaining[slot] = 5.0 + slot
                inst.batch[slot % ep] += 1
                inst.kv_tokens[slot % ep] += 100.0 + slot + (case % 3) * 0.85
            inst.high = int(busy.max()) + 1 if len(busy) else 0
            inst.waiting_count[:] = 30
            inst.waiting_blocks[:] = 900
        ref, seated, planned = insts
        starts = [np.full(n, np.nan) for _ in range(3)]
        _seat_reference(ref, admitted, 2.5, out_left, context, blocks_need, starts[0])
        seated.high = seat(len(admitted), admitted, 2.5, out_left, context, blocks_need, starts[1], seated.high,
                           seated.slot_rank, seated.slot_rid, seated.slot_remaining, seated.slot_context,
                           seated.slot_active, seated.batch, seated.kv_tokens, seated.blocks_used,
                           seated.waiting_count, seated.waiting_blocks)
        high, steps, first, last = admit_plan(
            len(admitted), admitted, 2.5, out_left, context, blocks_need, starts[2], planned.high, planned.slot_rank,
            planned.slot_rid, planned.slot_remaining, planned.slot_context, planned.slot_active, planned.batch,
            planned.kv_tokens, planned.blocks_used, planned.waiting_count, planned.waiting_blocks, 1.85, 2, t.a0, t.a1,
            t.shared, t.routed, t.dense, t.constants)
        planned.high = high
        for inst, start in ((seated, starts[1]), (planned, starts[2])):
            assert inst.high == ref.high
            for name in ("slot_rank", "slot_rid", "slot_remaining", "slot_context", "slot_active", "batch", "kv_tokens",
                         "blocks_used", "waiting_count", "waiting_blocks"):
                assert np.array_equal(getattr(inst, name), getattr(ref, name)), name
            assert np.array_equal(start, starts[0], equal_nan=True)
        assert (steps, first, last) == plan_epoch(ref.high, ref.slot_active, ref.slot_remaining, 1.85, ref.batch,
                                                  ref.kv_tokens, 2, t.a0, t.a1, t.shared, t.routed, t.dense,
                                                  t.constants)


def test_kv_transfer_equals_the_public_method():
    decode = load_cost_model(ep=144)
    times = StepTimes(decode, decode, 2)
    for tokens in [0, 1, 7, 4096, 131_072, *np.random.default_rng(6).integers(0, 200_000, 2000).tolist()]:
        assert times.kv_transfer_us(tokens) == decode.kv_transfer_us(tokens)


def test_steps_done_equals_the_python_statements():
    rng = np.random.default_rng(8)
    inst = DecodeInstance(0, 4, 4, 100, get_chunking("default"))
    for case in range(20_000):
        d0 = float(rng.choice([0.0, 0.01, 0.0173, rng.uniform(1e-4, 0.1)]))
        slope = float(rng.choice([0.0, 1e-16, -1e-16, rng.uniform(-1e-6, 1e-5), rng.uniform(0, 1e-3)]))
        steps = int(rng.integers(1, 3000))
        total = steps * d0 + slope * steps * (steps - 1) / 2.0
        elapsed = float(rng.choice([0.0, total, rng.uniform(0, max(total, 1e-9) * 1.2)]))
        inst.d0, inst.slope, inst.steps = d0, slope, steps
        expected = steps_done.py_func(d0, slope, steps, elapsed)  # the kernel's Python statements
        assert inst.steps_done_by(elapsed) == expected, case
        assert inst.epoch_time(expected) <= elapsed or expected == 0
        if slope >= 0 and d0 > 0 and expected < steps:  # a monotone epoch: the next step is not done
            assert inst.epoch_time(expected + 1) > elapsed, case
