"""Same inputs and seed -> byte-identical JSON, for the solver, the simulator and the planner.

Each case runs twice in *separate* interpreters with different ``PYTHONHASHSEED`` values, so
that iteration over salted hashes (sets of strings, dict-of-set orders) cannot hide behind one
process; wall-clock fields are the only ones removed before comparing bytes.  The planner is
also run with one and with two pool workers: its results must not depend on the worker count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_PRELUDE = textwrap.dedent(
    """
    import json, math
    import numpy as np

    _CLOCK = ("wall", "solve_us", "elapsed", "duration_s_real")

    def scrub(value):
        # Drop wall-clock measurements, keep everything else bit for bit.
        if isinstance(value, dict):
            return {str(k): scrub(v) for k, v in value.items()
                    if not any(mark in str(k) for mark in _CLOCK)}
        if isinstance(value, (list, tuple)):
            return [scrub(v) for v in value]
        if isinstance(value, np.ndarray):
            return scrub(value.tolist())
        if isinstance(value, np.generic):
            return scrub(value.item())
        if isinstance(value, float):
            return repr(value)  # repr: exact bits, and NaN compares equal as text
        if hasattr(value, "name") and hasattr(value, "value"):  # enums
            return value.name
        return value

    def emit(value):
        print(json.dumps(scrub(value), sort_keys=True))
    """
)

_SOLVER = textwrap.dedent(
    """
    from sbsopt.kvblocks import request_kv_blocks
    from sbsopt.window import DecodeWindow, PrefillWindow, solve, warm_up

    # Compile (or load) the kernels outside the budgets: on a cold cache the first solve would
    # spend its CP-SAT time compiling, and the two processes would not solve the same problem.
    warm_up()

    def result_json(r):
        return {"assignment": r.assignment, "deferred": r.deferred,
                "chunks": sorted((int(k), int(v)) for k, v in dict(r.chunks).items()),
                "objective": r.objective, "bound": r.bound, "gap": r.gap,
                "status": r.status, "method": r.method}

    rng = np.random.default_rng(2024)
    out = []
    for n, j in ((6, 2), (12, 4), (16, 4), (64, 8)):
        new = rng.integers(1, 12_000, n)
        cached = rng.integers(0, 4_000, n)
        arrival = np.sort(rng.uniform(0.0, 0.2, n))
        prefill = PrefillWindow.from_arrays(
            new, cached, arrival, capacity_tokens=np.full(j, 16_384),
            load_tokens=rng.integers(0, 4_000, j), now_s=0.25)
        context = rng.integers(100, 60_000, n)
        decode = DecodeWindow.from_arrays(
            context, request_kv_blocks(context), batch_size=rng.integers(0, 32, j),
            max_batch_size=np.full(j, 64), kv_blocks_used=rng.integers(0, 5_000, j),
            free_kv_blocks=np.full(j, int(request_kv_blocks(context).sum())))
        methods = ("greedy", "cpsat", "auto") if n <= 16 else ("greedy",)
        for problem in (prefill, decode):
            for method in methods:
                r = solve(problem, method=method, time_limit_s=5.0, seed=3)
                out.append([n, j, method, result_json(r)])
    emit(out)
    """
)

_SIMULATOR = textwrap.dedent(
    """
    from sbsopt.sim import ClusterConfig, simulate
    from sbsopt.workload import load_trace

    wl = load_trace("azure-conv", limit=400, seed=0)
    cluster = ClusterConfig(prefill_instances=2, decode_instances=1)
    out = []
    for router in ("sbs", "round_robin"):
        res = simulate(wl, cluster=cluster, router=router, seed=11)
        table = res.requests
        if hasattr(table, "to_dict"):
            table = table.to_dict(orient="list")
        out.append([router, res.summary(), table])
    emit(out)
    """
)

_PLANNER = textwrap.dedent(
    """
    import sys
    from sbsopt.plan import SLO, max_rate, sweep

    workers = int(sys.argv[1])
    grid = {"router": ["sbs", "round_robin"], "prefill_instances": [1, 2], "limit": [150],
            "decode_instances": [1], "seed": [5]}
    table = sweep(grid, backend="local", workers=workers)
    out = [table.to_dict(orient="list")]
    if sys.argv[2] == "max_rate":
        plan = max_rate("azure-conv", slo=SLO(ttft_ms=2000, tpot_ms=100), duration_s=4.0,
                        rate_min=0.5, rate_max=40.0, tolerance_req_s=2.0, backend="local",
                        workers=workers)
        out.append(plan.as_dict())
    emit(out)
    """
)


def _run(script: str, hash_seed: str, *args: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    result = subprocess.run(
        [sys.executable, "-c", _PRELUDE + script, *args], capture_output=True, text=True,
        timeout=600, env=env, cwd=Path(__file__).resolve().parent,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip(), result.stderr[-4000:]
    return result.stdout


def _first_difference(a: str, b: str) -> str:
    k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"first difference at byte {k}: {a[max(0, k - 80):k + 80]!r} vs {b[max(0, k - 80):k + 80]!r}"


def test_solver_is_byte_identical_across_processes() -> None:
    first, second = _run(_SOLVER, "0"), _run(_SOLVER, "4242")
    assert first == second, _first_difference(first, second)


def test_simulator_is_byte_identical_across_processes() -> None:
    first, second = _run(_SIMULATOR, "0"), _run(_SIMULATOR, "4242")
    assert first == second, _first_difference(first, second)


def test_sweep_is_byte_identical_across_processes_and_worker_counts() -> None:
    serial, pooled = _run(_PLANNER, "0", "1", "sweep"), _run(_PLANNER, "4242", "2", "sweep")
    assert serial == pooled, _first_difference(serial, pooled)


@pytest.mark.slow
def test_max_rate_is_byte_identical_across_processes_and_worker_counts() -> None:
    serial, pooled = _run(_PLANNER, "0", "1", "max_rate"), _run(_PLANNER, "4242", "2", "max_rate")
    assert serial == pooled, _first_difference(serial, pooled)
    again = _run(_PLANNER, "7", "2", "max_rate")
    assert pooled == again, _first_difference(pooled, again)
