"""Lock-step step time of one DP+EP instance: the public cost model.

A forward pass is ``dense_layers`` dense layers + ``moe_layers`` MoE layers + the LM head.
Per MoE layer and micro-batch (``n_j / m`` tokens on rank ``j``):

* compute ``C = max_j [own(n_j/m) + beta*pairs_j/m + gamma*requests_j/m] + routed(mean_j n_j/m)``:
  the rank-local work (attention, router, shared expert, reduce) of the most loaded rank, then
  the routed experts, whose rows come from every rank (balanced routing: ``mean * top_k``);
* communication ``X = comm(max_j n_j / m)``: dispatch + combine of the rank that sends most;
* overlap (:mod:`sbsopt.costmodel.overlap`): ``m*max(C, X)`` per layer + ``min(C, X)`` once.

Idle ranks run a dummy batch (one token) and still join the all-to-all, so zero load costs
the fixed overheads of every kernel.  Per-micro-batch layer times are tabulated on a uniform
token grid (8 tokens for prefill, 1 for decode) from the exact per-kernel model
(:mod:`sbsopt.costmodel.layers`) and evaluated by a Numba kernel; :meth:`CostModel.breakdown`
evaluates the kernels directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from sbsopt._validate import check_array, check_int
from sbsopt.costmodel import _kernels
from sbsopt.costmodel.alltoall import low_latency_alltoall_us, normal_alltoall_us
from sbsopt.costmodel.cards import HardwareCard, ModelCard, load_hardware_card, load_model_card
from sbsopt.costmodel.coefficients import KernelCoefficients, load_coefficients
from sbsopt.costmodel.layers import (
    Kernel,
    attention_kernels,
    dense_ffn_kernels,
    head_kernels,
    kernel_us,
    moe_kernels,
)
from sbsopt.costmodel.overlap import compute_sm_fraction, overlapped_layer_us, pipeline_fill_us
from sbsopt.costmodel.topology import AllToAllPath, alltoall_path
from sbsopt.errors import InvalidInputError

__all__ = [
    "CostModel",
    "PrefillCoefficients",
    "DecodeCoefficients",
    "StepBreakdown",
    "load_cost_model",
]

_PREFILL_GRID_STEP = 8.0
_PREFILL_GRID_POINTS = 16_385  # up to 131072 tokens per micro-batch, extrapolated beyond
_DECODE_GRID_STEP = 1.0
_DECODE_GRID_POINTS = 8_193
_TERMS = ("attention", "expert_gemm", "shared_expert", "dispatch", "combine", "other")


@dataclass(frozen=True)
class PrefillCoefficients:
    """Rank-local linearisation of the prefill step (all layers summed), in microseconds.

    ``step ~= base_us + max_j(alpha*n_j + beta*pairs_j + gamma*requests_j)``.
    """

    base_us: float
    alpha_us_per_token: float
    beta_us_per_pair: float
    gamma_us_per_request: float


@dataclass(frozen=True)
class DecodeCoefficients:
    """Rank-local linearisation of the decode step: ``base + per_request*b_j + per_kv*kv_j``."""

    base_us: float
    us_per_request: float
    us_per_kv_token: float


@dataclass(frozen=True)
class StepBreakdown:
    """Per-term view of one forward (the ``sbsopt cost`` output).

    ``terms_us`` is one MoE layer for one micro-batch on the most loaded rank; ``kernels_us``
    the same per kernel; layer and step times include overlap and all micro-batches.
    """

    phase: str
    step_us: float
    moe_layer_us: float
    dense_layer_us: float
    head_us: float
    fill_us: float
    compute_us: float
    comm_us: float
    terms_us: dict[str, float]
    kernels_us: dict[str, float]


@dataclass(frozen=True, eq=False)
class _Tables:
    step: float
    own: np.ndarray
    routed: np.ndarray
    dense: np.ndarray
    constants: np.ndarray


@dataclass(frozen=True, eq=False)
class CostModel:
    """Calibrated step-time model of one DP+EP instance (obtain it with :func:`load_cost_model`).

    Attributes
    ----------
    ep : int
        DP ranks = EP size (DP attention, EP MoE).
    micro_batches : int
        Micro-batches per forward (2 = DeepSeek's overlap).
    """

    model: ModelCard
    hardware: HardwareCard
    coefficients: KernelCoefficients
    ep: int
    nodes: int
    gpus_per_node: int
    micro_batches: int
    experts_per_rank: int
    normal_path: AllToAllPath
    ll_path: AllToAllPath
    _prefill: _Tables = field(repr=False)
    _decode: dict = field(repr=False)

    # ---------------------------------------------------------------- public scalar API
    def prefill_step_us(self, new_tokens, attn_pairs, requests=None) -> float:
        """Whole-forward prefill time (us) for per-rank loads (arrays of length ``ep``).

        ``new_tokens[j]`` uncached tokens, ``attn_pairs[j]`` causal token pairs
        (``sum n_i*(p_i + n_i/2)``) and ``requests[j]`` requests on rank ``j``;
        ``requests=None`` counts one request on every busy rank.

        Examples
        --------
        >>> cm = load_cost_model(ep=8, nodes=1)
        >>> idle = cm.prefill_step_us([0] * 8, [0] * 8)
        >>> busy = cm.prefill_step_us([4096] * 8, [4096 * 2048.5] * 8, [1] * 8)
        >>> bool(busy > idle > 0)
        True
        """
        load, pairs, reqs = self._prefill_inputs(new_tokens, attn_pairs, requests, ndim=1)
        return float(self._run_prefill(load[None], pairs[None], reqs[None])[0])

    def prefill_step_us_many(self, new_tokens, attn_pairs, requests=None) -> np.ndarray:
        """Vectorized :meth:`prefill_step_us` over ``[S, ep]`` arrays; returns ``[S]``."""
        load, pairs, reqs = self._prefill_inputs(new_tokens, attn_pairs, requests, ndim=2)
        return self._run_prefill(load, pairs, reqs)

    def decode_step_us(self, batch, kv_tokens, query_tokens: int = 1) -> float:
        """Whole-forward decode time (us): ``batch[j]`` requests reading ``kv_tokens[j]`` KV tokens.

        Examples
        --------
        >>> cm = load_cost_model(ep=8, nodes=1)
        >>> cm.decode_step_us([64] * 8, [64 * 4096] * 8) > cm.decode_step_us([64] * 8, [64 * 1024] * 8)
        True
        """
        batch, kv, q = self._decode_inputs(batch, kv_tokens, query_tokens, ndim=1)
        return float(self._run_decode(batch[None], kv[None], q)[0])

    def decode_step_us_many(self, batch, kv_tokens, query_tokens: int = 1) -> np.ndarray:
        """Vectorized :meth:`decode_step_us` over ``[S, ep]`` arrays; returns ``[S]``."""
        batch, kv, q = self._decode_inputs(batch, kv_tokens, query_tokens, ndim=2)
        return self._run_decode(batch, kv, q)

    def prefill_coefficients(self) -> PrefillCoefficients:
        """Linearisation for the window IPs (see :class:`PrefillCoefficients`).

        ``base_us`` is the step of an all-idle instance (dummy batches + all-to-all floor);
        ``beta`` (core attention per causal pair) and ``gamma`` (LM-head row per request) are
        the model's exact linear terms summed over layers; ``alpha`` is the least-squares
        per-token slope of ``step - base - beta*pairs - gamma*requests`` over balanced loads of
        256..32768 tokens per rank and 0..16K-token cached contexts.
        """
        return _prefill_coefficients(self)

    def decode_coefficients(self, query_tokens: int = 1) -> DecodeCoefficients:
        """Linearisation of the decode step: exact per-KV-token FlashMLA cost, fitted per request.

        ``us_per_request`` is the least-squares slope of the remainder per request over balanced loads of 1..256
        requests per rank and 0..16K-token contexts.
        """
        return _decode_coefficients(self, check_int("query_tokens", query_tokens, minimum=1))

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token, all layers (70272 for DeepSeek-V3's BF16 MLA latent)."""
        return self.model.kv_bytes_per_token

    @property
    def weight_bytes_per_rank(self) -> int:
        """Weights resident on one GPU: replicated non-expert weights + its routed experts."""
        routed_total = self.model.moe_layers * self.model.routed_experts * self.model.expert_params
        replicated = self.model.weight_bytes - routed_total * self.model.weight_bytes_per_param
        own = self.model.moe_layers * self.experts_per_rank * self.model.expert_params
        return int(replicated + own * self.model.weight_bytes_per_param)

    @property
    def kv_capacity_tokens_per_rank(self) -> int:
        """KV tokens that fit on one GPU: ``(HBM*(1-reserve) - weights) / kv_bytes_per_token``."""
        free = self.hardware.hbm_bytes * (1.0 - self.hardware.kv_reserve_fraction)
        return max(0, int((free - self.weight_bytes_per_rank) // self.kv_bytes_per_token))

    def kv_transfer_us(self, tokens) -> float:
        """P->D transfer time (us) of one request's KV cache over the inter-node (IB) link.

        Examples
        --------
        >>> cm = load_cost_model(ep=8, nodes=1)
        >>> cm.kv_transfer_us(4096) > cm.kv_transfer_us(0) > 0
        True
        """
        count = check_array("tokens", np.asarray([tokens], dtype=np.float64))[0]
        seconds = count * self.kv_bytes_per_token / (self.hardware.ib_Bps * self.coefficients.dispatch_link_eff)
        return float(seconds * 1e6 + self.coefficients.ll_call_latency_us)

    def breakdown(self, *, phase: str, tokens_per_rank: float, context: float,
                  query_tokens: int = 1) -> StepBreakdown:
        """Exact per-kernel breakdown for a balanced load (every rank alike), as ``sbsopt cost`` prints.

        Prefill: ``tokens_per_rank`` new tokens in requests of ``context`` tokens (no cached
        prefix).  Decode: ``tokens_per_rank`` requests, each with ``context`` KV tokens and
        ``query_tokens`` query tokens.
        """
        if phase not in ("prefill", "decode"):
            raise InvalidInputError("phase", phase, "'prefill' or 'decode'")
        tokens_per_rank = check_array("tokens_per_rank", [tokens_per_rank])[0]
        context = check_array("context", [context])[0]
        q = check_int("query_tokens", query_tokens, minimum=1)
        return _breakdown(self, phase, float(tokens_per_rank), float(context), q)

    # ---------------------------------------------------------------- internals
    def _prefill_inputs(self, new_tokens, attn_pairs, requests, *, ndim: int):
        load = check_array("new_tokens", new_tokens, ndim=ndim)
        pairs = check_array("attn_pairs", attn_pairs, ndim=ndim)
        self._check_shape("new_tokens", load)
        self._check_shape("attn_pairs", pairs)
        if requests is None:
            reqs = (load > 0).astype(np.float64)
        else:
            reqs = check_array("requests", requests, ndim=ndim)
            self._check_shape("requests", reqs)
        return load, pairs, reqs

    def _decode_inputs(self, batch, kv_tokens, query_tokens, *, ndim: int):
        b = check_array("batch", batch, ndim=ndim)
        kv = check_array("kv_tokens", kv_tokens, ndim=ndim)
        self._check_shape("batch", b)
        self._check_shape("kv_tokens", kv)
        return b, kv, check_int("query_tokens", query_tokens, minimum=1, maximum=64)

    def _check_shape(self, name: str, array: np.ndarray) -> None:
        if array.shape[-1] != self.ep:
            raise InvalidInputError(f"{name}.shape[-1]", array.shape[-1], f"ep = {self.ep} ranks")

    def _run_prefill(self, load, pairs, reqs) -> np.ndarray:
        t = self._prefill
        return _kernels.step_many(load, pairs, reqs, t.own, t.routed, t.dense, t.constants)

    def _run_decode(self, batch, kv, q: int) -> np.ndarray:
        t = self._decode_tables(q)
        load = batch * q
        return _kernels.step_many(load, kv, batch, t.own, t.routed, t.dense, t.constants)

    def _decode_tables(self, q: int) -> _Tables:
        tables = self._decode.get(q)
        if tables is None:
            tables = _build_tables(self, "decode", q)
            self._decode[q] = tables
        return tables


def load_cost_model(
    model: str | Path = "deepseek-v3",
    hardware: str | Path = "h800",
    *,
    ep: int = 32,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    micro_batches: int = 2,
    coefficients: str | Path | None = None,
) -> CostModel:
    """Build (or fetch from the cache) the cost model of one DP+EP instance.

    Parameters
    ----------
    model, hardware : str or Path
        Card names in ``models/`` or paths to TOML cards.
    ep : int
        EP size = number of DP ranks.  Must divide ``routed_experts`` or
        ``routed_experts + redundant_experts`` (DeepSeek's EP144 uses 32 redundant experts).
    nodes, gpus_per_node : int, optional
        Placement; default ``gpus_per_node`` from the hardware card and the fewest nodes.
    micro_batches : int
        1 (no overlap) or more (two-micro-batch overlap, DeepSeek's default).
    coefficients : str or Path, optional
        A fitted coefficients JSON (default: the bundled fit in ``models/calibration``).

    Examples
    --------
    >>> cm = load_cost_model(ep=32)
    >>> cm.ep, cm.kv_bytes_per_token, cm is load_cost_model(ep=32)
    (32, 70272, True)
    """
    ep = check_int("ep", ep, minimum=1, maximum=4096)
    micro_batches = check_int("micro_batches", micro_batches, minimum=1, maximum=8)
    if nodes is not None:
        nodes = check_int("nodes", nodes, minimum=1, maximum=4096)
    if gpus_per_node is not None:
        gpus_per_node = check_int("gpus_per_node", gpus_per_node, minimum=1, maximum=1024)
    return _cached_model(
        str(model), str(hardware), ep, nodes, gpus_per_node, micro_batches,
        None if coefficients is None else str(coefficients),
    )


@lru_cache(maxsize=64)
def _cached_model(model_name, hardware_name, ep, nodes, gpus_per_node, micro_batches, coef_path) -> CostModel:
    card = load_model_card(model_name)
    hw = load_hardware_card(hardware_name)
    coef = load_coefficients(coef_path)
    experts = card.routed_experts
    if experts % ep == 0:
        experts_per_rank = experts // ep
    elif (experts + card.redundant_experts) % ep == 0:
        experts_per_rank = (experts + card.redundant_experts) // ep
    else:
        raise InvalidInputError(
            "ep", ep,
            f"a divisor of routed_experts ({experts}) or of routed + redundant experts "
            f"({experts + card.redundant_experts})",
        )
    per_node = gpus_per_node or hw.gpus_per_node
    needed = math.ceil(ep / per_node)
    if nodes is None:
        nodes = needed
    elif nodes < needed:
        raise InvalidInputError("nodes", nodes, f">= {needed} (ep {ep} on {per_node} GPUs per node)")
    common = dict(
        ep=ep, gpus_per_node=per_node, nodes=nodes, nvlink_Bps=hw.nvlink_Bps, ib_Bps=hw.ib_Bps,
        routed_experts=experts, expert_groups=card.expert_groups,
        groups_per_token=card.groups_per_token, experts_per_token=card.experts_per_token,
    )
    cm = CostModel(
        model=card, hardware=hw, coefficients=coef, ep=ep, nodes=nodes, gpus_per_node=per_node,
        micro_batches=micro_batches, experts_per_rank=experts_per_rank,
        normal_path=alltoall_path(mode="normal", **common), ll_path=alltoall_path(mode="ll", **common),
        _prefill=None, _decode={},  # type: ignore[arg-type]
    )
    object.__setattr__(cm, "_prefill", _build_tables(cm, "prefill", 1))
    return cm


# -------------------------------------------------------------------- kernel evaluation
def _sum_kernels(kernels: list[Kernel], cm: CostModel, sm_fraction: float) -> np.ndarray:
    total = 0.0
    for kernel in kernels:
        total = total + kernel_us(kernel, cm.coefficients, cm.hardware, sm_fraction=sm_fraction)
    return np.asarray(total, dtype=np.float64)


def _sm_fraction(cm: CostModel, phase: str) -> float:
    return compute_sm_fraction(
        sms=cm.hardware.sms, comm_sms=cm.hardware.comm_sms, micro_batches=cm.micro_batches, phase=phase
    )


def _own_kernels(cm: CostModel, phase: str, tokens, q: int) -> list[Kernel]:
    """Rank-local kernels of an MoE layer, without the pair/KV-proportional attention part."""
    kernels = attention_kernels(cm.model, tokens, phase=phase, pairs=0.0, kv_tokens=0.0, query_tokens=q)
    moe = moe_kernels(cm.model, tokens, 0.0, experts_per_rank=cm.experts_per_rank, phase=phase)
    return kernels + [k for k in moe if not _is_routed(k)]


def _is_routed(kernel: Kernel) -> bool:
    return kernel.term == "expert_gemm" or kernel.name in (
        "clean_and_count", "fused_mapping", "expand_to_fused", "scale_transpose"
    )


def _routed_kernels(cm: CostModel, phase: str, mean_tokens) -> list[Kernel]:
    moe = moe_kernels(cm.model, 0.0, mean_tokens, experts_per_rank=cm.experts_per_rank, phase=phase)
    return [k for k in moe if _is_routed(k)]


def _dense_kernels(cm: CostModel, phase: str, tokens, q: int) -> list[Kernel]:
    attn = attention_kernels(cm.model, tokens, phase=phase, pairs=0.0, kv_tokens=0.0, query_tokens=q)
    return attn + dense_ffn_kernels(cm.model, tokens)


def _per_unit_attention(cm: CostModel, phase: str, q: int, sm_fraction: float) -> float:
    """us per causal pair (prefill) or per KV token read (decode) of core attention, one layer."""
    coef, hw, model = cm.coefficients, cm.hardware, cm.model
    heads, latent = model.attention_heads, model.kv_lora_rank + model.qk_rope_head_dim
    if phase == "prefill":
        flops = heads * 2.0 * (model.qk_nope_head_dim + model.qk_rope_head_dim + model.v_head_dim)
        return coef.attn_flop_scale * flops / (hw.bf16_peak_flops * sm_fraction) * 1e6
    flops = q * heads * 2.0 * (latent + model.kv_lora_rank)
    compute = coef.attn_flop_scale * flops / (hw.bf16_peak_flops * sm_fraction)
    memory = coef.mem_byte_scale * latent * model.activation_bytes / hw.hbm_bw_Bps
    return max(compute, memory) * 1e6


def _comm_us(cm: CostModel, phase: str, tokens) -> dict[str, np.ndarray]:
    if phase == "prefill":
        return normal_alltoall_us(tokens, model=cm.model, path=cm.normal_path, coef=cm.coefficients,
                                  overlapped=cm.micro_batches >= 2)
    return low_latency_alltoall_us(tokens, model=cm.model, path=cm.ll_path, coef=cm.coefficients)


def _build_tables(cm: CostModel, phase: str, q: int) -> _Tables:
    step, points = (
        (_PREFILL_GRID_STEP, _PREFILL_GRID_POINTS) if phase == "prefill" else (_DECODE_GRID_STEP, _DECODE_GRID_POINTS)
    )
    grid = np.arange(points, dtype=np.float64) * step
    dummy = np.maximum(grid, 1.0)  # idle ranks run a one-token dummy batch
    frac = _sm_fraction(cm, phase)
    own = _sum_kernels(_own_kernels(cm, phase, dummy, q), cm, frac)
    routed = _sum_kernels(_routed_kernels(cm, phase, dummy), cm, frac)
    dense = _sum_kernels(_dense_kernels(cm, phase, dummy, q), cm, frac)
    comm_zero = sum(_comm_us(cm, phase, 0.0).values())
    comm_slope = sum(_comm_us(cm, phase, 1.0).values()) - comm_zero
    head0 = float(_sum_kernels(head_kernels(cm.model, 1.0), cm, frac))
    head_slope = float(_sum_kernels(head_kernels(cm.model, 2.0), cm, frac)) - head0
    constants = np.zeros(_kernels.N_CONSTANTS)
    constants[_kernels.C_STEP] = step
    constants[_kernels.C_MB] = cm.micro_batches
    constants[_kernels.C_PAIR] = _per_unit_attention(cm, phase, q, frac)
    constants[_kernels.C_REQ] = 0.0
    constants[_kernels.C_COMM0] = float(comm_zero)
    constants[_kernels.C_COMM1] = float(comm_slope)
    # head rows: one per request in prefill, one per query token in decode; the 1-row head
    # is paid even by an idle instance (dummy batch)
    per_row = head_slope * (q if phase == "decode" else 1)
    constants[_kernels.C_HEAD0] = head0 - head_slope
    constants[_kernels.C_HEAD1] = per_row
    constants[_kernels.C_MOE_LAYERS] = cm.model.moe_layers
    constants[_kernels.C_DENSE_LAYERS] = cm.model.dense_layers
    for array in (own, routed, dense, constants):
        array.setflags(write=False)
    return _Tables(step, own, routed, dense, constants)


def _breakdown(cm: CostModel, phase: str, tokens: float, context: float, q: int) -> StepBreakdown:
    m = cm.micro_batches
    frac = _sm_fraction(cm, phase)
    if phase == "prefill":
        n_mb = max(tokens / m, 1.0)
        requests = tokens / context if context > 0 else 0.0
        pairs = requests * context * (context + 1) / 2.0
        attn = attention_kernels(cm.model, n_mb, phase="prefill", pairs=pairs / m)
        load, work, reqs = tokens, pairs, requests
    else:
        n_mb = max(tokens * q / m, 1.0)
        kv = tokens * context
        attn = attention_kernels(cm.model, n_mb, phase="decode", kv_tokens=kv / m, query_tokens=q)
        load, work, reqs = tokens * q, kv, tokens
    moe = moe_kernels(cm.model, n_mb, n_mb, experts_per_rank=cm.experts_per_rank, phase=phase)
    kernels_us = {k.name: float(kernel_us(k, cm.coefficients, cm.hardware, sm_fraction=frac)) for k in attn + moe}
    comm = {name: float(value) for name, value in _comm_us(cm, phase, load / m).items()}
    terms = dict.fromkeys(_TERMS, 0.0)
    for kernel in attn + moe:
        terms[kernel.term] += kernels_us[kernel.name]
    for name, value in comm.items():
        terms["combine" if name in ("combine", "cached_notify") else "dispatch"] += value
    kernels_us.update({f"comm:{k}": v for k, v in comm.items()})
    compute = sum(kernels_us[k.name] for k in attn + moe)
    comm_total = sum(comm.values())
    dense = _sum_kernels(attention_kernels(cm.model, n_mb, phase=phase, pairs=(work / m) if phase == "prefill" else 0.0,
                                           kv_tokens=(work / m) if phase == "decode" else 0.0, query_tokens=q)
                         + dense_ffn_kernels(cm.model, n_mb), cm, frac)
    moe_layer = float(overlapped_layer_us(compute, comm_total, micro_batches=m))
    fill = float(pipeline_fill_us(compute, comm_total, micro_batches=m))
    dense_layer = float(m * dense)
    rows = max(reqs * (q if phase == "decode" else 1), 1.0)
    head = float(_sum_kernels(head_kernels(cm.model, rows), cm, frac))
    step = cm.model.moe_layers * moe_layer + cm.model.dense_layers * dense_layer + fill + head
    return StepBreakdown(
        phase=phase, step_us=float(step), moe_layer_us=moe_layer, dense_layer_us=dense_layer,
        head_us=head, fill_us=fill, compute_us=float(compute), comm_us=float(comm_total),
        terms_us=terms, kernels_us=kernels_us,
    )


# -------------------------------------------------------------------- linearisations
def _exact_slopes(tables: _Tables, layers: int) -> tuple[float, float]:
    """Per-pair (or per-KV-token) and per-request costs summed over layers: exactly linear terms."""
    c = tables.constants
    return layers * c[_kernels.C_PAIR], layers * c[_kernels.C_REQ] + c[_kernels.C_HEAD1]


@lru_cache(maxsize=64)
def _prefill_coefficients(cm: CostModel) -> PrefillCoefficients:
    zeros = np.zeros(cm.ep)
    base = cm.prefill_step_us(zeros, zeros, zeros)
    beta, gamma = _exact_slopes(cm._prefill, cm.model.num_layers)
    # alpha: least squares through the origin of the remaining time on balanced loads
    rows, targets = [], []
    for n in (256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0):
        for ctx in (0.0, 1024.0, 4096.0, 16384.0):
            for length in (512.0, 4096.0):
                requests = max(1.0, n / length)
                pairs = n * ctx + n * (length + 1) / 2.0
                ones = np.ones(cm.ep)
                step = cm.prefill_step_us(n * ones, pairs * ones, requests * ones)
                rows.append(n)
                targets.append(step - base - beta * pairs - gamma * requests)
    alpha = _slope_through_origin(rows, targets)
    return PrefillCoefficients(float(base), alpha, float(beta), float(gamma))


@lru_cache(maxsize=64)
def _decode_coefficients(cm: CostModel, q: int) -> DecodeCoefficients:
    zeros = np.zeros(cm.ep)
    base = cm.decode_step_us(zeros, zeros, q)
    per_kv, _ = _exact_slopes(cm._decode_tables(q), cm.model.num_layers)
    rows, targets = [], []
    for b in (1.0, 8.0, 32.0, 64.0, 128.0, 256.0):
        for ctx in (0.0, 1024.0, 4096.0, 16384.0):
            ones = np.ones(cm.ep)
            rows.append(b)
            targets.append(cm.decode_step_us(b * ones, b * ctx * ones, q) - base - per_kv * b * ctx)
    return DecodeCoefficients(float(base), _slope_through_origin(rows, targets), float(per_kv))


def _slope_through_origin(x: list[float], y: list[float]) -> float:
    """Least squares ``y ~ a*x`` through the origin, ``a >= 0`` (large loads weigh most)."""
    x_arr, y_arr = np.asarray(x), np.asarray(y)
    return float(max(0.0, (x_arr @ y_arr) / (x_arr @ x_arr)))
