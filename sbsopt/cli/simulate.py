"""``sbsopt simulate`` and ``sbsopt compare``: run the cluster simulator on a trace."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sbsopt._optional import require
from sbsopt.cli._options import (
    BATCHING_CHOICES,
    ROUTER_CHOICES,
    cluster_from_options,
    cluster_options,
    engine_options,
    router_option,
    window_options,
)
from sbsopt.errors import InvalidInputError
from sbsopt.sim.config import DEFAULT_TPOT_SLO_MS, DEFAULT_TTFT_SLO_MS

__all__ = ["simulate", "compare"]


def _common(func):
    options = [
        click.option("--trace", required=True, help="azure-conv, azure-code, mooncake-conv, sharegpt, arxiv or a PATH"),
        click.option("--load", type=float, default=None, help="offered prefill load (fraction of capacity)"),
        click.option("--rate", type=float, default=None, help="arrival rate (requests/s)"),
        click.option("--limit", type=int, default=None, help="first N requests"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--ttft-slo-ms", type=float, default=None,
                     help=f"judge the run by this TTFT SLO (colocated: also the engines' deadline, default "
                     f"{DEFAULT_TTFT_SLO_MS:g})"),
        click.option("--tpot-slo-ms", type=float, default=None,
                     help=f"judge the run by this TPOT SLO (colocated: also the engines' deadline, default "
                     f"{DEFAULT_TPOT_SLO_MS:g})"),
        click.option("--json", "as_json", is_flag=True, help="print one JSON object"),
    ]
    func = window_options(cluster_options(engine_options(func)))
    for option in reversed(options):
        func = option(func)
    return func


def _setup(trace, load, rate, limit, seed, mode, cluster_flags):
    from sbsopt.workload import load_trace

    if load is not None and rate is not None:
        raise InvalidInputError("--load", load, "either --load or --rate, not both")
    cluster = cluster_from_options(mode, **cluster_flags)
    workload = load_trace(trace, limit=limit, seed=seed)
    return cluster, workload


def _run(workload, cluster, *, mode, router, interval, solver, seed, load, rate, batching, token_budget,
         ttft_slo_ms, tpot_slo_ms, faults=(), slow_ranks=()):
    """One :func:`sbsopt.sim.simulate` call; the SLOs are the colocated engines' deadlines."""
    from sbsopt.sim import simulate as run

    colocated = {"ttft_slo_ms": ttft_slo_ms, "tpot_slo_ms": tpot_slo_ms} if mode == "colocated" else {}
    return run(workload, cluster=cluster, router=router, interval=interval, solver=solver, seed=seed, load=load,
               rate=rate, mode=mode, batching=batching, token_budget=token_budget, faults=faults,
               slow_ranks=slow_ranks, **colocated)


@click.command("simulate")
@_common
@router_option
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="write the per-request table (.parquet or .csv)")
@click.option("--fail", "fails", multiple=True,
              help="KIND:INDEX@TIMEs[+DURATIONs]: an instance dies (and recovers), e.g. decode:0@60s+30s; repeatable")
@click.option("--slow-rank", "slow_ranks", multiple=True,
              help="KIND:INDEX:RANK:FACTOR: a straggler DP rank slows its instance's steps; repeatable")
def simulate(trace, interval, solver, prefill_instances, decode_instances, prefill_ep, decode_ep,
             load, rate, limit, seed, ttft_slo_ms, tpot_slo_ms, as_json, mode, batching, token_budget,
             instances, ep, router, out, fails, slow_ranks, hardware, mtp_acceptance):
    """Simulate one router on a trace and print its metrics."""
    from sbsopt.sim.faults import parse_fault, parse_slow_rank

    faults = [parse_fault(f) for f in fails]
    slows = [parse_slow_rank(r) for r in slow_ranks]
    if out is not None and Path(out).suffix not in (".parquet", ".csv"):
        raise InvalidInputError("--out", out, "a path ending in .parquet or .csv")
    cluster, workload = _setup(trace, load, rate, limit, seed, mode, dict(
        prefill_instances=prefill_instances, decode_instances=decode_instances, prefill_ep=prefill_ep,
        decode_ep=decode_ep, instances=instances, ep=ep, hardware=hardware, mtp_acceptance=mtp_acceptance))
    result = _run(workload, cluster, mode=mode, router=router, interval=interval, solver=solver, seed=seed,
                  load=load, rate=rate, batching=batching, token_budget=token_budget, ttft_slo_ms=ttft_slo_ms,
                  tpot_slo_ms=tpot_slo_ms, faults=faults, slow_ranks=slows)
    summary = result.summary(ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms)
    summary.update(_capacity_fields(workload, cluster, mode, summary["offered_rate_req_s"]))
    if out is not None:
        if out.endswith(".parquet"):
            require("pyarrow", "sim", feature="--out *.parquet")
            result.requests.to_parquet(out, index=False)
        else:
            result.requests.to_csv(out, index=False)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        _print_table([summary], baseline=None, batching=False)


def _capacity_fields(workload, cluster, mode: str, offered_rate_req_s: float) -> dict:
    """The saturation throughput ``--load`` is a fraction of (measured once, then cached), and
    the run's offered load against it."""
    from sbsopt.sim import saturation_capacity

    capacity = saturation_capacity(workload, cluster, mode=mode)
    return {**capacity.as_dict(), "offered_load": offered_rate_req_s / capacity.req_s}


