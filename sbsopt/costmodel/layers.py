"""Per-layer kernel inventory of an MLA + MoE transformer and the time of each kernel.

Each kernel is described by its physics (FLOPs, bytes, routed rows) and a kernel class; its
time is ``scale * ideal + fixed`` with the class coefficients of
:class:`~sbsopt.costmodel.coefficients.KernelCoefficients`.  GEMMs follow DeepGEMM's tiling:
a kernel runs ``waves = ceil(tiles / SMs)`` waves of ``BM x BN`` output tiles, so small
batches pay for whole tiles (monotone in M, and the reason a 64-row GEMM is memory-bound), and
every wave ends with its tiles' BF16 store, which the next tile waits for.

All functions take numpy arrays (or scalars) of per-micro-batch token counts and return
microseconds; nothing here knows about ranks or lock-step (see :mod:`sbsopt.costmodel.step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

import numpy as np

from sbsopt.costmodel.cards import HardwareCard, ModelCard
from sbsopt.costmodel.coefficients import KernelCoefficients
from sbsopt.costmodel.topology import hit_probability
from sbsopt.errors import InvalidInputError

__all__ = [
    "Kernel",
    "gemm_us",
    "attention_kernels",
    "moe_kernels",
    "dense_ffn_kernels",
    "head_kernels",
    "kernel_us",
    "expected_max_rows",
    "max_normal_z",
    "rows_per_received_token",
    "STAGES",
]

#: Compute stages of DeepSeek's overlap schedule (see :mod:`sbsopt.costmodel.overlap`).
STAGES = ("attn0", "attn1", "shared", "routed")

_BLOCK_N = (64, 128, 256)

_KINDS = ("gemm", "grouped", "bf16_gemm", "attn", "mem", "route")

#: A per-micro-batch quantity: a number, or an array of them (one per micro-batch or rank).
Scalars: TypeAlias = float | np.ndarray


@dataclass(frozen=True)
class Kernel:
    """One kernel launch of one layer and micro-batch.

    ``kind`` is ``"gemm"``, ``"grouped"``, ``"bf16_gemm"``, ``"attn"``, ``"mem"`` or
    ``"route"``; GEMM kinds use ``m, n, k, groups``; ``"attn"`` uses ``flops``; ``"mem"`` uses
    ``bytes``; ``"route"`` uses ``rows`` (top-k index entries the kernel writes or scans).  Array-valued fields broadcast.  ``stage`` is the
    compute stage of DeepSeek's overlap schedule the kernel runs in (see
    :mod:`sbsopt.costmodel.overlap`): ``"attn0"`` (norms and MLA projections before core
    attention, and the previous layer's combine reduce), ``"attn1"`` (core attention, output
    projection, routing gate), ``"shared"`` (shared expert) or ``"routed"`` (routed experts).
    """

    name: str
    term: str
    kind: str
    m: Scalars = 0.0
    n: int = 0
    k: int = 0
    groups: Scalars = 1
    flops: Scalars = 0.0
    bytes: Scalars = 0.0
    rows: Scalars = 0.0
    fixed: bool = True
    stage: str = "attn0"



def gemm_us(
    m: Scalars | list[float], n: int, k: int, *, groups: Scalars, flop_scale: float, byte_scale: float, fixed_us: float,
    hw: HardwareCard, sm_fraction: float, epilogue_scale: float = 0.0,
) -> np.ndarray:
    """Time of an FP8 GEMM ``[m, k] x [k, n]`` (per group) on ``sm_fraction`` of the SMs.

    Parameters
    ----------
    m : float, array_like
        Rows per group (tokens); a zero row count costs nothing.
    n, k : int
        Output and reduction dimensions.
    groups : float or numpy.ndarray
        Number of GEMMs launched together (experts of a grouped GEMM, heads of an absorb).
    flop_scale, byte_scale : float
        Coefficients of the compute-bound (waves of tiles) and memory-bound times.
    fixed_us : float
        Launch overhead, added to every non-empty GEMM.
    hw : HardwareCard
        Peak FP8 FLOP/s, HBM bandwidth and SM count.
    sm_fraction : float
        Share of the SMs the GEMM runs on (below 1 when communication kernels hold some).
    epilogue_scale : float, default 0.0
        Coefficient of the per-wave output-tile store (see Notes).

    Returns
    -------
    numpy.ndarray
        Microseconds, shaped like ``m``.

    Notes
    -----
    DeepGEMM's persistent kernel ends every output tile by converting the FP32 accumulators to
    BF16, staging them in shared memory and issuing a TMA store that thread 0 waits for
    (``tma_store_wait<0>()``) before the math warpgroups start the next tile
    (``deep_gemm/include/deep_gemm/fp8_gemm.cuh`` at DeepGEMM 55ab91f, the version of the
    bundled benchmark).  The store is therefore serial with the MMA: each wave adds one
    ``BM x BN`` BF16 tile per SM, written while every SM writes its own, priced as
    ``epilogue_scale * waves * BM * BN * 2 / (hbm_bw / SMs)``.  It weighs most where a tile
    has little reduction work per output (small ``k``: ``kv_b``, ``q_b``, the down projections).

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
    epilogue_s = np.zeros(np.shape(m))
    for block_n in _BLOCK_N:
        tiles = groups * np.ceil(m / block_m) * np.ceil(n / block_n)
        waves = np.ceil(tiles / sms)
        tile_s = waves * (2.0 * block_m * block_n * k) / sm_peak
        fewer = tile_s < compute_s
        compute_s = np.where(fewer, tile_s, compute_s)
        # each wave's BF16 output tiles leave before the next tile starts (see Notes)
        epilogue_s = np.where(fewer, waves * block_m * block_n * 2.0 / (hw.hbm_bw_Bps / hw.sms), epilogue_s)
    data = groups * (n * k + m * k + 2.0 * m * n)
    memory_s = data / hw.hbm_bw_Bps
    active = m > 0
    return np.where(active, (flop_scale * compute_s + epilogue_scale * epilogue_s + byte_scale * memory_s) * 1e6
                    + fixed_us, 0.0)


