"""Bounds never exceed the enumerated optimum; the LP and knapsack forms tighten them."""

from __future__ import annotations

import numpy as np
import pytest

from sbsopt.window import DecodeWindow, PrefillWindow, analytic_bound, lp_bound


@pytest.mark.parametrize("seed", range(12))
def test_bounds_below_enumerated_optimum(cat, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    n, j = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    for problem in (cat.random_prefill(rng, n, j), cat.random_decode(rng, n, j),
                    cat.random_prefill(rng, n, j, free_kv_blocks=rng.integers(0, 150, j))):
        best, _ = cat.brute_force(problem)
        if not np.isfinite(best):
            continue
        assert analytic_bound(problem) <= best * (1 + 1e-9)
        assert lp_bound(problem) <= best * (1 + 1e-9)


def test_total_over_units_is_tight_on_a_divisible_instance(cat) -> None:
    from types import SimpleNamespace

    c = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
                        gamma_us_per_request=0.0)
    w = PrefillWindow.from_arrays([10] * 8, [0] * 8, [0.0] * 8, capacity_tokens=[100] * 4,
                                  coefficients=c)
    assert analytic_bound(w) == 20.0


def test_capacity_forces_deferral_into_the_bound(cat) -> None:
    # 3 requests of 3000 tokens, room for two: one penalty is unavoidable
    w = PrefillWindow.from_arrays([3000] * 3, [0] * 3, [0.0] * 3, capacity_tokens=[6000],
                                  coefficients=cat.PREFILL, allow_chunking=False)
    assert analytic_bound(w) >= w.base_us + w.penalty_us.min()


def test_decode_bound_counts_batch_and_kv(cat) -> None:
    d = DecodeWindow.from_arrays([640] * 4, [10] * 4, batch_size=[0, 0], max_batch_size=[8, 8],
                                 kv_blocks_used=[0, 0], free_kv_blocks=[100, 100],
                                 coefficients=cat.DECODE)
    expected = d.base_us + 2 * d.us_per_request + 1280 * d.us_per_kv_token
    assert analytic_bound(d) == pytest.approx(expected)
    assert lp_bound(d) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", range(40))
def test_compiled_prefill_bound_matches_the_numpy_reference(cat, seed: int) -> None:
    from sbsopt.window.bounds import _prefill_analytic, _prefill_analytic_fast

    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 6))
    kw: dict = {"allow_chunking": bool(seed % 2)}
    if seed % 3 == 0:
        kw["free_kv_blocks"] = rng.integers(0, 100, j)
    if seed % 5 == 0 and j > 1:
        kw["instance"] = np.arange(j) % 2
    problem = cat.random_prefill(rng, int(rng.integers(0, 30)), j, **kw)
    assert _prefill_analytic_fast(problem) == pytest.approx(_prefill_analytic(problem), rel=1e-9)


