"""SBS versus immediate dispatch on the bundled traces at several loads: TTFT, its split, throughput.

Usage: ``python benchmarks/sbs_vs_immediate.py [--traces azure-conv,azure-code,mooncake-conv]
[--loads 0.3,0.5,0.7,0.9] [--limit N[,N...|all]] [--interval engine_paced]``.
For each trace and load: the best immediate router by mean TTFT (among round_robin,
least_requests, least_tokens, vllm_score, shortest_queue) against SBS, with relative changes.
Several limits (first N requests of each trace) give one row each and then, per trace and
load, the median and range of the relative changes: on an overloaded cluster (Mooncake) one
prefix of the trace is one sample of a noisy quantity.

The first table gives the immediate routers ideal routing: one router process that picks the
DP rank itself. The production-shaped table (``--production-replicas R``, 0 = none; written to
``NAME_production.md`` beside ``--markdown NAME.md``) runs them as production does: R router
replicas behind a load balancer, each with its own view, and the DP rank picked by the engine
(``--production-pinning``, default ``bootstrap_room``: SGLang's PD defaults); see
``SchedulerConfig.router_replicas`` and ``dp_pinning``. SBS, one central scheduler that pins
ranks itself, is the same run in both tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import median

import _report  # benchmarks/_report.py

from sbsopt.sim import DP_PINNINGS, IMMEDIATE_ROUTERS, ClusterConfig, SchedulerConfig, simulate
from sbsopt.workload import load_trace


def change(a: float, b: float) -> float:
    """Relative change of ``a`` against ``b``, percent."""
    return 100 * (a - b) / b


def rel(a: float, b: float) -> str:
    return f"{change(a, b):+.1f}%"


def split(summary: dict) -> str:
    x = summary["ttft_split_ms"]
    return f"{x['sched_wait']:.0f}/{x['engine_wait']:.0f}/{x['exec']:.0f}"


def best_immediate(workload, routers: list[str], load: float, cluster: ClusterConfig,
                   scheduler: SchedulerConfig) -> tuple[dict, float]:
    """Summary of the immediate router with the lowest mean TTFT, and the wall time of all."""
    wall = 0.0
    best = None
    for router in routers:
        s = simulate(workload, cluster=cluster, router=router, load=load, scheduler=scheduler).summary()
        wall += s["sim_wall_s"]
        if best is None or s["ttft_ms"]["mean"] < best["ttft_ms"]["mean"]:
            best = s
    assert best is not None
    return best, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", default="azure-conv,azure-code,mooncake-conv")
    parser.add_argument("--loads", default="0.3,0.5,0.7,0.9")
    parser.add_argument("--limit", default=None, help="N or N,N,... (first N requests; 'all': the whole trace)")
    parser.add_argument("--interval", default="engine_paced")
    parser.add_argument("--immediate", default=",".join(IMMEDIATE_ROUTERS))
    parser.add_argument("--production-replicas", type=int, default=3,
                        help="router replicas of the production-shaped table (0: no such table; default: the "
                             "vLLM production-stack chart's router autoscaling maximum)")
    parser.add_argument("--production-pinning", default="bootstrap_room", choices=DP_PINNINGS)
    _report.add_option(parser)
    args = parser.parse_args()
    production = None
    if args.production_replicas > 0:
        production = SchedulerConfig(router_replicas=args.production_replicas, dp_pinning=args.production_pinning)
    prod = _report.Table(["trace", "load", "best ideal", "TTFT ms", "p99 ms", "best production", "TTFT ms",
                          "p99 ms", "SBS TTFT", "SBS p99", "dTTFT ideal", "dTTFT prod", "dTTFTp99 ideal",
                          "dTTFTp99 prod"], "lrlrrlrrrrrrrr")
    prod_spread: dict[tuple[str, float], list[tuple[float, ...]]] = {}
    cluster = ClusterConfig()
    table = _report.Table(["trace", "load", "best immediate", "TTFT ms", "SBS TTFT", "dTTFT",
                           "dTTFTp99", "dthr_in", "imm buf/eng/exec", "SBS buf/eng/exec",
                           "bubble imm/SBS", "wall s"], "lrlrrrrrlllr")
    limits = [None] if args.limit is None else [None if x == "all" else int(x) for x in args.limit.split(",")]
    setup = f"interval={args.interval} limits={limits}"
    print(setup)
    print(_row(table.columns))
    spread: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    for name, limit in ((n, m) for n in args.traces.split(",") for m in limits):
        workload = load_trace(name, limit=limit)
        label = name if limit is None else f"{name}[:{limit}]"
        for load in (float(x) for x in args.loads.split(",")):
            best, wall = best_immediate(workload, args.immediate.split(","), load, cluster, SchedulerConfig())
            sbs = simulate(workload, cluster=cluster, router="sbs", interval=args.interval, load=load).summary()
            wall += sbs["sim_wall_s"]

            spread.setdefault((name, load), []).append((
                change(sbs["ttft_ms"]["mean"], best["ttft_ms"]["mean"]),
                change(sbs["ttft_ms"]["p99"], best["ttft_ms"]["p99"]),
                change(sbs["throughput_tok_s_per_gpu"]["input"],
                       best["throughput_tok_s_per_gpu"]["input"])))
            cells = (label, f"{load:.1f}", best["router"], f"{best['ttft_ms']['mean']:.0f}",
                     f"{sbs['ttft_ms']['mean']:.0f}",
                     rel(sbs["ttft_ms"]["mean"], best["ttft_ms"]["mean"]),
                     rel(sbs["ttft_ms"]["p99"], best["ttft_ms"]["p99"]),
                     rel(sbs["throughput_tok_s_per_gpu"]["input"],
                         best["throughput_tok_s_per_gpu"]["input"]),
                     split(best), split(sbs),
                     f"{best['bubble_fraction']:.2f}/{sbs['bubble_fraction']:.2f}", f"{wall:.1f}")
            table.add(*cells)
            print(_row(cells), flush=True)
            if production is not None:
                shaped, _ = best_immediate(workload, args.immediate.split(","), load, cluster, production)
                prod.add(*_production_cells(label, load, best, shaped, sbs))
                prod_spread.setdefault((name, load), []).append(tuple(
                    change(sbs["ttft_ms"][q], shaped["ttft_ms"][q]) for q in ("mean", "p99")))
    blocks: list[str | _report.Table] = [f"`{setup}`", table]
    if len(limits) > 1:
        caption = "SBS against the best immediate router over the limits: median [min, max]"
        over = _report.Table(["trace", "load", "dTTFT mean", "dTTFT p99", "dthr_in"], "lrlll")
        print(f"\n{caption}")
        print(_spread_row(over.columns))
        for (name, load), rows in spread.items():
            cols = []
            for values in zip(*rows, strict=True):
                cols.append(f"{median(values):+.1f}% [{min(values):+.1f}, {max(values):+.1f}]")
            over.add(name, f"{load:.1f}", *cols)
            print(_spread_row([name, f"{load:.1f}", *cols]))
        blocks += [caption, over]
    _report.write(args.markdown, blocks)
    if production is not None:
        _write_production(args, limits, prod, prod_spread)


def _production_cells(label: str, load: float, ideal: dict, shaped: dict, sbs: dict) -> list[str]:
    """One row of the production-shaped table: the best immediate router under ideal and under
    production-shaped routing, and SBS's relative changes against each."""
    i, p, b = ideal["ttft_ms"], shaped["ttft_ms"], sbs["ttft_ms"]
    return [label, f"{load:.1f}", ideal["router"], f"{i['mean']:.0f}", f"{i['p99']:.0f}", shaped["router"],
            f"{p['mean']:.0f}", f"{p['p99']:.0f}", f"{b['mean']:.0f}", f"{b['p99']:.0f}",
            rel(b["mean"], i["mean"]), rel(b["mean"], p["mean"]), rel(b["p99"], i["p99"]), rel(b["p99"], p["p99"])]