def kernel_us(kernel: Kernel, coef: KernelCoefficients, hw: HardwareCard, *, sm_fraction: float) -> np.ndarray:
    """Time in microseconds of one kernel (array-valued when its fields are arrays).

    Parameters
    ----------
    kernel : Kernel
        The kernel and its sizes.
    coef : KernelCoefficients
        Per-kernel-class coefficients (see :func:`~sbsopt.costmodel.load_coefficients`).
    hw : HardwareCard
        Peaks and bandwidths of the GPU.
    sm_fraction : float
        Share of the SMs available to compute kernels (1 standalone, less when overlapped
        with communication).

    Returns
    -------
    numpy.ndarray
        Microseconds, broadcast over the kernel's array-valued fields.

    Raises
    ------
    InvalidInputError
        If ``kernel.kind`` is not one of the kinds :class:`Kernel` lists.

    Examples
    --------
    >>> from sbsopt.costmodel import load_coefficients, load_hardware_card
    >>> k = Kernel("norm", "other", "mem", bytes=np.array([0.0, 1e9]))
    >>> t = kernel_us(k, load_coefficients(), load_hardware_card(), sm_fraction=1.0)
    >>> float(t[0]), bool(t[1] > 0)
    (0.0, True)
    """
    if kernel.kind in ("gemm", "grouped"):
        flop_scale = coef.gemm_flop_scale if kernel.kind == "gemm" else coef.grouped_flop_scale
        byte_scale = coef.gemm_byte_scale + (coef.overlap_byte_scale if sm_fraction < 1 else 0.0)
        return gemm_us(
            kernel.m, kernel.n, kernel.k, groups=kernel.groups, flop_scale=flop_scale,
            byte_scale=byte_scale, fixed_us=coef.launch_us, hw=hw, sm_fraction=sm_fraction,
            epilogue_scale=coef.epilogue_byte_scale,
        )
    if kernel.kind == "bf16_gemm":
        m = np.asarray(kernel.m, dtype=np.float64)
        groups = np.asarray(kernel.groups, dtype=np.float64)
        flops = groups * 2.0 * m * kernel.n * kernel.k
        data = groups * (kernel.n * kernel.k * 2.0 + m * kernel.k * 2.0 + m * kernel.n * 4.0)
        seconds = coef.bf16_gemm_flop_scale * flops / (hw.bf16_peak_flops * sm_fraction)
        seconds = seconds + coef.mem_byte_scale * data / hw.hbm_bw_Bps
        return np.where(m > 0, seconds * 1e6 + coef.launch_us, 0.0)
    if kernel.kind == "attn":
        flops = np.asarray(kernel.flops, dtype=np.float64)
        # FlashMLA (decode, reads KV bytes) has its own efficiencies; FlashAttention (prefill) none
        decode = kernel.name == "flash_mla"
        flop_scale = coef.mla_flop_scale if decode else coef.attn_flop_scale
        seconds = flop_scale * flops / (hw.bf16_peak_flops * sm_fraction)
        memory = coef.mla_byte_scale * np.asarray(kernel.bytes, dtype=np.float64) / hw.hbm_bw_Bps
        return np.maximum(seconds, memory) * 1e6 + coef.launch_us
    if kernel.kind == "mem":
        data = np.asarray(kernel.bytes, dtype=np.float64)
        return np.where(data > 0, coef.mem_byte_scale * data / hw.hbm_bw_Bps * 1e6 + coef.launch_us, 0.0)
    if kernel.kind == "route":
        rows = np.asarray(kernel.rows, dtype=np.float64)
        return np.where(rows > 0, coef.route_row_ns * rows * 1e-3 + coef.launch_us, 0.0)
    raise InvalidInputError("kernel.kind", kernel.kind, f"one of {', '.join(_KINDS)}")


