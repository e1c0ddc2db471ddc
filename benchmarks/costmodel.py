"""Speed of the cost model's step-time entry points (one core, 32 ranks).

Prints, per entry point and batch size S: median and p99 wall time per call, step-time
evaluations per second, and the speed-up over the scalar path measured in the same process.
Target: >= 1,000,000 evaluations/s for 32 ranks on one core (vectorized path).

Run: ``python benchmarks/costmodel.py [--ep 32] [--repeats 30]``.
"""

from __future__ import annotations

import argparse
import time

import _report
import numpy as np

from sbsopt.costmodel import _kernels, load_cost_model


def _timed(function, repeats: int) -> np.ndarray:
    function()  # warm-up (JIT, caches)
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        function()
        times[i] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ep", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    _report.add_option(parser)
    args = parser.parse_args()
    cm = load_cost_model(ep=args.ep)
    rng = np.random.default_rng(0)
    rows = []

    def record(name: str, samples: int, times: np.ndarray) -> float:
        median = float(np.median(times))
        rate = samples / median
        rows.append((name, samples, median * 1e6, float(np.percentile(times, 99)) * 1e6, rate))
        return rate

    # scalar path: one validated call per step time
    load = rng.integers(0, 16384, size=(2000, args.ep)).astype(np.float64)
    pairs = load * rng.uniform(0, 4096, size=load.shape)
    scalar_times = _timed(lambda: cm.prefill_step_us(load[0], pairs[0]), args.repeats * 20)
    scalar_rate = record("prefill_step_us (scalar)", 1, scalar_times)
    batch = rng.integers(0, 256, size=(2000, args.ep)).astype(np.float64)
    kv = batch * 4096
    decode_scalar_rate = record(
        "decode_step_us (scalar)", 1, _timed(lambda: cm.decode_step_us(batch[0], kv[0], 2), args.repeats * 20)
    )
    for samples in (64, 4096, 65536):
        load = rng.integers(0, 16384, size=(samples, args.ep)).astype(np.float64)
        pairs = load * rng.uniform(0, 4096, size=load.shape)
        record("prefill_step_us_many", samples, _timed(lambda x=load, y=pairs: cm.prefill_step_us_many(x, y), args.repeats))
        batch = rng.integers(0, 256, size=(samples, args.ep)).astype(np.float64)
        kv = batch * 4096
        record("decode_step_us_many", samples, _timed(lambda x=batch, y=kv: cm.decode_step_us_many(x, y, 2), args.repeats))
    # the numpy reference of the same kernel, as a second baseline
    t = cm._prefill
    reqs = (load > 0).astype(np.float64)
    record("numpy reference (prefill)", len(load),
           _timed(lambda: _kernels.step_many_reference(load, pairs, reqs, t.a0, t.a1, t.shared, t.routed, t.dense, t.constants),
                  max(3, args.repeats // 5)))
    title = f"cost model step-time throughput, ep={args.ep}, one core"
    print(title)
    print(f"{'entry point':<28} {'S':>7} {'median us':>11} {'p99 us':>11} {'evals/s':>13} {'x scalar':>9}")
    table = _report.Table(["entry point", "S", "median us", "p99 us", "evals/s", "x scalar"], "lrrrrr")
    for name, samples, median, p99, rate in rows:
        base = decode_scalar_rate if name.startswith("decode") else scalar_rate
        cells = (name, samples, f"{median:.1f}", f"{p99:.1f}", f"{rate:,.0f}", f"{rate / base:.1f}")
        table.add(*cells)
        print(_report.line([str(c) for c in cells], [-28, 8, 12, 12, 14, 10]))
    _report.write(args.markdown, [title, table])


if __name__ == "__main__":
    main()
