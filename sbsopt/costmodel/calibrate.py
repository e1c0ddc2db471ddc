"""Fit the per-kernel-class coefficients to kernel measurements (cvxpy, robust, non-negative).

Calibration set (fitted):

* the per-kernel means of DeepSeek's public prefill profile (EP32, 8192-token micro-batches of
  two 4K prompts, overlapped: compute on 108 of 132 SMs);
* DeepGEMM's dense (normal) and grouped-contiguous rows (standalone, all SMs);
* DeepEP's normal-kernel bandwidth at EP32 (the link efficiency of dispatch and combine).

Held out (predicted and compared, never fitted): DeepEP normal bandwidth at the other EP sizes
(NVLink- vs RDMA-bound), DeepEP low-latency latencies, DeepGEMM masked (decode) GEMMs, and
FlashMLA's decode throughput.

Every modelled kernel time is linear in the coefficients (see :mod:`sbsopt.costmodel.layers`),
so the fit is a convex program: minimise ``sum huber((pred - meas) / meas, 0.1)`` over
non-negative coefficients.  The link efficiencies are set first in closed form (a single
bandwidth measurement each), which keeps the overlapped-comm slowdown linear.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sbsopt._resources import calibration_dir
from sbsopt.costmodel.alltoall import low_latency_alltoall_us, normal_alltoall_us
from sbsopt.costmodel.cards import HardwareCard, ModelCard, load_hardware_card, load_model_card
from sbsopt.costmodel.coefficients import FITTED_FILE, KernelCoefficients, save_coefficients
from sbsopt.costmodel.layers import Kernel, attention_kernels, kernel_us, moe_kernels
from sbsopt.costmodel.topology import alltoall_path
from sbsopt.errors import ModelCardError

__all__ = [
    "Measurement",
    "CalibrationReport",
    "load_measurements",
    "fit_coefficients",
    "evaluate",
    "held_out_checks",
    "calibrate",
    "PROFILE_FILE",
    "DEEPGEMM_FILE",
    "DEEPEP_FILE",
]

PROFILE_FILE = "dsv3_profile_prefill_kernels_ep32.csv"
DEEPGEMM_FILE = "deepgemm_h800_benchmarks.csv"
DEEPEP_FILE = "deepep_h800_benchmarks.csv"

# Linear coefficients of the fit (link efficiencies and the LL latency are not among them).
_LINEAR = (
    "gemm_flop_scale", "gemm_byte_scale", "gemm_fixed_us",
    "grouped_flop_scale", "overlap_byte_scale",
    "bf16_gemm_flop_scale", "attn_flop_scale", "attn_fixed_us",
    "mem_byte_scale", "mem_fixed_us", "route_row_ns", "route_fixed_us",
    "comm_overlap_scale", "handshake_ns_per_token", "layout_ns_per_token",
)

# profile kernel (the csv's dsv3_op prefix) -> kernel name in sbsopt.costmodel.layers
_PROFILE_KERNELS = {
    "q_a_proj+kv_a_proj": "qkv_a_proj",
    "q_b_proj": "q_b_proj",
    "kv_b_proj": "kv_b_proj",
    "RoPE + KV-cache write": "rope_kvcache",
    "core MLA attention": "core_attention",
    "o_proj": "o_proj",
    "router logits": "router_gemm",
    "group-limited top-k": "topk_gate",
    "routing bookkeeping": "clean_and_count",
    "token->expert contiguous mapping": "fused_mapping",
    "permute tokens": "expand_to_fused",
    "scale transpose": "scale_transpose",
    "routed experts gate+up": "routed_gate_up",
    "routed experts down": "routed_down",
    "shared expert gate+up": "shared_gate_up",
    "shared expert down": "shared_down",
    "weighted sum of expert outputs": "combine_reduce",
    "DeepEP normal: layout": "comm:dispatch_layout",
    "DeepEP normal: dispatch handshake": "comm:notify_dispatch",
    "DeepEP normal dispatch": "comm:dispatch",
    "DeepEP normal: combine handshake": "comm:cached_notify",
    "DeepEP normal combine": "comm:combine",
}
_GEMM_ROLE_SHAPES = {  # DeepGEMM (n, k) -> readable role
    (2112, 7168): "qkv_a", (24576, 1536): "q_b", (32768, 512): "kv_b",
    (7168, 16384): "o_proj", (4096, 7168): "gate_up", (7168, 2048): "down",
}


@dataclass(frozen=True)
class Measurement:
    """One measured kernel time and how to model it.

    ``setting`` is ``"profile"`` (overlapped prefill profile), ``"standalone"`` (a benchmark
    on all SMs) or ``"link"`` (a DeepEP bandwidth row).
    """

    name: str
    source_file: str
    measured_us: float
    setting: str
    kernel: Kernel | None = None
    tokens: float = 0.0


@dataclass(frozen=True)
class CalibrationReport:
    """Fitted coefficients and per-kernel errors (``rows``: name, predicted, measured, rel_err)."""

    coefficients: KernelCoefficients
    rows: tuple[tuple[str, float, float, float], ...]
    median_abs_rel_err: float
    max_abs_rel_err: float
    worst_kernel: str
    layer_rows: tuple[tuple[str, float, float, float], ...]

    def table(self) -> str:
        """Readable per-kernel table."""
        return _format_rows(self.rows, self.median_abs_rel_err, self.worst_kernel, self.max_abs_rel_err)


def load_measurements(
    profile: str | Path | None = None,
    *,
    deepgemm: str | Path | None = None,
    deepep: str | Path | None = None,
    model: ModelCard | None = None,
) -> list[Measurement]:
    """Read the calibration CSVs (defaults: the bundled copies) into measurements.

    Examples
    --------
    >>> rows = load_measurements()
    >>> sum(r.setting == "profile" for r in rows) >= 20
    True
    """
    model = model or load_model_card()
    folder = calibration_dir()
    measurements = _profile_measurements(Path(profile) if profile else folder / PROFILE_FILE, model)
    measurements += _deepgemm_measurements(Path(deepgemm) if deepgemm else folder / DEEPGEMM_FILE, masked=False)
    measurements += _deepep_link_measurements(Path(deepep) if deepep else folder / DEEPEP_FILE, model)
    return measurements


def fit_coefficients(
    measurements: list[Measurement], *, model: ModelCard | None = None, hardware: HardwareCard | None = None,
    huber_m: float = 0.1,
) -> KernelCoefficients:
    """Fit the coefficients to ``measurements`` (non-negative, Huber loss on relative error)."""
    import cvxpy as cp

    model = model or load_model_card()
    hardware = hardware or load_hardware_card()
    base = _link_efficiencies(measurements, model, hardware)
    features, measured = [], []
    for item in measurements:
        if item.setting == "link":
            continue
        row = [_predict(item, _unit(base, name), model, hardware, offset=False) for name in _LINEAR]
        features.append(row)
        measured.append(item.measured_us - _predict(item, _unit(base, None), model, hardware, offset=True))
    if not features:
        raise ModelCardError("measurements", "rows", 0, "at least one kernel measurement")
    matrix = np.array(features)
    target = np.array(measured)
    weights = np.array([m.measured_us for m in measurements if m.setting != "link"])
    theta = cp.Variable(len(_LINEAR), nonneg=True)
    residual = cp.multiply(matrix @ theta - target, 1.0 / weights)
    # a tiny ridge keeps coefficients no measurement pins down at their smallest value
    problem = cp.Problem(cp.Minimize(cp.sum(cp.huber(residual, huber_m)) + 1e-6 * cp.sum(theta)))
    problem.solve(solver=cp.CLARABEL)
    if theta.value is None:
        raise ModelCardError("measurements", "fit", problem.status, "a solvable calibration problem")
    values = {name: float(max(value, 0.0)) for name, value in zip(_LINEAR, theta.value, strict=True)}
    return replace(base, **values)


def evaluate(
    measurements: list[Measurement], coefficients: KernelCoefficients, *,
    model: ModelCard | None = None, hardware: HardwareCard | None = None,
) -> CalibrationReport:
    """Per-kernel predicted vs measured, median and largest relative error, per-layer sums."""
    model = model or load_model_card()
    hardware = hardware or load_hardware_card()
    rows = []
    for item in measurements:
        predicted = _predict(item, coefficients, model, hardware, offset=True)
        if item.setting != "link":
            predicted += _predict(item, coefficients, model, hardware, offset=False)
        rows.append((item.name, predicted, item.measured_us, (predicted - item.measured_us) / item.measured_us))
    errors = np.abs([r[3] for r in rows])
    worst = int(np.argmax(errors))
    layer_rows = []
    for label, keep in (
        ("profile attention block", lambda n: n.startswith("profile:") and n.split(":")[1] in _ATTENTION),
        ("profile MoE compute", lambda n: n.startswith("profile:") and n.split(":")[1] in _MOE),
        ("profile comm stream", lambda n: n.startswith("profile:comm:")),
    ):
        chosen = [r for r in rows if keep(r[0])]
        pred, meas = sum(r[1] for r in chosen), sum(r[2] for r in chosen)
        layer_rows.append((label, pred, meas, (pred - meas) / meas))
    return CalibrationReport(
        coefficients, tuple(rows), float(np.median(errors)), float(errors[worst]), rows[worst][0], tuple(layer_rows)
    )


def held_out_checks(coefficients: KernelCoefficients, *, model: ModelCard | None = None,
                    hardware: HardwareCard | None = None) -> list[tuple[str, float, float, float, str]]:
    """Predictions vs public measurements that the fit never saw.

    Returns rows ``(name, predicted, measured, rel_err, note)``; bandwidths in GB/s,
    latencies and GEMM times in us.
    """
    model = model or load_model_card()
    hardware = hardware or load_hardware_card()
    folder = calibration_dir()
    rows: list[tuple[str, float, float, float, str]] = []
    with open(folder / DEEPEP_FILE, newline="") as handle:
        deepep = list(csv.DictReader(handle))
    route = dict(
        gpus_per_node=hardware.gpus_per_node, nvlink_Bps=hardware.nvlink_Bps, ib_Bps=hardware.ib_Bps,
        routed_experts=model.routed_experts, expert_groups=model.expert_groups,
        groups_per_token=model.groups_per_token, experts_per_token=model.experts_per_token,
    )
    for row in deepep:
        family, version = row["kernel_family"], row["version"]
        if not row["ep"].isdigit():
            continue
        ep = int(row["ep"])
        nodes = max(1, math.ceil(ep / hardware.gpus_per_node))
        if family.startswith("normal (") and version == "2025-02 initial" and ep != 32:
            path = alltoall_path(ep=ep, nodes=nodes, mode="normal", **route)
            link = {"nvlink": "NVLink", "ib": "RDMA"}.get(path.bottleneck, path.bottleneck)
            measured_kind = "nvlink" if row["bottleneck_link"] == "NVLink" else "ib"
            for kind, eff in (("dispatch", coefficients.dispatch_link_eff), ("combine", coefficients.combine_link_eff)):
                # achieved bandwidth on the link class DeepEP reports
                predicted = path.achieved_Bps(measured_kind, efficiency=eff) / 1e9
                measured = float(row[f"{kind}_bw_GBps"])
                note = f"{row['bottleneck_link']} GB/s; graph bottleneck {link}, measured {row['bottleneck_link']}"
                rows.append((f"deepep normal ep{ep} {kind} GB/s", predicted, measured, predicted / measured - 1, note))
        if family == "low-latency":
            mode = "ll_rdma" if "pure RDMA" in version else "ll"
            path = alltoall_path(ep=ep, nodes=nodes, mode=mode, **route)
            times = low_latency_alltoall_us(float(row["tokens_per_rank"]), model=model, path=path, coef=coefficients)
            for kind in ("dispatch", "combine"):
                predicted, measured = float(times[kind]), float(row[f"{kind}_latency_us"])
                rows.append((f"deepep LL ({mode}) ep{ep} {kind} us", predicted, measured,
                             predicted / measured - 1, f"{path.bottleneck}-bound"))
    for item in _deepgemm_measurements(folder / DEEPGEMM_FILE, masked=True):
        predicted = float(kernel_us(item.kernel, coefficients, hardware, sm_fraction=1.0))
        rows.append((item.name, predicted, item.measured_us, predicted / item.measured_us - 1, "masked grouped GEMM"))
    # FlashMLA memory-bound decode (few heads per query so that KV bytes dominate): B/s achieved
    kv = 64 * 4096.0
    latent = model.kv_lora_rank + model.qk_rope_head_dim
    mla = Kernel("flash_mla", "attention", "attn", flops=kv * 16 * 2.0 * (latent + model.kv_lora_rank),
                 bytes=kv * latent * model.activation_bytes)
    seconds = float(kernel_us(mla, coefficients, hardware, sm_fraction=1.0)) * 1e-6
    predicted = kv * latent * model.activation_bytes / seconds / 1e12
    rows.append(("flashmla memory-bound decode TB/s", predicted, 3.0, predicted / 3.0 - 1, "h_q*s_q=16, batch 64 x 4K"))
    # FlashMLA compute-bound decode (128 heads, DP attention): FLOP/s achieved
    mla = next(k for k in attention_kernels(model, 64.0, phase="decode", kv_tokens=kv) if k.name == "flash_mla")
    seconds = float(kernel_us(mla, coefficients, hardware, sm_fraction=1.0)) * 1e-6
    predicted = float(mla.flops) / seconds / 1e12
    rows.append(("flashmla compute-bound decode TFLOPS", predicted, 660.0, predicted / 660 - 1, "h_q=128, batch 64 x 4K"))
    return rows


def calibrate(
    profile: str | Path | None = None, *, out: str | Path | None = None, write: bool = True,
) -> CalibrationReport:
    """Fit on the calibration CSVs, write the coefficients JSON (default: bundled file), report.

    Examples
    --------
    >>> report = calibrate(write=False)
    >>> report.median_abs_rel_err < 0.10
    True
    """
    model, hardware = load_model_card(), load_hardware_card()
    measurements = load_measurements(profile, model=model)
    coefficients = fit_coefficients(measurements, model=model, hardware=hardware)
    report = evaluate(measurements, coefficients, model=model, hardware=hardware)
    if write:
        target = Path(out) if out is not None else calibration_dir() / FITTED_FILE
        save_coefficients(coefficients, target, report={
            "median_abs_rel_err": report.median_abs_rel_err,
            "max_abs_rel_err": report.max_abs_rel_err,
            "worst_kernel": report.worst_kernel,
            "kernels": {name: {"predicted_us": p, "measured_us": m} for name, p, m, _ in report.rows},
        })
    return report


# -------------------------------------------------------------------------------- internals
_ATTENTION = {"qkv_a_proj", "q_b_proj", "kv_b_proj", "rope_kvcache", "core_attention", "o_proj"}
_MOE = {
    "router_gemm", "topk_gate", "clean_and_count", "fused_mapping", "expand_to_fused", "scale_transpose",
    "routed_gate_up", "routed_down", "shared_gate_up", "shared_down", "combine_reduce",
}


def _profile_measurements(path: Path, model: ModelCard) -> list[Measurement]:
    rows = _read_csv(path, ("stage", "kernel", "dsv3_op", "mean_us", "source"))
    # the profile: EP32, 8192 tokens per micro-batch = two 4096-token prompts, 8 local experts
    tokens, context, ep = 8192.0, 4096.0, 32
    pairs = (tokens / context) * context * (context + 1) / 2.0
    experts_per_rank = model.routed_experts // ep
    kernels = {k.name: k for k in attention_kernels(model, tokens, phase="prefill", pairs=pairs)}
    kernels.update({k.name: k for k in moe_kernels(model, tokens, tokens, experts_per_rank=experts_per_rank,
                                                   phase="prefill")})
    out = []
    for line, row in enumerate(rows, start=2):
        if not row["mean_us"].strip():
            continue  # count-only rows (durations not reported)
        measured = _positive(path, line, "mean_us", row["mean_us"])
        name = next((v for key, v in _PROFILE_KERNELS.items() if row["dsv3_op"].startswith(key)), None)
        if name is None:
            continue
        if name.startswith("comm:"):
            out.append(Measurement(f"profile:{name}", path.name, measured, "profile", None, tokens))
        else:
            out.append(Measurement(f"profile:{name}", path.name, measured, "profile", kernels[name], tokens))
    return out


def _deepgemm_measurements(path: Path, *, masked: bool) -> list[Measurement]:
    rows = _read_csv(path, ("layout", "version", "groups", "m_per_group", "n", "k", "implied_time_us", "source"))
    latest = max(row["version"] for row in rows)
    out = []
    for line, row in enumerate(rows, start=2):
        if row["version"] != latest:
            continue
        layout = row["layout"]
        is_masked = layout.startswith("grouped masked")
        if is_masked != masked:
            continue
        groups = int(_positive(path, line, "groups", row["groups"]))
        m = _positive(path, line, "m_per_group", row["m_per_group"])
        n, k = int(_positive(path, line, "n", row["n"])), int(_positive(path, line, "k", row["k"]))
        measured = _positive(path, line, "implied_time_us", row["implied_time_us"])
        kind = "gemm" if layout.startswith("normal") else "grouped"
        role = _GEMM_ROLE_SHAPES.get((n, k), f"{n}x{k}")
        name = f"deepgemm:{layout.split(' (')[0].replace(' ', '_')}:{role}:{groups}x{int(m)}"
        kernel = Kernel(name, "other", kind, m=m, n=n, k=k, groups=groups)
        out.append(Measurement(name, path.name, measured, "standalone", kernel))
    return out


def _deepep_link_measurements(path: Path, model: ModelCard) -> list[Measurement]:
    rows = _read_csv(path, ("kernel_family", "version", "ep", "tokens_per_rank", "dispatch_bw_GBps",
                            "combine_bw_GBps", "source"))
    out = []
    for line, row in enumerate(rows, start=2):
        if row["kernel_family"].startswith("normal (") and row["version"] == "2025-02 initial" and row["ep"] == "32":
            for kind in ("dispatch", "combine"):
                value = _positive(path, line, f"{kind}_bw_GBps", row[f"{kind}_bw_GBps"])
                out.append(Measurement(f"deepep:normal:ep32:{kind}_GBps", path.name, value, "link", None,
                                       float(row["tokens_per_rank"])))
    return out


def _link_efficiencies(measurements: list[Measurement], model: ModelCard, hardware: HardwareCard) -> KernelCoefficients:
    """Achieved / capacity of the graph's bottleneck link at EP32 (closed form, one row each)."""
    path = _path(32, model, hardware)
    values = {}
    for item in measurements:
        if item.setting == "link":
            kind = item.name.split(":")[-1].split("_")[0]
            values[f"{kind}_link_eff"] = min(1.5, item.measured_us * 1e9 / path.bottleneck_Bps)
    return replace(KernelCoefficients(), **values)


