"""CP-SAT window backend against its target: optimal or <= 1% gap within 50 ms at 128 x 16.

Windows are cut from the bundled real traces exactly as in ``benchmarks/window.py`` (imported,
not copied). For each size and problem kind (prefill with chunking, prefill whole-request, and
decode) the table reports, per method: latency p50 / max, CP-SAT's model-build time p50, the gap
against the best bound known for the window (the max of every method's bound and the untimed
``lower_bound``: LP relaxation, and host bound given the best answer) as p50 / p90 / max, how
many windows meet the target (proven optimal or gap <= 1%), how many of those the solve proved
itself within its budget (status optimal, or its own reported gap <= 1%), and the statuses. ``greedy+ls`` is the baseline run in the same process: the greedy
with the local search CP-SAT is hinted with (prefill; decode has no local search, so there it
is the plain greedy).

Run: ``python benchmarks/cpsat.py`` (``--quick`` for fewer windows; ``--param name=value``
passes a SatParameters field, e.g. ``--param linearization_level=0``; ``--lns`` / ``--no-lns``
force CP-SAT's search mode).
"""

from __future__ import annotations

import argparse
import ast
import time

import _report  # benchmarks/_report.py
import numpy as np
import window as cut  # benchmarks/window.py: the window cutting

from sbsopt.costmodel import load_cost_model
from sbsopt.window import lower_bound, solve, warm_up

SIZES = [(64, 8), (128, 16), (256, 32)]
KINDS = ["prefill", "prefill-whole", "decode"]
METHODS = ["greedy+ls", "cpsat", "auto"]
TARGET_GAP = 0.01


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _windows(kind: str, n: int, j: int, count: int, rng: np.random.Generator) -> list:
    if kind == "decode":
        return cut.decode_windows(n, j, count, rng)
    cut._CHUNKING[0] = kind == "prefill"
    return cut.prefill_windows(n, j, count, rng)


def run(kind: str, sizes: list[tuple[int, int]], count: int, budget_s: float, seed: int,
        options: dict) -> list[str | _report.Table]:
    """Print the table of one kind; return it with its caption, for ``--markdown``."""
    rng = np.random.default_rng(seed)
    caption = f"{kind} (budget {budget_s * 1e3:.0f} ms, {count} windows per size)"
    print(f"\n## {caption}\n")
    table = _report.Table(["size", "method", "p50 ms", "max ms", "build p50 ms", "gap p50",
                           "gap p90", "gap max", "target met", "proven in budget", "statuses"],
                          "llrrrrrrrrl")
    print(table.head)
    for n, j in sizes:
        problems = _windows(kind, n, j, count, rng)
        results: dict[str, list] = {m: [] for m in METHODS}
        latency: dict[str, list[float]] = {m: [] for m in METHODS}
        for problem in problems:
            for method in METHODS:
                name, extra = method, dict(options)
                if method == "greedy+ls":
                    name, extra = "greedy", {"local_search": 1000}
                t0 = time.perf_counter()
                results[method].append(solve(problem, method=name, time_limit_s=budget_s,
                                             seed=seed, options=extra))
                latency[method].append(time.perf_counter() - t0)
        best = [max([results[m][k].bound for m in METHODS]
                    + [lower_bound(p, upper=min(results[m][k].objective for m in METHODS))])
                for k, p in enumerate(problems)]
        for method in METHODS:
            gaps = [max(0.0, (r.objective - b) / r.objective) if r.objective > 0 else 0.0
                    for r, b in zip(results[method], best, strict=True)]
            met = sum(r.status.value == "optimal" or g <= TARGET_GAP
                      for r, g in zip(results[method], gaps, strict=True))
            # proven inside the budget: by the bound the solve itself reported
            proven = sum(r.status.value == "optimal" or r.gap <= TARGET_GAP
                         for r in results[method])
            statuses: dict[str, int] = {}
            for r in results[method]:
                statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
            builds = [r.stats["cpsat_build_s"] for r in results[method]
                      if "cpsat_build_s" in r.stats]
            build_col = f"{_pct(builds, 50) * 1e3:.2f}" if builds else ""
            print(table.add(f"{n}x{j}", method, f"{_pct(latency[method], 50) * 1e3:.2f}",
                            f"{max(latency[method]) * 1e3:.2f}", build_col,
                            f"{_pct(gaps, 50):.2%}", f"{_pct(gaps, 90):.2%}", f"{max(gaps):.2%}",
                            f"{met}/{len(problems)}", f"{proven}/{len(problems)}",
                            " ".join(f"{s}:{c}" for s, c in sorted(statuses.items()))))
    return [f"**{caption}**", table]


def _parameter(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 windows per size instead of 12")
    parser.add_argument("--kind", choices=KINDS, action="append", help="default: all")
    parser.add_argument("--size", action="append", help="NxJ, e.g. 128x16 (default: all)")
    parser.add_argument("--budget-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--param", action="append", default=[], help="SatParameters name=value")
    parser.add_argument("--lns", action=argparse.BooleanOptionalAction, default=None,
                        help="force neighbourhood search on or off (default: by size)")
    _report.add_option(parser)
    args = parser.parse_args()
    options: dict = {"cpsat_parameters": dict(_parameter(p) for p in args.param)}
    if args.lns is not None:
        options["lns"] = args.lns
    sizes = SIZES
    if args.size:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.size]
    load_cost_model()
    cut._TRACES[:] = ["azure-conv", "azure-code"]
    for name in cut._TRACES:
        cut._REQUESTS[name] = cut.trace_requests(name, 6000)
    setup = f"traces: {', '.join(cut._TRACES)}; options {options}"
    print(setup)
    print(f"kernel warm-up (outside timings): {warm_up():.2f} s")
    blocks: list[str | _report.Table] = [f"`{setup}`"]
    for kind in args.kind or KINDS:
        blocks += run(kind, sizes, 6 if args.quick else 12, args.budget_ms / 1e3, args.seed,
                      options)
    _report.write(args.markdown, blocks)


if __name__ == "__main__":
    main()
