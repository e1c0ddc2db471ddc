"""Window optimizer benchmark: latency, gap vs bound, greedy speedup over CP-SAT, one run.

Windows are cut from the bundled real traces (N consecutive arrivals, alternately from the
Azure 2023 conversation and code traces; ``--trace mooncake-conv`` uses the Mooncake trace
with prefix-cache hits from an LRU cache of its 512-token block hashes, whose long prompts make
most windows capacity-bound); arrival gaps are rescaled so that each window spans 100 ms (the
load at which a window holds N requests), on DP units whose residual load, free KV blocks and decode
batches are drawn from a seeded generator. Costs come from
the default calibrated cost model (DeepSeek-V3 on H800).

For each size the table reports, per method, the latency p50/p99 of ``solve`` on a built
window (for the greedy also the p99 of its thread CPU time, which excludes the preemption a
shared machine adds to wall-clock tails, and ``build`` = ``from_arrays`` + ``solve``), the gap against the best
bound known for that window (the max of every method's bound and the untimed ``lower_bound``:
LP relaxation, and host bound given the best answer),
as p50 / p90 / max over the windows, the statuses, and the greedy speedup (CP-SAT p50 /
greedy p50).

Run: ``python benchmarks/window.py`` (``--quick`` for a smaller run, ``--phase decode``).
"""

from __future__ import annotations

import argparse
import time

import _report  # benchmarks/_report.py
import numpy as np

from sbsopt.costmodel import load_cost_model
from sbsopt.window import DecodeWindow, PrefillWindow, lower_bound, solve, warm_up
from sbsopt.workload import PrefixCache, load_trace

SIZES = [(16, 4), (64, 8), (128, 16), (256, 32), (1024, 64)]


