"""Kernel physics: FLOP accounting, tiling, and monotonicity of every kernel class."""

from __future__ import annotations

import numpy as np
import pytest

from sbsopt.costmodel.cards import load_hardware_card, load_model_card
from sbsopt.costmodel.coefficients import load_coefficients
from sbsopt.costmodel.layers import (
    attention_kernels,
    gemm_us,
    head_kernels,
    kernel_us,
    moe_kernels,
    rows_per_received_token,
)

MODEL, HW, COEF = load_model_card(), load_hardware_card(), load_coefficients()


def test_core_attention_flops_match_the_profile_accounting() -> None:
    # two causal 4K prompts: the profile counts 1374.4 GFLOP (causal half)
    pairs = 2 * 4096 * 4097 / 2
    core = next(k for k in attention_kernels(MODEL, 8192.0, phase="prefill", pairs=pairs) if k.name == "core_attention")
    assert float(core.flops) == pytest.approx(1374.4e9, rel=1e-3)


def test_gemm_time_is_monotone_in_rows_and_pays_whole_tiles() -> None:
    m = np.arange(0, 5000, dtype=np.float64)
    t = gemm_us(m, 7168, 16384, groups=1, flop_scale=1.2, byte_scale=1.0, fixed_us=1.0, hw=HW, sm_fraction=1.0)
    assert np.all(np.diff(t) >= -1e-9)
    assert t[0] == 0.0
    # a 1-row GEMM costs what a 64-row one does (same tile), and is weight-bandwidth bound
    assert t[1] == pytest.approx(t[64], rel=0.02)
    weights_us = 7168 * 16384 / HW.hbm_bw_Bps * 1e6
    assert t[1] >= weights_us


def test_fewer_sms_make_compute_bound_gemms_slower() -> None:
    full = gemm_us(8192, 24576, 1536, groups=1, flop_scale=1.0, byte_scale=0.0, fixed_us=0.0, hw=HW, sm_fraction=1.0)
    part = gemm_us(8192, 24576, 1536, groups=1, flop_scale=1.0, byte_scale=0.0, fixed_us=0.0, hw=HW,
                   sm_fraction=108 / 132)
    assert float(part / full) == pytest.approx(132 / 108, rel=0.05)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_every_kernel_is_monotone_in_tokens(phase: str) -> None:
    tokens = np.arange(0, 3000, 7, dtype=np.float64)
    kernels = attention_kernels(MODEL, tokens, phase=phase, pairs=tokens * 100, kv_tokens=tokens * 100)
    kernels += moe_kernels(MODEL, tokens, tokens, experts_per_rank=8, phase=phase)
    for kernel in kernels:
        t = kernel_us(kernel, COEF, HW, sm_fraction=1.0)
        assert np.all(np.diff(np.broadcast_to(t, tokens.shape)) >= -1e-9), kernel.name


def test_small_decode_batches_read_only_the_experts_they_route_to() -> None:
    kernels = moe_kernels(MODEL, 1.0, np.array([1.0, 1000.0]), experts_per_rank=32, phase="decode")
    gate_up = next(k for k in kernels if k.name == "routed_gate_up")
    assert gate_up.groups[0] == pytest.approx(8, abs=1)  # 8 rows reach <= 8 experts
    assert gate_up.groups[1] == pytest.approx(32, abs=0.01)


def test_every_wave_pays_one_output_tile_store() -> None:
    kw = dict(groups=1, flop_scale=0.0, byte_scale=0.0, fixed_us=0.0, hw=HW, sm_fraction=1.0)
    plain = gemm_us([64.0, 8192.0], 7168, 2048, **kw)
    stored = gemm_us([64.0, 8192.0], 7168, 2048, epilogue_scale=1.0, **kw)
    assert np.all(plain == 0.0)
    # one wave of 64-row tiles stores one 64 x BN BF16 tile per SM at its share of HBM bandwidth
    sm_share = HW.hbm_bw_Bps / HW.sms
    assert any(stored[0] * 1e-6 * sm_share == pytest.approx(64 * bn * 2.0) for bn in (64, 128, 256))
    assert stored[1] > 10 * stored[0]


def test_prefill_expand_and_reduce_follow_deepep_received_tokens() -> None:
    # EP32: 8 local experts, a received token carries ~1.21 rows (group-limited top-8 of 256)
    ratio = rows_per_received_token(MODEL, 8)
    assert 1.1 < ratio < 1.3
    assert rows_per_received_token(MODEL, 1) == pytest.approx(1.0)
    rows = 8192.0 * MODEL.experts_per_token
    kernels = {k.name: k for k in moe_kernels(MODEL, 8192.0, 8192.0, experts_per_rank=8, phase="prefill")}
    fp8 = MODEL.dispatch_bytes_per_token
    assert float(kernels["expand_to_fused"].bytes) == pytest.approx((rows / ratio + rows) * fp8)
    # the weighted reduce feeds DeepEP's combine: it belongs to the routed stage
    reduce = kernels["combine_reduce"]
    assert reduce.stage == "routed"
    assert float(reduce.bytes) > rows * MODEL.hidden_size * MODEL.activation_bytes
    assert float(kernels["fused_mapping"].rows) == pytest.approx(2 * float(kernels["clean_and_count"].rows))


def test_mtp_head_adds_the_module_projection_and_norms() -> None:
    plain = {k.name for k in head_kernels(MODEL, 180.0)}
    mtp = {k.name: k for k in head_kernels(MODEL, 180.0, mtp=True)}
    assert plain < set(mtp)
    eh = mtp["mtp_eh_proj"]
    assert (eh.kind, eh.n, eh.k) == ("bf16_gemm", MODEL.hidden_size, 2 * MODEL.hidden_size)
    total = sum(float(kernel_us(k, COEF, HW, sm_fraction=1.0)) for k in mtp.values())
    base = sum(float(kernel_us(k, COEF, HW, sm_fraction=1.0)) for k in head_kernels(MODEL, 180.0))
    assert total > 2 * base


def test_rope_kvcache_runs_the_kv_a_norm_and_writes_the_cache_once() -> None:
    # rotary_embedding_with_kv_cache takes the kv_a RMSNorm weight: the q_a norm runs alone
    names = [k.name for k in attention_kernels(MODEL, 1.0, phase="prefill", pairs=1.0)]
    assert "q_a_norm" in names and names.index("rope_kvcache") < names.index("kv_b_proj")
    act, heads, rope = MODEL.activation_bytes, MODEL.attention_heads, MODEL.qk_rope_head_dim
    latent = MODEL.kv_lora_rank + rope
    per_token = {}
    for phase in ("prefill", "decode"):
        kernels = attention_kernels(MODEL, 1.0, phase=phase, pairs=1.0, kv_tokens=1.0)
        per_token[phase] = float(next(k for k in kernels if k.name == "rope_kvcache").bytes)
    # decode: q_pe read and written in place, the kv_a output read, the cache row written, cos/sin
    assert per_token["decode"] == pytest.approx(2 * heads * rope * act + 2 * latent * act + rope * 4)
    # prefill adds the normed latent for kv_b and k_pe broadcast to every head
    assert per_token["prefill"] - per_token["decode"] == pytest.approx((MODEL.kv_lora_rank + heads * rope) * act)
