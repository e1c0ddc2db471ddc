"""Fit the per-kernel-class coefficients to kernel measurements (cvxpy, robust, non-negative).

Calibration set (fitted):

* the per-kernel means of DeepSeek's public prefill profile (EP32, 8192-token micro-batches of
  two 4K prompts, overlapped: compute on 108 of 132 SMs);
* DeepGEMM's dense (normal) and grouped-contiguous rows (standalone, all SMs);
* DeepEP's normal-kernel bandwidth of its first release at every EP size, converted from its
  counting to physical link bytes (:mod:`sbsopt.costmodel.deepep`): the link efficiency of
  dispatch and combine, in closed form (mean over the EP sizes).

Held out (predicted and compared, never fitted): the profile's dispatch and combine durations
under overlap (physics only: bytes over the link at the fitted efficiency), its notify kernels
(synchronization waits), DeepEP low-latency latencies, later DeepEP versions, DeepGEMM masked
(decode) GEMMs, and FlashMLA's decode throughput; see :mod:`sbsopt.costmodel.validate`.

Every modelled kernel time is linear in the coefficients (see :mod:`sbsopt.costmodel.layers`),
so the fit is a convex program: minimise ``sum huber((pred - meas) / meas, 0.1)`` over
non-negative coefficients.  The link efficiencies are set first in closed form.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sbsopt._optional import require
from sbsopt._resources import calibration_dir
from sbsopt.costmodel.alltoall import normal_alltoall_us
from sbsopt.costmodel.cards import HardwareCard, ModelCard, load_hardware_card, load_model_card
from sbsopt.costmodel.coefficients import FITTED_FILE, KernelCoefficients, save_coefficients
from sbsopt.costmodel.deepep import implied_link_eff, low_latency_test_us, normal_reported_GBps
from sbsopt.costmodel.layers import Kernel, attention_kernels, kernel_us, moe_kernels
from sbsopt.costmodel.overlap import stage_layer_us
from sbsopt.costmodel.topology import AllToAllPath, alltoall_path
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
FACTS_FILE = "h800_dsv3_facts.json"
#: DeepEP release whose normal-kernel bandwidths the link efficiencies are fitted on (the one
#: contemporary with DeepSeek's profile); later releases are held out
LINK_VERSION = "2025-02 initial"

# Linear coefficients of the fit (link efficiencies and the LL latency are not among them).
_LINEAR = (
    "launch_us", "gemm_flop_scale", "gemm_byte_scale",
    "grouped_flop_scale", "overlap_byte_scale", "epilogue_byte_scale",
    "bf16_gemm_flop_scale", "attn_flop_scale",
    "mem_byte_scale", "route_row_ns", "layout_ns_per_token",
)
#: profile comm kernels the fit leaves out: transfers are physics (bytes / link), notifies are waits
HELD_OUT_COMM = ("comm:dispatch", "comm:combine", "comm:notify_dispatch", "comm:cached_notify")

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
    on all SMs), ``"link"`` (a DeepEP bandwidth row at ``ep`` ranks, GB/s as DeepEP prints it)
    or ``"held_out"`` (a profile comm kernel the fit leaves out).
    """

    name: str
    source_file: str
    measured_us: float
    setting: str
    kernel: Kernel | None = None
    tokens: float = 0.0
    ep: int = 0


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
        """Readable per-kernel table.

        Returns
        -------
        str
            One line per kernel (predicted, measured, relative error) and a summary line.
        """
        return _format_rows(self.rows, self.median_abs_rel_err, self.worst_kernel, self.max_abs_rel_err)


