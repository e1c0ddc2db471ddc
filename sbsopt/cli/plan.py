"""``sbsopt plan capacity|instances`` and ``sbsopt sweep``: capacity answers from many simulations."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import click

from sbsopt._optional import require
from sbsopt.cli._options import (
    ROUTER_CHOICES,
    SOLVER_CHOICES,
    cluster_from_options,
    cluster_options,
    engine_options,
    router_option,
    window_options,
)
from sbsopt.errors import InvalidInputError
from sbsopt.sim.config import DEFAULT_TPOT_SLO_MS, DEFAULT_TTFT_SLO_MS

__all__ = ["plan", "sweep", "write_table", "print_table"]


def _common(fn):
    """Trace, cluster, policy, SLO and execution flags shared by the planning commands."""
    options = [
        click.option("--trace", default="azure-conv", show_default=True, help="Bundled trace name or path."),
        click.option("--limit", type=int, default=None, help="Use only the first N requests of the trace."),
        click.option("--duration-s", type=float, default=10.0, show_default=True,
                     help="Arrival window simulated per step: rate x duration requests of the trace."),
        click.option("--ttft-slo-ms", type=float, default=DEFAULT_TTFT_SLO_MS, show_default=True,
                     help="as in `sbsopt run`: at 1000 ms the max-rate search sits on a TTFT plateau."),
        click.option("--tpot-slo-ms", type=float, default=DEFAULT_TPOT_SLO_MS, show_default=True),
        click.option("--attainment", type=float, default=0.9, show_default=True,
                     help="Fraction of requests that must meet both SLOs."),
        click.option("--gpu-hour-price", type=float, default=2.0, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--backend", type=click.Choice(["local", "ray", "serial"]), default="local", show_default=True),
        click.option("--address", default=None, help="Ray cluster address (--backend ray)."),
        click.option("--workers", type=int, default=None, help="Parallel simulations (default: one per core)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
        click.option("--out", type=click.Path(dir_okay=False), default=None,
                     help="Write every simulated run as a table (.csv or .parquet)."),
    ]
    fn = router_option(window_options(cluster_options(engine_options(fn))))
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def _setup(o: dict):
    from sbsopt.plan import SLO, Policy
    from sbsopt.workload import load_trace

    if o["out"] is not None:
        _suffix(o["out"])
    slo = SLO(ttft_ms=o["ttft_slo_ms"], tpot_ms=o["tpot_slo_ms"], attainment=o["attainment"])
    policy = Policy(router=o["router"], interval=o["interval"], solver=o["solver"], batching=o["batching"],
                    mode=o["mode"], token_budget=o["token_budget"])
    cluster = cluster_from_options(o["mode"], **{k: o[k] for k in (
        "prefill_instances", "decode_instances", "prefill_ep", "decode_ep", "instances", "ep", "hardware",
        "mtp_acceptance")})
    if o["duration_s"] <= 0:
        raise InvalidInputError("--duration-s", o["duration_s"], "a positive number of seconds")
    return load_trace(o["trace"], limit=o["limit"]), cluster, policy, slo


def _suffix(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InvalidInputError("--out", path, "a path ending in .csv or .parquet")
    return suffix


def write_table(table, path: str) -> None:
    """Write a DataFrame as CSV or Parquet, chosen by the extension of ``path``."""
    if _suffix(path) == ".csv":
        table.to_csv(path, index=False)
    else:
        require("pyarrow", "sim", feature="--out *.parquet")
        table.to_parquet(path, index=False)


def print_table(title: str, columns: list[str], rows: list[list], *, note: str | None = None) -> None:
    """Print a readable table (rich) on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, justify="left" if name in columns[:1] else "right", no_wrap=name in columns[:1])
    for row in rows:
        table.add_row(*(_fmt(v) for v in row))
    console = Console(width=160)
    console.print(table)
    if note:
        console.print(note)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _evaluated_table(evaluated: dict, key: str):
    import pandas as pd

    rows = [{key: k if not isinstance(k, tuple) else str(k), "meets_slo": ok, **m}
            for k, (ok, m) in sorted(evaluated.items())]
    return pd.DataFrame(rows)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item"):
        return obj.item()
    return obj


@click.group()
def plan() -> None:
    """Capacity planning: highest rate at an SLO, fewest instances at a rate."""


