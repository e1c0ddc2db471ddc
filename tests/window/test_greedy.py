"""Greedy kernels against their plain-Python references, and greedy answers' quality."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sbsopt.window import PrefillWindow, _kernels, solve, validate_assignment
from sbsopt.window.greedy import (
    _chunk_spec,
    _empty_state,
    exchange_search,
    greedy_decode,
    greedy_prefill,
    ruin_recreate,
)
from sbsopt.window.objective import prefill_objective, prefill_unit_time_us


def _prefill_args(problem, order):
    return (order, problem.cost_us, problem.new_tokens, problem.kv_blocks, problem.penalty_us,
            problem.guarded, problem.room_tokens.copy(), problem.free_kv_blocks.copy(),
            problem.residual_us.copy(), problem.instance)


def _assert_kernel_matches_reference(problem, order):
    """``prefill_greedy`` (on fresh copies) and ``prefill_greedy_py`` agree on the assignment
    and the chunks."""
    inst_max = np.full(problem.n_instances, -np.inf)
    np.maximum.at(inst_max, problem.instance, problem.residual_us)
    chunk_tokens = np.zeros(problem.n_requests, np.int64)
    assignment = _kernels.prefill_greedy(
        *_prefill_args(problem, order), inst_max, chunk_tokens,
        np.zeros(problem.n_units, np.bool_), problem.allow_chunking, _chunk_spec(problem))
    c = problem.coefficients
    expected = _kernels.prefill_greedy_py(
        *_prefill_args(problem, order), chunking=problem.allow_chunking,
        cached=problem.cached_tokens, alpha=c.alpha_us_per_token, beta=c.beta_us_per_pair,
        gamma=c.gamma_us_per_request, min_chunk=problem.min_chunk_tokens,
        carry=problem.weight * problem.defer_factor)
    np.testing.assert_array_equal(assignment, expected[0])
    np.testing.assert_array_equal(chunk_tokens, expected[1])


@pytest.mark.parametrize("seed", range(20))
def test_prefill_kernel_matches_reference(cat, seed: int) -> None:
    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 9))
    problem = cat.random_prefill(rng, int(rng.integers(0, 40)), j,
                                 free_kv_blocks=rng.integers(0, 200, j),
                                 instance=np.arange(j) % 2 if j > 1 else None,
                                 allow_chunking=bool(seed % 2))
    _assert_kernel_matches_reference(problem, rng.permutation(problem.n_requests))


@pytest.mark.parametrize("seed", range(20))
def test_one_instance_kernel_matches_reference_with_ties(cat, seed: int) -> None:
    from sbsopt.window import PrefillWindow

    rng = np.random.default_rng(seed)
    j, n = int(rng.integers(2, 9)), int(rng.integers(0, 40))
    # equal loads and few distinct request sizes: unit times tie all the time
    problem = PrefillWindow.from_arrays(
        rng.integers(1, 4, n) * 500 * rng.choice([1, 1, 8], n), np.zeros(n, np.int64),
        np.zeros(n), capacity_tokens=np.full(j, int(rng.integers(1000, 8000))),
        load_tokens=np.full(j, 200) * rng.integers(0, 2, j),
        free_kv_blocks=rng.integers(5, 40, j), coefficients=cat.PREFILL,
        allow_chunking=bool(seed % 2))
    _assert_kernel_matches_reference(problem, rng.permutation(n))


@pytest.mark.parametrize("seed", range(20))
def test_chunk_fill_matches_reference(cat, seed: int) -> None:
    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 6))
    problem = cat.random_prefill(rng, int(rng.integers(1, 30)), j, allow_chunking=True,
                                 free_kv_blocks=rng.integers(0, 100, j))
    order = rng.permutation(problem.n_requests)
    c = problem.coefficients
    used = rng.random(j) < 0.3
    inst_max = np.full(1, problem.residual_us.max())
    fast = _kernels.chunk_fill(order, problem.new_tokens, problem.kv_blocks, problem.penalty_us,
                               problem.room_tokens.copy(), problem.free_kv_blocks.copy(),
                               problem.residual_us.copy(), problem.instance, inst_max,
                               used.copy(), _chunk_spec(problem))
    slow = _kernels.chunk_fill_py(order, problem.new_tokens, problem.cached_tokens,
                                  problem.kv_blocks, problem.penalty_us, problem.room_tokens,
                                  problem.free_kv_blocks, problem.residual_us, problem.instance,
                                  c.alpha_us_per_token, c.beta_us_per_pair,
                                  c.gamma_us_per_request, 1, used=np.flatnonzero(used).tolist(),
                                  carry=problem.weight * problem.defer_factor)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


@pytest.mark.parametrize("seed", range(20))
def test_decode_kernels_match_references(cat, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = cat.random_decode(rng, int(rng.integers(0, 40)), int(rng.integers(1, 12)))
    order = np.argsort(-p.context_tokens, kind="stable")
    fast = _kernels.decode_iqr_lex(order, p.context_tokens, p.kv_blocks, p.batch_size.copy(),
                                   p.max_batch_size, p.kv_tokens.copy(), p.free_kv_blocks.copy(),
                                   p.iqr_k)
    slow = _kernels.decode_iqr_lex_py(order, p.context_tokens, p.kv_blocks, p.batch_size,
                                      p.max_batch_size, p.kv_tokens, p.free_kv_blocks, p.iqr_k)
    np.testing.assert_array_equal(fast, slow)
    fast = _kernels.decode_min_step(order, p.context_tokens, p.kv_blocks, p.batch_size.copy(),
                                    p.max_batch_size, p.kv_tokens.copy(),
                                    p.free_kv_blocks.copy(), p.instance, p.n_instances,
                                    p.us_per_request, p.us_per_kv_token)
    slow = _kernels.decode_min_step_py(order, p.context_tokens, p.kv_blocks, p.batch_size,
                                       p.max_batch_size, p.kv_tokens, p.free_kv_blocks,
                                       p.instance, p.us_per_request, p.us_per_kv_token)
    np.testing.assert_array_equal(fast, slow)


def test_iqr_fence_masks_an_outlier_unit(cat) -> None:
    from sbsopt.window import DecodeWindow

    # unit 4 has the smallest batch but an outlier KV load: IQR-lex must avoid it
    d = DecodeWindow.from_arrays([1000], [16], batch_size=[3, 3, 3, 3, 0],
                                 max_batch_size=[8] * 5, kv_blocks_used=[10, 11, 12, 13, 9000],
                                 free_kv_blocks=[100] * 5, coefficients=cat.DECODE)
    order = np.array([0])
    args = (order, d.context_tokens, d.kv_blocks, d.batch_size.copy(), d.max_batch_size,
            d.kv_tokens.copy(), d.free_kv_blocks.copy())
    assert _kernels.decode_iqr_lex(*args, 1.5).tolist() == [0]
    assert _kernels.decode_iqr_lex(*args[:3], d.batch_size.copy(), d.max_batch_size,
                                   d.kv_tokens.copy(), d.free_kv_blocks.copy(), 1e9).tolist() == [4]


@pytest.mark.parametrize("seed", range(10))
def test_greedy_answers_are_valid_and_within_their_gap_of_cpsat(cat, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for problem in (cat.random_prefill(rng, 10, 3), cat.random_decode(rng, 10, 3),
                    cat.random_prefill(rng, 10, 3, allow_chunking=True)):
        greedy = solve(problem, method="greedy")
        exact = solve(problem, method="cpsat", time_limit_s=2.0)
        validate_assignment(problem, greedy)
        validate_assignment(problem, exact)
        if greedy.success and exact.success:
            assert exact.objective <= greedy.objective + 1e-6 * greedy.objective
            # the greedy's reported gap covers its distance to the exact answer
            assert greedy.objective - exact.objective <= greedy.gap * greedy.objective + 1e-6


def test_local_search_never_hurts(cat, rng) -> None:
    for _ in range(10):
        problem = cat.random_prefill(rng, 40, 6)
        plain = greedy_prefill(problem)
        searched = greedy_prefill(problem, local_search=50)
        assert searched[2] <= plain[2] + 1e-9
        validate_assignment(problem, solve(problem, method="greedy",
                                           options={"local_search": 50}))


def test_greedy_does_not_mutate_the_problem(cat, rng) -> None:
    problem = cat.random_decode(rng, 30, 5)
    before = problem.kv_tokens.copy(), problem.batch_size.copy(), problem.free_kv_blocks.copy()
    greedy_decode(problem)
    for a, b in zip(before, (problem.kv_tokens, problem.batch_size, problem.free_kv_blocks),
                    strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(20))
def test_best_of_kernel_matches_the_python_passes(cat, seed: int) -> None:
    from sbsopt.window.greedy import _prefill_pass

    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 6))
    problem = cat.random_prefill(rng, int(rng.integers(1, 40)), j, allow_chunking=bool(seed % 2),
                                 free_kv_blocks=rng.integers(0, 300, j))
    orders = [rng.permutation(problem.n_requests) for _ in range(3)]
    passes = [_prefill_pass(problem, order, 5) for order in orders]
    best = min(range(3), key=lambda k: passes[k][2])
    c = problem.coefficients
    row, assignment, chunk_tokens, value = _kernels.prefill_best_of(
        np.stack(orders), problem.cost_us, problem.new_tokens, problem.cached_tokens,
        problem.kv_blocks, problem.penalty_us, problem.guarded, problem.room_tokens,
        problem.free_kv_blocks, problem.residual_us, problem.instance, problem.n_instances,
        problem.base_us, problem.allow_chunking, c.alpha_us_per_token, c.beta_us_per_pair,
        c.gamma_us_per_request, problem.min_chunk_tokens, problem.weight * problem.defer_factor,
        5)
    assert value == pytest.approx(passes[best][2], rel=1e-12)
    np.testing.assert_array_equal(assignment, passes[best][0])
    assert {int(i): int(k) for i, k in enumerate(chunk_tokens) if k} == passes[best][1]


@pytest.mark.parametrize("seed", range(20))
def test_decode_best_of_matches_the_references_with_ties(cat, seed: int) -> None:
    from sbsopt.window.objective import decode_objective

    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 12))
    # few distinct context lengths and equal starting KV: ties in every comparison
    p = cat.random_decode(rng, int(rng.integers(0, 40)), j, kv_tokens=np.full(j, 640),
                          batch_size=np.zeros(j, np.int64),
                          max_batch_size=rng.integers(1, 8, j))
    p = type(p).from_arrays(rng.integers(1, 4, p.n_requests) * 64, np.ones(p.n_requests, np.int64),
                            batch_size=p.batch_size, max_batch_size=p.max_batch_size,
                            kv_blocks_used=np.zeros(j, np.int64),
                            free_kv_blocks=p.free_kv_blocks, coefficients=p.coefficients,
                            kv_tokens=p.kv_tokens)
    order = np.argsort(-p.context_tokens, kind="stable")
    iqr = _kernels.decode_iqr_lex_py(order, p.context_tokens, p.kv_blocks, p.batch_size,
                                     p.max_batch_size, p.kv_tokens, p.free_kv_blocks, p.iqr_k)
    step = _kernels.decode_min_step_py(order, p.context_tokens, p.kv_blocks, p.batch_size,
                                       p.max_batch_size, p.kv_tokens, p.free_kv_blocks,
                                       p.instance, p.us_per_request, p.us_per_kv_token)
    values = decode_objective(p, iqr), decode_objective(p, step)
    expected = step if values[1] < values[0] else iqr
    assignment, _, value, _, _, _ = greedy_decode(p)
    np.testing.assert_array_equal(assignment, expected)
    assert value == pytest.approx(min(values), rel=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_priority_order_is_lexsort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 60))
    # few distinct values: ties in both keys
    key, tie = rng.integers(0, 4, n).astype(float), rng.integers(0, 3, n).astype(float)
    if seed % 3 == 0:
        key = np.sort(key)  # already in order (a buffer's arrival times): no sort is done
    guarded = rng.random(n) < 0.2 * (seed % 2)
    np.testing.assert_array_equal(_kernels.orders._priority_order(guarded, key, tie),
                                  np.lexsort((tie, key, ~guarded)))


def test_a_chunk_takes_its_whole_room_when_the_request_fits_no_unit() -> None:
    """A 5000-token prompt on units of 4000 tokens: shrinking its chunk would move tokens to
    the remainder, priced above the step time they save, so the chunk fills the room, which
    the objective over every chunk size confirms."""
    from types import SimpleNamespace

    from sbsopt.window import objective

    c = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.01,
                        gamma_us_per_request=0.0)
    w = PrefillWindow.from_arrays([5000, 500, 500, 500], [0] * 4, [0.0] * 4,
                                  capacity_tokens=[4000, 4000], coefficients=c, now_s=0.0)
    result = solve(w, method="greedy")
    assert set(result.chunks) == {0}
    k = result.chunks[0]
    room = 4000 - int(w.new_tokens[result.assignment == result.assignment[0]].sum()) + 5000
    assert k == room
    sizes = range(100, k + 1, 100)
    assert result.objective == pytest.approx(
        min(objective(w, result.assignment, {0: size}) for size in sizes))


@pytest.mark.parametrize("seed", range(40))
def test_trim_step_chunks_lowers_the_objective_by_what_it_reports(cat, seed: int) -> None:
    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 7))
    n = int(rng.integers(1, 40))
    # prompts up to twice a unit's room, none aged: chunks of more than half a prompt, whose
    # last tokens cost more step time than the deferral they remove
    problem = PrefillWindow.from_arrays(
        rng.integers(100, 30_000, n), rng.integers(0, 30_000, n) * rng.integers(0, 2, n),
        np.zeros(n), capacity_tokens=rng.integers(2000, 16_384, j),
        load_tokens=rng.integers(0, 1500, j), free_kv_blocks=rng.integers(100, 3000, j),
        now_s=0.0, coefficients=cat.PREFILL, allow_chunking=True,
        instance=np.arange(j) % 2 if j > 1 and seed % 2 else None)
    spec = _chunk_spec(problem)
    order = rng.permutation(problem.n_requests)
    room, free, unit_time, inst_max, chunk_tokens, used = _empty_state(problem)
    assignment = _kernels.prefill_greedy(
        order, problem.cost_us, problem.new_tokens, problem.kv_blocks, problem.penalty_us,
        problem.guarded, room, free, unit_time, problem.instance, inst_max, chunk_tokens, used,
        True, spec)
    before = prefill_objective(problem, assignment, _chunks(chunk_tokens))
    delta = _kernels.trim_step_chunks(
        order, assignment, chunk_tokens, problem.cost_us, problem.new_tokens, problem.kv_blocks,
        problem.penalty_us, problem.guarded, room, free, unit_time, problem.instance, inst_max,
        used, spec)
    after = prefill_objective(problem, assignment, _chunks(chunk_tokens))
    assert delta <= 0.0
    assert after == pytest.approx(before + delta, rel=1e-9, abs=1e-6)
    np.testing.assert_allclose(unit_time, prefill_unit_time_us(problem, assignment,
                                                               _chunks(chunk_tokens)), rtol=1e-9)
    assert (room >= 0).all() and (free >= 0).all()
    assert set(np.flatnonzero(used)) == {int(assignment[i]) for i in np.flatnonzero(chunk_tokens)}


def _chunks(chunk_tokens: np.ndarray) -> dict[int, int]:
    return {int(i): int(chunk_tokens[i]) for i in np.flatnonzero(chunk_tokens)}


def test_local_search_exchanges_a_placed_request_for_an_older_deferred_one() -> None:
    """One unit with room for one of two prompts: the newer (700 tokens) is placed, the one
    waiting for 2 s (900 tokens, three times the age weight) is deferred. Exchanging them
    raises the step by 200 tokens' cost and saves far more deferral."""
    from types import SimpleNamespace

    c = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
                        gamma_us_per_request=0.0)
    w = PrefillWindow.from_arrays([700, 900], [0, 0], [2.0, 0.0], capacity_tokens=[1000],
                                  coefficients=c, now_s=2.0, allow_chunking=False)
    assignment = np.array([0, -1])
    room, free = np.array([300]), w.free_kv_blocks.copy()
    unit_time, inst_max = np.array([700.0]), np.array([700.0])
    changes = _kernels.prefill_local_search(
        assignment, w.cost_us, w.new_tokens, w.kv_blocks, w.penalty_us, w.guarded, room, free,
        unit_time, w.instance, inst_max, np.zeros(2, np.int64), 10)
    assert changes == 1
    assert assignment.tolist() == [-1, 0]
    assert room.tolist() == [100] and unit_time.tolist() == [900.0] == inst_max.tolist()
    assert prefill_objective(w, assignment, {}) < prefill_objective(w, np.array([0, -1]), {})


