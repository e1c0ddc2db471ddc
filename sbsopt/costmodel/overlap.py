"""Two-micro-batch overlap of compute and communication, and the decode pipeline.

Prefill (DeepSeek's schedule): the rank's batch is split into ``m`` micro-batches; while one
computes (on ``SMs - comm_SMs`` SMs), the other's dispatch/combine runs on the ``comm_SMs``.
In steady state a layer costs ``m * max(compute, comm)`` per micro-batch pair; the first
compute (or comm) of the forward cannot be hidden, which adds ``min(compute, comm)`` once per
forward (pipeline fill).  With ``m = 1`` nothing overlaps: ``compute + comm``, on all SMs.

Decode: the low-latency kernels run without SMs, so the same formula applies with the full SM
count; the per-call latency of those kernels is what the overlap hides.
"""

from __future__ import annotations

import numpy as np

__all__ = ["overlapped_layer_us", "pipeline_fill_us", "compute_sm_fraction"]


def overlapped_layer_us(compute_us, comm_us, *, micro_batches: int):
    """One layer, all micro-batches: ``m*max(C, X)`` if ``m >= 2`` else ``C + X``.

    Examples
    --------
    >>> float(overlapped_layer_us(10.0, 4.0, micro_batches=2)), float(overlapped_layer_us(10.0, 4.0, micro_batches=1))
    (20.0, 14.0)
    """
    if micro_batches >= 2:
        return micro_batches * np.maximum(compute_us, comm_us)
    return np.asarray(compute_us) + np.asarray(comm_us)


def pipeline_fill_us(compute_us, comm_us, *, micro_batches: int):
    """The part of the first/last layer that no other micro-batch hides (once per forward).

    Examples
    --------
    >>> float(pipeline_fill_us(10.0, 4.0, micro_batches=2))
    4.0
    """
    if micro_batches >= 2:
        return np.minimum(compute_us, comm_us)
    return np.zeros_like(np.asarray(compute_us, dtype=np.float64))


def compute_sm_fraction(*, sms: int, comm_sms: int, micro_batches: int, phase: str) -> float:
    """Fraction of SMs the compute kernels get: prefill overlap reserves ``comm_sms``.

    Examples
    --------
    >>> round(compute_sm_fraction(sms=132, comm_sms=24, micro_batches=2, phase="prefill"), 3)
    0.818
    """
    if phase == "prefill" and micro_batches >= 2:
        return (sms - comm_sms) / sms
    return 1.0