@plan.command()
@click.option("--tolerance", type=float, default=None, help="Rate tolerance in req/s (default 2% of capacity).")
@click.option("--rate-min", type=float, default=None, help="Smallest rate tried (default capacity/50).")
@click.option("--rate-max", type=float, default=None, help="Largest rate tried (default 8x capacity).")
@_common
def capacity(tolerance, rate_min, rate_max, **o) -> None:
    """Highest request rate at which the SLO holds on this cluster.

    \b
    sbsopt plan capacity --trace azure-conv --router sbs --ttft-slo-ms 2000 --duration-s 10 --json
    """
    from sbsopt.plan import max_rate
    from sbsopt.sim import saturation_capacity

    workload, cluster, policy, slo = _setup(o)
    _refuse_burst(workload, saturation_capacity(workload, cluster, mode=policy.mode).req_s, o,
                  rate_name="the saturation rate")
    answer = max_rate(workload, cluster, policy, slo, tolerance_req_s=tolerance, rate_min=rate_min,
                      rate_max=rate_max, duration_s=o["duration_s"], seed=o["seed"], gpu_hour_price=o["gpu_hour_price"],
                      backend=o["backend"], workers=o["workers"], address=o["address"], progress=not o["as_json"])
    if o["out"]:
        write_table(_evaluated_table(answer.search.evaluated, "rate_req_s"), o["out"])
    d = answer.as_dict()
    if o["as_json"]:
        click.echo(json.dumps(_jsonable(d)))
        return
    c = d["confirm"] or {}
    print_table(f"max rate: {workload.name} ({len(workload)} requests), router {policy.router}",
                ["answer", "max rate req/s", "fails at", "tolerance", "TTFT p90 ms", "TPOT p90 ms",
                 "attainment", "GPUs", "tok/GPU/s", "$/Mtok"],
                [["infeasible" if not d["feasible"] else "ok" if d["bounded"] else
                  "capped" if d["capped"] else "unbounded",
                  d["max_rate_req_s"], d["fail_rate_req_s"], d["tolerance_req_s"], c.get("ttft_p90_ms"),
                  c.get("tpot_p90_ms"), c.get("slo_attainment"), d["gpus"], d.get("tokens_per_gpu_s"),
                  d.get("cost_per_million_tokens")]], note=d["message"])


def _refuse_burst(workload, rate: float, o: dict, *, rate_name: str = "--rate") -> None:
    """Refuse a search whose steps at ``rate`` would simulate a burst, not a steady state: a burst
    drains within the SLO at any rate, on any number of instances."""
    from sbsopt.plan.planner import BURST_SLO_MULTIPLE, burst_reason

    reason = burst_reason(len(workload), rate, o["duration_s"], o["ttft_slo_ms"])
    if reason is not None:
        need = BURST_SLO_MULTIPLE * o["ttft_slo_ms"] / 1000.0
        short_trace = (len(workload) - 1) / rate < need
        raise InvalidInputError(
            "--limit" if short_trace else "--duration-s", len(workload) if short_trace else o["duration_s"],
            f"a steady window at {rate_name} {rate:.4g} req/s, not a burst ({reason}): "
            f"--limit >= {math.ceil(rate * need) + 1} requests and --duration-s >= {need:g}")


@plan.command()
@click.option("--rate", type=float, required=True, help="Request rate to serve (req/s).")
@click.option("--max-prefill", type=int, default=8, show_default=True)
@click.option("--max-decode", type=int, default=4, show_default=True)
@_common
def instances(rate, max_prefill, max_decode, **o) -> None:
    """Fewest prefill and decode instances that meet the SLO at --rate.

    \b
    sbsopt plan instances --rate 40 --trace azure-conv --duration-s 10 --json
    """
    from sbsopt.plan import min_instances

    workload, cluster, policy, slo = _setup(o)
    _refuse_burst(workload, rate, o)
    answer = min_instances(workload, rate, slo, policy, cluster=cluster, max_prefill=max_prefill,
                           max_decode=max_decode, duration_s=o["duration_s"], seed=o["seed"], gpu_hour_price=o["gpu_hour_price"],
                           backend=o["backend"], workers=o["workers"], address=o["address"],
                           progress=not o["as_json"])
    if o["out"]:
        write_table(_evaluated_table(answer.search.evaluated, "instances"), o["out"])
    d = answer.as_dict()
    if o["as_json"]:
        click.echo(json.dumps(_jsonable(d)))
        return
    m = d["metrics"] or {}
    print_table(f"fewest instances at {rate:g} req/s: {workload.name} ({len(workload)} requests), "
                f"router {policy.router}",
                ["answer", "prefill", "decode", "P:D", "GPUs", "TTFT p90 ms", "TPOT p90 ms", "attainment",
                 "tok/GPU/s", "$/Mtok"],
                [["ok" if d["feasible"] else "infeasible", d["prefill_instances"], d["decode_instances"],
                  d["pd_ratio"], d["gpus"], m.get("ttft_p90_ms"), m.get("tpot_p90_ms"), m.get("slo_attainment"),
                  d.get("tokens_per_gpu_s"), d.get("cost_per_million_tokens")]], note=d["message"])


