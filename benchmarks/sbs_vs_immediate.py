"""SBS versus immediate dispatch on the bundled traces at several loads: TTFT, its split, throughput.

Usage: ``python benchmarks/sbs_vs_immediate.py [--traces azure-conv,azure-code,mooncake-conv]
[--loads 0.3,0.5,0.7,0.9] [--limit N] [--interval engine_paced]``.
For each trace and load: the best immediate router by mean TTFT (among round_robin,
least_requests, least_tokens, vllm_score, shortest_queue) against SBS, with relative changes.
"""

from __future__ import annotations

import argparse

from sbsopt.sim import IMMEDIATE_ROUTERS, ClusterConfig, simulate
from sbsopt.workload import load_trace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", default="azure-conv,azure-code,mooncake-conv")
    parser.add_argument("--loads", default="0.3,0.5,0.7,0.9")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--interval", default="engine_paced")
    parser.add_argument("--immediate", default=",".join(IMMEDIATE_ROUTERS))
    args = parser.parse_args()
    cluster = ClusterConfig()
    header = (f"{'trace':<14}{'load':>5} {'best immediate':<15}{'TTFT ms':>9}{'SBS TTFT':>9}{'dTTFT':>8}"
              f"{'dTTFTp99':>9}{'dthr_in':>8}  {'imm buf/eng/exec':<18}{'SBS buf/eng/exec':<18}"
              f"{'bubble imm/SBS':<15}{'wall s':>7}")
    print(f"interval={args.interval} limit={args.limit}")
    print(header)
    for name in args.traces.split(","):
        workload = load_trace(name, limit=args.limit)
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

            def rel(a, b):
                return f"{100 * (a - b) / b:+.1f}%"

            def split(s):
                x = s["ttft_split_ms"]
                return f"{x['sched_wait']:.0f}/{x['engine_wait']:.0f}/{x['exec']:.0f}"

            print(f"{name:<14}{load:>5.1f} {best['router']:<15}{best['ttft_ms']['mean']:>9.0f}"
                  f"{sbs['ttft_ms']['mean']:>9.0f}{rel(sbs['ttft_ms']['mean'], best['ttft_ms']['mean']):>8}"
                  f"{rel(sbs['ttft_ms']['p99'], best['ttft_ms']['p99']):>9}"
                  f"{rel(sbs['throughput_tok_s_per_gpu']['input'], best['throughput_tok_s_per_gpu']['input']):>8}  "
                  f"{split(best):<18}{split(sbs):<18}"
                  f"{best['bubble_fraction']:.2f}/{sbs['bubble_fraction']:.2f}{'':<6}{wall:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