def attention_kernels(model: ModelCard, tokens, *, phase: str, pairs=0.0, kv_tokens=0.0,
                      query_tokens: int = 1, sms: int = 132) -> list[Kernel]:
    """MLA attention block for ``tokens`` new tokens on one rank (one layer, one micro-batch).

    Prefill runs MLA in MHA mode (``kv_b`` up-projection, FlashAttention over ``pairs`` causal
    token pairs).  Decode runs the absorbed MQA form: BF16 batched W_UK/W_UV matmuls (CUTLASS,
    one GEMM per head) around FlashMLA over ``kv_tokens`` cached tokens of 576 BF16 dims, whose
    split-KV partial results a combine kernel merges.  Both phases carry the RMSNorms, the FP8
    casts before the FP8 GEMMs and the residual add.

    Parameters
    ----------
    model : ModelCard
        Attention shapes.
    tokens : float or array_like
        New tokens of the micro-batch on this rank.
    phase : {"prefill", "decode"}
        Which form of MLA runs.
    pairs : float or array_like, default 0.0
        Prefill only: causal (query, key) token pairs of the micro-batch's requests.
    kv_tokens : float or array_like, default 0.0
        Decode only: cached tokens read by the micro-batch's requests.
    query_tokens : int, default 1
        Decode only: queries per request (more than 1 with multi-token prediction).
    sms : int, default 132
        Decode only: SMs FlashMLA splits the KV sequence over (sets the split-KV fan-in).

    Returns
    -------
    list of Kernel
        The block's kernels in launch order.

    Examples
    --------
    >>> from sbsopt.costmodel import load_model_card
    >>> [k.name for k in attention_kernels(load_model_card(), 64.0, phase="decode", kv_tokens=4096.0)][-5:]
    ['flash_mla_combine', 'w_uv_absorb', 'attn_out_quant', 'o_proj', 'attn_residual']
    """
    h, heads = model.hidden_size, model.attention_heads
    nope, rope, v = model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim
    act = model.activation_bytes
    tokens = np.asarray(tokens, dtype=np.float64)
    latent = model.kv_lora_rank + rope
    q_lora, kv_lora = model.q_lora_rank, model.kv_lora_rank
    kernels = [
        # RMSNorm of the residual stream + FP8 cast: read BF16, write BF16 normed and FP8
        Kernel("attn_norm_quant", "attention", "mem", bytes=tokens * h * (2 * act + 1) * 2),
        Kernel("qkv_a_proj", "attention", "gemm", m=tokens, n=q_lora + latent, k=h),
        # q_a RMSNorm, its output cast to FP8 for q_b (the kv_a norm runs inside rope_kvcache)
        Kernel("q_a_norm", "attention", "mem", bytes=tokens * q_lora * (2 * act + 1)),
        Kernel("q_b_proj", "attention", "gemm", m=tokens, n=heads * (nope + rope), k=q_lora),
    ]
    # the fused rotary_embedding_with_kv_cache op: read the kv_a output (latent + k_pe) and the
    # token's FP32 cos/sin row, RMSNorm the latent, RoPE q_pe in place (read and write every
    # head's rope dims) and k_pe, write the normed latent + k_pe to the cache
    rope_bytes = tokens * (2 * heads * rope * act + 2 * latent * act + rope * 4)
    if phase == "prefill":
        kernels += [
            # prefill also writes the normed latent (kv_b's input) and k_pe broadcast to every
            # head (MHA-mode attention reads a full per-head key)
            Kernel("rope_kvcache", "attention", "mem", bytes=rope_bytes + tokens * (kv_lora + heads * rope) * act),
            Kernel("kv_b_proj", "attention", "gemm", m=tokens, n=heads * (nope + v), k=kv_lora),
            Kernel("core_attention", "attention", "attn", stage="attn1",
                   flops=np.asarray(pairs, dtype=np.float64) * heads * 2.0 * (nope + rope + v)),
        ]
    else:
        kv = np.asarray(kv_tokens, dtype=np.float64)
        # FlashMLA splits each request's KV over SM parts (sms / ceil(h_q*s_q/64) of them, shared by
        # the batch); the combine kernel reads every split's FP32 partial output and LSE
        requests = tokens / query_tokens
        parts = max(1.0, sms / math.ceil(heads * query_tokens / 64))
        splits = 1.0 + np.divide(parts, requests, out=np.zeros_like(requests), where=requests > 0)
        kernels += [
            # absorbed W_UK: per head [tokens, 128] x [128, 512], BF16 CUTLASS batched GEMM
            Kernel("w_uk_absorb", "attention", "bf16_gemm", m=tokens, n=kv_lora, k=nope, groups=heads),
            Kernel("rope_kvcache", "attention", "mem", bytes=rope_bytes),
            # FlashMLA: every query reads the request's KV (576 dims) and writes 512-dim values
            Kernel("flash_mla", "attention", "attn", stage="attn1",
                   flops=kv * query_tokens * heads * 2.0 * (latent + kv_lora),
                   bytes=kv * latent * act),
            Kernel("flash_mla_combine", "attention", "mem", stage="attn1",
                   bytes=tokens * heads * (splits * (kv_lora + 1) * 4.0 + kv_lora * act)),
            Kernel("w_uv_absorb", "attention", "bf16_gemm", stage="attn1", m=tokens, n=v, k=kv_lora, groups=heads),
        ]
    kernels += [
        Kernel("attn_out_quant", "attention", "mem", stage="attn1", bytes=tokens * heads * v * (act + 1)),
        Kernel("o_proj", "attention", "gemm", stage="attn1", m=tokens, n=h, k=heads * v),
        # residual add of the attention output into the BF16 residual stream
        Kernel("attn_residual", "attention", "mem", stage="attn1", bytes=tokens * h * act * 3),
    ]
    return kernels


