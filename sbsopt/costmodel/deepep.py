"""DeepEP's benchmark numbers, converted to what the cost model predicts.

DeepEP's tests do not route like DeepSeek-V3 and do not count bytes like a link meter:

* the internode normal-kernel test routes with one group per *node* and
  ``min(nodes, 4)`` groups per token (not V3's 8 groups / top-4), over
  ``256 // ep * ep`` experts; the intranode test routes plain top-8;
* its printed "RDMA GB/s" counts one token per (token, destination node) pair over *all*
  nodes, the sender's own included; the intranode "NVL GB/s" counts the bytes a rank receives
  from every rank, itself included;
* the low-latency test routes plain top-8 over 288 experts, 128 tokens per rank, and its
  latencies include the send and receive halves (FP8 cast/issue, unpack, weighted reduce).

So the reported bandwidth is ``pairs_per_token * efficiency / seconds_per_byte`` of the
test's own routing on the graph (:func:`sbsopt.costmodel.topology.alltoall_path`), and the
link efficiency fitted from it is a property of the link, not of the counting.

References
----------
DeepEP tests ``tests/test_internode.py``, ``tests/test_intranode.py``,
``tests/test_low_latency.py`` (https://github.com/deepseek-ai/DeepEP).
"""

from __future__ import annotations

import math

import numpy as np

from sbsopt.costmodel.alltoall import low_latency_alltoall_us
from sbsopt.costmodel.cards import HardwareCard, ModelCard
from sbsopt.costmodel.coefficients import KernelCoefficients
from sbsopt.costmodel.layers import Kernel, kernel_us
from sbsopt.costmodel.topology import AllToAllPath, alltoall_path, hit_probability

__all__ = ["normal_test_path", "normal_reported_GBps", "implied_link_eff", "low_latency_test_us", "LL_TEST_EXPERTS", "LL_TEST_TOKENS"]

LL_TEST_EXPERTS = 288
LL_TEST_TOKENS = 128


def _placement(ep: int, hardware: HardwareCard) -> tuple[int, int]:
    nodes = max(1, math.ceil(ep / hardware.gpus_per_node))
    return nodes, math.ceil(ep / nodes)


def normal_test_path(ep: int, *, model: ModelCard, hardware: HardwareCard) -> tuple[AllToAllPath, float]:
    """Bottleneck of DeepEP's normal-kernel test at ``ep`` ranks, and its counted pairs per token.

    Parameters
    ----------
    ep : int
        Ranks of the test (8 per node).
    model, hardware : ModelCard, HardwareCard
        Top-k and link bandwidths.

    Returns
    -------
    (AllToAllPath, float)
        The graph's bottleneck for the test's routing, and the (token, node) pairs per token
        DeepEP counts (intranode: bytes received per rank per token sent per rank).

    Examples
    --------
    >>> from sbsopt.costmodel.cards import load_hardware_card, load_model_card
    >>> path, pairs = normal_test_path(32, model=load_model_card(), hardware=load_hardware_card())
    >>> path.bottleneck, round(pairs, 2)
    ('ib', 3.61)
    """
    nodes, per_node = _placement(ep, hardware)
    experts = (256 // ep) * ep
    groups = nodes if nodes > 1 else 1
    route = dict(routed_experts=experts, expert_groups=groups, groups_per_token=min(groups, 4),
                 experts_per_token=model.experts_per_token)
    path = alltoall_path(ep=ep, nodes=nodes, gpus_per_node=hardware.gpus_per_node, nvlink_Bps=hardware.nvlink_Bps,
                         ib_Bps=hardware.ib_Bps, mode="normal", **route)
    if nodes == 1:
        width = experts / ep
        pairs = ep * hit_probability(((0.0, width),), **route)
    else:
        node_width = experts / nodes
        pairs = sum(hit_probability(((k * node_width, (k + 1) * node_width),), **route) for k in range(nodes))
    return path, float(pairs)


def normal_reported_GBps(ep: int, kind: str, coef: KernelCoefficients, *, model: ModelCard,
                         hardware: HardwareCard) -> float:
    """What DeepEP's normal-kernel test would print (GB/s) under the model at ``ep`` ranks.

    Parameters
    ----------
    ep : int
        Ranks of the test.
    kind : {"dispatch", "combine"}
        Which kernel (its link efficiency).
    coef : KernelCoefficients
        Link efficiencies.
    model, hardware : ModelCard, HardwareCard
        Routing and links.

    Returns
    -------
    float
        GB/s as DeepEP counts it.
    """
    path, pairs = normal_test_path(ep, model=model, hardware=hardware)
    eff = coef.dispatch_link_eff if kind == "dispatch" else coef.combine_link_eff
    return pairs * eff / path.seconds_per_byte / 1e9


def implied_link_eff(ep: int, measured_GBps: float, *, model: ModelCard, hardware: HardwareCard) -> float:
    """Link efficiency that makes :func:`normal_reported_GBps` equal ``measured_GBps``.

    Parameters
    ----------
    ep : int
        Ranks of the test.
    measured_GBps : float
        DeepEP's printed bandwidth.
    model, hardware : ModelCard, HardwareCard
        Routing and links.

    Returns
    -------
    float
        Achieved / modelled transfer rate on the bottleneck link.
    """
    path, pairs = normal_test_path(ep, model=model, hardware=hardware)
    return measured_GBps * 1e9 * path.seconds_per_byte / pairs


def low_latency_test_us(ep: int, coef: KernelCoefficients, *, model: ModelCard, hardware: HardwareCard,
                        mode: str = "ll") -> dict[str, float]:
    """DeepEP low-latency test latencies (us): send half + network + receive half, per kernel.

    Parameters
    ----------
    ep : int
        Ranks of the test.
    coef : KernelCoefficients
        Memory-kernel and link coefficients.
    model, hardware : ModelCard, HardwareCard
        Hidden size, top-k and links.
    mode : {"ll", "ll_rdma"}
        NVLink-assisted (2025-06 DeepEP) or pure-RDMA kernels.

    Returns
    -------
    dict of str to float
        ``dispatch`` and ``combine`` microseconds.
    """
    nodes, per_node = _placement(ep, hardware)
    path = alltoall_path(ep=ep, nodes=nodes, gpus_per_node=hardware.gpus_per_node, nvlink_Bps=hardware.nvlink_Bps,
                         ib_Bps=hardware.ib_Bps, routed_experts=LL_TEST_EXPERTS, expert_groups=1, groups_per_token=1,
                         experts_per_token=model.experts_per_token, mode=mode)
    net = low_latency_alltoall_us(float(LL_TEST_TOKENS), model=model, path=path, coef=coef)
    h, act, topk = model.hidden_size, model.activation_bytes, model.experts_per_token
    tokens, rows = float(LL_TEST_TOKENS), float(LL_TEST_TOKENS * topk)
    fp8 = model.dispatch_bytes_per_token
    halves = {
        "dispatch": [Kernel("send", "dispatch", "mem", bytes=tokens * (h * act + fp8)),
                     Kernel("recv", "dispatch", "mem", bytes=rows * fp8 * 2)],
        "combine": [Kernel("send", "combine", "mem", bytes=rows * h * act * 2),
                    Kernel("recv", "combine", "mem", bytes=tokens * (topk + 1) * h * act)],
    }
    out = {}
    for kind, kernels in halves.items():
        hooks = sum(float(kernel_us(k, coef, hardware, sm_fraction=1.0)) for k in kernels)
        out[kind] = float(np.asarray(net[kind])) + hooks
    return out
