"""Per-kernel-class efficiency and overhead coefficients, and their on-disk JSON form.

Every time in the cost model is ``physics / efficiency + overhead``: FLOPs over a peak, bytes over
a bandwidth, plus a fixed per-launch overhead.  The dimensionless ``*_scale`` fields are
"measured time / ideal time" multipliers (1.0 = at peak), fitted by
:mod:`sbsopt.costmodel.calibrate`; ``*_us`` fields are fixed per-call overheads.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

from sbsopt._resources import calibration_dir
from sbsopt.errors import ModelCardError

__all__ = ["KernelCoefficients", "load_coefficients", "save_coefficients", "FITTED_FILE"]

FITTED_FILE = "fitted_coefficients.json"


@dataclass(frozen=True)
class KernelCoefficients:
    """Fitted multipliers per kernel class (all >= 0).

    The defaults are physics priors (a kernel at ~70-80% of its roofline) used only when no
    fitted file exists; :func:`load_coefficients` returns the fitted ones.
    """

    # FP8 DeepGEMM, dense (normal) layout: time = flop_scale*waves*tile_flops/sm_peak
    #   + byte_scale*bytes/hbm + fixed
    gemm_flop_scale: float = 1.3
    gemm_byte_scale: float = 1.2
    gemm_fixed_us: float = 4.0
    # FP8 DeepGEMM, grouped layouts (contiguous for prefill, masked for decode): own compute
    # efficiency; bytes and launch overhead shared with the dense kernels (same machinery)
    grouped_flop_scale: float = 1.3
    # extra byte-term multiplier of GEMMs that run beside the other micro-batch's comm
    # (prefill overlap, fewer SMs): their BF16 epilogue writes stall longer
    overlap_byte_scale: float = 1.0
    # BF16 cuBLAS GEMM (router logits)
    bf16_gemm_flop_scale: float = 1.5
    # core attention: FLOPs over the BF16 peak (prefill FlashAttention, decode FlashMLA compute)
    attn_flop_scale: float = 1.6
    attn_fixed_us: float = 10.0
    # memory-bound kernels (RoPE + KV write, SwiGLU, quant, norms, permute, reduce, FlashMLA KV read)
    mem_byte_scale: float = 1.3
    mem_fixed_us: float = 3.0
    # routing bookkeeping kernels (gating, counting, mapping): per routed row and per launch
    route_row_ns: float = 1.0
    route_fixed_us: float = 20.0
    # DeepEP normal kernels: bottleneck-link efficiency (achieved / link bandwidth) ...
    dispatch_link_eff: float = 0.88
    combine_link_eff: float = 0.94
    # ... slowdown when overlapped with the other micro-batch's compute (shared HBM, 24 SMs)
    comm_overlap_scale: float = 1.4
    # DeepEP handshake kernels (notify_dispatch, cached_notify): under overlap they wait for the
    # other micro-batch's compute, which grows with its tokens (ns per token; 0 without overlap)
    handshake_ns_per_token: float = 100.0
    # DeepEP layout kernel (per token)
    layout_ns_per_token: float = 10.0
    # DeepEP low-latency kernels: per-call fixed latency (RDMA round trip, launch, polling)
    ll_call_latency_us: float = 10.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, float | int) or not math.isfinite(value) or value < 0:
                raise ModelCardError("KernelCoefficients", item.name, value, "a finite number >= 0")
        for name in ("dispatch_link_eff", "combine_link_eff"):
            if not 0 < getattr(self, name) <= 1.5:
                raise ModelCardError("KernelCoefficients", name, getattr(self, name), "in (0, 1.5]")


def save_coefficients(coefficients: KernelCoefficients, path: str | Path, *, report: dict | None = None) -> Path:
    """Write coefficients (and an optional fit report) as JSON; returns the path."""
    path = Path(path)
    payload = {"coefficients": asdict(coefficients), "report": report or {}}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def load_coefficients(path: str | Path | None = None) -> KernelCoefficients:
    """Load fitted coefficients (default: the bundled fit), validating every field.

    Examples
    --------
    >>> load_coefficients().dispatch_link_eff > 0
    True
    """
    target = Path(path) if path is not None else calibration_dir() / FITTED_FILE
    if path is None and not target.is_file():
        return KernelCoefficients()
    return _load(str(target))


@lru_cache(maxsize=16)
def _load(path: str) -> KernelCoefficients:
    try:
        payload = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelCardError(path, "<file>", path, "an existing coefficients JSON file") from None
    except json.JSONDecodeError as exc:
        raise ModelCardError(path, "<json>", str(exc), "valid JSON") from None
    table = payload.get("coefficients") if isinstance(payload, dict) else None
    if not isinstance(table, dict):
        raise ModelCardError(path, "coefficients", table, "an object of named coefficients")
    known = {item.name for item in fields(KernelCoefficients)}
    for name, value in table.items():
        if name not in known:
            raise ModelCardError(path, f"coefficients.{name}", value, f"one of {sorted(known)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ModelCardError(path, f"coefficients.{name}", value, "a finite number >= 0")
    return KernelCoefficients(**{name: float(value) for name, value in table.items()})
