"""How late does a time-budgeted solve return?  The overshoot distribution of ``solve``.

For ``method="cpsat"`` and ``method="auto"`` with ``time_limit_s`` budgets, on adversarial
windows (large, tight capacities, many identical items, huge prompts), this prints the
overshoot = (wall time measured around the call) - budget, as p50 / p99 / max per method and
budget, plus the status mix (how often CP-SAT proved nothing and the greedy answer came back
with status ``timeout``).

Run: ``python benchmarks/budget.py`` (about two minutes), ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterator

import _report  # benchmarks/_report.py
import numpy as np

__all__ = ["adversarial_windows", "measure", "main"]

KINDS = ("tight", "identical", "huge", "mixed", "whole")


def adversarial_windows(
    n: int, j: int, *, kind: str, phase: str, seed: int = 0
) -> object:
    """One adversarial window of ``n`` requests on ``j`` units.

    ``tight``: total demand about 1.5x the capacity, every request close to a unit's room;
    ``identical``: every request and every unit the same (maximal symmetry for CP-SAT);
    ``huge``: prompts of 10^5-10^7 tokens with long cached prefixes (large integer costs);
    ``mixed``: trace-like lengths with a heavy tail;
    ``whole`` (prefill only): those lengths, whole requests, demand 1.3x the capacity (the
    hint's local search then exchanges deferred requests: once 93 ms at 1024 x 64).
    """
    from sbsopt.window import DecodeWindow, PrefillWindow

    rng = np.random.default_rng(seed)
    if phase == "prefill":
        capacity = np.full(j, 16_384, np.int64)
        if kind == "tight":
            new = rng.integers(4_000, 12_000, n)
            capacity = np.full(j, max(1, int(new.sum() / (1.5 * j))), np.int64)
        elif kind == "identical":
            new = np.full(n, 2_000, np.int64)
            capacity = np.full(j, 2_000 * max(1, n // (2 * j)), np.int64)
        elif kind == "huge":
            new = rng.integers(10**5, 10**7, n)
            capacity = np.full(j, 4 * 10**6, np.int64)
        else:
            new = np.minimum(rng.lognormal(7.0, 1.2, n).astype(np.int64) + 1, 60_000)
            if kind == "whole":
                capacity = np.full(j, max(1, int(new.sum() / (1.3 * j))), np.int64)
        cached = rng.integers(0, 10**6 if kind == "huge" else 8_000, n)
        arrival = np.sort(rng.uniform(0.0, 0.05, n))
        return PrefillWindow.from_arrays(
            new, cached, arrival, capacity_tokens=capacity,
            load_tokens=np.zeros(j, np.int64), now_s=0.06, allow_chunking=kind != "whole",
        )
    if kind == "identical":
        context = np.full(n, 8_000, np.int64)
    elif kind == "huge":
        context = rng.integers(10**5, 10**7, n)
    else:
        context = np.minimum(rng.lognormal(8.0, 1.0, n).astype(np.int64) + 1, 128_000)
    kv = (context + 63) // 64
    free = int(kv.sum() / j * (1.1 if kind == "tight" else 3.0)) + 1
    max_batch = max(2, int(n / j * (1.2 if kind == "tight" else 4.0)) + 1)
    return DecodeWindow.from_arrays(
        context, kv, batch_size=np.zeros(j, np.int64), max_batch_size=np.full(j, max_batch),
        kv_blocks_used=np.zeros(j, np.int64), free_kv_blocks=np.full(j, free),
    )


def measure(
    problem: object, *, method: str, time_limit_s: float, seed: int = 0
) -> tuple[float, float, str]:
    """(outer wall seconds, reported ``wall_time_s``, status name) of one solve."""
    from sbsopt.window import solve

    start = time.perf_counter()
    result = solve(problem, method=method, time_limit_s=time_limit_s, seed=seed)
    return time.perf_counter() - start, float(result.wall_time_s), result.status.name


def _cases(quick: bool) -> Iterator[tuple[int, int, str, str]]:
    sizes = ((128, 16), (512, 32)) if quick else ((128, 16), (256, 32), (512, 64), (1024, 64))
    for n, j in sizes:
        for kind in KINDS:
            for phase in ("prefill",) if kind == "whole" else ("prefill", "decode"):
                yield n, j, kind, phase


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few sizes, one repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per case and budget")
    _report.add_option(parser)
    args = parser.parse_args(argv)
    budgets = (0.01, 0.05) if args.quick else (0.005, 0.02, 0.05, 0.2)
    reps = 1 if args.quick else args.reps
    from sbsopt.window import solve, warm_up

    # Warm-up outside the measurement: every Numba kernel (a kernel first loaded inside a
    # timed solve costs it 5-15 ms) and OR-Tools' import and first model.
    warm_up()
    for phase in ("prefill", "decode"):
        solve(adversarial_windows(8, 2, kind="mixed", phase=phase), method="auto",
              time_limit_s=0.05)

    rows: dict[tuple[str, float], list[float]] = {}
    reported: dict[tuple[str, float], list[float]] = {}
    statuses: dict[tuple[str, float], Counter] = {}
    worst: dict[tuple[str, float], tuple[float, str]] = {}
    for n, j, kind, phase in _cases(args.quick):
        problem = adversarial_windows(n, j, kind=kind, phase=phase, seed=n + j)
        for method in ("cpsat", "auto"):
            for budget in budgets:
                key = (method, budget)
                for rep in range(reps):
                    outer, inner, status = measure(problem, method=method,
                                                   time_limit_s=budget, seed=rep)
                    rows.setdefault(key, []).append(outer - budget)
                    reported.setdefault(key, []).append(inner - budget)
                    statuses.setdefault(key, Counter())[status] += 1
                    if outer - budget > worst.get(key, (-1.0, ""))[0]:
                        worst[key] = (outer - budget, f"{phase} {kind} {n}x{j}")

    caption = "overshoot = wall time around solve() - time_limit_s, in milliseconds"
    print(caption)
    table = _report.Table(["method", "budget ms", "runs", "p50", "p99", "max", "max(reported)",
                           "statuses", "worst case"], "lrrrrrrll")
    header = _line(table.columns)
    print(header)
    print("-" * len(header))
    everything = []
    for (method, budget), values in sorted(rows.items()):
        v = np.asarray(values) * 1e3
        everything.extend(values)
        mix = ", ".join(f"{k.lower()} {c}" for k, c in sorted(statuses[(method, budget)].items()))
        cells = (method, f"{budget * 1e3:.0f}", f"{len(v)}", f"{np.percentile(v, 50):.2f}",
                 f"{np.percentile(v, 99):.2f}", f"{v.max():.2f}",
                 f"{max(reported[(method, budget)]) * 1e3:.2f}", mix, worst[(method, budget)][1])
        table.add(*cells)
        print(_line(cells))
    total = np.asarray(everything) * 1e3
    summary = (f"all {len(total)} solves: p50 {np.percentile(total, 50):.2f} ms, "
               f"p99 {np.percentile(total, 99):.2f} ms, max {total.max():.2f} ms overshoot")
    print(f"\n{summary}")
    _report.write(args.markdown, [caption, table, summary], argv)


def _line(cells: tuple[str, ...] | list[str]) -> str:
    return (_report.line(cells[:7], (-7, 10, 6, 9, 9, 9, 15)) + "  "
            + _report.line(cells[7:], (-40, 0)))


if __name__ == "__main__":
    main()