def _path(ep: int, model: ModelCard, hardware: HardwareCard):
    return alltoall_path(
        ep=ep, nodes=max(1, math.ceil(ep / hardware.gpus_per_node)), gpus_per_node=hardware.gpus_per_node,
        nvlink_Bps=hardware.nvlink_Bps, ib_Bps=hardware.ib_Bps, routed_experts=model.routed_experts,
        expert_groups=model.expert_groups, groups_per_token=model.groups_per_token,
        experts_per_token=model.experts_per_token, mode="normal",
    )


def _unit(base: KernelCoefficients, name: str | None) -> KernelCoefficients:
    """``base`` with every linear coefficient zero except ``name`` (= 1)."""
    values = dict.fromkeys(_LINEAR, 0.0)
    if name is not None:
        values[name] = 1.0
    return replace(base, **values)


def _predict(item: Measurement, coef: KernelCoefficients, model: ModelCard, hardware: HardwareCard,
             *, offset: bool) -> float:
    """Linear part (``offset=False``) or the coefficient-free offset (``offset=True``) of a prediction.

    Only the DeepEP kernels have an offset (the fixed call latency); link rows predict the
    bandwidth itself as the offset.
    """
    if item.setting == "link":
        return _path(32, model, hardware).bottleneck_Bps * getattr(
            coef, f"{item.name.split(':')[-1].split('_')[0]}_link_eff") / 1e9 if offset else 0.0
    if item.kernel is not None:
        if offset:
            return 0.0
        fraction = (hardware.sms - hardware.comm_sms) / hardware.sms if item.setting == "profile" else 1.0
        return float(kernel_us(item.kernel, coef, hardware, sm_fraction=fraction))
    name = item.name.split("comm:")[1]
    path = _path(32, model, hardware)
    # the coefficient-free part (call latencies) is the value with every linear coefficient at 0
    floor = float(normal_alltoall_us(item.tokens, model=model, path=path, coef=_unit(coef, None),
                                     overlapped=True)[name])
    if offset:
        return floor
    return float(normal_alltoall_us(item.tokens, model=model, path=path, coef=coef, overlapped=True)[name]) - floor


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError:
        raise ModelCardError(str(path), "<file>", str(path), "an existing CSV file") from None
    missing = [name for name in required if name not in header]
    if missing:
        raise ModelCardError(str(path), f"column {missing[0]}", None, f"a CSV with columns {list(required)}")
    return rows


def _positive(path: Path, line: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ModelCardError(f"{path}:{line}", field, text, "a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ModelCardError(f"{path}:{line}", field, text, "a finite number > 0")
    return value


def _format_rows(rows, median: float, worst: str, worst_err: float) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"{'kernel':<{width}}  {'predicted':>10}  {'measured':>10}  {'rel.err':>8}"]
    for name, predicted, measured, err in rows:
        lines.append(f"{name:<{width}}  {predicted:>10.2f}  {measured:>10.2f}  {err:>+8.1%}")
    lines.append(f"median |rel.err| = {median:.1%}; largest = {worst_err:.1%} ({worst})")
    return "\n".join(lines)