def expected_max_rows(mean_rows, *, ranks: int, imbalance: float = 1.0):
    """Routed rows of the busiest of ``ranks`` EP ranks when each receives ``mean_rows`` on average.

    Lock-step MoE waits for the busiest rank.  Each of the ``ranks * mean_rows`` routed
    (token, expert) pairs lands on a given rank with probability ``1/ranks`` (balanced expert
    load, EPLB on), so a rank's rows are binomial; the expected maximum of ``ranks`` of them is
    ``imbalance * mean + z * sd`` with ``z`` the expected maximum of ``ranks`` standard normals
    (Blom's approximation).  ``imbalance > 1`` models the popularity skew EPLB leaves (or its
    absence): the busiest rank's expected share over the mean.

    Parameters
    ----------
    mean_rows : float or array_like
        Mean routed rows per rank.
    ranks : int
        EP size.
    imbalance : float, default 1.0
        Expected busiest-rank load over the mean from expert popularity (1 = EPLB balanced).

    Returns
    -------
    numpy.ndarray
        Rows of the busiest rank, shaped like ``mean_rows``.

    Examples
    --------
    >>> float(expected_max_rows(0.0, ranks=144))
    0.0
    >>> round(float(expected_max_rows(720.0, ranks=144)) / 720, 2)
    1.1
    """
    mean_rows = np.asarray(mean_rows, dtype=np.float64)
    return imbalance * mean_rows + max_normal_z(ranks) * np.sqrt(mean_rows * (1.0 - 1.0 / ranks))


