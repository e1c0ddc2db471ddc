"""EP dispatch (FP8) and combine (BF16) times over the bottleneck link of the EP group.

Bytes per rank are ``tokens x bytes_per_token`` times the expected fan-out of the routing; the
per-byte time comes from :func:`sbsopt.costmodel.topology.alltoall_path` (the graph), divided by
the fitted link efficiency.  Normal kernels (prefill) add the layout and the two handshake
kernels; low-latency kernels (decode) add a fixed per-call latency.
"""

from __future__ import annotations

import numpy as np

from sbsopt.costmodel.cards import ModelCard
from sbsopt.costmodel.coefficients import KernelCoefficients
from sbsopt.costmodel.topology import AllToAllPath

__all__ = ["normal_alltoall_us", "low_latency_alltoall_us"]


def normal_alltoall_us(
    tokens, *, model: ModelCard, path: AllToAllPath, coef: KernelCoefficients, overlapped: bool
) -> dict[str, np.ndarray]:
    """DeepEP normal-kernel times (us) for ``tokens`` tokens sent per rank, per kernel.

    ``overlapped`` applies the fitted slowdown of running beside the other micro-batch's
    compute (shared HBM, 24 SMs) and the handshake waits of that schedule.

    Examples
    --------
    >>> from sbsopt.costmodel.cards import load_model_card
    >>> from sbsopt.costmodel.topology import AllToAllPath
    >>> path = AllToAllPath(1e-11, "ib", 50e9, 1.0)
    >>> t = normal_alltoall_us(4096, model=load_model_card(), path=path,
    ...                        coef=KernelCoefficients(), overlapped=False)
    >>> sorted(t)
    ['cached_notify', 'combine', 'dispatch', 'dispatch_layout', 'notify_dispatch']
    """
    tokens = np.asarray(tokens, dtype=np.float64)
    slowdown = coef.comm_overlap_scale if overlapped else 1.0
    # the handshakes cost one call latency; under overlap they also wait for the other
    # micro-batch's compute, which scales with the tokens
    wait_ns = coef.handshake_ns_per_token if overlapped else 0.0
    handshake = coef.ll_call_latency_us + wait_ns * tokens * 1e-3
    per_byte_us = path.seconds_per_byte * 1e6 * slowdown
    return {
        "dispatch_layout": coef.layout_ns_per_token * tokens * 1e-3 + coef.ll_call_latency_us,
        "notify_dispatch": handshake,
        "dispatch": tokens * model.dispatch_bytes_per_token * per_byte_us / coef.dispatch_link_eff,
        "cached_notify": handshake,
        "combine": tokens * model.combine_bytes_per_token * per_byte_us / coef.combine_link_eff,
    }


def low_latency_alltoall_us(
    tokens, *, model: ModelCard, path: AllToAllPath, coef: KernelCoefficients
) -> dict[str, np.ndarray]:
    """DeepEP low-latency dispatch and combine (us) for ``tokens`` tokens per rank.

    ``path`` must come from ``alltoall_path(..., mode="ll")`` (one copy per token-expert
    pair); the kernels run without SMs (IBGDA hooks), so no overlap slowdown applies.

    Examples
    --------
    >>> from sbsopt.costmodel.cards import load_model_card
    >>> from sbsopt.costmodel.topology import AllToAllPath
    >>> path = AllToAllPath(1e-10, "ib", 50e9, 1.0)
    >>> t = low_latency_alltoall_us([0, 128], model=load_model_card(), path=path,
    ...                             coef=KernelCoefficients())
    >>> bool(t["dispatch"][1] > t["dispatch"][0] > 0)
    True
    """
    tokens = np.asarray(tokens, dtype=np.float64)
    per_byte_us = path.seconds_per_byte * 1e6
    return {
        "dispatch": tokens * model.dispatch_bytes_per_token * per_byte_us / coef.dispatch_link_eff
        + coef.ll_call_latency_us,
        "combine": tokens * model.combine_bytes_per_token * per_byte_us / coef.combine_link_eff
        + coef.ll_call_latency_us,
    }