@pytest.mark.parametrize("seed", range(20))
def test_local_search_never_hurts_in_windows_with_more_tokens_than_room(cat, seed) -> None:
    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 6))
    # whole requests: with chunking, a search that balances whole requests can leave less room
    # for the chunks placed after it
    problem = cat.random_prefill(rng, int(rng.integers(10, 60)), j,
                                 capacity_tokens=rng.integers(2000, 8000, j),
                                 instance=np.arange(j) % 2 if j > 1 and seed % 2 else None)
    plain = greedy_prefill(problem)
    searched = greedy_prefill(problem, local_search=200)
    assert searched.objective <= plain.objective + 1e-9
    validate_assignment(problem, solve(problem, method="greedy", options={"local_search": 200}))


def test_local_search_moves_a_request_to_make_room_for_a_deferred_one() -> None:
    """Units of 1000 tokens: unit 0 holds A (300) and C (400), unit 1 holds B (600), and D
    (650) fits neither. Moving C to unit 1 frees room for D on unit 0; the step grows from 700
    to 1000, less than D's deferral (1650)."""
    from types import SimpleNamespace

    c = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
                        gamma_us_per_request=0.0)
    w = PrefillWindow.from_arrays([300, 600, 400, 650], [0] * 4, [0.0] * 4,
                                  capacity_tokens=[1000, 1000], coefficients=c, now_s=0.0,
                                  allow_chunking=False)
    assignment = np.array([0, 1, 0, -1])
    room, free = np.array([300, 400]), w.free_kv_blocks.copy()
    unit_time, inst_max = np.array([700.0, 600.0]), np.array([700.0])
    changes = _kernels.prefill_local_search(
        assignment, w.cost_us, w.new_tokens, w.kv_blocks, w.penalty_us, w.guarded, room, free,
        unit_time, w.instance, inst_max, np.zeros(4, np.int64), 10)
    assert changes == 1
    assert assignment.tolist() == [0, 1, 1, 0]
    assert room.tolist() == [50, 0] and unit_time.tolist() == [950.0, 1000.0]
    assert inst_max.tolist() == [1000.0]


