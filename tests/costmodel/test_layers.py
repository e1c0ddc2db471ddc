"""Kernel physics: FLOP accounting, tiling, and monotonicity of every kernel class."""

from __future__ import annotations

import numpy as np
import pytest

from sbsopt.costmodel.cards import load_hardware_card, load_model_card
from sbsopt.costmodel.coefficients import load_coefficients
from sbsopt.costmodel.layers import attention_kernels, gemm_us, kernel_us, moe_kernels

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
