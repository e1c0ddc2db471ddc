"""Lock-step step time of one DP+EP instance: the public cost model.

A forward pass is ``dense_layers`` dense layers + ``moe_layers`` MoE layers + the LM head.
Per MoE layer and micro-batch (``n_j / m`` tokens on rank ``j``):

* compute stages (:data:`sbsopt.costmodel.layers.STAGES`), each the max over ranks because an
  all-to-all separates them: attention ``A0``/``A1`` (``A1`` carries ``beta*pairs_j/m``), the
  shared expert ``S`` and the routed experts ``M``, whose rows are the busiest rank's expected
  rows under top-k routing (:func:`sbsopt.costmodel.layers.expected_max_rows`);
* transfers ``Xd``, ``Xc`` of the rank that sends most (DeepEP normal kernels in prefill, the
  network part of the low-latency kernels in decode; their send/receive halves are kernels of
  the compute stages);
* stage-level overlap (:mod:`sbsopt.costmodel.overlap`): a transfer hides only behind the
  stage it runs beside; the last combine of the forward is exposed once.

Every kernel also pays the inter-kernel gap of its stream (``kernel_gap_us``).  Decode with
``query_tokens >= 2`` is DeepSeek's multi-token prediction: the MTP module adds one MoE layer,
its input norms and ``eh_proj``, and the head, and a step yields ``1 + mtp_acceptance``
tokens per request.

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
    STAGES,
    Kernel,
    attention_kernels,
    dense_ffn_kernels,
    head_kernels,
    kernel_us,
    max_normal_z,
    moe_kernels,
)
from sbsopt.costmodel.overlap import compute_sm_fraction, pipeline_fill_us, stage_layer_us
from sbsopt.costmodel.topology import AllToAllPath, alltoall_path
from sbsopt.errors import InvalidInputError

__all__ = [
    "DEFAULT_MTP_ACCEPTANCE",
    "mtp_query_tokens",
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

#: Acceptance rate of the second (MTP-drafted) token: DeepSeek-V3 Technical Report (arXiv
#: 2412.19437, section 5.4.3) measures 85% to 90% across generation topics; the low end.
DEFAULT_MTP_ACCEPTANCE = 0.85


def mtp_query_tokens(mtp_acceptance: float) -> int:
    """Query tokens per decode request: 2 with MTP (``mtp_acceptance > 0``), else 1.

    Parameters
    ----------
    mtp_acceptance : float
        Acceptance rate of the drafted token, in ``[0, 1]``; 0 = no MTP.

    Returns
    -------
    int
        1 or 2.

    Raises
    ------
    InvalidInputError
        If the rate is outside ``[0, 1]``.

    Examples
    --------
    >>> mtp_query_tokens(0.0), mtp_query_tokens(DEFAULT_MTP_ACCEPTANCE)
    (1, 2)
    """
    rate = check_array("mtp_acceptance", [mtp_acceptance])[0]
    if rate > 1.0:
        raise InvalidInputError("mtp_acceptance", mtp_acceptance, "a rate in [0, 1] (0 = no MTP)")
    return 2 if rate > 0 else 1


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
    the same per kernel; ``stages_us`` the compute stages and transfers of one micro-batch;
    ``exposed_comm_us`` what the overlap leaves of the transfers per MoE layer and micro-batch;
    layer and step times include overlap and all micro-batches.  ``tokens_per_step`` counts the
    tokens one step yields per request (decode: ``1 + mtp_acceptance``; prefill: 0).
    """

    phase: str
    step_us: float
    moe_layer_us: float
    dense_layer_us: float
    head_us: float
    fill_us: float
    compute_us: float
    comm_us: float
    exposed_comm_us: float
    terms_us: dict[str, float]
    kernels_us: dict[str, float]
    stages_us: dict[str, float]
    tokens_per_step: float


