"""The simulator's trusted window path decides exactly as the validated ``solve`` path."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest

from sbsopt.costmodel import load_cost_model
from sbsopt.sim import ClusterConfig, simulate
from sbsopt.sim.router import RouterView
from sbsopt.sim.windows import (
    greedy_decode_assignment,
    greedy_decode_window,
    lone_decode_unit,
    trusted_prefill_window,
)
from sbsopt.window import DecodeWindow, PrefillWindow, solve
from sbsopt.window.greedy import greedy_decode
from sbsopt.workload import load_trace

simulator = sys.modules.get("sbsopt.sim.simulator") or __import__("sbsopt.sim.simulator", fromlist=["x"])


def _same(a, b):
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y) and not x.flags.writeable, name
        else:
            assert x == y, name


def test_trusted_windows_equal_the_validated_ones():
    rng = np.random.default_rng(1)
    pc = load_cost_model(ep=32).prefill_coefficients()
    new, cached = rng.integers(1, 20000, 7), rng.integers(0, 3000, 7)
    arrival = rng.uniform(0, 2, 7)
    capacity, load = np.full(8, 8192, np.int64), rng.integers(0, 9000, 8)
    load = np.minimum(load, capacity)
    inst = np.repeat(np.arange(2), 4)
    ref = PrefillWindow.from_arrays(new, cached, arrival, capacity_tokens=capacity, load_tokens=load,
                                    deadline_s=arrival + 1.0, now_s=1.5, coefficients=pc, allow_chunking=True,
                                    instance=inst)
    _same(ref, trusted_prefill_window(new.copy(), cached.copy(), arrival.copy(), capacity=capacity.copy(),
                                      load=load.copy(), deadline=arrival + 1.0, now_s=1.5, coefficients=pc,
                                      instance=inst))


@pytest.mark.parametrize("mtp", [False, True])
def test_greedy_decode_assignment_equals_the_greedy_on_the_validated_window(mtp):
    # lone requests (every request its own window at a light rate) and small windows, over
    # unit states with full batches, KV limits that leave few or no units, and ties
    rng = np.random.default_rng(7)
    dc = load_cost_model(ep=144).decode_coefficients(query_tokens=2 if mtp else 1)
    for case in range(400):
        units = int(rng.choice([1, 2, 3, 4, 5, 8, 144]))
        n = 1 if case % 2 else int(rng.integers(1, 7))
        max_batch, capacity = int(rng.choice([1, 2, 128])), int(rng.choice([40, 300, 10_000]))
        batch = rng.integers(0, max_batch + 1, units) if case % 3 else np.full(units, rng.integers(0, max_batch))
        used = rng.integers(0, capacity + 1, units) if case % 5 else np.full(units, rng.integers(0, capacity))
        ctx = rng.integers(1, 9000, n)
        blocks = np.maximum(ctx // 64, 1) if case % 7 else rng.integers(1, capacity + 2, n)
        window = DecodeWindow.from_arrays(ctx, blocks, batch_size=batch, max_batch_size=np.full(units, max_batch),
                                          kv_blocks_used=used, free_kv_blocks=capacity - used, coefficients=dc,
                                          iqr_k=1.5, kv_block_tokens=64)
        expected = greedy_decode(window).assignment
        assert np.array_equal(expected, solve(window, method="greedy").assignment)
        got = greedy_decode_assignment(ctx.astype(np.int64), blocks.astype(np.int64), batch=batch.astype(np.int64),
                                       max_batch=max_batch, used=used.astype(np.int64), capacity_blocks=capacity,
                                       block_tokens=64, coefficients=dc, iqr_k=1.5)
        assert np.array_equal(got, expected), case


@pytest.mark.parametrize("iqr_k", [1.5, 0.0, 4.0, -0.5, np.inf])
def test_lone_decode_unit_equals_the_full_greedy(iqr_k):
    # one request against unit states from idle (ties everywhere) to full batches and KV, on
    # the simulator's window (view clipping included) and on the kernel itself
    rng = np.random.default_rng(11)
    dc = load_cost_model(ep=144).decode_coefficients(query_tokens=2)
    decided = 0
    for case in range(1500):
        units = int(rng.choice([1, 2, 3, 4, 5, 8, 144]))
        max_batch, capacity = int(rng.choice([1, 2, 4, 128])), int(rng.choice([40, 300, 10_000]))
        busy = rng.random(units) < rng.choice([0.0, 0.1, 0.5, 1.0])
        view = RouterView(1, units)
        view.running[:] = np.where(busy, rng.integers(0, max_batch + 2, units), 0)
        view.waiting[:] = np.where(busy & (rng.random(units) < 0.3), rng.integers(0, 3, units), 0)
        view.tokens[:] = np.where(view.running + view.waiting > 0, rng.integers(0, capacity + 20, units), 0)
        if case % 4 == 0:  # equal loads: every tie rule at work
            view.tokens[:] = np.where(busy, rng.integers(0, 3) * 7, 0)
        rid = np.zeros(1, np.int64)
        context = rng.integers(1, 9000, 1)
        blocks = np.maximum(context // 64, 1) if case % 7 else rng.integers(1, capacity + 2, 1)
        unit_ids = np.arange(units)
        got = greedy_decode_window(rid, context, blocks, unit_ids, view, max_batch=max_batch,
                                   capacity_blocks=capacity, block_tokens=64, coefficients=dc, iqr_k=iqr_k)
        batch = np.minimum(view.running + view.waiting, max_batch).astype(np.int64)
        used = np.minimum(view.tokens, capacity).astype(np.int64)
        expected = greedy_decode_assignment(context, blocks, batch=batch, max_batch=max_batch, used=used,
                                            capacity_blocks=capacity, block_tokens=64, coefficients=dc, iqr_k=iqr_k)
        assert np.array_equal(got, expected), case
        unit = lone_decode_unit(context[0], blocks[0], batch, used * 64, capacity - used, max_batch,
                                float(dc.base_us), float(dc.us_per_request), float(dc.us_per_kv_token), iqr_k)
        if unit != -2:
            decided += 1
            assert unit == expected[0], case
    assert decided > 900  # the shortcut decides most of these states, not only the trivial ones


def _validated_prefill(new_tokens, cached_tokens, arrival_s, *, capacity_tokens, load_tokens, now_s, guard_s,
                       coefficients, solver, seed, instance=None, chunks=None):
    load = np.minimum(load_tokens, capacity_tokens).astype(np.int64)
    window = PrefillWindow.from_arrays(new_tokens, cached_tokens, arrival_s, capacity_tokens=capacity_tokens,
                                       load_tokens=load, deadline_s=arrival_s + guard_s, now_s=now_s,
                                       coefficients=coefficients, allow_chunking=True, instance=instance)
    result = solve(window, method=solver, seed=seed)
    if chunks is not None:
        chunks.update(result.chunks)
    return np.array(result.assignment, dtype=np.int64, copy=True)


def _validated_decode_window(rids, context, blocks_need, units, view, *, max_batch, capacity_blocks, block_tokens,
                             coefficients, iqr_k):
    assignment = _validated_decode(
        context[rids], blocks_need[rids], batch_size=(view.running + view.waiting)[units], max_batch_size=max_batch,
        kv_blocks_used=view.tokens[units], kv_capacity_blocks=capacity_blocks, kv_block_tokens=block_tokens,
        coefficients=coefficients, iqr_k=iqr_k, solver="greedy", seed=0)
    return np.where(assignment >= 0, units[assignment], -1)


def _validated_decode(context_tokens, kv_blocks, *, batch_size, max_batch_size, kv_blocks_used, kv_capacity_blocks,
                      kv_block_tokens, coefficients, iqr_k, solver, seed):
    used = np.minimum(kv_blocks_used, kv_capacity_blocks).astype(np.int64)
    window = DecodeWindow.from_arrays(
        context_tokens, kv_blocks, batch_size=np.minimum(batch_size, max_batch_size).astype(np.int64),
        max_batch_size=np.full(len(batch_size), max_batch_size), kv_blocks_used=used,
        free_kv_blocks=kv_capacity_blocks - used, coefficients=coefficients, iqr_k=iqr_k,
        kv_block_tokens=kv_block_tokens)
    return np.asarray(solve(window, method=solver, seed=seed).assignment, dtype=np.int64)


def _digest(res) -> str:
    t = res.requests
    h = hashlib.sha256()
    for col in sorted(t.columns):
        h.update(col.encode() + t[col].astype(str).str.cat(sep=",").encode())
    return h.hexdigest()


@pytest.mark.parametrize(("trace", "limit", "rate"), [("azure-conv", 600, None), ("azure-conv", 1500, 700.0),
                                                      ("mooncake-conv", 300, 8.0), ("azure-code", 600, None)])
def test_fast_window_path_gives_the_same_results(monkeypatch, trace, limit, rate):
    wl = load_trace(trace, limit=limit)
    if rate is not None:
        wl = wl.with_rate(rate)
    fast = _digest(simulate(wl, cluster=ClusterConfig(), router="sbs"))
    monkeypatch.setattr(simulator, "allocate_prefill", _validated_prefill)
    monkeypatch.setattr(simulator, "allocate_decode", _validated_decode)
    # the simulator's own shortcuts off: every prefill window through allocate_prefill, every
    # decode window through the validated window
    monkeypatch.setattr(simulator, "units_hold_nothing", lambda tokens, units: False)
    monkeypatch.setattr(simulator, "greedy_decode_window", _validated_decode_window)
    assert _digest(simulate(wl, cluster=ClusterConfig(), router="sbs")) == fast