@pytest.mark.parametrize("seed", range(40))
def test_compiled_decode_bound_matches_the_numpy_reference(cat, seed: int) -> None:
    from sbsopt.window.bounds import _decode_analytic, _decode_analytic_fast

    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 6))
    kw: dict = {}
    if seed % 5 == 0 and j > 1:
        kw["instance"] = np.arange(j) % 2
    problem = cat.random_decode(rng, int(rng.integers(0, 30)), j, **kw)
    assert _decode_analytic_fast(problem) == pytest.approx(_decode_analytic(problem), rel=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_chunked_bound_below_every_chunked_answer(cat, seed: int) -> None:
    from sbsopt.window import objective

    rng = np.random.default_rng(3000 + seed)
    j = int(rng.integers(1, 5))
    # tight rooms so that answers chunk and defer
    problem = cat.random_prefill(rng, int(rng.integers(1, 12)), j, allow_chunking=True,
                                 capacity_tokens=rng.integers(2000, 8000, j))
    bound = analytic_bound(problem)
    best = np.inf
    for _ in range(400):
        answer = cat.random_chunked_answer(problem, rng)
        if answer is not None:
            best = min(best, objective(problem, *answer))
    assert bound <= best * (1 + 1e-9)
    assert lp_bound(problem) <= best * (1 + 1e-9)


def test_chunked_bound_is_the_whole_bound_when_capacity_is_ample(cat, rng) -> None:
    # with room for everything and P_i >= c_i, no fraction below 1 lowers the relaxation
    whole = cat.random_prefill(rng, 20, 4, capacity_tokens=np.full(4, 200_000),
                               free_kv_blocks=np.full(4, 10**6))
    chunked = cat.random_prefill(np.random.default_rng(20241124), 20, 4, allow_chunking=True,
                                 capacity_tokens=np.full(4, 200_000),
                                 free_kv_blocks=np.full(4, 10**6))
    assert analytic_bound(chunked) == pytest.approx(analytic_bound(whole), rel=1e-12)


@pytest.mark.parametrize("seed", range(30))
def test_split_bound_below_every_answer(cat, seed: int) -> None:
    from sbsopt.window import objective, split_bound

    rng = np.random.default_rng(5000 + seed)
    j = int(rng.integers(1, 5))
    chunking = bool(seed % 2)
    # long prompts with long cached prefixes, tight rooms: the form this bound is for
    problem = cat.random_prefill(rng, int(rng.integers(1, 7)), j, allow_chunking=chunking,
                                 capacity_tokens=rng.integers(2000, 9000, j))
    bound = split_bound(problem)
    best, _ = cat.brute_force(problem)
    for _ in range(300 if chunking else 0):
        answer = cat.random_chunked_answer(problem, rng)
        if answer is not None:
            best = min(best, objective(problem, *answer))
    assert bound <= best * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_compiled_split_bound_matches_the_numpy_reference(cat, seed: int) -> None:
    from sbsopt.window.bounds import _split_bound, split_bound

    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 6))
    problem = cat.random_prefill(rng, int(rng.integers(1, 30)), j, allow_chunking=bool(seed % 2),
                                 capacity_tokens=rng.integers(2000, 12000, j))
    assert split_bound(problem) == pytest.approx(_split_bound(problem), rel=1e-9)


@pytest.mark.parametrize("chunking", [False, True])
def test_split_bound_sees_one_long_prompt(cat, chunking: bool) -> None:
    from sbsopt.window import objective, solve, split_bound

    # a long prompt with a long cached prefix among short ones, more tokens than room: the
    # averaging form spreads the long one over both units, the largest-item form ignores the
    # short ones' penalties; the split bound has both
    w = PrefillWindow.from_arrays([7000] + [500] * 30, [20000] + [0] * 30, [0.0] * 31,
                                  capacity_tokens=[8000] * 2, coefficients=cat.PREFILL,
                                  allow_chunking=chunking)
    answer = solve(w, method="greedy")
    assert analytic_bound(w) * 1.05 < split_bound(w) <= objective(w, answer.assignment,
                                                                  answer.chunks)


@pytest.mark.parametrize("chunking", [False, True])
def test_split_bound_sees_the_room_a_long_prompt_leaves_on_its_unit(cat, chunking, monkeypatch):
    from sbsopt.window import bounds, objective, solve, split_bound

    # a prompt with a long cached prefix costs ~3x a short one per token: the unit that runs
    # it within a step near the average cannot also fill its room with short prompts
    w = PrefillWindow.from_arrays([9000] + [700] * 12, [20000] + [0] * 12, [0.0] * 13,
                                  capacity_tokens=[6000] * 2, coefficients=cat.PREFILL,
                                  allow_chunking=chunking)
    hosted = split_bound(w)
    monkeypatch.setattr(bounds, "HOST_GRID", 0)
    assert hosted > 1.02 * split_bound(w)
    answer = solve(w, method="greedy")
    assert hosted <= objective(w, answer.assignment, answer.chunks)


