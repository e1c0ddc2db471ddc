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

    # Every kernel: ``scale * ideal + launch_us``; ``launch_us`` is the GPU-side ramp-up and tail
    # of one launch (one intercept for every kernel class, pinned by DeepGEMM's 64-row GEMMs).
    launch_us: float = 3.0
    # Gap between consecutive dependent kernels of one stream under CUDA graphs (decode) or a
    # run-ahead CPU (prefill): not part of any kernel's duration, so no kernel measurement pins
    # it.  A stated assumption (~1 us between graph nodes on Hopper), never fitted.
    kernel_gap_us: float = 1.0
    # FP8 DeepGEMM, dense (normal) layout: time = flop_scale*waves*tile_flops/sm_peak
    #   + byte_scale*bytes/hbm + launch
    gemm_flop_scale: float = 1.3
    gemm_byte_scale: float = 1.2
    # FP8 DeepGEMM, grouped layouts (contiguous for prefill, masked for decode): own compute
    # efficiency; bytes and launch overhead shared with the dense kernels (same machinery)
    grouped_flop_scale: float = 1.3
    # FP8 DeepGEMM epilogue: after each output tile's k-loop the math warpgroups write the BF16
    # tile through shared memory and wait for its TMA store (``tma_store_wait<0>``) before the
    # next tile starts, so every wave pays one tile's store, not overlapped with MMA:
    # ``scale * waves * BM*BN*2 / (hbm / SMs)`` (1 = each SM at its share of HBM bandwidth)
    epilogue_byte_scale: float = 0.5
    # extra byte-term multiplier of GEMMs that run beside the other micro-batch's comm
    # (prefill overlap, fewer SMs), whose kernels share HBM and L2 with them
    overlap_byte_scale: float = 1.0
    # BF16 GEMMs (cuBLAS router logits, CUTLASS batched absorbed W_UK/W_UV)
    bf16_gemm_flop_scale: float = 1.5
    # core attention: FLOPs over the BF16 peak (prefill FlashAttention, decode FlashMLA compute)
    attn_flop_scale: float = 1.6
    # FlashMLA decode: FLOPs over the BF16 peak and KV bytes over HBM (closed form from
    # FlashMLA's published compute- and memory-bound throughputs)
    mla_flop_scale: float = 1.5
    mla_byte_scale: float = 1.15
    # memory-bound kernels (norms, casts, residual adds, RoPE + KV write, SwiGLU, permute, reduce,
    # FlashMLA KV read and split-KV combine, DeepEP low-latency send/recv hooks)
    mem_byte_scale: float = 1.3
    # routing bookkeeping kernels (gating, counting, mapping): per top-k index entry written
    # or scanned (a scan of the received tokens' top-k indices counts each pass)
    route_row_ns: float = 1.0
    # DeepEP normal kernels: bottleneck-link efficiency (achieved / link bandwidth), from DeepEP's
    # benchmark converted to physical link bytes (see sbsopt.costmodel.deepep)
    dispatch_link_eff: float = 0.7
    combine_link_eff: float = 0.7
    # DeepEP layout kernel (per token)
    layout_ns_per_token: float = 10.0
    # DeepEP kernels: per-call fixed latency (handshake/notify synchronization, RDMA round trip)
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
    """Write coefficients (and an optional fit report) as JSON.

    Parameters
    ----------
    coefficients : KernelCoefficients
        What to write (the ``"coefficients"`` object of the file).
    path : str or Path
        Target file, overwritten.
    report : dict, optional
        JSON-able fit diagnostics (the ``"report"`` object of the file).

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_coefficients(KernelCoefficients(), Path(folder) / "fit.json")
    ...     load_coefficients(path) == KernelCoefficients()
    True
    """
    path = Path(path)
    payload = {"coefficients": asdict(coefficients), "report": report or {}}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def load_coefficients(path: str | Path | None = None) -> KernelCoefficients:
    """Load fitted coefficients, validating every field.

    Parameters
    ----------
    path : str or Path, optional
        A file written by :func:`save_coefficients` (default: the bundled fit, or the
        built-in defaults of :class:`KernelCoefficients` when the package ships none).

    Returns
    -------
    KernelCoefficients
        The coefficients (cached per path); fields absent from the file keep their defaults.

    Raises
    ------
    ModelCardError
        If the file is missing or not JSON, or a coefficient is unknown, negative or not finite.

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