@pytest.mark.parametrize("guarded", [False, True])
def test_trim_drops_a_chunk_worth_less_than_its_step_time_unless_guarded(guarded) -> None:
    """A chunk of 4000 tokens (84000 us) sets the step, and its request's deferral is worth
    1000 us in all: trimming drops it, except that a guarded request keeps one token."""
    from types import SimpleNamespace

    c = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.01,
                        gamma_us_per_request=0.0)
    w = PrefillWindow.from_arrays([5000], [0], [0.0], capacity_tokens=[4000, 4000],
                                  coefficients=c, defer_factor=0.0,
                                  deadline_s=[0.0] if guarded else None)
    assert bool(w.guarded[0]) is guarded
    assignment, chunk_tokens = np.array([0]), np.array([4000])
    room, free = np.array([0, 4000]), w.free_kv_blocks.copy()
    unit_time = np.array([84000.0, 0.0])
    inst_max, used = np.array([84000.0]), np.array([True, False])
    delta = _kernels.trim_step_chunks(
        np.array([0]), assignment, chunk_tokens, w.cost_us, w.new_tokens, w.kv_blocks,
        w.penalty_us, w.guarded, room, free, unit_time, w.instance, inst_max, used,
        _chunk_spec(w))
    if guarded:
        assert assignment.tolist() == [0] and chunk_tokens.tolist() == [1]
        assert unit_time[0] == pytest.approx(1.005) and room.tolist() == [3999, 4000]
    else:
        assert assignment.tolist() == [-1] and chunk_tokens.tolist() == [0]
        assert unit_time.tolist() == [0.0, 0.0] and not used[0]
        assert delta == pytest.approx(-84000.0 + 1000.0 * 4000 / 5000)


