"""EP dispatch (FP8) and combine (BF16) times over the bottleneck link of the EP group.

Bytes per rank are ``tokens x bytes_per_token`` times the expected fan-out of the routing; the
per-byte time comes from :func:`sbsopt.costmodel.topology.alltoall_path` (the graph), divided by
the fitted link efficiency.  Normal kernels (prefill) add the layout and the two notify
(synchronization) kernels; low-latency kernels (decode) add a fixed per-call latency.
"""

from __future__ import annotations

import numpy as np

from sbsopt.costmodel.cards import ModelCard
from sbsopt.costmodel.coefficients import KernelCoefficients
from sbsopt.costmodel.topology import AllToAllPath

__all__ = ["normal_alltoall_us", "low_latency_alltoall_us"]


def normal_alltoall_us(
    tokens, *, model: ModelCard, path: AllToAllPath, coef: KernelCoefficients
) -> dict[str, np.ndarray]:
    """DeepEP normal-kernel times (us) for ``tokens`` tokens sent per rank, per kernel.

    The dispatch and combine move their bytes over the bottleneck link at the fitted link
    efficiency; the layout kernel is per token; the two notify kernels are synchronization (one
    call latency each), not bandwidth.  Running beside the other micro-batch's compute changes
    nothing here: what a transfer cannot hide is priced by :mod:`sbsopt.costmodel.overlap`.

    Parameters
    ----------
    tokens : float or array_like
        Tokens each rank sends.
    model : ModelCard
        Dispatch and combine bytes per token.
    path : AllToAllPath
        From ``alltoall_path(..., mode="normal")``.
    coef : KernelCoefficients
        Link efficiencies, call latency and layout cost.

    Returns
    -------
    dict of str to numpy.ndarray
        Microseconds of ``dispatch_layout``, ``notify_dispatch``, ``dispatch``,
        ``cached_notify`` and ``combine``, shaped like ``tokens``.

    Examples
    --------
    >>> from sbsopt.costmodel.cards import load_model_card
    >>> from sbsopt.costmodel.topology import AllToAllPath
    >>> path = AllToAllPath(1e-11, "ib", 50e9, 1.0)
    >>> t = normal_alltoall_us(4096, model=load_model_card(), path=path, coef=KernelCoefficients())
    >>> sorted(t)
    ['cached_notify', 'combine', 'dispatch', 'dispatch_layout', 'notify_dispatch']
    """
    tokens = np.asarray(tokens, dtype=np.float64)
    per_byte_us = path.seconds_per_byte * 1e6
    sync = np.full(np.shape(tokens), coef.ll_call_latency_us)
    return {
        "dispatch_layout": coef.layout_ns_per_token * tokens * 1e-3 + coef.launch_us,
        "notify_dispatch": sync,
        "dispatch": tokens * model.dispatch_bytes_per_token * per_byte_us / coef.dispatch_link_eff,
        "cached_notify": sync,
        "combine": tokens * model.combine_bytes_per_token * per_byte_us / coef.combine_link_eff,
    }


def low_latency_alltoall_us(
    tokens, *, model: ModelCard, path: AllToAllPath, coef: KernelCoefficients
) -> dict[str, np.ndarray]:
    """DeepEP low-latency dispatch and combine (us) for ``tokens`` tokens per rank.

    ``path`` must come from ``alltoall_path(..., mode="ll")`` (one copy per token-expert
    pair).  These are the network parts only (they hold no SMs); the send and receive halves
    run on the compute stream and are kernels of :func:`sbsopt.costmodel.layers.moe_kernels`.

    Parameters
    ----------
    tokens : float or array_like
        Tokens each rank sends.
    model : ModelCard
        Dispatch and combine bytes per token.
    path : AllToAllPath
        From ``alltoall_path(..., mode="ll")`` (or ``"ll_rdma"``).
    coef : KernelCoefficients
        Link efficiencies and the call latency.

    Returns
    -------
    dict of str to numpy.ndarray
        Microseconds of ``dispatch`` and ``combine``, shaped like ``tokens``.

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
