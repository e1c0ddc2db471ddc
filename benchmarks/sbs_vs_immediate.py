"""SBS versus immediate dispatch on the bundled traces at several loads: TTFT, its split, throughput.

Usage: ``python benchmarks/sbs_vs_immediate.py [--traces azure-conv,azure-code,mooncake-conv]
[--loads 0.3,0.5,0.7,0.9] [--limit N[,N...]] [--interval engine_paced]``.
For each trace and load: the best immediate router by mean TTFT (among round_robin,
least_requests, least_tokens, vllm_score, shortest_queue) against SBS, with relative changes.
Several limits (first N requests of each trace) give one row each and then, per trace and
load, the median and range of the relative changes: on an overloaded cluster (Mooncake) one
prefix of the trace is one sample of a noisy quantity.
"""

from __future__ import annotations

import argparse
from statistics import median

import _report  # benchmarks/_report.py

from sbsopt.sim import IMMEDIATE_ROUTERS, ClusterConfig, simulate
from sbsopt.workload import load_trace


def change(a: float, b: float) -> float:
    """Relative change of ``a`` against ``b``, percent."""
    return 100 * (a - b) / b


def rel(a: float, b: float) -> str:
    return f"{change(a, b):+.1f}%"


def split(summary: dict) -> str:
    x = summary["ttft_split_ms"]
    return f"{x['sched_wait']:.0f}/{x['engine_wait']:.0f}/{x['exec']:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", default="azure-conv,azure-code,mooncake-conv")
    parser.add_argument("--loads", default="0.3,0.5,0.7,0.9")
    parser.add_argument("--limit", default=None, help="N or N,N,... (first N requests)")
    parser.add_argument("--interval", default="engine_paced")
    parser.add_argument("--immediate", default=",".join(IMMEDIATE_ROUTERS))
    _report.add_option(parser)
    args = parser.parse_args()
    cluster = ClusterConfig()
    table = _report.Table(["trace", "load", "best immediate", "TTFT ms", "SBS TTFT", "dTTFT",
                           "dTTFTp99", "dthr_in", "imm buf/eng/exec", "SBS buf/eng/exec",
                           "bubble imm/SBS", "wall s"], "lrlrrrrrlllr")
    limits = [None] if args.limit is None else [int(x) for x in args.limit.split(",")]
    setup = f"interval={args.interval} limits={limits}"
    print(setup)
    print(_row(table.columns))
    spread: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    for name, limit in ((n, m) for n in args.traces.split(",") for m in limits):
        workload = load_trace(name, limit=limit)
        label = name if limit is None else f"{name}[:{limit}]"
        for load in (float(x) for x in args.loads.split(",")):
            wall = 0.0
            best = None
            for router in args.immediate.split(","):
                res = simulate(workload, cluster=cluster, router=router, load=load)
                s = res.summary()
                wall += s["sim_wall_s"]
                if best is None or s["ttft_ms"]["mean"] < best["ttft_ms"]["mean"]:
                    best = s
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


def _row(cells: tuple[str, ...] | list[str]) -> str:
    return (_report.line(cells[:2], (-14, 5)) + " "
            + _report.line(cells[2:8], (-15, 9, 9, 8, 9, 8)) + "  "
            + _report.line(cells[8:], (-18, -18, -15, 7)))


def _spread_row(cells: list[str]) -> str:
    return _report.line(cells[:2], (-14, 5)) + "  " + _report.line(cells[2:], (-24, -24, -24))


if __name__ == "__main__":
    main()