def trace_requests(name: str, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(new tokens, cached tokens, arrival s) of the first ``count`` requests of a trace."""
    wl = load_trace(name, limit=count)
    cached = np.zeros(len(wl), np.int64)
    if wl.block_hashes is not None:
        cache = PrefixCache(capacity_blocks=200_000, block_tokens=512)
        for i, hashes in enumerate(wl.block_hashes):
            cached[i] = cache.lookup(hashes, input_tokens=int(wl.input_tokens[i]))
            cache.insert(hashes)
    return wl.input_tokens - cached, cached, wl.arrival_s


def prefill_windows(n: int, j: int, count: int, rng: np.random.Generator) -> list[PrefillWindow]:
    out = []
    for k in range(count):
        new, cached, arrival = _REQUESTS[_TRACES[k % len(_TRACES)]]
        start = int(rng.integers(0, len(new) - n))
        sl = slice(start, start + n)
        # the window holds N requests: compress their arrivals into one 100 ms window
        t = arrival[sl] - arrival[start]
        t = t * (0.1 / t.max()) if t.max() > 0 else t
        out.append(PrefillWindow.from_arrays(
            new[sl], cached[sl], t, capacity_tokens=np.full(j, 16_384),
            load_tokens=rng.integers(0, 4096, j), free_kv_blocks=rng.integers(2000, 8000, j),
            now_s=float(t.max()) + 0.02, allow_chunking=_CHUNKING[0]))
    return out


def decode_windows(n: int, j: int, count: int, rng: np.random.Generator) -> list[DecodeWindow]:
    out = []
    for k in range(count):
        new, cached, _ = _REQUESTS[_TRACES[k % len(_TRACES)]]
        start = int(rng.integers(0, len(new) - n))
        context = (new + cached)[start:start + n] + rng.integers(0, 200, n)
        # running batches of similar size (continuous batching keeps them balanced)
        batch = rng.integers(40, 48, j)
        used = batch * rng.integers(20, 30, j)
        out.append(DecodeWindow.from_arrays(
            context, (context + 63) // 64, batch_size=batch, max_batch_size=np.full(j, 128),
            kv_blocks_used=used, free_kv_blocks=np.full(j, 8000) - used))
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(phase: str, sizes: list[tuple[int, int]], windows: int, repeats: int, budget_s: float,
        seed: int) -> list[str | _report.Table]:
    """Print the table of one phase; return it with its caption, for ``--markdown``."""
    rng = np.random.default_rng(seed)
    caption = f"{phase} windows (budget {budget_s * 1e3:.0f} ms, {windows} windows per size)"
    print(f"\n## {caption}\n")
    table = _report.Table(["size", "method", "p50 ms", "p99 ms", "p99 cpu ms", "build+solve p50 ms",
                           "gap p50", "gap p90", "gap max", "statuses", "speedup"], "llrrrrrrrlr")
    print(table.head)
    for n, j in sizes:
        count = windows if n * j <= 8192 else max(2, windows // 4)
        make = prefill_windows if phase == "prefill" else decode_windows
        problems = make(n, j, count, rng)
        results: dict[str, list] = {m: [] for m in ("greedy", "cpsat", "auto")}
        latency: dict[str, list[float]] = {m: [] for m in results}
        build: list[float] = []
        cpu: list[float] = []
        # greedy first, back to back: its latency is that of a hot loop (the simulator's case)
        for problem in problems:
            for _ in range(repeats):
                c0, t0 = time.thread_time(), time.perf_counter()
                r = solve(problem, method="greedy", time_limit_s=budget_s, seed=seed)
                latency["greedy"].append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
            results["greedy"].append(r)
        for problem in problems:
            for method in ("cpsat", "auto"):
                t0 = time.perf_counter()
                results[method].append(solve(problem, method=method, time_limit_s=budget_s,
                                             seed=seed))
                latency[method].append(time.perf_counter() - t0)
        for problem in problems:
            if phase == "prefill":
                args = (problem.new_tokens, problem.cached_tokens, problem.arrival_s)
                kw = {"capacity_tokens": problem.capacity_tokens,
                      "load_tokens": problem.load_tokens, "free_kv_blocks": problem.free_kv_blocks,
                      "now_s": problem.now_s, "coefficients": problem.coefficients,
                      "allow_chunking": problem.allow_chunking}
                for _ in range(min(repeats, 50)):
                    t0 = time.perf_counter()
                    solve(PrefillWindow.from_arrays(*args, **kw), method="greedy")
                    build.append(time.perf_counter() - t0)
        best_bound = []
        for k, problem in enumerate(problems):
            upper = min(results[m][k].objective for m in results)
            bounds = [results[m][k].bound for m in results] + [lower_bound(problem, upper=upper)]
            best_bound.append(max(bounds))
        p50 = {m: _pct(latency[m], 50) for m in results}
        for method in results:
            gaps = [(r.objective - b) / r.objective if r.objective > 0 else 0.0
                    for r, b in zip(results[method], best_bound, strict=True)]
            statuses: dict[str, int] = {}
            for r in results[method]:
                statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
            ran = sum("cpsat" in r.stats for r in results["cpsat"])
            speed = ""
            if method == "greedy":
                speed = f"{p50['cpsat'] / p50['greedy']:.0f}x" if ran else "cpsat skipped"
            build_col = f"{_pct(build, 50) * 1e3:.3f}" if method == "greedy" and build else ""
            cpu_col = f"{_pct(cpu, 99) * 1e3:.3f}" if method == "greedy" else ""
            note = f" (solver ran on {ran}/{len(problems)})" if method != "greedy" else ""
            print(table.add(f"{n}x{j}", f"{method}{note}", f"{p50[method] * 1e3:.3f}",
                            f"{_pct(latency[method], 99) * 1e3:.3f}", cpu_col, build_col,
                            f"{_pct(gaps, 50):.2%}", f"{_pct(gaps, 90):.2%}", f"{max(gaps):.2%}",
                            " ".join(f"{s}:{c}" for s, c in sorted(statuses.items())), speed))
    return [f"**{caption}**", table]


_REQUESTS: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_TRACES: list[str] = []
_CHUNKING = [True]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows and repeats")
    parser.add_argument("--phase", choices=["prefill", "decode", "both"], default="both")
    parser.add_argument("--budget-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace", action="append", help="traces to cut windows from")
    parser.add_argument("--no-chunking", action="store_true",
                        help="whole-request prefill windows (CP-SAT's own bound then counts)")
    _report.add_option(parser)
    args = parser.parse_args()
    _CHUNKING[0] = not args.no_chunking
    load_cost_model()
    _TRACES[:] = args.trace or ["azure-conv", "azure-code"]
    for name in _TRACES:
        _REQUESTS[name] = trace_requests(name, 6000)
    setup = f"traces: {', '.join(_TRACES)}; prefill chunking {'on' if _CHUNKING[0] else 'off'}"
    print(setup)
    print(f"kernel warm-up (outside timings): {warm_up():.2f} s")
    windows, repeats = (4, 50) if args.quick else (12, 300)
    phases = ["prefill", "decode"] if args.phase == "both" else [args.phase]
    blocks: list[str | _report.Table] = [f"`{setup}`"]
    for phase in phases:
        blocks += run(phase, SIZES, windows, repeats, args.budget_ms / 1e3, args.seed)
    _report.write(args.markdown, blocks)


if __name__ == "__main__":
    main()
