"""Simulator speed: simulated requests per minute of wall time, per router, on one core.

Usage: ``python benchmarks/simulate.py [--trace azure-conv] [--load 0.7] [--limit N] [--repeat 3]``.
Prints a table (median and worst of the repeats, ratio to round_robin in the same process).
The target is >= 200,000 requests/minute with the SBS router on the Azure conversation trace.
"""

from __future__ import annotations

import argparse
import statistics

from sbsopt.sim import ClusterConfig, simulate
from sbsopt.workload import load_trace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace", default="azure-conv")
    parser.add_argument("--load", type=float, default=0.7)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--routers", default="round_robin,least_tokens,vllm_score,sbs")
    args = parser.parse_args()
    workload = load_trace(args.trace, limit=args.limit)
    cluster = ClusterConfig()
    simulate(workload.head(200), cluster=cluster, router="sbs", load=args.load)  # JIT warm-up
    rows = []
    for router in args.routers.split(","):
        walls = []
        for _ in range(args.repeat):
            result = simulate(workload, cluster=cluster, router=router, load=args.load)
            walls.append(result.sim_wall_s)
        rows.append((router, statistics.median(walls), max(walls), result.summary()["completed"]))
    base = rows[0][1]
    print(f"trace={args.trace} requests={len(workload)} load={args.load} repeats={args.repeat}")
    print(f"{'router':<16}{'median s':>10}{'worst s':>10}{'req/min (median)':>18}{'x ' + rows[0][0]:>18}{'completed':>11}")
    for router, median, worst, completed in rows:
        print(f"{router:<16}{median:>10.3f}{worst:>10.3f}{len(workload) / median * 60:>18,.0f}"
              f"{median / base:>18.2f}{completed:>11}")


if __name__ == "__main__":
    main()
