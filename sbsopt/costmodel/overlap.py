"""Two-micro-batch overlap at the level of stages (DeepSeek's documented schedules).

A transfer of one micro-batch hides only behind the compute stage of the other micro-batch that
runs beside it; whatever sticks out of that stage is exposed on the critical path.  Per MoE
layer and micro-batch the compute splits into stages (:data:`sbsopt.costmodel.layers.STAGES`):
``A0`` (norms and MLA projections), ``A1`` (core attention, output projection, routing gate),
``S`` (shared expert) and ``M`` (routed experts), and the communication into the dispatch
``Xd`` and combine ``Xc`` transfers.

Prefill (DeepSeek profile-data, EP32, 108 compute SMs + 24 for DeepEP): with attention
``A = A0 + A1``, one layer of the pair of micro-batches runs four slots,
``[A(1) + S(0) | Xc(0)] [A(0) | Xd(1)] [M(1) | Xd(0)] [M(0) + S(1) | Xc(1)]``, so
``layer = max(A+S, Xc) + max(A, Xd) + max(M, Xd) + max(M+S, Xc)``.

Decode (5-stage pipeline; the low-latency kernels hold no SMs, their send/receive halves are
compute-stream kernels inside the stages): per micro-batch the slots are
``[S(0) + A0(1) | Xd(0)] [M(0)] [A1(1) | Xc(0)]``, so
``layer = 2 * (max(S + A0, Xd) + M + max(A1, Xc))`` for the pair.

With ``m = 1`` nothing overlaps: ``A + S + M + Xd + Xc``; with ``m > 2`` the pair's time scales
by ``m / 2``.  The last combine of a forward has nothing left to hide behind: ``Xc`` once per
forward (:func:`pipeline_fill_us`).

References
----------
DeepSeek, "Profiling Data in DeepSeek Infra", https://github.com/deepseek-ai/profile-data
(prefill and decode overlap figures).
"""

from __future__ import annotations

import numpy as np

__all__ = ["stage_layer_us", "pipeline_fill_us", "compute_sm_fraction"]


def stage_layer_us(a0, a1, shared, routed, dispatch, combine, *, micro_batches: int, phase: str):
    """One MoE layer over all micro-batches under the stage-level overlap schedule.

    Parameters
    ----------
    a0, a1, shared, routed : float or array_like
        Compute stages of one micro-batch (us).
    dispatch, combine : float or array_like
        Network transfer times of one micro-batch (us), excluding the compute-stream halves.
    micro_batches : int
        Micro-batches per forward; 1 runs everything back to back.
    phase : {"prefill", "decode"}
        Which of DeepSeek's schedules.

    Returns
    -------
    numpy.ndarray or float
        Microseconds, broadcast over the inputs.

    Examples
    --------
    Decode: compute hides a short dispatch, but a combine longer than ``A1`` sticks out.

    >>> float(stage_layer_us(10, 20, 5, 30, 8, 50, micro_batches=2, phase="decode"))
    190.0
    >>> float(stage_layer_us(10, 20, 5, 30, 8, 50, micro_batches=1, phase="decode"))
    123.0
    """
    a0, a1 = np.asarray(a0, dtype=np.float64), np.asarray(a1, dtype=np.float64)
    s, m_ = np.asarray(shared, dtype=np.float64), np.asarray(routed, dtype=np.float64)
    xd, xc = np.asarray(dispatch, dtype=np.float64), np.asarray(combine, dtype=np.float64)
    if micro_batches < 2:
        return a0 + a1 + s + m_ + xd + xc
    if phase == "prefill":
        a = a0 + a1
        pair = np.maximum(a + s, xc) + np.maximum(a, xd) + np.maximum(m_, xd) + np.maximum(m_ + s, xc)
    else:
        pair = 2.0 * (np.maximum(s + a0, xd) + m_ + np.maximum(a1, xc))
    return pair * (micro_batches / 2.0)


def pipeline_fill_us(combine, *, micro_batches: int):
    """The last combine of a forward, which no later compute stage hides (once per forward).

    Parameters
    ----------
    combine : float or array_like
        Combine transfer of one micro-batch (us).
    micro_batches : int
        Micro-batches per forward; with 1 it is already on the critical path.

    Returns
    -------
    numpy.ndarray or float
        Microseconds.

    Examples
    --------
    >>> float(pipeline_fill_us(4.0, micro_batches=2)), float(pipeline_fill_us(4.0, micro_batches=1))
    (4.0, 0.0)
    """
    if micro_batches >= 2:
        return np.asarray(combine, dtype=np.float64)
    return np.zeros_like(np.asarray(combine, dtype=np.float64))


def compute_sm_fraction(*, sms: int, comm_sms: int, micro_batches: int, phase: str) -> float:
    """Fraction of SMs the compute kernels get: prefill overlap reserves ``comm_sms``.

    Parameters
    ----------
    sms, comm_sms : int
        SMs of the GPU, and those DeepEP's normal kernels hold.
    micro_batches : int
        Micro-batches per forward.
    phase : {"prefill", "decode"}
        Decode's low-latency kernels hold no SMs.

    Returns
    -------
    float
        In ``(0, 1]``.

    Examples
    --------
    >>> round(compute_sm_fraction(sms=132, comm_sms=24, micro_batches=2, phase="prefill"), 3)
    0.818
    """
    if phase == "prefill" and micro_batches >= 2:
        return (sms - comm_sms) / sms
    return 1.0
