"""Every public measurement in ``models/calibration`` against the model, in and out of sample.

One table: per kernel (DeepSeek's prefill profile, DeepGEMM), per layer (the profile's blocks
and its overlapped MoE layer), DeepEP per EP size and mode, FlashMLA, and production throughput
points (``production_throughput.csv``), each with predicted, measured, signed error and whether
the row was used in the fit.  Out-of-sample error comes from leave-one-group-out: refit without
one EP size (its DeepEP link rows) or one kernel family, and predict the rows left out.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace

import numpy as np

from sbsopt._resources import calibration_dir
from sbsopt.costmodel.calibrate import (
    Measurement,
    evaluate,
    fit_coefficients,
    held_out_checks,
    load_measurements,
)
from sbsopt.costmodel.cards import HardwareCard, ModelCard, load_hardware_card, load_model_card
from sbsopt.costmodel.coefficients import KernelCoefficients

__all__ = ["ValidationRow", "validation_table", "leave_one_group_out", "throughput_rows", "summary", "THROUGHPUT_FILE"]

THROUGHPUT_FILE = "production_throughput.csv"
# group prefixes whose in-sample rows are single kernel durations
_KERNEL_GROUPS = ("profile kernels", "profile comm", "deepgemm")


@dataclass(frozen=True)
class ValidationRow:
    """One measurement: ``error = predicted / measured - 1`` (signed)."""

    group: str
    name: str
    predicted: float
    measured: float
    unit: str
    in_fit: bool
    note: str = ""

    @property
    def error(self) -> float:
        """Signed relative error."""
        return self.predicted / self.measured - 1.0


def _group(item: Measurement) -> str:
    if item.setting == "link":
        return f"deepep normal ep{item.ep}"
    if item.name.startswith("deepgemm:"):
        return "deepgemm " + item.name.split(":")[1]
    if item.name.startswith("profile:comm:"):
        return "profile comm"
    return "profile kernels"


def validation_table(coefficients: KernelCoefficients | None = None, *, model: ModelCard | None = None,
                     hardware: HardwareCard | None = None) -> list[ValidationRow]:
    """Every measurement with its prediction under ``coefficients`` (default: the bundled fit).

    Parameters
    ----------
    coefficients : KernelCoefficients, optional
        Default: :func:`~sbsopt.costmodel.load_coefficients`.
    model, hardware : ModelCard, HardwareCard, optional
        Default: DeepSeek-V3 on H800 (the cards the measurements were taken on).

    Returns
    -------
    list of ValidationRow
        Kernel, layer, DeepEP, FlashMLA and throughput rows.
    """
    from sbsopt.costmodel.coefficients import load_coefficients

    model = model or load_model_card()
    hardware = hardware or load_hardware_card()
    coef = coefficients or load_coefficients()
    measurements = load_measurements(model=model)
    report = evaluate(measurements, coef, model=model, hardware=hardware)
    rows = []
    for item, (name, predicted, measured, _) in zip(measurements, report.rows, strict=True):
        unit = "GB/s" if item.setting == "link" else "us"
        note = "synchronization wait, not bandwidth" if "notify" in name else ""
        rows.append(ValidationRow(_group(item), name, predicted, measured, unit, item.setting != "held_out", note))
    for name, predicted, measured, _ in report.layer_rows:
        rows.append(ValidationRow("profile layer", name, predicted, measured, "us", name != report.layer_rows[-1][0]))
    for name, predicted, measured, _, note in held_out_checks(coef, model=model, hardware=hardware):
        group = "flashmla" if name.startswith("flashmla") else (
            "deepep low-latency" if "LL" in name else "deepep normal (later)" if "deepep" in name else "deepgemm masked")
        unit = "GB/s" if "GB/s" in name else "TB/s" if "TB/s" in name else "TFLOPS" if "TFLOPS" in name else "us"
        rows.append(ValidationRow(group, name, predicted, measured, unit, group == "flashmla", note))
    rows += throughput_rows(coef)
    return rows


def throughput_rows(coefficients: KernelCoefficients) -> list[ValidationRow]:
    """Production throughput points of ``production_throughput.csv`` (never fitted).

    Parameters
    ----------
    coefficients : KernelCoefficients
        Unused beyond the bundled cost model (kept for symmetry; the step uses the bundled fit).

    Returns
    -------
    list of ValidationRow
        Tokens per second per node, predicted by the step model at the stated operating point.
    """
    from sbsopt.costmodel.step import load_cost_model

    path = calibration_dir() / THROUGHPUT_FILE
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            ep, phase = int(row["ep"]), row["phase"]
            cm = load_cost_model(ep=ep)
            load, context = float(row["load_per_rank"]), float(row["context"])
            if phase == "prefill":
                cached = float(row["cached_tokens"] or 0)
                b = cm.breakdown(phase="prefill", tokens_per_rank=load, context=context, cached_tokens=cached)
                # input tokens include the cached prefix (DeepSeek counts cache hits)
                input_tokens = load * (context + cached) / context
                predicted = input_tokens * cm.gpus_per_node / (b.step_us * 1e-6)
            else:
                b = cm.breakdown(phase="decode", tokens_per_rank=load, context=context,
                                 mtp_acceptance=float(row["mtp_acceptance"] or 0))
                predicted = load * b.tokens_per_step * cm.gpus_per_node / (b.step_us * 1e-6)
            rows.append(ValidationRow("production throughput", row["name"], predicted, float(row["measured"]),
                                      row["unit"], False, row["assumptions"]))
    return rows


def leave_one_group_out(*, model: ModelCard | None = None, hardware: HardwareCard | None = None
                        ) -> list[ValidationRow]:
    """Refit without one group of fitted rows and predict them (one EP size, one kernel family).

    Parameters
    ----------
    model, hardware : ModelCard, HardwareCard, optional
        Default: DeepSeek-V3 on H800.

    Returns
    -------
    list of ValidationRow
        The left-out rows, predicted by the refit, with group ``"logo: <group>"``.
    """
    model = model or load_model_card()
    hardware = hardware or load_hardware_card()
    measurements = load_measurements(model=model)
    fitted = [m for m in measurements if m.setting != "held_out"]
    groups = sorted({_group(m) for m in fitted})
    rows = []
    for group in groups:
        keep = [m for m in measurements if _group(m) != group]
        left = [m for m in fitted if _group(m) == group]
        if not any(m.setting != "link" for m in keep):
            continue
        coef = fit_coefficients(keep, model=model, hardware=hardware)
        if not any(m.setting == "link" for m in keep):
            coef = replace(coef, dispatch_link_eff=KernelCoefficients.dispatch_link_eff)
        report = evaluate(left, coef, model=model, hardware=hardware)
        for item, (name, predicted, measured, _) in zip(left, report.rows, strict=True):
            unit = "GB/s" if item.setting == "link" else "us"
            rows.append(ValidationRow(f"logo: {group}", name, predicted, measured, unit, False))
    return rows


def summary(rows: list[ValidationRow]) -> dict[str, dict[str, float]]:
    """Median and largest absolute error of the in-fit and out-of-fit rows.

    Parameters
    ----------
    rows : list of ValidationRow
        From :func:`validation_table` and :func:`leave_one_group_out`.

    Returns
    -------
    dict
        ``{"in_sample": {...}, "per_kernel": {...}, "out_of_sample": {...},
        "leave_one_group_out": {...}}`` with ``median_abs_err``, ``max_abs_err`` and ``rows``;
        ``per_kernel`` is the in-sample kernel durations alone (the profile's kernels and
        DeepGEMM's dense and contiguous GEMMs; no link bandwidths, layers or FlashMLA).
    """
    def stats(chosen: list[ValidationRow]) -> dict[str, float]:
        errors = np.abs([r.error for r in chosen]) if chosen else np.zeros(1)
        return {"median_abs_err": float(np.median(errors)), "max_abs_err": float(errors.max()), "rows": len(chosen)}

    return {
        "in_sample": stats([r for r in rows if r.in_fit]),
        "per_kernel": stats([r for r in rows if r.in_fit and r.group.startswith(_KERNEL_GROUPS)]),
        "out_of_sample": stats([r for r in rows if not r.in_fit and not r.group.startswith("logo")]),
        "leave_one_group_out": stats([r for r in rows if r.group.startswith("logo")]),
    }