@click.command()
@click.option("--grid", "grid_path", type=click.Path(dir_okay=False), required=True,
              help="TOML file with a [grid] table of lists and an optional [base] table.")
@click.option("--ttft-slo-ms", type=float, default=None, help="Add an slo_attainment column.")
@click.option("--tpot-slo-ms", type=float, default=None)
@click.option("--backend", type=click.Choice(["local", "ray", "serial"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster address (--backend ray).")
@click.option("--workers", type=int, default=None, help="Parallel simulations (default: one per core).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as a JSON list of rows.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the table (.csv or .parquet).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Save a plot (x = first grid parameter, y = --y) to this image file.")
@click.option("--y", "y_column", default="ttft_p90_ms", show_default=True, help="Column plotted against x.")
@click.option("--trace", default=None, help="Base trace (name or path) for runs the grid file leaves unset.")
@click.option("--router", type=click.Choice(ROUTER_CHOICES), default=None, help="Base router.")
@click.option("--interval", default=None, help="Base SBS interval policy.")
@click.option("--solver", type=click.Choice(SOLVER_CHOICES), default=None, help="Base window solver.")
@cluster_options
@engine_options
@click.pass_context
def sweep(ctx, grid_path, ttft_slo_ms, tpot_slo_ms, backend, address, workers, as_json, out, plot, y_column,
          **base) -> None:
    """Run one simulation per point of a parameter grid; print a tidy table (one row per run).

    The trace, router, cluster and engine flags of ``sbsopt simulate`` set base parameters of
    every run, where neither ``[grid]`` nor ``[base]`` of the grid file sets them.

    \b
    sbsopt sweep --grid grid.toml --out runs.parquet --plot ttft.png
    sbsopt sweep --grid batching.toml --mode colocated --instances 2 --ep 8
    """
    import tomllib

    from click.core import ParameterSource

    from sbsopt.plan import load_grid, plot_sweep
    from sbsopt.plan import sweep as run_sweep

    if out is not None:
        _suffix(out)
    runs = load_grid(grid_path)
    for run in runs:
        for name, value in (("ttft_slo_ms", ttft_slo_ms), ("tpot_slo_ms", tpot_slo_ms)):
            if value is not None:
                if value <= 0:
                    raise InvalidInputError(f"--{name.replace('_', '-')}", value, "a positive number")
                run.setdefault(name, value)
        for name, value in base.items():
            if value is not None and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
                run.setdefault(name, value)
    if plot:  # before the sweep, not after it has run
        matplotlib = require("matplotlib", "plot", feature="sbsopt sweep --plot")
    table = run_sweep(runs, backend=backend, workers=workers, address=address, progress=not as_json)
    if out:
        write_table(table, out)
    axes = list(tomllib.loads(Path(grid_path).read_text(encoding="utf-8")).get("grid", {}))
    if plot:
        matplotlib.use("Agg")
        hue = next((a for a in axes[1:] if a != "seed"), None)
        ax = plot_sweep(table, x=axes[0], y=y_column, hue=hue)
        ax.figure.tight_layout()
        ax.figure.savefig(plot, dpi=120)
    if as_json:
        click.echo(json.dumps(_jsonable(table.to_dict(orient="records"))))
        return
    shown = axes + [c for c in ("completed", "rejected", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms",
                                "tpot_p99_ms", "input_tok_s_per_gpu", "slo_attainment") if c in table]
    print_table(f"sweep: {len(table)} runs ({grid_path})", shown, table[shown].values.tolist())