def load_measurements(
    profile: str | Path | None = None,
    *,
    deepgemm: str | Path | None = None,
    deepep: str | Path | None = None,
    model: ModelCard | None = None,
) -> list[Measurement]:
    """Read the calibration CSVs (defaults: the bundled copies) into measurements.

    Parameters
    ----------
    profile, deepgemm, deepep : str or Path, optional
        The prefill kernel profile, the DeepGEMM benchmark and the DeepEP benchmark CSVs, in
        the format of the bundled files in ``models/calibration``.
    model : ModelCard, optional
        Shapes the profile's kernels are modelled with (default: DeepSeek-V3).

    Returns
    -------
    list of Measurement
        Profile kernels, standalone DeepGEMM rows and the EP32 DeepEP link rows.

    Raises
    ------
    ModelCardError
        If a file is missing, lacks a column, or holds a value that is not a positive number.

    Examples
    --------
    >>> rows = load_measurements()
    >>> sum(r.setting == "profile" for r in rows) >= 15
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
    """Fit the coefficients to ``measurements`` (non-negative, Huber loss on relative error).

    Needs cvxpy (the ``calibrate`` extra).

    Parameters
    ----------
    measurements : list of Measurement
        Kernel times (:func:`load_measurements`); ``"link"`` rows set the link efficiencies.
    model, hardware : ModelCard, HardwareCard, optional
        Cards the kernels are modelled on (default: the bundled DeepSeek-V3 and H800 cards).
    huber_m : float, default 0.1
        Relative error at which the Huber loss turns from quadratic to linear.

    Returns
    -------
    KernelCoefficients
        The fitted coefficients (every linear one non-negative).

    Raises
    ------
    sbsopt.errors.MissingExtraError
        If cvxpy is not installed.
    sbsopt.errors.ModelCardError
        If there is no kernel measurement, or the convex program has no solution.
    """
    cp = require("cvxpy", "calibrate", feature="calibration")

    model = model or load_model_card()
    hardware = hardware or load_hardware_card()
    base = _link_efficiencies(measurements, model, hardware)
    features, measured = [], []
    for item in measurements:
        if item.setting in ("link", "held_out"):
            continue
        row = [_predict(item, _unit(base, name), model, hardware, offset=False) for name in _LINEAR]
        features.append(row)
        measured.append(item.measured_us - _predict(item, _unit(base, None), model, hardware, offset=True))
    if not features:
        raise ModelCardError("measurements", "rows", 0, "at least one kernel measurement")
    matrix = np.array(features)
    target = np.array(measured)
    weights = np.array([m.measured_us for m in measurements if m.setting not in ("link", "held_out")])
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
    """Per-kernel predicted vs measured, median and largest relative error, per-layer sums.

    Parameters
    ----------
    measurements : list of Measurement
        What to compare with (:func:`load_measurements`).
    coefficients : KernelCoefficients
        The coefficients to evaluate.
    model, hardware : ModelCard, HardwareCard, optional
        Default: the bundled DeepSeek-V3 and H800 cards.

    Returns
    -------
    CalibrationReport
        The coefficients, per-kernel rows and summary errors.
    """
    model = model or load_model_card()
    hardware = hardware or load_hardware_card()
    rows = []
    for item in measurements:
        predicted = _predict(item, coefficients, model, hardware, offset=True)
        if item.setting != "link":
            predicted += _predict(item, coefficients, model, hardware, offset=False)
        rows.append((item.name, predicted, item.measured_us, (predicted - item.measured_us) / item.measured_us))
    fitted = [r for r, item in zip(rows, measurements, strict=True) if item.setting != "held_out"]
    errors = np.abs([r[3] for r in fitted])
    worst = int(np.argmax(errors))
    layer_rows = []
    for label, keep in (
        ("profile attention block", lambda n: n.startswith("profile:") and n.split(":")[1] in _ATTENTION),
        ("profile MoE compute", lambda n: n.startswith("profile:") and n.split(":")[1] in _MOE),
    ):
        chosen = [r for r in rows if keep(r[0])]
        pred, meas = sum(r[1] for r in chosen), sum(r[2] for r in chosen)
        if meas > 0:
            layer_rows.append((label, pred, meas, (pred - meas) / meas))
    layer = _profile_layer_row(rows)
    if layer is not None:
        layer_rows.append(layer)
    return CalibrationReport(
        coefficients, tuple(rows), float(np.median(errors)), float(errors[worst]), fitted[worst][0], tuple(layer_rows)
    )


def held_out_checks(coefficients: KernelCoefficients, *, model: ModelCard | None = None,
                    hardware: HardwareCard | None = None) -> list[tuple[str, float, float, float, str]]:
    """Predictions vs public measurements that the fit never saw.

    Parameters
    ----------
    coefficients : KernelCoefficients
        The coefficients to check.
    model, hardware : ModelCard, HardwareCard, optional
        Default: the bundled DeepSeek-V3 and H800 cards.

    Returns
    -------
    list of tuple
        Rows ``(name, predicted, measured, rel_err, note)``: DeepEP normal bandwidths at the
        other EP sizes and low-latency latencies, DeepGEMM masked GEMMs, FlashMLA decode;
        bandwidths in GB/s, throughputs in TB/s or TFLOPS, latencies and GEMM times in us.
    """
    model = model or load_model_card()
    hardware = hardware or load_hardware_card()
    folder = calibration_dir()
    rows: list[tuple[str, float, float, float, str]] = []
    with open(folder / DEEPEP_FILE, newline="") as handle:
        deepep = list(csv.DictReader(handle))
    for row in deepep:
        family, version = row["kernel_family"], row["version"]
        if not row["ep"].isdigit():
            continue
        ep = int(row["ep"])
        if family.startswith("normal") and version != LINK_VERSION:
            for kind in ("dispatch", "combine"):
                predicted = normal_reported_GBps(ep, kind, coefficients, model=model, hardware=hardware)
                measured = float(row[f"{kind}_bw_GBps"])
                rows.append((f"deepep normal ep{ep} {kind} GB/s ({version.split(' ')[0]})", predicted, measured,
                             predicted / measured - 1, f"{row['bottleneck_link']} GB/s as DeepEP counts it"))
        if family == "low-latency":
            mode = "ll_rdma" if "pure RDMA" in version else "ll"
            times = low_latency_test_us(ep, coefficients, model=model, hardware=hardware, mode=mode)
            for kind in ("dispatch", "combine"):
                predicted, measured = times[kind], float(row[f"{kind}_latency_us"])
                rows.append((f"deepep LL ({mode}) ep{ep} {kind} us", predicted, measured,
                             predicted / measured - 1, "send + network + receive"))
    for item in _deepgemm_measurements(folder / DEEPGEMM_FILE, masked=True):
        predicted = _predict(item, coefficients, model, hardware, offset=False)
        rows.append((item.name, predicted, item.measured_us, predicted / item.measured_us - 1, "masked grouped GEMM"))
    # FlashMLA memory-bound decode (few heads per query so that KV bytes dominate): B/s achieved
    kv = 64 * 4096.0
    latent = model.kv_lora_rank + model.qk_rope_head_dim
    mla = Kernel("flash_mla", "attention", "attn", flops=kv * 16 * 2.0 * (latent + model.kv_lora_rank),
                 bytes=kv * latent * model.activation_bytes)
    seconds = float(kernel_us(mla, coefficients, hardware, sm_fraction=1.0)) * 1e-6
    predicted = kv * latent * model.activation_bytes / seconds / 1e12
    rows.append(("flashmla memory-bound decode TB/s", predicted, 3.0, predicted / 3.0 - 1,
                 "h_q*s_q=16, batch 64 x 4K; fitted (closed form)"))
    # FlashMLA compute-bound decode (128 heads, DP attention): FLOP/s achieved
    mla = next(k for k in attention_kernels(model, 64.0, phase="decode", kv_tokens=kv) if k.name == "flash_mla")
    seconds = float(kernel_us(mla, coefficients, hardware, sm_fraction=1.0)) * 1e-6
    predicted = float(mla.flops) / seconds / 1e12
    rows.append(("flashmla compute-bound decode TFLOPS", predicted, 660.0, predicted / 660 - 1,
                 "h_q=128, batch 64 x 4K; fitted (closed form)"))
    return rows


def calibrate(
    profile: str | Path | None = None, *, out: str | Path | None = None, write: bool = True,
) -> CalibrationReport:
    """Fit on the calibration CSVs, write the coefficients JSON (default: bundled file), report.

    Needs cvxpy (the ``calibrate`` extra).

    Parameters
    ----------
    profile : str or Path, optional
        A prefill kernel profile CSV (default: the bundled DeepSeek profile).
    out : str or Path, optional
        Where to write the fit (default: the bundled ``fitted_coefficients.json``).
    write : bool, default True
        Whether to write it at all.

    Returns
    -------
    CalibrationReport
        The fitted coefficients and their errors on the fitted measurements.

    Raises
    ------
    sbsopt.errors.MissingExtraError
        If cvxpy is not installed.
    sbsopt.errors.ModelCardError
        If a calibration file is invalid or the fit has no solution.

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
def _profile_layer_row(rows) -> tuple[str, float, float, float] | None:
    """The profile's MoE layer per micro-batch: stage-level overlap of the predicted kernels.

    Measured: both streams are busy for the whole layer (the notify kernels spin until the other
    micro-batch's stage ends), so a layer per micro-batch lasts the longer stream's kernel sum.
    """
    values = {name.split("profile:", 1)[1]: (p, m) for name, p, m, _ in rows if name.startswith("profile:")}
    if not all(name in values for name in _STAGE_OF) or "comm:combine" not in values:
        return None

    def total(stage: str, which: int) -> float:
        return sum(values[name][which] for name, s in _STAGE_OF.items() if s == stage)

    comm_names = ("comm:dispatch_layout", "comm:notify_dispatch", "comm:dispatch", "comm:cached_notify", "comm:combine")
    if not all(name in values for name in comm_names):
        return None
    xd = sum(values[n][0] for n in comm_names[:3])
    xc = sum(values[n][0] for n in comm_names[3:])
    predicted = float(stage_layer_us(total("attn0", 0), total("attn1", 0), total("shared", 0), total("routed", 0),
                                     xd, xc, micro_batches=2, phase="prefill")) / 2.0
    compute = sum(values[name][1] for name in _STAGE_OF)
    measured = max(compute, sum(values[n][1] for n in comm_names))
    return ("profile MoE layer per micro-batch (stage overlap)", predicted, measured, predicted / measured - 1)