def max_normal_z(ranks: int) -> float:
    """Expected maximum of ``ranks`` independent standard normals (Blom; 0 for one rank).

    Parameters
    ----------
    ranks : int
        How many.

    Returns
    -------
    float
        The expected maximum.

    Examples
    --------
    >>> max_normal_z(1), round(max_normal_z(32), 2)
    (0.0, 2.07)
    """
    if ranks <= 1:
        return 0.0
    return float(_normal_ppf((ranks - 0.375) / (ranks + 0.25)))


def _normal_ppf(p: float) -> float:
    # Acklam's rational approximation of the inverse normal CDF (|error| < 1.2e-9)
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if p > 0.5:
        return -_normal_ppf(1.0 - p)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
        ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def moe_kernels(model: ModelCard, tokens, mean_tokens, *, experts_per_rank: int, phase: str) -> list[Kernel]:
    """Norm, router, routing bookkeeping, routed experts (grouped GEMMs), shared expert, reduce.

    ``tokens`` are this rank's own tokens (norm, router, shared expert, reduce); the routed
    experts receive ``mean_tokens * top_k`` rows, spread over ``experts_per_rank`` (pass the
    busiest rank's tokens, :func:`expected_max_rows` over top-k, for the lock-step time).
    Decode adds the compute-stream halves of DeepEP's low-latency kernels: the dispatch send
    (FP8 cast and issue) and receive (unpack into the per-expert layout), the combine send and
    receive (the top-k weighted reduce).

    Prefill follows the contract of DeepEP's normal kernels: dispatch delivers each token once
    per destination rank (``recv_x`` is ``[num_recv_tokens, hidden]``) and combine takes one
    vector per received token back, so the rank expands the received tokens into one row per
    (token, local expert) for the grouped GEMMs (``expand_to_fused``) and reduces the rows back
    to one weighted sum per received token before the combine (``combine_reduce``, routed
    stage).  A received token carries :func:`rows_per_received_token` rows.

    Parameters
    ----------
    model : ModelCard
        Expert shapes and routing (top-k, shared experts).
    tokens : float or array_like
        This rank's own tokens.
    mean_tokens : float or array_like
        Tokens whose ``top_k`` rows reach this rank's experts.
    experts_per_rank : int
        Routed experts hosted on a rank.
    phase : {"prefill", "decode"}
        Prefill adds the routing bookkeeping kernels; decode the low-latency send/recv halves.

    Returns
    -------
    list of Kernel
        The MoE block's kernels in launch order.

    Examples
    --------
    >>> from sbsopt.costmodel import load_model_card
    >>> names = [k.name for k in moe_kernels(load_model_card(), 64.0, 64.0, experts_per_rank=2, phase="decode")]
    >>> names[:3], names[-1]
    (['ffn_norm_quant', 'router_gemm', 'topk_gate'], 'll_combine_recv')
    """
    h, inter, topk = model.hidden_size, model.moe_intermediate_size, model.experts_per_token
    act = model.activation_bytes
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
        Kernel("ffn_norm_quant", "other", "mem", stage="attn1", bytes=tokens * h * (2 * act + 1) * 2),
        Kernel("router_gemm", "other", "bf16_gemm", stage="attn1", m=tokens, n=model.routed_experts, k=h),
        # priced per top-k entry it writes: by its 256 scores per token or by its bytes it fits
        # worse (see the cost-model guide, "Tried and dropped")
        Kernel("topk_gate", "other", "route", stage="attn1", rows=tokens * topk),
    ]
    received = rows / rows_per_received_token(model, experts_per_rank)
    if phase == "prefill":
        # the bookkeeping scans the received tokens' top-k expert indices (DeepEP's
        # ``recv_topk_idx``, -1 for other ranks' experts): counting once, the mapping twice
        # (count per expert, grid-wide barrier, then place every row)
        kernels += [
            Kernel("clean_and_count", "other", "route", stage="routed", rows=received * topk),
            Kernel("fused_mapping", "other", "route", stage="routed", rows=2 * received * topk),
            # read every received FP8 token (+ scales) once, write one copy per local expert
            Kernel("expand_to_fused", "other", "mem", stage="routed", bytes=(received + rows) * dispatch_bytes),
            Kernel("scale_transpose", "other", "mem", stage="routed", bytes=rows * (h // 128) * 4 * 2),
        ]
    else:
        kernels += [
            # send: read the BF16 token, write the FP8 token + scales into the send buffer
            Kernel("ll_dispatch_send", "dispatch", "mem", stage="attn1", bytes=tokens * (h * act + dispatch_bytes)),
            # receive: copy every received row into its expert's slot of the grouped layout
            Kernel("ll_dispatch_recv", "dispatch", "mem", stage="routed", bytes=rows * dispatch_bytes * 2),
        ]
    shared = model.shared_experts
    kernels += [
        Kernel("routed_gate_up", "expert_gemm", "grouped", stage="routed", m=per_expert, n=2 * inter, k=h,
               groups=active),
        Kernel("routed_swiglu", "expert_gemm", "mem", stage="routed",
               bytes=rows * (2 * inter * 2 + inter + inter // 32)),
        Kernel("routed_down", "expert_gemm", "grouped", stage="routed", m=per_expert, n=h, k=inter, groups=active),
    ]
    if shared:
        kernels += [
            Kernel("shared_gate_up", "shared_expert", "gemm", stage="shared", m=tokens, n=2 * inter * shared, k=h),
            Kernel("shared_swiglu", "shared_expert", "mem", stage="shared",
                   bytes=tokens * shared * (2 * inter * 2 + inter + inter // 32)),
            Kernel("shared_down", "shared_expert", "gemm", stage="shared", m=tokens, n=h, k=inter * shared),
        ]
    if phase == "prefill":
        # weighted sum of each received token's expert rows (BF16 rows, FP32 weights and int32
        # positions in, one BF16 vector out), the combine's input; after the combine, the add of
        # the combined and shared outputs into the residual stream opens the next layer's
        # attention stage
        reduce_bytes = rows * h * act + received * (h * act + topk * 8)
        kernels += [
            Kernel("combine_reduce", "other", "mem", stage="routed", bytes=reduce_bytes),
            Kernel("moe_residual", "other", "mem", stage="attn0", bytes=tokens * 4 * h * act),
        ]
    else:
        # combine send: read the BF16 expert outputs into the send buffer; the low-latency combine's
        # receive half reduces the top-k rows of each token and adds the shared output and residual
        kernels += [
            Kernel("ll_combine_send", "combine", "mem", stage="routed", bytes=rows * h * act * 2),
            Kernel("ll_combine_recv", "combine", "mem", stage="attn0", bytes=tokens * (topk + 3) * h * act),
        ]
    return kernels


def rows_per_received_token(model: ModelCard, experts_per_rank: int) -> float:
    """Expected local experts a token reaching a rank picks there (its rows on that rank).

    DeepEP's normal dispatch sends a token to a rank once however many of the rank's experts
    it picks; the rank then holds ``rows / rows_per_received_token`` distinct tokens.  Under the
    card's group-limited routing (see :func:`~sbsopt.costmodel.topology.hit_probability`) a
    rank's ``e`` experts receive ``top_k * e / experts`` rows per token sent anywhere, and
    a token reaches the rank with the probability of hitting at least one of them.

    Parameters
    ----------
    model : ModelCard
        Routing (experts, groups, top-k).
    experts_per_rank : int
        Routed experts hosted on a rank (the first ``experts_per_rank`` experts stand for any).

    Returns
    -------
    float
        Rows per received token, at least 1.

    Examples
    --------
    >>> from sbsopt.costmodel import load_model_card
    >>> round(rows_per_received_token(load_model_card(), 8), 3)
    1.213
    """
    return _rows_per_received_token(model.routed_experts, model.expert_groups, model.groups_per_token,
                                    model.experts_per_token, experts_per_rank)


@lru_cache(maxsize=64)
def _rows_per_received_token(experts: int, groups: int, groups_per_token: int, top_k: int, local: int) -> float:
    local = min(local, experts)
    hit = hit_probability(((0.0, float(local)),), routed_experts=experts, expert_groups=groups,
                          groups_per_token=groups_per_token, experts_per_token=top_k)
    return max(1.0, top_k * local / experts / hit) if hit > 0 else 1.0


def dense_ffn_kernels(model: ModelCard, tokens) -> list[Kernel]:
    """Dense SwiGLU FFN of the first ``dense_layers`` layers.

    Parameters
    ----------
    model : ModelCard
        FFN shapes.
    tokens : float or array_like
        Tokens of the micro-batch on this rank.

    Returns
    -------
    list of Kernel
        Norm, gate-up GEMM, SwiGLU, down GEMM and residual add.
    """
    h, inter = model.hidden_size, model.dense_intermediate_size
    act = model.activation_bytes
    tokens = np.asarray(tokens, dtype=np.float64)
    return [
        Kernel("ffn_norm_quant", "other", "mem", bytes=tokens * h * (2 * act + 1) * 2),
        Kernel("dense_gate_up", "expert_gemm", "gemm", m=tokens, n=2 * inter, k=h),
        Kernel("dense_swiglu", "expert_gemm", "mem", bytes=tokens * (2 * inter * 2 + inter + inter // 32)),
        Kernel("dense_down", "expert_gemm", "gemm", m=tokens, n=h, k=inter),
        Kernel("ffn_residual", "other", "mem", bytes=tokens * h * act * 3),
    ]


def head_kernels(model: ModelCard, rows, *, mtp: bool = False) -> list[Kernel]:
    """Final norm and LM head on the ``rows`` positions that produce logits (and the MTP module's).

    With ``mtp`` the decode step also runs DeepSeek's multi-token-prediction module outside its
    transformer block (which the caller counts as one more MoE layer): the RMSNorms of the
    hidden state and of the next token's embedding, the projection ``eh_proj`` of their
    concatenation (``[rows, 2h] x [2h, h]``; a plain BF16 ``nn.Linear`` in vLLM's
    ``deepseek_mtp.py``), and the module's own final norm and LM head (shared weights).

    Parameters
    ----------
    model : ModelCard
        Hidden and vocabulary sizes.
    rows : float or array_like
        Positions that produce logits (one per request in prefill, per query in decode).
    mtp : bool, default False
        Add the MTP module's norms, projection and head.

    Returns
    -------
    list of Kernel
        The final norm and the LM-head GEMM, then (``mtp``) the MTP module's kernels.

    References
    ----------
    DeepSeek-AI, "DeepSeek-V3 Technical Report", arXiv:2412.19437, section 2.2 (eq. 21: the
    MTP module combines ``RMSNorm(h)`` and ``RMSNorm(Emb(t))`` through ``M_k`` of size
    ``d x 2d``).

    Examples
    --------
    >>> from sbsopt.costmodel import load_model_card
    >>> [k.name for k in head_kernels(load_model_card(), 2.0, mtp=True)]
    ['final_norm', 'lm_head', 'mtp_norms', 'mtp_eh_proj', 'mtp_final_norm', 'mtp_lm_head']
    """
    rows = np.asarray(rows, dtype=np.float64)
    h, act = model.hidden_size, model.activation_bytes
    kernels = [
        Kernel("final_norm", "other", "mem", bytes=rows * h * 4.0),
        Kernel("lm_head", "other", "bf16_gemm", m=rows, n=model.vocab_size, k=h),
    ]
    if mtp:
        kernels += [
            # hnorm and enorm (one fused launch): read the hidden state and the embedding row,
            # write both normed halves of the concatenated input
            Kernel("mtp_norms", "other", "mem", bytes=rows * 2 * h * act * 2),
            Kernel("mtp_eh_proj", "other", "bf16_gemm", m=rows, n=h, k=2 * h),
            Kernel("mtp_final_norm", "other", "mem", bytes=rows * h * 4.0),
            Kernel("mtp_lm_head", "other", "bf16_gemm", m=rows, n=model.vocab_size, k=h),
        ]
    return kernels
