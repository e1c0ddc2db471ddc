"""Property-based attack on the window solvers (contract B: ``sbsopt.window.solve``).

Hypothesis draws random *valid* prefill and decode windows, biased towards the edges: zero
requests, one unit, every request larger than any capacity, identical requests, huge token
counts.  Every solver must keep every invariant on every one of them: each request assigned or
deferred exactly once, chunk and KV capacities respected, batch limits respected, objective at
least the bound, inputs untouched; CP-SAT (hinted with the greedy answer) is never worse than
the greedy answer when it reports a solution.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbsopt import window
from sbsopt.kvblocks import chunk_kv_blocks, request_kv_blocks

_SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
_SOLVED = {window.SolveStatus.OPTIMAL, window.SolveStatus.FEASIBLE, window.SolveStatus.TIMEOUT}


# --------------------------------------------------------------------------- strategies
_SHAPES = st.sampled_from(["mixed", "oversize", "identical", "huge", "tight"])


@st.composite
def prefill_windows(draw: st.DrawFn, *, max_requests: int = 24, max_units: int = 8) -> dict:
    """Keyword arguments for ``PrefillWindow.from_arrays``; see the module docstring."""
    shape = draw(_SHAPES)
    n = draw(st.integers(0, max_requests))
    j = draw(st.integers(1, max_units))
    cap_hi = 10**9 if shape == "huge" else 32_768
    capacity = np.array(draw(st.lists(st.integers(1, cap_hi), min_size=j, max_size=j)), np.int64)
    load = np.array(
        [draw(st.integers(0, int(c))) for c in capacity] if draw(st.booleans()) else [0] * j,
        np.int64,
    )
    if shape == "oversize":
        lo = int(capacity.max()) + 1
        new = [draw(st.integers(lo, lo + 100_000)) for _ in range(n)]
    elif shape == "identical":
        new = [draw(st.integers(1, 20_000))] * n
    elif shape == "huge":
        new = draw(st.lists(st.integers(1, 2**31), min_size=n, max_size=n))
    elif shape == "tight":
        new = draw(st.lists(st.integers(1, int(capacity.min())), min_size=n, max_size=n))
    else:
        new = draw(st.lists(st.integers(1, 40_000), min_size=n, max_size=n))
    new = np.array(new, np.int64)
    cached_hi = 2**31 if shape == "huge" else 100_000
    cached = np.array(draw(st.lists(st.integers(0, cached_hi), min_size=n, max_size=n)), np.int64)
    arrival = np.sort(np.array(
        draw(st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=n, max_size=n)), np.float64
    ))
    kwargs: dict = {"capacity_tokens": capacity, "load_tokens": load,
                    "now_s": float(arrival.max(initial=0.0)) + draw(st.floats(0.0, 1.0))}
    if draw(st.booleans()):
        kv = np.maximum(1, (new + cached) // 64 + 1)
        kwargs["kv_blocks"] = kv
        total = int(kv.sum()) if n else 1
        kwargs["free_kv_blocks"] = np.array(
            draw(st.lists(st.integers(0, max(1, total)), min_size=j, max_size=j)), np.int64
        )
    if draw(st.booleans()) and n:
        kwargs["deadline_s"] = arrival + draw(st.floats(0.0, 2.0))
    kwargs["allow_chunking"] = draw(st.booleans())
    return {"args": (new, cached, arrival), "kwargs": kwargs}


@st.composite
def decode_windows(draw: st.DrawFn, *, max_requests: int = 24, max_units: int = 8) -> dict:
    """Keyword arguments for ``DecodeWindow.from_arrays``."""
    shape = draw(_SHAPES)
    n = draw(st.integers(0, max_requests))
    j = draw(st.integers(1, max_units))
    ctx_hi = 2**31 if shape == "huge" else 64_000
    if shape == "identical":
        context = [draw(st.integers(1, ctx_hi))] * n
    else:
        context = draw(st.lists(st.integers(1, ctx_hi), min_size=n, max_size=n))
    context = np.array(context, np.int64)
    kv = request_kv_blocks(context)
    max_batch = np.array(draw(st.lists(st.integers(1, 256), min_size=j, max_size=j)), np.int64)
    batch = np.array([draw(st.integers(0, int(m))) for m in max_batch], np.int64)
    used = np.array(draw(st.lists(st.integers(0, 50_000), min_size=j, max_size=j)), np.int64)
    if shape == "oversize":
        free_hi = max(0, int(kv.min(initial=1)) - 1)
    elif shape == "tight":
        free_hi = max(1, int(kv.sum()) // j)
    else:
        free_hi = max(1, int(kv.sum()))
    free = np.array(draw(st.lists(st.integers(0, free_hi), min_size=j, max_size=j)), np.int64)
    return {"args": (context, kv), "kwargs": {
        "batch_size": batch, "max_batch_size": max_batch, "kv_blocks_used": used,
        "free_kv_blocks": free}}


# --------------------------------------------------------------------------- the checker
def _as_dict_chunks(result: object) -> dict[int, int]:
    return {int(i): int(t) for i, t in dict(result.chunks).items()}


def validate_prefill(spec: dict, result: object) -> None:
    """Every invariant a prefill answer must keep, whatever the method."""
    new, _cached, _arrival = spec["args"]
    kw = spec["kwargs"]
    n, j = len(new), len(kw["capacity_tokens"])
    _validate_common(result, n, j)
    assignment = np.asarray(result.assignment)
    chunks = _as_dict_chunks(result)
    for i, tokens in chunks.items():
        assert assignment[i] >= 0, f"request {i} chunked but not assigned"
        assert 0 < tokens < new[i], f"chunk {tokens} of request {i} with {new[i]} new tokens"
    room = np.maximum(kw["capacity_tokens"] - kw["load_tokens"], 0)
    kv = kw.get("kv_blocks")
    free = kw.get("free_kv_blocks")
    chunk_units = [int(assignment[i]) for i in chunks]
    assert len(set(chunk_units)) == len(chunk_units), "more than one chunk on a unit"
    if kv is None:  # the documented default: new tokens only, cached prefix blocks are resident
        kv = request_kv_blocks(new)
    for unit in range(j):
        mine = np.flatnonzero(assignment == unit)
        placed = sum(chunks.get(int(i), int(new[i])) for i in mine)
        assert placed <= room[unit], f"unit {unit}: {placed} tokens > room {room[unit]}"
        if free is not None:
            # A chunk holds its KV pro rata (rounded up), as documented in the README.
            blocks = sum(chunk_kv_blocks(chunks[int(i)], int(kv[i]), int(new[i]))
                         if int(i) in chunks else int(kv[i]) for i in mine)
            assert blocks <= free[unit], f"unit {unit}: KV over-admitted ({blocks} > {free[unit]})"
    deadline = kw.get("deadline_s")
    if deadline is not None and result.status in _SOLVED:
        guarded = np.asarray(deadline) <= kw["now_s"]
        assert not np.any(guarded & (assignment < 0)), "a request past its guard was deferred"


def validate_decode(spec: dict, result: object) -> None:
    """Every invariant a decode answer must keep, whatever the method."""
    _context, kv = spec["args"]
    kw = spec["kwargs"]
    n, j = len(kv), len(kw["free_kv_blocks"])
    _validate_common(result, n, j)
    assert not dict(result.chunks), "decode answers never chunk"
    assignment = np.asarray(result.assignment)
    for unit in range(j):
        mine = np.flatnonzero(assignment == unit)
        assert kw["batch_size"][unit] + len(mine) <= kw["max_batch_size"][unit]
        assert int(kv[mine].sum()) <= kw["free_kv_blocks"][unit], f"unit {unit}: KV over-admitted"


def _validate_common(result: object, n: int, j: int) -> None:
    assert isinstance(result, window.SolveResult)
    assignment = np.asarray(result.assignment)
    deferred = np.asarray(result.deferred)
    assert assignment.shape == (n,) and np.issubdtype(assignment.dtype, np.integer)
    assert np.all((assignment >= -1) & (assignment < j)), assignment
    np.testing.assert_array_equal(np.sort(deferred), np.flatnonzero(assignment == -1))
    assert len(set(deferred.tolist())) == len(deferred)
    assert result.status in _SOLVED or result.status == window.SolveStatus.INFEASIBLE
    assert isinstance(result.method, str) and result.method
    assert math.isfinite(result.wall_time_s) and result.wall_time_s >= 0
    if result.status in _SOLVED:
        objective, bound = float(result.objective), float(result.bound)
        assert math.isfinite(objective) and not math.isnan(bound)
        assert objective >= bound - 1e-6 * max(1.0, abs(bound)), (objective, bound)
        gap = float(result.gap)
        assert math.isnan(gap) or gap >= -1e-9, gap


def _snapshot(spec: dict) -> list[np.ndarray]:
    arrays = list(spec["args"]) + [v for v in spec["kwargs"].values() if isinstance(v, np.ndarray)]
    return [a.copy() for a in arrays]


def _unchanged(spec: dict, before: list[np.ndarray]) -> None:
    after = list(spec["args"]) + [v for v in spec["kwargs"].values() if isinstance(v, np.ndarray)]
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)


def _prefill(spec: dict) -> object:
    return window.PrefillWindow.from_arrays(*spec["args"], **spec["kwargs"])


def _decode(spec: dict) -> object:
    return window.DecodeWindow.from_arrays(*spec["args"], **spec["kwargs"])


# --------------------------------------------------------------------------- properties
@settings(max_examples=120, **_SETTINGS)
@given(spec=prefill_windows())
def test_greedy_prefill_keeps_every_invariant(spec: dict) -> None:
    before = _snapshot(spec)
    result = window.solve(_prefill(spec), method="greedy", seed=0)
    validate_prefill(spec, result)
    _unchanged(spec, before)


@settings(max_examples=80, **_SETTINGS)
@given(spec=prefill_windows())
def test_greedy_prefill_with_local_search_keeps_every_invariant(spec: dict) -> None:
    """Move/swap and the deferred-request exchanges (placing, swapping in, moving to make
    room) on the same edge windows."""
    before = _snapshot(spec)
    result = window.solve(_prefill(spec), method="greedy", seed=0, options={"local_search": 50})
    validate_prefill(spec, result)
    _unchanged(spec, before)


@settings(max_examples=120, **_SETTINGS)
@given(spec=decode_windows())
def test_greedy_decode_keeps_every_invariant(spec: dict) -> None:
    before = _snapshot(spec)
    result = window.solve(_decode(spec), method="greedy", seed=0)
    validate_decode(spec, result)
    _unchanged(spec, before)


@settings(max_examples=30, **_SETTINGS)
@given(spec=prefill_windows(max_requests=10, max_units=4))
def test_cpsat_prefill_keeps_every_invariant_and_beats_greedy(spec: dict) -> None:
    problem = _prefill(spec)
    greedy = window.solve(problem, method="greedy", seed=0)
    exact = window.solve(problem, method="cpsat", time_limit_s=0.5, seed=0)
    validate_prefill(spec, exact)
    _no_worse(exact, greedy)


@settings(max_examples=30, **_SETTINGS)
@given(spec=decode_windows(max_requests=10, max_units=4))
def test_cpsat_decode_keeps_every_invariant_and_beats_greedy(spec: dict) -> None:
    problem = _decode(spec)
    greedy = window.solve(problem, method="greedy", seed=0)
    exact = window.solve(problem, method="cpsat", time_limit_s=0.5, seed=0)
    validate_decode(spec, exact)
    _no_worse(exact, greedy)


@settings(max_examples=20, **_SETTINGS)
@given(spec=prefill_windows(max_requests=12, max_units=4))
def test_auto_prefill_keeps_every_invariant(spec: dict) -> None:
    result = window.solve(_prefill(spec), method="auto", time_limit_s=0.2, seed=0)
    validate_prefill(spec, result)


def _no_worse(exact: object, greedy: object) -> None:
    if exact.status in _SOLVED and greedy.status in _SOLVED:
        tol = 1e-6 * max(1.0, abs(float(greedy.objective)))
        assert float(exact.objective) <= float(greedy.objective) + tol, (exact, greedy)
    # Whatever the exact solver proves, no answer may sit below the best bound.
    bound = max(float(exact.bound), float(greedy.bound))
    for result in (exact, greedy):
        if result.status in _SOLVED:
            assert float(result.objective) >= bound - 1e-6 * max(1.0, abs(bound))


# --------------------------------------------------------------------------- pinned edges
def test_zero_requests() -> None:
    empty = np.zeros(0, np.int64)
    spec = {"args": (empty, empty, np.zeros(0)),
            "kwargs": {"capacity_tokens": np.array([1024]), "load_tokens": np.array([0])}}
    for method in ("greedy", "cpsat", "auto"):
        result = window.solve(_prefill(spec), method=method, time_limit_s=0.2)
        validate_prefill(spec, result)
        assert len(result.deferred) == 0


def test_everything_larger_than_any_capacity_is_deferred_without_chunking() -> None:
    new = np.array([5000, 6000, 7000], np.int64)
    spec = {"args": (new, np.zeros(3, np.int64), np.zeros(3)),
            "kwargs": {"capacity_tokens": np.array([4096, 4096]),
                       "load_tokens": np.array([0, 0]), "allow_chunking": False}}
    for method in ("greedy", "cpsat", "auto"):
        result = window.solve(_prefill(spec), method=method, time_limit_s=0.2)
        validate_prefill(spec, result)
        np.testing.assert_array_equal(np.sort(result.deferred), [0, 1, 2])


def test_decode_without_free_kv_defers_everything() -> None:
    kv = np.array([10, 20], np.int64)
    spec = {"args": (np.array([640, 1280], np.int64), kv), "kwargs": {
        "batch_size": np.array([0, 0]), "max_batch_size": np.array([8, 8]),
        "kv_blocks_used": np.array([0, 0]), "free_kv_blocks": np.array([5, 9])}}
    for method in ("greedy", "cpsat", "auto"):
        result = window.solve(_decode(spec), method=method, time_limit_s=0.2)
        validate_decode(spec, result)
        np.testing.assert_array_equal(np.sort(result.deferred), [0, 1])