def _chunked_optimum(problem: PrefillWindow, most_chunks: int | None = None) -> float:
    """Least objective over every answer: each request deferred, whole on a unit or a chunk of
    every size ``1..n-1`` on a unit (at most one chunk per unit, rooms and KV blocks kept)."""
    import itertools

    from sbsopt.kvblocks import chunk_kv_blocks
    from sbsopt.window import objective

    n, units = problem.n_requests, problem.n_units
    options = []
    for i in range(n):
        size = int(problem.new_tokens[i])
        options.append([(-1, 0)] + [(j, k) for j in range(units) for k in range(1, size + 1)])
    best = np.inf
    for combo in itertools.product(*options):
        chunks = {i: k for i, (j, k) in enumerate(combo)
                  if j >= 0 and k < problem.new_tokens[i]}
        chunk_units = [combo[i][0] for i in chunks]
        if len(set(chunk_units)) != len(chunk_units):
            continue
        tokens, blocks = np.zeros(units), np.zeros(units)
        for i, (j, k) in enumerate(combo):
            if j >= 0:
                tokens[j] += k
                blocks[j] += (chunk_kv_blocks(k, int(problem.kv_blocks[i]),
                                              int(problem.new_tokens[i]))
                              if i in chunks else problem.kv_blocks[i])
        assignment = np.array([j for j, _ in combo], np.int64)
        if ((tokens > problem.room_tokens).any() or (blocks > problem.free_kv_blocks).any()
                or (problem.guarded & (assignment < 0)).any()):
            continue
        best = min(best, objective(problem, assignment, chunks))
    return best


@pytest.mark.parametrize("seed", range(24))
def test_chunked_bounds_below_the_enumerated_chunked_optimum(seed: int) -> None:
    # tiny windows whose every chunk size is enumerated, with a large attention term so that
    # the remainder's own price (objective.remainder_price_us) weighs
    from types import SimpleNamespace

    from sbsopt.window import split_bound
    from sbsopt.window.host_bound import host_bound

    c = SimpleNamespace(base_us=10.0, alpha_us_per_token=1.0, beta_us_per_pair=0.3,
                        gamma_us_per_request=4.0)
    rng = np.random.default_rng(7000 + seed)
    n, j = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    problem = PrefillWindow.from_arrays(
        rng.integers(1, 8, n), rng.integers(0, 5, n), np.sort(rng.uniform(0.0, 0.4, n)),
        capacity_tokens=rng.integers(2, 12, j), load_tokens=rng.integers(0, 3, j),
        free_kv_blocks=rng.integers(1, 3, j) if seed % 3 == 0 else None, coefficients=c,
        now_s=0.5, allow_chunking=True, defer_cost_us=float(rng.uniform(0.0, 30.0)),
        defer_factor=float(rng.choice([0.5, 1.0, 2.0])))
    best = _chunked_optimum(problem)
    for bound in (analytic_bound(problem), split_bound(problem), lp_bound(problem),
                  host_bound(problem, 1.3 * best)):
        assert bound <= best * (1 + 1e-9)


def test_chunked_bound_is_tight_on_a_lone_request_chunked_behind_an_older_one(cat) -> None:
    # one unit: the older request takes most of the room, the newer one runs a chunk of what
    # is left and its remainder waits, priced as a deferral of its own. The old bound (the
    # remainder at its token share of the penalty) was 6.5% below the optimum
    from sbsopt.window import objective, split_bound

    w = PrefillWindow.from_arrays([12000, 8000], [0, 2048], [0.0, 0.06],
                                  capacity_tokens=[16384], coefficients=cat.PREFILL, now_s=0.1,
                                  allow_chunking=True)
    n, room = w.new_tokens, int(w.room_tokens[0])
    best = np.inf
    for chunked in (0, 1):  # one unit: at most one chunk; every size of it, every other state
        other = 1 - chunked
        for other_state in (-1, int(n[other])):
            for k in range(0, int(n[chunked]) + 1):
                used = k + max(other_state, 0)
                if used > room:
                    continue
                assignment = np.full(2, -1, np.int64)
                assignment[chunked] = 0 if k else -1
                assignment[other] = 0 if other_state > 0 else -1
                chunks = {chunked: k} if 0 < k < n[chunked] else {}
                best = min(best, objective(w, assignment, chunks))
    bound = max(analytic_bound(w), split_bound(w))
    assert best * 0.99 <= bound <= best * (1 + 1e-9)
