"""``sbsopt simulate`` and ``sbsopt compare``: run the cluster simulator on a trace."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sbsopt.cli._options import ROUTER_CHOICES as _ROUTER_CHOICES
from sbsopt.cli._options import cluster_options, engine_options
from sbsopt.errors import InvalidInputError

__all__ = ["simulate", "compare"]


def _common(func):
    options = [
        click.option("--trace", required=True, help="azure-conv, azure-code, mooncake-conv, sharegpt, arxiv or a PATH"),
        click.option("--interval", default="engine_paced", show_default=True,
                     help="SBS interval: engine_paced, adaptive, fixed or fixed:MS"),
        click.option("--solver", type=click.Choice(["greedy", "cpsat", "auto"]), default="greedy", show_default=True),
        click.option("--load", type=float, default=None, help="offered prefill load (fraction of capacity)"),
        click.option("--rate", type=float, default=None, help="arrival rate (requests/s)"),
        click.option("--limit", type=int, default=None, help="first N requests"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--ttft-slo-ms", type=float, default=None),
        click.option("--tpot-slo-ms", type=float, default=None),
        click.option("--json", "as_json", is_flag=True, help="print one JSON object"),
    ]
    func = cluster_options(engine_options(func))
    for option in reversed(options):
        func = option(func)
    return func


def _engine(mode, batching, token_budget, instances, ep, tpot_slo_ms, cluster):
    """Cluster and batching argument of ``simulate`` for ``--mode`` (colocated: ``--instances --ep``)."""
    if mode != "colocated":
        return cluster, batching
    from sbsopt.sim import ClusterConfig
    from sbsopt.sim.batching import make_policy
    from sbsopt.sim.colocated import DEFAULT_TPOT_SLO_MS, default_colocated_ep

    cluster = ClusterConfig(prefill_instances=instances, prefill_ep=ep or default_colocated_ep())
    tpot_s = (tpot_slo_ms or DEFAULT_TPOT_SLO_MS) / 1e3
    name = "sarathi" if batching == "default" else batching
    return cluster, make_policy(name, tpot_slo_s=tpot_s, token_budget=token_budget)


def _setup(trace, prefill_instances, decode_instances, prefill_ep, decode_ep, load, rate, limit, seed):
    from sbsopt.sim import ClusterConfig
    from sbsopt.workload import load_trace

    if load is not None and rate is not None:
        raise InvalidInputError("--load", load, "either --load or --rate, not both")
    cluster = ClusterConfig(prefill_instances=prefill_instances, decode_instances=decode_instances,
                            prefill_ep=prefill_ep, decode_ep=decode_ep)
    workload = load_trace(trace, limit=limit, seed=seed)
    return cluster, workload


@click.command("simulate")
@_common
@click.option("--router", type=click.Choice(_ROUTER_CHOICES), default="sbs", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="write the per-request table (.parquet or .csv)")
@click.option("--fail", "fails", multiple=True,
              help="KIND:INDEX@TIMEs[+DURATIONs]: an instance dies (and recovers), e.g. decode:0@60s+30s; repeatable")
@click.option("--slow-rank", "slow_ranks", multiple=True,
              help="KIND:INDEX:RANK:FACTOR: a straggler DP rank slows its instance's steps; repeatable")
def simulate(trace, interval, solver, prefill_instances, decode_instances, prefill_ep, decode_ep,
             load, rate, limit, seed, ttft_slo_ms, tpot_slo_ms, as_json, mode, batching, token_budget,
             instances, ep, router, out, fails, slow_ranks):
    """Simulate one router on a trace and print its metrics."""
    from sbsopt.sim import simulate as run
    from sbsopt.sim.faults import parse_fault, parse_slow_rank

    faults = [parse_fault(f) for f in fails]
    slows = [parse_slow_rank(r) for r in slow_ranks]
    if out is not None and Path(out).suffix not in (".parquet", ".csv"):
        raise InvalidInputError("--out", out, "a path ending in .parquet or .csv")
    cluster, workload = _setup(trace, prefill_instances, decode_instances, prefill_ep, decode_ep,
                               load, rate, limit, seed)
    cluster, engine = _engine(mode, batching, token_budget, instances, ep, tpot_slo_ms, cluster)
    result = run(workload, cluster=cluster, router=router, interval=interval, solver=solver,
                 seed=seed, load=load, rate=rate, mode=mode, batching=engine, faults=faults, slow_ranks=slows)
    summary = result.summary(ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms)
    if out is not None:
        import pandas as pd

        table = pd.DataFrame(result.requests)
        if out.endswith(".parquet"):
            table.to_parquet(out, index=False)
        else:
            table.to_csv(out, index=False)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        _print_table([summary], baseline=None)


@click.command("compare")
@_common
@click.option("--routers", default="sbs,least_tokens,round_robin", show_default=True,
              help="comma-separated routers")
@click.option("--batchings", default=None, help="comma-separated engine policies, e.g. sarathi,fairbatching "
              "(every router runs with each; default: --batching)")
def compare(trace, interval, solver, prefill_instances, decode_instances, prefill_ep, decode_ep,
            load, rate, limit, seed, ttft_slo_ms, tpot_slo_ms, as_json, mode, batching, token_budget,
            instances, ep, routers, batchings):
    """Run several routers on the same trace; relative change against the best immediate router."""
    from tqdm import tqdm

    from sbsopt.sim import simulate as run

    names = [r.strip() for r in routers.split(",") if r.strip()]
    for name in names:
        if name not in _ROUTER_CHOICES:
            raise InvalidInputError("--routers", name, f"one of {', '.join(_ROUTER_CHOICES)}")
    engines = [b.strip() for b in (batchings or batching).split(",") if b.strip()]
    for name in engines:
        if name not in ("default", "sarathi", "fairbatching"):
            raise InvalidInputError("--batchings", name, "one of default, sarathi, fairbatching")
    cluster, workload = _setup(trace, prefill_instances, decode_instances, prefill_ep, decode_ep,
                               load, rate, limit, seed)
    summaries = []
    pairs = [(r, b) for r in names for b in engines]
    # disable=None: no bar when stderr is not a terminal
    for name, engine_name in tqdm(pairs, desc="runs", disable=True if as_json else None,
                                  leave=False):
        run_cluster, engine = _engine(mode, engine_name, token_budget, instances, ep, tpot_slo_ms, cluster)
        result = run(workload, cluster=run_cluster, router=name, interval=interval, solver=solver,
                     seed=seed, load=load, rate=rate, mode=mode, batching=engine)
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
        _print_table(summaries, baseline=baseline)


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


def _print_table(summaries: list[dict], baseline: dict | None) -> None:
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
            + (f" [{s['batching']}]" if s.get("batching") not in (None, "default") else ""),
            f"{s['completed']}/{s['rejected']}/{s['in_flight']}",
            _fmt(s["ttft_ms"]["mean"]), _fmt(s["ttft_ms"]["p50"]), _fmt(s["ttft_ms"]["p99"]),
            f"{_fmt(split['sched_wait'])}/{_fmt(split['engine_wait'])}/{_fmt(split['exec'])}",
            _fmt(s["tpot_ms"]["mean"], ".2f"),
            _fmt(s["throughput_tok_s_per_gpu"]["input"], ".0f"),
            _fmt(s["throughput_tok_s_per_gpu"]["output"], ".0f"),
            _fmt(s["bubble_fraction"], ".3f"), _fmt(s["chunk_utilization"], ".3f"), rel_text,
        )
    Console(width=200).print(table)
