"""Shared instances for the window tests: explicit coefficients and a brute-force oracle."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from sbsopt.kvblocks import chunk_kv_blocks, request_kv_blocks
from sbsopt.window import DecodeWindow, PrefillWindow, objective

# Coefficients of the order of the calibrated DeepSeek-V3/H800 model (all layers, per rank).
PREFILL = SimpleNamespace(base_us=50_000.0, alpha_us_per_token=80.0, beta_us_per_pair=0.01,
                          gamma_us_per_request=600.0)
DECODE = SimpleNamespace(base_us=43_000.0, us_per_request=45.0, us_per_kv_token=0.027)


def random_prefill(rng: np.random.Generator, n: int, j: int, **kwargs) -> PrefillWindow:
    new = rng.integers(1, 6000, n)
    cached = rng.integers(0, 3000, n) * rng.integers(0, 2, n)
    arrival = np.sort(rng.uniform(0.0, 0.2, n))
    options = {"capacity_tokens": rng.integers(2000, 16_384, j),
               "load_tokens": rng.integers(0, 1500, j), "now_s": 0.25,
               "coefficients": PREFILL, "allow_chunking": False}
    options.update(kwargs)
    return PrefillWindow.from_arrays(new, cached, arrival, **options)


def random_decode(rng: np.random.Generator, n: int, j: int, **kwargs) -> DecodeWindow:
    context = rng.integers(100, 40_000, n)
    blocks = request_kv_blocks(context)
    batch = rng.integers(0, 6, j)
    options = {"batch_size": batch, "max_batch_size": batch + rng.integers(0, 4, j),
               "kv_blocks_used": rng.integers(0, 600, j),
               "free_kv_blocks": rng.integers(100, 1200, j), "coefficients": DECODE}
    options.update(kwargs)
    return DecodeWindow.from_arrays(context, blocks, **options)


def brute_force(problem: PrefillWindow | DecodeWindow) -> tuple[float, np.ndarray | None]:
    """Optimal whole-request objective by enumeration (None when infeasible)."""
    n, units = problem.n_requests, problem.n_units
    best, best_a = np.inf, None
    for combo in itertools.product(range(-1, units), repeat=n):
        a = np.array(combo, np.int64)
        placed = a >= 0
        kv = np.bincount(a[placed], weights=problem.kv_blocks[placed], minlength=units)
        if (kv > problem.free_kv_blocks).any():
            continue
        if isinstance(problem, PrefillWindow):
            if (problem.guarded & ~placed).any():
                continue
            tokens = np.bincount(a[placed], weights=problem.new_tokens[placed], minlength=units)
            if (tokens > problem.room_tokens).any():
                continue
        else:
            count = np.bincount(a[placed], minlength=units)
            if (problem.batch_size + count > problem.max_batch_size).any():
                continue
        value = objective(problem, a)
        if value < best:
            best, best_a = value, a
    return best, best_a


def random_chunked_answer(problem: PrefillWindow, rng: np.random.Generator):
    """A random feasible answer with chunks (at most one per unit), or None."""
    room = problem.room_tokens.copy()
    free = problem.free_kv_blocks.copy()
    assignment = np.full(problem.n_requests, -1, np.int64)
    chunks: dict[int, int] = {}
    chunked_units: set[int] = set()
    for i in rng.permutation(problem.n_requests):
        j = int(rng.integers(0, problem.n_units))
        n, b = int(problem.new_tokens[i]), int(problem.kv_blocks[i])
        if rng.random() < 0.5 and n <= room[j] and b <= free[j]:
            assignment[i] = j
            room[j] -= n
            free[j] -= b
        elif j not in chunked_units and n > 1 and room[j] > 0:
            k = int(rng.integers(1, min(n - 1, room[j]) + 1))
            blocks = chunk_kv_blocks(k, b, n)
            if blocks <= free[j]:
                assignment[i], chunks[int(i)] = j, k
                chunked_units.add(j)
                room[j] -= k
                free[j] -= blocks
    if (problem.guarded & (assignment < 0)).any():
        return None
    return assignment, chunks


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20241124)


@pytest.fixture
def cat() -> SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable under importlib)."""
    return SimpleNamespace(PREFILL=PREFILL, DECODE=DECODE, random_prefill=random_prefill,
                           random_decode=random_decode, brute_force=brute_force,
                           random_chunked_answer=random_chunked_answer)


@pytest.fixture(autouse=True, scope="session")
def _warm_kernels() -> None:
    """Compile (or load) the Numba kernels before any timed budget starts."""
    from sbsopt.window import warm_up

    warm_up()