@click.command("compare")
@_common
@click.option("--routers", default="sbs,least_tokens,round_robin", show_default=True,
              help="comma-separated routers")
@click.option("--batchings", default=None, help="comma-separated engine policies, e.g. sarathi,fairbatching "
              "(every router runs with each; default: --batching)")
def compare(trace, interval, solver, prefill_instances, decode_instances, prefill_ep, decode_ep,
            load, rate, limit, seed, ttft_slo_ms, tpot_slo_ms, as_json, mode, batching, token_budget,
            instances, ep, routers, batchings, hardware, mtp_acceptance):
    """Run several routers on the same trace; relative change against the best immediate router."""
    from tqdm import tqdm

    names = [r.strip() for r in routers.split(",") if r.strip()]
    for name in names:
        if name not in ROUTER_CHOICES:
            raise InvalidInputError("--routers", name, f"one of {', '.join(ROUTER_CHOICES)}")
    engines = [b.strip() for b in (batchings or batching).split(",") if b.strip()]
    for name in engines:
        if name not in BATCHING_CHOICES:
            raise InvalidInputError("--batchings", name, f"one of {', '.join(BATCHING_CHOICES)}")
    cluster, workload = _setup(trace, load, rate, limit, seed, mode, dict(
        prefill_instances=prefill_instances, decode_instances=decode_instances, prefill_ep=prefill_ep,
        decode_ep=decode_ep, instances=instances, ep=ep, hardware=hardware, mtp_acceptance=mtp_acceptance))
    summaries = []
    pairs = [(r, b) for r in names for b in engines]
    # disable=None: no bar when stderr is not a terminal
    for name, engine_name in tqdm(pairs, desc="runs", disable=True if as_json else None,
                                  leave=False):
        result = _run(workload, cluster, mode=mode, router=name, interval=interval, solver=solver, seed=seed,
                      load=load, rate=rate, batching=engine_name, token_budget=token_budget,
                      ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms)
        summaries.append({**result.summary(ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms),
                          "batching": engine_name})
    immediate = [s for s in summaries if s["router"] != "sbs" and s["ttft_ms"]["mean"] is not None]
    baseline = min(immediate, key=lambda s: s["ttft_ms"]["mean"]) if immediate else None
    for s in summaries:
        s["vs_best_immediate"] = _relative(s, baseline)
    if as_json:
        click.echo(json.dumps({"routers": summaries,
                               "best_immediate": baseline["router"] if baseline else None},
                              sort_keys=True))
    else:
        _print_table(summaries, baseline=baseline, batching=len(engines) > 1 or mode == "colocated")


def _relative(summary: dict, baseline: dict | None) -> dict | None:
    if baseline is None:
        return None

    def change(a, b):
        return None if a is None or not b else (a - b) / b

    return {
        "ttft_mean": change(summary["ttft_ms"]["mean"], baseline["ttft_ms"]["mean"]),
        "ttft_p99": change(summary["ttft_ms"]["p99"], baseline["ttft_ms"]["p99"]),
        "throughput_input": change(summary["throughput_tok_s_per_gpu"]["input"],
                                   baseline["throughput_tok_s_per_gpu"]["input"]),
        "throughput_output": change(summary["throughput_tok_s_per_gpu"]["output"],
                                    baseline["throughput_tok_s_per_gpu"]["output"]),
    }


def _fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def _print_table(summaries: list[dict], baseline: dict | None, *, batching: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("router", "done/rej/inflight", "TTFT mean", "p50", "p99", "buffer/engine/exec ms",
                "TPOT mean", "in tok/s/GPU", "out tok/s/GPU", "bubble", "chunk util", "vs best immediate"):
        table.add_column(col)
    for s in summaries:
        split = s["ttft_split_ms"]
        rel = s.get("vs_best_immediate")
        rel_text = "-" if not rel else (
            f"TTFT {_fmt(rel['ttft_mean'] and 100 * rel['ttft_mean'], '+.1f')}%, "
            f"thr {_fmt(rel['throughput_input'] and 100 * rel['throughput_input'], '+.1f')}%"
        )
        table.add_row(
            s["router"] + (f" ({s['interval']})" if s.get("interval") else "")
            + (f" [{s['batching']}]" if batching else ""),
            f"{s['completed']}/{s['rejected']}/{s['in_flight']}",
            _fmt(s["ttft_ms"]["mean"]), _fmt(s["ttft_ms"]["p50"]), _fmt(s["ttft_ms"]["p99"]),
            f"{_fmt(split['sched_wait'])}/{_fmt(split['engine_wait'])}/{_fmt(split['exec'])}",
            _fmt(s["tpot_ms"]["mean"], ".2f"),
            _fmt(s["throughput_tok_s_per_gpu"]["input"], ".0f"),
            _fmt(s["throughput_tok_s_per_gpu"]["output"], ".0f"),
            _fmt(s["bubble_fraction"], ".3f"), _fmt(s["chunk_utilization"], ".3f"), rel_text,
        )
    Console(width=200).print(table)
