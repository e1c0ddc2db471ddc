"""Per-layer kernel inventory of an MLA + MoE transformer and the time of each kernel.

Each kernel is described by its physics (FLOPs, bytes, routed rows) and a kernel class; its
time is ``scale * ideal + fixed`` with the class coefficients of
:class:`~sbsopt.costmodel.coefficients.KernelCoefficients`.  GEMMs follow DeepGEMM's tiling:
a kernel runs ``waves = ceil(tiles / SMs)`` waves of ``BM x 128`` output tiles, so small
batches pay for whole tiles (monotone in M, and the reason a 64-row GEMM is memory-bound).

All functions take numpy arrays (or scalars) of per-micro-batch token counts and return
microseconds; nothing here knows about ranks or lock-step (see :mod:`sbsopt.costmodel.step`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbsopt.costmodel.cards import HardwareCard, ModelCard
from sbsopt.costmodel.coefficients import KernelCoefficients

__all__ = [
    "Kernel",
    "gemm_us",
    "attention_kernels",
    "moe_kernels",
    "dense_ffn_kernels",
    "head_kernels",
    "kernel_us",
]

_BLOCK_N = (64, 128, 256)


@dataclass(frozen=True)
class Kernel:
    """One kernel launch of one layer and micro-batch.

    ``kind`` is ``"gemm"``, ``"grouped"``, ``"bf16_gemm"``, ``"attn"``, ``"mem"`` or
    ``"route"``; GEMM kinds use ``m, n, k, groups``; ``"attn"`` uses ``flops``; ``"mem"`` uses
    ``bytes``; ``"route"`` uses ``rows``.  Array-valued fields broadcast.
    """

    name: str
    term: str
    kind: str
    m: object = 0.0
    n: int = 0
    k: int = 0
    groups: object = 1
    flops: object = 0.0
    bytes: object = 0.0
    rows: object = 0.0
    fixed: bool = True



def gemm_us(
    m, n: int, k: int, *, groups: int, flop_scale: float, byte_scale: float, fixed_us: float,
    hw: HardwareCard, sm_fraction: float,
) -> np.ndarray:
    """Time of an FP8 GEMM ``[m, k] x [k, n]`` (per group) on ``sm_fraction`` of the SMs.

    Examples
    --------
    >>> from sbsopt.costmodel.cards import load_hardware_card
    >>> hw = load_hardware_card("h800")
    >>> t = gemm_us([64, 4096], 7168, 16384, groups=1, flop_scale=1.0, byte_scale=1.0,
    ...             fixed_us=0.0, hw=hw, sm_fraction=1.0)
    >>> bool(t[1] > t[0] > 0)
    True
    """
    m = np.asarray(m, dtype=np.float64)
    block_m = np.where(m <= 64, 64.0, 128.0)
    sms = max(1.0, np.floor(hw.sms * sm_fraction))
    sm_peak = hw.fp8_peak_flops / hw.sms
    # DeepGEMM picks the output tile width that needs the fewest waves; a wave costs one tile
    compute_s = np.full(np.shape(m), np.inf)
    for block_n in _BLOCK_N:
        tiles = groups * np.ceil(m / block_m) * np.ceil(n / block_n)
        waves = np.ceil(tiles / sms)
        compute_s = np.minimum(compute_s, waves * (2.0 * block_m * block_n * k) / sm_peak)
    data = groups * (n * k + m * k + 2.0 * m * n)
    memory_s = data / hw.hbm_bw_Bps
    active = m > 0
    return np.where(active, (flop_scale * compute_s + byte_scale * memory_s) * 1e6 + fixed_us, 0.0)


def kernel_us(kernel: Kernel, coef: KernelCoefficients, hw: HardwareCard, *, sm_fraction: float) -> np.ndarray:
    """Time in microseconds of one kernel (array-valued when its fields are arrays)."""
    if kernel.kind in ("gemm", "grouped"):
        flop_scale = coef.gemm_flop_scale if kernel.kind == "gemm" else coef.grouped_flop_scale
        byte_scale = coef.gemm_byte_scale + (coef.overlap_byte_scale if sm_fraction < 1 else 0.0)
        return gemm_us(
            kernel.m, kernel.n, kernel.k, groups=kernel.groups, flop_scale=flop_scale,
            byte_scale=byte_scale, fixed_us=coef.gemm_fixed_us, hw=hw, sm_fraction=sm_fraction,
        )
    if kernel.kind == "bf16_gemm":
        m = np.asarray(kernel.m, dtype=np.float64)
        flops = 2.0 * m * kernel.n * kernel.k
        data = kernel.n * kernel.k * 2.0 + m * kernel.k * 2.0 + m * kernel.n * 4.0
        seconds = coef.bf16_gemm_flop_scale * flops / (hw.bf16_peak_flops * sm_fraction)
        seconds = seconds + coef.mem_byte_scale * data / hw.hbm_bw_Bps
        return np.where(m > 0, seconds * 1e6 + coef.mem_fixed_us, 0.0)
    if kernel.kind == "attn":
        flops = np.asarray(kernel.flops, dtype=np.float64)
        seconds = coef.attn_flop_scale * flops / (hw.bf16_peak_flops * sm_fraction)
        memory = coef.mem_byte_scale * np.asarray(kernel.bytes, dtype=np.float64) / hw.hbm_bw_Bps
        return np.maximum(seconds, memory) * 1e6 + coef.attn_fixed_us
    if kernel.kind == "mem":
        data = np.asarray(kernel.bytes, dtype=np.float64)
        return np.where(data > 0, coef.mem_byte_scale * data / hw.hbm_bw_Bps * 1e6 + coef.mem_fixed_us, 0.0)
    if kernel.kind == "route":
        rows = np.asarray(kernel.rows, dtype=np.float64)
        return np.where(rows > 0, coef.route_row_ns * rows * 1e-3 + coef.route_fixed_us, 0.0)
    raise ValueError(f"kernel.kind = {kernel.kind!r}: unknown")


def attention_kernels(model: ModelCard, tokens, *, phase: str, pairs=0.0, kv_tokens=0.0,
                      query_tokens: int = 1) -> list[Kernel]:
    """MLA attention block for ``tokens`` new tokens on one rank (one layer, one micro-batch).

    Prefill runs MLA in MHA mode (``kv_b`` up-projection, FlashAttention over ``pairs`` causal
    token pairs).  Decode runs the absorbed MQA form (FlashMLA over ``kv_tokens`` cached
    tokens of 576 BF16 dims, ``query_tokens`` queries per request).
    """
    h, heads = model.hidden_size, model.attention_heads
    nope, rope, v = model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim
    act = model.activation_bytes
    tokens = np.asarray(tokens, dtype=np.float64)
    latent = model.kv_lora_rank + rope
    kernels = [
        Kernel("attn_norm_quant", "attention", "mem", bytes=tokens * h * (2 * act + 1) * 2),
        Kernel("qkv_a_proj", "attention", "gemm", m=tokens, n=model.q_lora_rank + latent, k=h),
        Kernel("q_b_proj", "attention", "gemm", m=tokens, n=heads * (nope + rope), k=model.q_lora_rank),
    ]
    if phase == "prefill":
        kernels += [
            Kernel("kv_b_proj", "attention", "gemm", m=tokens, n=heads * (nope + v), k=model.kv_lora_rank),
            Kernel("rope_kvcache", "attention", "mem",
                   bytes=tokens * (2 * heads * rope * act + latent * act + rope * act)),
            Kernel("core_attention", "attention", "attn",
                   flops=np.asarray(pairs, dtype=np.float64) * heads * 2.0 * (nope + rope + v)),
        ]
    else:
        kv = np.asarray(kv_tokens, dtype=np.float64)
        kernels += [
            # absorbed W_UK: per head [tokens, 128] x [128, 512]
            Kernel("w_uk_absorb", "attention", "grouped", m=tokens, n=model.kv_lora_rank, k=nope, groups=heads),
            Kernel("rope_kvcache", "attention", "mem",
                   bytes=tokens * (2 * heads * rope * act + latent * act + rope * act)),
            # FlashMLA: every query reads the request's KV (576 dims) and writes 512-dim values
            Kernel("flash_mla", "attention", "attn",
                   flops=kv * query_tokens * heads * 2.0 * (latent + model.kv_lora_rank),
                   bytes=kv * latent * act),
            Kernel("w_uv_absorb", "attention", "grouped", m=tokens, n=v, k=model.kv_lora_rank, groups=heads),
        ]
    kernels.append(Kernel("o_proj", "attention", "gemm", m=tokens, n=h, k=heads * v))
    return kernels


def moe_kernels(model: ModelCard, tokens, mean_tokens, *, experts_per_rank: int, phase: str) -> list[Kernel]:
    """Router, routing bookkeeping, routed experts (grouped GEMMs), shared expert, reduce.

    ``tokens`` are this rank's own tokens (router, shared expert, reduce); the routed experts
    receive ``mean_tokens * top_k`` rows (balanced routing), spread over ``experts_per_rank``.
    """
    h, inter, topk = model.hidden_size, model.moe_intermediate_size, model.experts_per_token
    tokens = np.asarray(tokens, dtype=np.float64)
    rows = np.asarray(mean_tokens, dtype=np.float64) * topk
    # expected local experts that receive at least one of ``rows`` uniformly routed rows: the
    # grouped kernels skip empty experts, so a small batch reads only those experts' weights
    active = experts_per_rank * -np.expm1(rows * np.log1p(-1.0 / experts_per_rank)) if experts_per_rank > 1 else (
        np.minimum(rows, 1.0))
    active = np.maximum(active, np.where(rows > 0, 1.0, 0.0))
    per_expert = np.divide(rows, active, out=np.zeros_like(rows), where=active > 0)
    dispatch_bytes = model.dispatch_bytes_per_token
    kernels = [
        Kernel("router_gemm", "other", "bf16_gemm", m=tokens, n=model.routed_experts, k=h),
        Kernel("topk_gate", "other", "route", rows=tokens * topk),
    ]
    if phase == "prefill":
        kernels += [
            Kernel("clean_and_count", "other", "route", rows=rows),
            Kernel("fused_mapping", "other", "route", rows=rows),
            Kernel("expand_to_fused", "other", "mem", bytes=rows * dispatch_bytes * 2),
            Kernel("scale_transpose", "other", "mem", bytes=rows * (h // 128) * 4 * 2),
        ]
    shared = model.shared_experts
    kernels += [
        Kernel("routed_gate_up", "expert_gemm", "grouped", m=per_expert, n=2 * inter, k=h, groups=active),
        Kernel("routed_swiglu", "expert_gemm", "mem", bytes=rows * (2 * inter * 2 + inter + inter // 32)),
        Kernel("routed_down", "expert_gemm", "grouped", m=per_expert, n=h, k=inter, groups=active),
    ]
    if shared:
        kernels += [
            Kernel("shared_gate_up", "shared_expert", "gemm", m=tokens, n=2 * inter * shared, k=h),
            Kernel("shared_swiglu", "shared_expert", "mem",
                   bytes=tokens * shared * (2 * inter * 2 + inter + inter // 32)),
            Kernel("shared_down", "shared_expert", "gemm", m=tokens, n=h, k=inter * shared),
        ]
    if phase == "prefill":
        # decode's low-latency combine reduces in-kernel
        kernels.append(Kernel("combine_reduce", "other", "mem", bytes=tokens * (topk + 1) * h * 2))
    return kernels


def dense_ffn_kernels(model: ModelCard, tokens) -> list[Kernel]:
    """Dense SwiGLU FFN of the first ``dense_layers`` layers."""
    h, inter = model.hidden_size, model.dense_intermediate_size
    tokens = np.asarray(tokens, dtype=np.float64)
    return [
        Kernel("ffn_norm_quant", "other", "mem", bytes=tokens * h * 5.0),
        Kernel("dense_gate_up", "expert_gemm", "gemm", m=tokens, n=2 * inter, k=h),
        Kernel("dense_swiglu", "expert_gemm", "mem", bytes=tokens * (2 * inter * 2 + inter + inter // 32)),
        Kernel("dense_down", "expert_gemm", "gemm", m=tokens, n=h, k=inter),
    ]


def head_kernels(model: ModelCard, rows) -> list[Kernel]:
    """Final norm and LM head on the ``rows`` positions that produce logits."""
    rows = np.asarray(rows, dtype=np.float64)
    return [
        Kernel("final_norm", "other", "mem", bytes=rows * model.hidden_size * 4.0),
        Kernel("lm_head", "other", "bf16_gemm", m=rows, n=model.vocab_size, k=model.hidden_size),
    ]