_STAGE_OF = {
    "qkv_a_proj": "attn0", "q_b_proj": "attn0", "kv_b_proj": "attn0", "rope_kvcache": "attn0",
    "combine_reduce": "routed", "core_attention": "attn1", "o_proj": "attn1", "router_gemm": "attn1",
    "topk_gate": "attn1", "clean_and_count": "routed", "fused_mapping": "routed", "expand_to_fused": "routed",
    "scale_transpose": "routed", "routed_gate_up": "routed", "routed_down": "routed",
    "shared_gate_up": "shared", "shared_down": "shared",
}
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
            setting = "held_out" if name in HELD_OUT_COMM else "profile"
            out.append(Measurement(f"profile:{name}", path.name, measured, setting, None, tokens, ep))
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
        if row["kernel_family"].startswith("normal (") and row["version"] == LINK_VERSION:
            ep = int(row["ep"])
            for kind in ("dispatch", "combine"):
                value = _positive(path, line, f"{kind}_bw_GBps", row[f"{kind}_bw_GBps"])
                out.append(Measurement(f"deepep:normal:ep{ep}:{kind}_GBps", path.name, value, "link", None,
                                       float(row["tokens_per_rank"]), ep))
    return out


def _link_efficiencies(measurements: list[Measurement], model: ModelCard, hardware: HardwareCard) -> KernelCoefficients:
    """Mean over the link rows of the efficiency each implies (DeepEP counting converted)."""
    implied: dict[str, list[float]] = {"dispatch": [], "combine": []}
    for item in measurements:
        if item.setting == "link":
            kind = item.name.split(":")[-1].split("_")[0]
            implied[kind].append(implied_link_eff(item.ep, item.measured_us, model=model, hardware=hardware))
    values = {f"{kind}_link_eff": min(1.5, float(np.mean(v))) for kind, v in implied.items() if v}
    # FlashMLA's published decode throughputs pin its two efficiencies (ideal / achieved)
    facts = flashmla_facts()
    values["mla_byte_scale"] = hardware.hbm_bw_Bps / facts["flashmla.decode_membound_bw"]
    values["mla_flop_scale"] = hardware.bf16_peak_flops / facts["flashmla.decode_compute_tflops_v2"]
    return replace(KernelCoefficients(), **values)


