"""Simulator speed: simulated requests per minute of wall time, per router, on one core.

Usage: ``python benchmarks/simulate.py [--trace azure-conv] [--load 0.7] [--limit N] [--repeat 3]
[--sbs-loads 0.3,0.5,0.9]``.
Prints a table (median and worst of the repeats, ratio to round_robin in the same process),
plus SBS rows at the other loads and a light-load row: SBS at the trace's own arrival rate,
where every request is its own window. The target is >= 1,000,000 requests/minute with the SBS router on the Azure
conversation trace, at every load.
"""

from __future__ import annotations

import argparse
import statistics

import _report  # benchmarks/_report.py

from sbsopt.sim import ClusterConfig, simulate
from sbsopt.workload import load_trace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace", default="azure-conv")
    parser.add_argument("--load", type=float, default=0.7)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--routers", default="round_robin,least_tokens,vllm_score,sbs")
    parser.add_argument("--no-light", action="store_true", help="skip the SBS row at the trace's own rate")
    parser.add_argument("--sbs-loads", default="0.3,0.5,0.9",
                        help="more SBS rows at these loads (comma-separated; '' for none)")
    _report.add_option(parser)
    args = parser.parse_args()
    workload = load_trace(args.trace, limit=args.limit)
    cluster = ClusterConfig()
    simulate(workload.head(200), cluster=cluster, router="sbs", load=args.load)  # JIT warm-up
    rows = []
    runs = [(router, args.load) for router in args.routers.split(",")]
    runs += [("sbs", float(x)) for x in args.sbs_loads.split(",") if x]
    if not args.no_light:
        runs.append(("sbs", None))  # the trace's own (light) rate
    for router, load in runs:
        walls = []
        for _ in range(args.repeat):
            result = simulate(workload, cluster=cluster, router=router, load=load)
            walls.append(result.sim_wall_s)
        label = f"{router} (own rate)" if load is None else router if load == args.load else f"{router} (load {load:g})"
        rows.append((label, statistics.median(walls), max(walls), result.summary()["completed"]))
    base = rows[0][1]
    setup = f"trace={args.trace} requests={len(workload)} load={args.load} repeats={args.repeat}"
    print(setup)
    widths = (-16, 10, 10, 18, 18, 11)
    table = _report.Table(["router", "median s", "worst s", "req/min (median)",
                           "x " + rows[0][0], "completed"], "lrrrrr")
    print(_report.line(table.columns, widths))
    for router, median, worst, completed in rows:
        cells = (router, f"{median:.3f}", f"{worst:.3f}", f"{len(workload) / median * 60:,.0f}",
                 f"{median / base:.2f}", f"{completed}")
        table.add(*cells)
        print(_report.line(cells, widths))
    _report.write(args.markdown, [f"`{setup}`", table])


if __name__ == "__main__":
    main()