@pytest.mark.parametrize("seed", range(20))
def test_ruin_recreate_is_valid_never_worse_and_deterministic(cat, seed) -> None:
    """On windows with more tokens than room (some with guards, several instances or
    chunking), ruin and recreate keeps every invariant, never ends above its start taken whole,
    keeps guarded requests placed, and repeats itself for a fixed seed."""
    rng = np.random.default_rng(seed)
    j = int(rng.integers(1, 6))
    n = int(rng.integers(10, 60))
    problem = cat.random_prefill(
        rng, n, j, capacity_tokens=rng.integers(2000, 8000, j),
        instance=np.arange(j) % 2 if j > 1 and seed % 2 else None,
        deadline_s=np.where(rng.random(n) < 0.1, 0.0, np.inf), allow_chunking=seed % 3 == 0)
    start = greedy_prefill(problem)
    whole = start.assignment.copy()
    whole[list(start.chunks)] = -1
    answer, chunks, value, ran = ruin_recreate(problem, whole, 300, seed=7)
    assert ran == 300
    assert value == pytest.approx(prefill_objective(problem, answer, chunks))
    assert value <= prefill_objective(problem, whole, {}) + 1e-9
    assert (answer[problem.guarded & (whole >= 0)] >= 0).all()
    again = ruin_recreate(problem, whole, 300, seed=7)
    assert np.array_equal(again[0], answer) and again[1] == chunks
    result = solve(problem, method="greedy", options={"ruin_recreate": 300})
    validate_assignment(problem, result)
    assert result.objective <= start.objective + 1e-9