def flashmla_facts() -> dict[str, float]:
    """FlashMLA's published H800 decode throughputs (B/s, FLOP/s) from the bundled facts file.

    Returns
    -------
    dict of str to float
        ``flashmla.decode_membound_bw`` and ``flashmla.decode_compute_tflops_v2``.

    Examples
    --------
    >>> flashmla_facts()["flashmla.decode_membound_bw"]
    3000000000000.0
    """
    import json

    document = json.loads((calibration_dir() / FACTS_FILE).read_text())
    wanted = ("flashmla.decode_membound_bw", "flashmla.decode_compute_tflops_v2")
    found = {fact["id"]: float(fact["value"]) for fact in document["facts"] if fact["id"] in wanted}
    for name in wanted:
        if name not in found:
            raise ModelCardError(str(calibration_dir() / FACTS_FILE), name, None, "a FlashMLA throughput fact")
    return found


def _path(ep: int, model: ModelCard, hardware: HardwareCard, mode: str = "normal") -> AllToAllPath:
    return alltoall_path(
        ep=ep, nodes=max(1, math.ceil(ep / hardware.gpus_per_node)), gpus_per_node=hardware.gpus_per_node,
        nvlink_Bps=hardware.nvlink_Bps, ib_Bps=hardware.ib_Bps, routed_experts=model.routed_experts,
        expert_groups=model.expert_groups, groups_per_token=model.groups_per_token,
        experts_per_token=model.experts_per_token, mode=mode,
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
        kind = item.name.split(":")[-1].split("_")[0]
        return normal_reported_GBps(item.ep, kind, coef, model=model, hardware=hardware) if offset else 0.0
    if item.kernel is not None:
        if offset:
            return 0.0
        fraction = (hardware.sms - hardware.comm_sms) / hardware.sms if item.setting == "profile" else 1.0
        return float(kernel_us(item.kernel, coef, hardware, sm_fraction=fraction))
    name = item.name.split("comm:")[1]
    path = _path(32, model, hardware)
    # the coefficient-free part (call latencies) is the value with every linear coefficient at 0
    floor = float(normal_alltoall_us(item.tokens, model=model, path=path, coef=_unit(coef, None))[name])
    if offset:
        return floor
    return float(normal_alltoall_us(item.tokens, model=model, path=path, coef=coef)[name]) - floor


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