def _write_production(args: argparse.Namespace, limits: list, table: _report.Table,
                      spread: dict[tuple[str, float], list[tuple[float, ...]]]) -> None:
    """Print the production-shaped table and write it to ``NAME_production.md`` beside ``--markdown``."""
    setup = (f"interval={args.interval} limits={limits} production: router_replicas={args.production_replicas} "
             f"dp_pinning={args.production_pinning} report_period_s={SchedulerConfig().report_period_s}")
    print(f"\nSBS against the best immediate router, ideal and production-shaped ({setup})")
    print(table.markdown())
    blocks: list[str | _report.Table] = [f"`{setup}`", table]
    if len(limits) > 1:
        caption = "SBS against the best production-shaped immediate router over the limits: median [min, max]"
        over = _report.Table(["trace", "load", "dTTFT mean", "dTTFT p99"], "lrll")
        for (name, load), rows in spread.items():
            over.add(name, f"{load:.1f}", *(f"{median(v):+.1f}% [{min(v):+.1f}, {max(v):+.1f}]"
                                            for v in zip(*rows, strict=True)))
        print(f"\n{caption}\n{over.markdown()}")
        blocks += [caption, over]
    if args.markdown is not None:
        path = Path(args.markdown)
        _report.write(path.with_name(f"{path.stem}_production{path.suffix}"), blocks)


def _row(cells: tuple[str, ...] | list[str]) -> str:
    return (_report.line(cells[:2], (-14, 5)) + " "
            + _report.line(cells[2:8], (-15, 9, 9, 8, 9, 8)) + "  "
            + _report.line(cells[8:], (-18, -18, -15, 7)))


def _spread_row(cells: list[str]) -> str:
    return _report.line(cells[:2], (-14, 5)) + "  " + _report.line(cells[2:], (-24, -24, -24))


if __name__ == "__main__":
    main()