def test_ruin_recreate_repacks_what_the_passes_left_apart() -> None:
    """60 | 50 with 40 and 30 deferred (rooms of 90): swapping 50 and 60's partners fills both
    units, which no single move or exchange of the local search reaches."""
    c = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
                        gamma_us_per_request=0.0)
    w = PrefillWindow.from_arrays([60, 50, 40, 30], [0] * 4, [0.0] * 4, capacity_tokens=[90, 90],
                                  coefficients=c, allow_chunking=False)
    answer, _, value, _ = ruin_recreate(w, np.array([0, 1, -1, -1]), 50)
    assert value == 90.0
    assert sorted(np.bincount(answer, weights=w.new_tokens).tolist()) == [90.0, 90.0]


def _tight_window(cat, rng, seed: int) -> PrefillWindow:
    """A window with more tokens than room (guards, several instances or chunking by seed)."""
    j = int(rng.integers(2, 6))
    n = int(rng.integers(10, 40))
    return cat.random_prefill(
        rng, n, j, capacity_tokens=rng.integers(2000, 8000, j),
        instance=np.arange(j) % 2 if seed % 2 else None,
        deadline_s=np.where(rng.random(n) < 0.1, 0.0, np.inf), allow_chunking=seed % 3 == 0)


@pytest.mark.parametrize("seed", range(20))
def test_exchange_search_is_valid_never_worse_and_deterministic(cat, seed) -> None:
    """From the greedy answer (chunks included), the exchange search keeps every invariant,
    leaves chunked requests where they are, keeps guarded requests placed, reports the
    objective of what it returns, never ends above its start, and repeats itself."""
    rng = np.random.default_rng(seed)
    problem = _tight_window(cat, rng, seed)
    start = greedy_prefill(problem)
    answer, value, made, work = exchange_search(problem, start.assignment, start.chunks, 10**8)
    assert value == pytest.approx(prefill_objective(problem, answer, start.chunks))
    assert value <= start.objective + 1e-9 * start.objective
    for i in start.chunks:
        assert answer[i] == start.assignment[i]
    assert (answer[problem.guarded & (start.assignment >= 0)] >= 0).all()
    again = exchange_search(problem, start.assignment, start.chunks, 10**8)
    assert np.array_equal(again[0], answer) and again[2:] == (made, work)
    result = solve(problem, method="greedy", options={"exchange": 10**6})
    validate_assignment(problem, result)
    assert result.objective <= start.objective + 1e-9 * start.objective


