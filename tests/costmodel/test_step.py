"""Contract A: the lock-step step-time model, its vectorized path and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbsopt.costmodel import DecodeCoefficients, PrefillCoefficients, _kernels, load_cost_model
from sbsopt.errors import InvalidInputError

EP = 8


@pytest.fixture(scope="module")
def cm():
    return load_cost_model(ep=EP, nodes=1)


def _pairs(tokens, context):
    """Causal pairs of requests of ``context`` new tokens (no cached prefix)."""
    return tokens / context * context * (context + 1) / 2.0


def test_cached_frozen_and_contract_fields() -> None:
    cm = load_cost_model(ep=32)
    assert cm is load_cost_model(ep=32)
    assert cm.ep == 32 and cm.nodes == 4 and cm.micro_batches == 2
    assert cm.kv_bytes_per_token == 70272
    # weights ~ 17 GB replicated + 8 experts x 58 layers x 44 MB; the rest of 90% HBM is KV
    assert 300_000 < cm.kv_capacity_tokens_per_rank < 800_000
    assert isinstance(cm.prefill_coefficients(), PrefillCoefficients)
    assert isinstance(cm.decode_coefficients(), DecodeCoefficients)
    with pytest.raises(AttributeError):
        cm.ep = 4  # type: ignore[misc]


def test_deepseek_decode_ep144_uses_redundant_experts() -> None:
    cm = load_cost_model(ep=144)
    assert cm.experts_per_rank == 2  # (256 + 32) / 144, as in DeepSeek's deployment


@pytest.mark.parametrize("context", [512, 4096])
@pytest.mark.parametrize("micro_batches", [1, 2])
def test_tabulated_step_matches_exact_kernel_breakdown(context: int, micro_batches: int) -> None:
    cm = load_cost_model(ep=EP, nodes=1, micro_batches=micro_batches)
    tokens = 16384.0
    ones = np.ones(EP)
    fast = cm.prefill_step_us(tokens * ones, _pairs(tokens, context) * ones, tokens / context * ones)
    exact = cm.breakdown(phase="prefill", tokens_per_rank=tokens, context=context).step_us
    assert fast == pytest.approx(exact, rel=1e-9)
    fast = cm.decode_step_us(64 * ones, 64 * context * ones, query_tokens=2)
    exact = cm.breakdown(phase="decode", tokens_per_rank=64, context=context, query_tokens=2).step_us
    assert fast == pytest.approx(exact, rel=1e-9)


def test_numba_kernel_matches_numpy_reference(cm) -> None:
    rng = np.random.default_rng(0)
    load = rng.integers(0, 40_000, size=(50, EP)).astype(np.float64)
    load[0] = 0.0
    load[1, 3] = 400_000.0  # beyond the table: linear extrapolation
    pairs = load * rng.uniform(0, 8000, size=load.shape)
    reqs = np.ceil(load / 4096)
    t = cm._prefill
    fast = _kernels.step_many(load, pairs, reqs, t.a0, t.a1, t.shared, t.routed, t.dense, t.constants)
    ref = _kernels.step_many_reference(load, pairs, reqs, t.a0, t.a1, t.shared, t.routed, t.dense, t.constants)
    np.testing.assert_allclose(fast, ref, rtol=1e-10)


def test_many_equals_scalar_and_inputs_are_not_mutated(cm) -> None:
    rng = np.random.default_rng(1)
    load = rng.integers(0, 20_000, size=(7, EP)).astype(np.float64)
    pairs = load * 1000.0
    before = load.copy()
    many = cm.prefill_step_us_many(load, pairs)
    scalar = [cm.prefill_step_us(load[s], pairs[s]) for s in range(7)]
    np.testing.assert_allclose(many, scalar)
    np.testing.assert_array_equal(load, before)
    batch = rng.integers(0, 200, size=(5, EP)).astype(np.float64)
    kv = batch * 3000
    np.testing.assert_allclose(
        cm.decode_step_us_many(batch, kv, 2), [cm.decode_step_us(batch[s], kv[s], 2) for s in range(5)]
    )


def test_lock_step_most_loaded_rank_sets_the_time(cm) -> None:
    balanced = np.full(EP, 4096.0)
    skewed = balanced.copy()
    skewed[0], skewed[1] = 8192.0, 0.0  # same total tokens
    pairs_b, pairs_s = _pairs(balanced, 4096), _pairs(skewed, 4096)
    assert cm.prefill_step_us(skewed, pairs_s) > cm.prefill_step_us(balanced, pairs_b)
    # permuting ranks changes nothing
    assert cm.prefill_step_us(skewed[::-1], pairs_s[::-1]) == pytest.approx(cm.prefill_step_us(skewed, pairs_s))


def test_idle_instance_pays_only_fixed_overheads(cm) -> None:
    zero = np.zeros(EP)
    idle = cm.prefill_step_us(zero, zero, zero)
    assert idle == pytest.approx(cm.prefill_coefficients().base_us)
    assert 0 < idle < cm.prefill_step_us(np.full(EP, 64.0), np.full(EP, 64.0 * 32))
    one_busy = zero.copy()
    one_busy[0] = 8192.0
    # idle ranks join the all-to-all: one busy rank costs more than nothing, less than all busy
    full = np.full(EP, 8192.0)
    assert idle < cm.prefill_step_us(one_busy, _pairs(one_busy, 8192)) < cm.prefill_step_us(full, _pairs(full, 8192))


@settings(max_examples=60, deadline=None)
@given(
    tokens=st.lists(st.integers(0, 200_000), min_size=EP, max_size=EP),
    extra=st.integers(1, 5000),
    rank=st.integers(0, EP - 1),
    context=st.integers(1, 64_000),
)
def test_more_tokens_never_cost_less(tokens, extra, rank, context) -> None:
    cm = load_cost_model(ep=EP, nodes=1)
    load = np.array(tokens, dtype=np.float64)
    more = load.copy()
    more[rank] += extra
    pairs = load * context
    pairs_more = more * context
    assert cm.prefill_step_us(more, pairs_more) >= cm.prefill_step_us(load, pairs) - 1e-9
    batch = np.minimum(load, 2048)
    assert cm.decode_step_us(batch + (np.arange(EP) == rank), batch * context) >= cm.decode_step_us(batch, batch * context)
    assert cm.decode_step_us(batch, batch * context + extra) >= cm.decode_step_us(batch, batch * context)


def test_bigger_ep_never_makes_dispatch_of_same_tokens_cheaper() -> None:
    previous = 0.0
    for ep in (8, 16, 32, 64, 128, 256):
        b = load_cost_model(ep=ep).breakdown(phase="prefill", tokens_per_rank=8192, context=4096)
        assert b.terms_us["dispatch"] >= previous
        previous = b.terms_us["dispatch"]


def test_mtp_query_tokens_cost_more_per_step(cm) -> None:
    batch, kv = np.full(EP, 64.0), np.full(EP, 64 * 4096.0)
    assert cm.decode_step_us(batch, kv, 2) > cm.decode_step_us(batch, kv, 1)


def test_linearisations_track_the_model(cm) -> None:
    c = cm.prefill_coefficients()
    assert min(c.alpha_us_per_token, c.beta_us_per_pair) > 0
    rng = np.random.default_rng(2)
    errors = []
    for _ in range(20):
        n = rng.uniform(2000, 30000)
        ctx = rng.uniform(500, 16000)
        pairs, reqs = n * ctx, n / ctx
        ones = np.ones(EP)
        true = cm.prefill_step_us(n * ones, pairs * ones, reqs * ones)
        approx = c.base_us + c.alpha_us_per_token * n + c.beta_us_per_pair * pairs + c.gamma_us_per_request * reqs
        errors.append(abs(approx / true - 1))
    assert np.median(errors) < 0.10
    d = cm.decode_coefficients()
    assert d.us_per_kv_token > 0 and d.base_us > 0


def test_decode_linearisation_counts_the_mtp_layer(cm) -> None:
    # where core attention is not hidden behind the combine, the step is exactly linear in the
    # KV tokens read: the slope of the MTP step is every layer's, the MTP module's included
    d = cm.decode_coefficients(mtp_acceptance=0.85)
    assert d == cm.decode_coefficients(query_tokens=2)
    assert cm.decode_coefficients(mtp_acceptance=0.0) == cm.decode_coefficients()
    batch = np.full(EP, 64.0)
    low, high = 64 * 4096.0, 64 * 8192.0
    slope = (cm.decode_step_us(batch, np.full(EP, high), 2) - cm.decode_step_us(batch, np.full(EP, low), 2)) / (
        high - low)
    assert d.us_per_kv_token == pytest.approx(slope, rel=1e-6)
    plain = cm.decode_coefficients()
    plain_slope = (cm.decode_step_us(batch, np.full(EP, high)) - cm.decode_step_us(batch, np.full(EP, low))) / (
        high - low)
    assert plain.us_per_kv_token == pytest.approx(plain_slope, rel=1e-6)
    assert d.base_us > plain.base_us and d.us_per_request > plain.us_per_request


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda cm: cm.prefill_step_us([-1] + [0] * (EP - 1), [0] * EP), r"new_tokens\[0\] = -1.0"),
        (lambda cm: cm.prefill_step_us([float("nan")] * EP, [0] * EP), r"new_tokens\[0\] = nan"),
        (lambda cm: cm.prefill_step_us([0] * 3, [0] * 3), r"new_tokens.shape\[-1\] = 3"),
        (lambda cm: cm.decode_step_us([1] * EP, [0] * EP, query_tokens=0), "query_tokens = 0"),
        (lambda cm: cm.decode_step_us_many([[1] * EP], [[-5] * EP]), r"kv_tokens\[0, 0\]|kv_tokens\[0\]\[0\]"),
        (lambda cm: cm.kv_transfer_us(-1), r"tokens\[0\] = -1"),
    ],
)
def test_bad_input_raises_typed_error_naming_field(cm, call, match) -> None:
    with pytest.raises(InvalidInputError, match=match):
        call(cm)


def test_bad_construction_arguments() -> None:
    with pytest.raises(InvalidInputError, match="ep = 7"):
        load_cost_model(ep=7)
    with pytest.raises(InvalidInputError, match="nodes = 1"):
        load_cost_model(ep=32, nodes=1)
    with pytest.raises(InvalidInputError, match="hardware"):
        load_cost_model(hardware="tpu-v9")
