"""The simulator's unchecked step times equal the cost model's public methods."""

from __future__ import annotations

import numpy as np

from sbsopt.costmodel import load_cost_model
from sbsopt.sim.chunking import PrefillTask, get_chunking
from sbsopt.sim.engine import DecodeInstance, PrefillInstance
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
