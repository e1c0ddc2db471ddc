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
    args = parser.parse_args()
    cluster = ClusterConfig()
    header = (f"{'trace':<14}{'load':>5} {'best immediate':<15}{'TTFT ms':>9}{'SBS TTFT':>9}{'dTTFT':>8}"
              f"{'dTTFTp99':>9}{'dthr_in':>8}  {'imm buf/eng/exec':<18}{'SBS buf/eng/exec':<18}"
              f"{'bubble imm/SBS':<15}{'wall s':>7}")
    limits = [None] if args.limit is None else [int(x) for x in args.limit.split(",")]
    print(f"interval={args.interval} limits={limits}")
    print(header)
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
            print(f"{label:<14}{load:>5.1f} {best['router']:<15}{best['ttft_ms']['mean']:>9.0f}"
                  f"{sbs['ttft_ms']['mean']:>9.0f}{rel(sbs['ttft_ms']['mean'], best['ttft_ms']['mean']):>8}"
                  f"{rel(sbs['ttft_ms']['p99'], best['ttft_ms']['p99']):>9}"
                  f"{rel(sbs['throughput_tok_s_per_gpu']['input'], best['throughput_tok_s_per_gpu']['input']):>8}  "
                  f"{split(best):<18}{split(sbs):<18}"
                  f"{best['bubble_fraction']:.2f}/{sbs['bubble_fraction']:.2f}{'':<6}{wall:>7.1f}", flush=True)
    if len(limits) > 1:
        print("\nSBS against the best immediate router over the limits: median [min, max]")
        print(f"{'trace':<14}{'load':>5}  {'dTTFT mean':<24}{'dTTFT p99':<24}{'dthr_in':<24}")
        for (name, load), rows in spread.items():
            cols = []
            for values in zip(*rows, strict=True):
                cols.append(f"{median(values):+.1f}% [{min(values):+.1f}, {max(values):+.1f}]")
            print(f"{name:<14}{load:>5.1f}  " + "".join(f"{c:<24}" for c in cols))


if __name__ == "__main__":
    main()