@dataclass(frozen=True, eq=False)
class _Tables:
    step: float
    a0: np.ndarray
    a1: np.ndarray
    shared: np.ndarray
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
    expert_imbalance : float
        Busiest rank's expected share of routed rows over the mean from expert popularity
        (1 = EPLB-balanced; the binomial spread of top-k routing is always added).
    """

    model: ModelCard
    hardware: HardwareCard
    coefficients: KernelCoefficients
    ep: int
    nodes: int
    gpus_per_node: int
    micro_batches: int
    experts_per_rank: int
    expert_imbalance: float
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

        Parameters
        ----------
        new_tokens, attn_pairs : array_like of float, shape (ep,)
            Per-rank uncached tokens and causal token pairs.
        requests : array_like of float, shape (ep,), optional
            Per-rank request count (LM-head rows).

        Returns
        -------
        float
            Microseconds of the whole forward (every layer, lock-step over the ranks).

        Raises
        ------
        InvalidInputError
            If an array is not finite and non-negative or its last axis is not ``ep`` long.

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
        """Vectorized :meth:`prefill_step_us` over ``S`` load vectors.

        Parameters
        ----------
        new_tokens, attn_pairs : array_like of float, shape (S, ep)
            Per-rank loads, one row per step.
        requests : array_like of float, shape (S, ep), optional
            Per-rank request counts (default: one on every busy rank).

        Returns
        -------
        numpy.ndarray, shape (S,)
            Microseconds per step.
        """
        load, pairs, reqs = self._prefill_inputs(new_tokens, attn_pairs, requests, ndim=2)
        return self._run_prefill(load, pairs, reqs)

    def decode_step_us(self, batch, kv_tokens, query_tokens: int = 1) -> float:
        """Whole-forward decode time (us): ``batch[j]`` requests reading ``kv_tokens[j]`` KV tokens.

        Parameters
        ----------
        batch : array_like of float, shape (ep,)
            Requests per rank.
        kv_tokens : array_like of float, shape (ep,)
            KV tokens the rank's requests read (their summed contexts).
        query_tokens : int, default 1
            Query tokens per request (1..64; more than 1 with multi-token prediction).

        Returns
        -------
        float
            Microseconds of the whole forward.

        Examples
        --------
        >>> cm = load_cost_model(ep=8, nodes=1)
        >>> cm.decode_step_us([64] * 8, [64 * 4096] * 8) > cm.decode_step_us([64] * 8, [64 * 1024] * 8)
        True
        """
        batch, kv, q = self._decode_inputs(batch, kv_tokens, query_tokens, ndim=1)
        return float(self._run_decode(batch[None], kv[None], q)[0])

    def decode_step_us_many(self, batch, kv_tokens, query_tokens: int = 1) -> np.ndarray:
        """Vectorized :meth:`decode_step_us` over ``S`` load vectors.

        Parameters
        ----------
        batch, kv_tokens : array_like of float, shape (S, ep)
            Per-rank loads, one row per step.
        query_tokens : int, default 1
            Query tokens per request.

        Returns
        -------
        numpy.ndarray, shape (S,)
            Microseconds per step.
        """
        batch, kv, q = self._decode_inputs(batch, kv_tokens, query_tokens, ndim=2)
        return self._run_decode(batch, kv, q)

    def prefill_coefficients(self) -> PrefillCoefficients:
        """Linearisation for the window IPs (see :class:`PrefillCoefficients`).

        ``base_us`` is the step of an all-idle instance (dummy batches + all-to-all floor);
        ``beta`` (core attention per causal pair) and ``gamma`` (LM-head row per request) are
        the model's exact linear terms summed over layers; ``alpha`` is the least-squares
        per-token slope of ``step - base - beta*pairs - gamma*requests`` over balanced loads of
        256..32768 tokens per rank and 0..16K-token cached contexts.

        Returns
        -------
        PrefillCoefficients
            The four coefficients, in microseconds.

        Examples
        --------
        >>> c = load_cost_model(ep=32).prefill_coefficients()
        >>> c.base_us > 0 and c.alpha_us_per_token > 0
        True
        """
        return _prefill_coefficients(self)

    def decode_coefficients(self, query_tokens: int = 1, *, mtp_acceptance: float | None = None
                            ) -> DecodeCoefficients:
        """Linearisation of the decode step: exact per-KV-token FlashMLA cost, fitted per request.

        ``us_per_kv_token`` is the core-attention cost of one KV token summed over every layer
        that reads the KV cache (with MTP, ``query_tokens >= 2``, the MTP module's layer too);
        ``us_per_request`` is the least-squares slope of the remainder per request over
        balanced loads of 1..256 requests per rank and 0..16K-token contexts.

        Parameters
        ----------
        query_tokens : int, default 1
            Query tokens per request.
        mtp_acceptance : float, optional
            MTP acceptance rate; when given it sets ``query_tokens`` by
            :func:`mtp_query_tokens` (2 and the MTP layer when positive, 1 at 0).

        Returns
        -------
        DecodeCoefficients
            The three coefficients, in microseconds (of one step, which yields
            ``1 + mtp_acceptance`` tokens per request).

        Examples
        --------
        >>> cm = load_cost_model(ep=8, nodes=1)
        >>> plain, mtp = cm.decode_coefficients(), cm.decode_coefficients(mtp_acceptance=0.85)
        >>> mtp == cm.decode_coefficients(query_tokens=2), mtp.base_us > plain.base_us
        (True, True)
        """
        if mtp_acceptance is not None:
            query_tokens = mtp_query_tokens(mtp_acceptance)
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

        Parameters
        ----------
        tokens : float
            KV tokens of the request (non-negative).

        Returns
        -------
        float
            Microseconds, including the call latency.

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
                  query_tokens: int = 1, cached_tokens: float = 0.0,
                  mtp_acceptance: float | None = None) -> StepBreakdown:
        """Exact per-kernel breakdown for a balanced load (every rank alike), as ``sbsopt cost`` prints.

        Prefill: ``tokens_per_rank`` new tokens in requests of ``context`` new tokens after
        ``cached_tokens`` cached prefix tokens each.  Decode: ``tokens_per_rank`` requests, each
        with ``context`` KV tokens and ``query_tokens`` query tokens; ``mtp_acceptance`` (when
        given) sets ``query_tokens`` by :func:`mtp_query_tokens` and the tokens per step.

        Parameters
        ----------
        phase : {"prefill", "decode"}
            Which step.
        tokens_per_rank : float
            New tokens (prefill) or requests (decode) on every rank.
        context : float
            Prompt length (prefill) or KV tokens per request (decode).
        query_tokens : int, default 1
            Decode only: query tokens per request.
        cached_tokens : float, default 0.0
            Prefill only: cached prefix tokens per request (attention reads them, nothing else).
        mtp_acceptance : float, optional
            Decode only: MTP acceptance rate (0 = no MTP); overrides ``query_tokens``.

        Returns
        -------
        StepBreakdown
            Step time, per-term and per-kernel microseconds.

        Raises
        ------
        InvalidInputError
            If ``phase`` is unknown or a number is negative or not finite.
        """
        if phase not in ("prefill", "decode"):
            raise InvalidInputError("phase", phase, "'prefill' or 'decode'")
        tokens_per_rank = check_array("tokens_per_rank", [tokens_per_rank])[0]
        context = check_array("context", [context])[0]
        q = check_int("query_tokens", query_tokens, minimum=1)
        cached = float(check_array("cached_tokens", [cached_tokens])[0])
        accepted = 0.0
        if mtp_acceptance is not None:
            q = mtp_query_tokens(mtp_acceptance)
            accepted = float(mtp_acceptance)
        return _breakdown(self, phase, float(tokens_per_rank), float(context), q, cached, accepted)

    def decode_tokens_per_step(self, mtp_acceptance: float) -> float:
        """Tokens one decode step yields per request: ``1 + mtp_acceptance`` (1 without MTP).

        Parameters
        ----------
        mtp_acceptance : float
            Acceptance rate of the drafted token in ``[0, 1]``.

        Returns
        -------
        float
            Tokens per request per step.

        Examples
        --------
        >>> load_cost_model(ep=8, nodes=1).decode_tokens_per_step(0.85)
        1.85
        """
        mtp_query_tokens(mtp_acceptance)
        return 1.0 + float(mtp_acceptance)

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
        return _kernels.step_many(load, pairs, reqs, t.a0, t.a1, t.shared, t.routed, t.dense, t.constants)

    def _run_decode(self, batch, kv, q: int) -> np.ndarray:
        t = self._decode_tables(q)
        load = batch * q
        return _kernels.step_many(load, kv, batch, t.a0, t.a1, t.shared, t.routed, t.dense, t.constants)

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
    expert_imbalance: float = 1.0,
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
    expert_imbalance : float, default 1.0
        Busiest rank's routed rows over the mean from expert popularity (1 = EPLB on; a value
        such as 1.3 models imbalance without EPLB).  The binomial spread is always added.

    Returns
    -------
    CostModel
        The model, shared by every call with the same arguments (it is immutable).

    Raises
    ------
    InvalidInputError
        If ``ep`` divides neither the routed nor the routed + redundant experts, or a count
        is out of range.
    ModelCardError
        If a card or the coefficients file is missing or invalid.

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
    imbalance = float(check_array("expert_imbalance", [expert_imbalance])[0])
    if imbalance < 1.0:
        raise InvalidInputError("expert_imbalance", expert_imbalance, ">= 1 (busiest rank over the mean)")
    return _cached_model(
        str(model), str(hardware), ep, nodes, gpus_per_node, micro_batches,
        None if coefficients is None else str(coefficients), imbalance,
    )


@lru_cache(maxsize=64)
def _cached_model(model_name, hardware_name, ep, nodes, gpus_per_node, micro_batches, coef_path,
                  imbalance: float = 1.0) -> CostModel:
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
        micro_batches=micro_batches, experts_per_rank=experts_per_rank, expert_imbalance=imbalance,
        normal_path=alltoall_path(mode="normal", **common), ll_path=alltoall_path(mode="ll", **common),
        _prefill=None, _decode={},  # type: ignore[arg-type]
    )
    object.__setattr__(cm, "_prefill", _build_tables(cm, "prefill", 1))
    return cm


# -------------------------------------------------------------------- kernel evaluation
def _sum_kernels(kernels: list[Kernel], cm: CostModel, sm_fraction: float) -> np.ndarray:
    """Summed kernel times plus the stream's gap after every kernel."""
    total: float | np.ndarray = 0.0
    for kernel in kernels:
        total = total + kernel_us(kernel, cm.coefficients, cm.hardware, sm_fraction=sm_fraction)
    return np.asarray(total, dtype=np.float64) + len(kernels) * cm.coefficients.kernel_gap_us


def _sm_fraction(cm: CostModel, phase: str) -> float:
    return compute_sm_fraction(
        sms=cm.hardware.sms, comm_sms=cm.hardware.comm_sms, micro_batches=cm.micro_batches, phase=phase
    )


def _stage_kernels(cm: CostModel, phase: str, tokens, routed_tokens, q: int, *, work=0.0) -> dict[str, list[Kernel]]:
    """MoE-layer kernels by overlap stage; ``work`` is the pairs (prefill) or KV tokens (decode)."""
    attn = attention_kernels(cm.model, tokens, phase=phase, pairs=work if phase == "prefill" else 0.0,
                             kv_tokens=work if phase == "decode" else 0.0, query_tokens=q, sms=cm.hardware.sms)
    moe = moe_kernels(cm.model, tokens, routed_tokens, experts_per_rank=cm.experts_per_rank, phase=phase)
    stages: dict[str, list[Kernel]] = {name: [] for name in STAGES}
    for kernel in attn + moe:
        stages[kernel.stage].append(kernel)
    return stages


def _dense_kernels(cm: CostModel, phase: str, tokens, q: int) -> list[Kernel]:
    attn = attention_kernels(cm.model, tokens, phase=phase, pairs=0.0, kv_tokens=0.0, query_tokens=q,
                             sms=cm.hardware.sms)
    return attn + dense_ffn_kernels(cm.model, tokens)


def _per_unit_attention(cm: CostModel, phase: str, q: int, sm_fraction: float) -> float:
    """us per causal pair (prefill) or per KV token read (decode) of core attention, one layer."""
    coef, hw, model = cm.coefficients, cm.hardware, cm.model
    heads, latent = model.attention_heads, model.kv_lora_rank + model.qk_rope_head_dim
    if phase == "prefill":
        flops = heads * 2.0 * (model.qk_nope_head_dim + model.qk_rope_head_dim + model.v_head_dim)
        return coef.attn_flop_scale * flops / (hw.bf16_peak_flops * sm_fraction) * 1e6
    flops = q * heads * 2.0 * (latent + model.kv_lora_rank)
    compute = coef.mla_flop_scale * flops / (hw.bf16_peak_flops * sm_fraction)
    memory = coef.mla_byte_scale * latent * model.activation_bytes / hw.hbm_bw_Bps
    return max(compute, memory) * 1e6


def _comm_us(cm: CostModel, phase: str, tokens) -> dict[str, np.ndarray]:
    if phase == "prefill":
        return normal_alltoall_us(tokens, model=cm.model, path=cm.normal_path, coef=cm.coefficients)
    return low_latency_alltoall_us(tokens, model=cm.model, path=cm.ll_path, coef=cm.coefficients)


def _transfers(comm: dict[str, np.ndarray] | dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(dispatch, combine) of the comm stream: layout and notify sit before their transfer."""
    dispatch = sum((v for k, v in comm.items() if k != "combine" and k != "cached_notify"), np.float64(0.0))
    combine = comm["combine"] + comm.get("cached_notify", 0.0)
    return np.asarray(dispatch, dtype=np.float64), np.asarray(combine, dtype=np.float64)


def _spread(cm: CostModel) -> float:
    """``z * sqrt((1 - 1/ep) / top_k)``: the binomial spread of the busiest rank, in tokens."""
    ep, topk = cm.ep, cm.model.experts_per_token
    return max_normal_z(ep) * math.sqrt((1.0 - 1.0 / ep) / topk) if ep > 1 else 0.0


def _build_tables(cm: CostModel, phase: str, q: int) -> _Tables:
    step, points = (
        (_PREFILL_GRID_STEP, _PREFILL_GRID_POINTS) if phase == "prefill" else (_DECODE_GRID_STEP, _DECODE_GRID_POINTS)
    )
    grid = np.arange(points, dtype=np.float64) * step
    dummy = np.maximum(grid, 1.0)  # idle ranks run a one-token dummy batch
    frac = _sm_fraction(cm, phase)
    own = _stage_kernels(cm, phase, dummy, 0.0, q)
    routed = _sum_kernels(_stage_kernels(cm, phase, 0.0, dummy, q)["routed"], cm, frac)
    a0, a1, shared = (_sum_kernels(own[name], cm, frac) for name in ("attn0", "attn1", "shared"))
    dense = _sum_kernels(_dense_kernels(cm, phase, dummy, q), cm, frac)
    xd0, xc0 = _transfers(_comm_us(cm, phase, 0.0))
    xd1, xc1 = _transfers(_comm_us(cm, phase, 1.0))
    mtp = phase == "decode" and q >= 2
    head0 = float(_sum_kernels(head_kernels(cm.model, 1.0, mtp=mtp), cm, frac))
    head_slope = float(_sum_kernels(head_kernels(cm.model, 2.0, mtp=mtp), cm, frac)) - head0
    constants = np.zeros(_kernels.N_CONSTANTS)
    constants[_kernels.C_STEP] = step
    constants[_kernels.C_MB] = cm.micro_batches
    constants[_kernels.C_PAIR] = _per_unit_attention(cm, phase, q, frac)
    constants[_kernels.C_REQ] = 0.0
    constants[_kernels.C_XD0], constants[_kernels.C_XD1] = float(xd0), float(xd1 - xd0)
    constants[_kernels.C_XC0], constants[_kernels.C_XC1] = float(xc0), float(xc1 - xc0)
    # head rows: one per request in prefill, one per query token in decode; the 1-row head
    # is paid even by an idle instance (dummy batch); with MTP it includes the MTP module's
    # norms, ``eh_proj`` and head
    constants[_kernels.C_HEAD0] = head0 - head_slope
    constants[_kernels.C_HEAD1] = head_slope * (q if phase == "decode" else 1)
    constants[_kernels.C_MOE_LAYERS] = cm.model.moe_layers + (1 if mtp else 0)
    constants[_kernels.C_DENSE_LAYERS] = cm.model.dense_layers
    constants[_kernels.C_DECODE] = 1.0 if phase == "decode" else 0.0
    constants[_kernels.C_IMBALANCE] = cm.expert_imbalance
    constants[_kernels.C_SPREAD] = _spread(cm)
    for array in (a0, a1, shared, routed, dense, constants):
        array.setflags(write=False)
    return _Tables(step, a0, a1, shared, routed, dense, constants)


def _breakdown(cm: CostModel, phase: str, tokens: float, context: float, q: int, cached: float,
               accepted: float) -> StepBreakdown:
    m = cm.micro_batches
    frac = _sm_fraction(cm, phase)
    if phase == "prefill":
        n_mb = max(tokens / m, 1.0)
        requests = tokens / context if context > 0 else 0.0
        pairs = requests * (context * cached + context * (context + 1) / 2.0)
        load, work, reqs = tokens, pairs, requests
    else:
        n_mb = max(tokens * q / m, 1.0)
        load, work, reqs = tokens * q, tokens * context, tokens
    mean = load / m
    busiest = float(cm.expert_imbalance * mean + _spread(cm) * math.sqrt(mean))
    stages = _stage_kernels(cm, phase, n_mb, max(busiest, 1.0), q, work=work / m)
    kernels = [k for name in STAGES for k in stages[name]]
    kernels_us = {k.name: float(kernel_us(k, cm.coefficients, cm.hardware, sm_fraction=frac)) for k in kernels}
    stage_us = {name: float(_sum_kernels(stages[name], cm, frac)) for name in STAGES}
    comm = {name: float(value) for name, value in _comm_us(cm, phase, load / m).items()}
    xd, xc = (float(x) for x in _transfers(comm))
    terms = dict.fromkeys(_TERMS, 0.0)
    for kernel in kernels:
        terms[kernel.term] += kernels_us[kernel.name]
    for name, value in comm.items():
        terms["combine" if name in ("combine", "cached_notify") else "dispatch"] += value
    kernels_us.update({f"comm:{k}": v for k, v in comm.items()})
    compute = sum(stage_us.values())
    moe_layer = float(stage_layer_us(stage_us["attn0"], stage_us["attn1"], stage_us["shared"], stage_us["routed"],
                                     xd, xc, micro_batches=m, phase=phase))
    fill = float(pipeline_fill_us(xc, micro_batches=m))
    dense = _sum_kernels(attention_kernels(cm.model, n_mb, phase=phase, pairs=(work / m) if phase == "prefill" else 0.0,
                                           kv_tokens=(work / m) if phase == "decode" else 0.0, query_tokens=q,
                                           sms=cm.hardware.sms)
                         + dense_ffn_kernels(cm.model, n_mb), cm, frac)
    dense_layer = float(m * dense)
    mtp = phase == "decode" and q >= 2
    rows = max(reqs * (q if phase == "decode" else 1), 1.0)
    head = float(_sum_kernels(head_kernels(cm.model, rows, mtp=mtp), cm, frac))
    layers = cm.model.moe_layers + (1 if mtp else 0)
    step = layers * moe_layer + cm.model.dense_layers * dense_layer + fill + head
    stage_us.update({"dispatch": xd, "combine": xc})
    return StepBreakdown(
        phase=phase, step_us=float(step), moe_layer_us=moe_layer, dense_layer_us=dense_layer,
        head_us=head, fill_us=fill, compute_us=float(compute), comm_us=xd + xc,
        exposed_comm_us=max(0.0, moe_layer / m - compute), terms_us=terms, kernels_us=kernels_us,
        stages_us=stage_us, tokens_per_step=(1.0 + accepted) if phase == "decode" else 0.0,
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
    # the MTP module is one more MoE layer reading its own KV cache (same per-token bytes)
    per_kv, _ = _exact_slopes(cm._decode_tables(q), cm.model.num_layers + (1 if q >= 2 else 0))
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