def _exchange_gains(problem: PrefillWindow, assignment: np.ndarray) -> list[float]:
    """Objective change of every feasible trade of at most two requests of a unit for at most
    two of another unit or of the deferred ones (by enumeration)."""
    from itertools import combinations

    base = prefill_objective(problem, assignment, {})
    sides = list(range(problem.n_units)) + [-1]
    members = {s: np.flatnonzero(assignment == s).tolist() for s in sides}

    def subsets(items):
        return [c for k in range(3) for c in combinations(items, k)]

    gains = []
    for a in range(problem.n_units):
        for b in sides:
            if b == a or (b >= 0 and b < a):
                continue
            for give in subsets(members[a]):
                for take in subsets(members[b]):
                    if not give and not take:
                        continue
                    trial = assignment.copy()
                    trial[list(give)] = b
                    trial[list(take)] = a
                    placed = trial >= 0
                    tokens = np.bincount(trial[placed], weights=problem.new_tokens[placed],
                                         minlength=problem.n_units)
                    blocks = np.bincount(trial[placed], weights=problem.kv_blocks[placed],
                                         minlength=problem.n_units)
                    if ((tokens > problem.room_tokens).any()
                            or (blocks > problem.free_kv_blocks).any()
                            or (problem.guarded & ~placed).any()):
                        continue
                    gains.append(prefill_objective(problem, trial, {}) - base)
    return gains


