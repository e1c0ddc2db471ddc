"""Sweep throughput: a 16-run grid serially, on the local process pool, and on Ray.

Prints one table: wall time per backend (median of --repeat), its ratio to the serial run in the
same process, and whether the table equals the serial one (``sim_wall_s`` aside). The pool is
timed twice: cold (including spawning the workers) and warm (a pool already started, as in a
search that runs several rounds on one Runner).

    python benchmarks/sweep.py [--limit 3000] [--workers 2] [--ray] [--repeat 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _report  # benchmarks/_report.py

from sbsopt.plan import Runner, expand_grid, run_one, sweep

GRID = {"router": ["sbs", "least_tokens"], "interval": ["fixed:5", "fixed:20"], "load": [0.5, 0.9],
        "seed": [0, 1]}


def _clean(table):
    return table.drop(columns=["sim_wall_s"])


def _time(fn, repeat):
    walls, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=3000, help="requests per run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--ray", action="store_true", help="also time a local Ray instance")
    _report.add_option(parser)
    args = parser.parse_args()
    runs = expand_grid(GRID, {"limit": args.limit, "prefill_instances": 2})
    assert len(runs) == 16
    run_one(runs[0])  # load Numba kernels in this process so serial is not charged for them

    rows = []
    serial_s, serial = _time(lambda: sweep(runs, backend="serial"), args.repeat)
    rows.append(("serial", serial_s, True))
    cold_s, cold = _time(lambda: sweep(runs, backend="local", workers=args.workers), args.repeat)
    rows.append((f"local x{args.workers} (cold pool)", cold_s, _clean(cold).equals(_clean(serial))))
    with Runner(backend="local", workers=args.workers) as runner:
        runner.map(run_one, runs[: args.workers])  # start and warm the workers
        warm_s, warm = _time(lambda: sweep(runs, runner=runner), args.repeat)
    rows.append((f"local x{args.workers} (warm pool)", warm_s, _clean(warm).equals(_clean(serial))))
    if args.ray:
        import ray

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}})
        try:
            sweep(runs[: args.workers], backend="ray")  # start the Ray workers
            ray_s, ray_table = _time(lambda: sweep(runs, backend="ray"), args.repeat)
            rows.append((f"ray x{args.workers} (warm)", ray_s, _clean(ray_table).equals(_clean(serial))))
        finally:
            ray.shutdown()

    setup = f"16-run grid, {args.limit} requests per run, median of {args.repeat}"
    print(setup)
    widths = (-24, 9, 19, 12)  # one space between columns
    table = _report.Table(["backend", "wall s", "speedup vs serial", "same table"], "lrrr")
    print(_report.line(table.columns, widths))
    for name, wall, same in rows:
        cells = (name, f"{wall:.2f}", f"{serial_s / wall:.2f}", str(same))
        table.add(*cells)
        print(_report.line(cells, widths))
    _report.write(args.markdown, [setup, table])


if __name__ == "__main__":
    main()