@pytest.mark.parametrize("seed", range(8))
def test_exchange_search_stops_where_no_exchange_lowers_the_objective(cat, seed) -> None:
    """Run to the end, the search leaves no trade of up to two requests for up to two (between
    units, or with the deferred ones) that lowers the objective: every one is enumerated."""
    rng = np.random.default_rng(100 + seed)
    j = int(rng.integers(2, 4))
    problem = cat.random_prefill(rng, int(rng.integers(8, 14)), j,
                                 capacity_tokens=rng.integers(3000, 7000, j),
                                 instance=np.arange(j) % 2 if seed % 2 else None)
    start = greedy_prefill(problem)
    answer, value, _, _ = exchange_search(problem, start.assignment, {}, 10**9)
    assert min(_exchange_gains(problem, answer)) >= -1e-9 * value


def _full_units() -> tuple[PrefillWindow, np.ndarray]:
    """60+40 | 50+20+20 on rooms of 100 | 90, cost ``n + 0.01 * n**2 / 2`` a request."""
    c = SimpleNamespace(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.01,
                        gamma_us_per_request=0.0)
    w = PrefillWindow.from_arrays([60, 40, 50, 20, 20], [0] * 5, [0.0] * 5,
                                  capacity_tokens=[100, 90], coefficients=c,
                                  allow_chunking=False)
    return w, np.array([0, 0, 1, 1, 1])


def test_exchange_search_trades_one_request_for_two() -> None:
    """60+40 | 50+20+20 with rooms 100 | 90 and a quadratic cost: both units are full, so no
    move or swap of the local search fits; 40 for 20+20 lowers the step from 126 to 122
    (attention ``beta * n**2 / 2`` a request)."""
    w, start = _full_units()
    assert prefill_objective(w, start, {}) == pytest.approx(126.0)
    searched = start.copy()
    room = w.room_tokens - np.bincount(start, weights=w.new_tokens).astype(np.int64)
    unit_time = prefill_unit_time_us(w, start, {})
    changes = _kernels.prefill_local_search(
        searched, w.cost_us, w.new_tokens, w.kv_blocks, w.penalty_us, w.guarded, room,
        w.free_kv_blocks - np.bincount(start, weights=w.kv_blocks).astype(np.int64), unit_time,
        w.instance, np.array([unit_time.max()]), np.zeros(5, np.int64), 100)
    assert changes == 0
    answer, value, made, _ = exchange_search(w, start, {}, 10**6)
    assert answer.tolist() == [0, 1, 1, 0, 0] and value == pytest.approx(122.0) and made == 1


def test_exchange_search_stops_at_its_work() -> None:
    """A work of 0 leaves the answer as it is; the work done is counted and repeats."""
    w, start = _full_units()
    answer, value, made, work = exchange_search(w, start, {}, 0)
    assert answer.tolist() == start.tolist() and made == 0 and work > 0
    assert exchange_search(w, start, {}, 0)[3] == work


@pytest.mark.parametrize("guarded", [False, True])
def test_a_prompt_that_alone_sets_the_step_stays_whole(cat, guarded: bool) -> None:
    """A 14,000-token prompt fits its unit whole and alone sets the step. A chunk would lower
    the step, but its remainder needs another forward, priced at more than the step time it
    saves: no chunk size beats the prompt whole, and the greedy keeps it whole."""
    from sbsopt.window import objective

    rng = np.random.default_rng(3)
    new = np.concatenate([[14_000], rng.integers(500, 3000, 20)])
    deadline = np.where(np.arange(new.size) == 0, 0.1 if guarded else np.inf, np.inf)
    w = PrefillWindow.from_arrays(new, np.zeros(new.size, np.int64), np.zeros(new.size),
                                  capacity_tokens=np.full(4, 16_384), coefficients=cat.PREFILL,
                                  allow_chunking=True, now_s=0.1, deadline_s=deadline)
    result = solve(w, method="greedy")
    assert result.chunks == {} and (result.assignment >= 0).all()
    best = min(objective(w, result.assignment, {0: k}) for k in range(100, 14_000, 100))
    assert result.objective < best
