"""After ``warm_up()``, no solve compiles or loads a kernel variant (no JIT on the hot path)."""

from __future__ import annotations

import json
import subprocess
import sys

_BATTERY = r"""
import json
import sys
import numba
import numpy as np
from sbsopt.window import DecodeWindow, PrefillWindow, lower_bound, solve, warm_up
from sbsopt.kvblocks import request_kv_blocks

def variants():
    # every kernel of every sbsopt.window module loaded, the private ones other kernels call too
    out = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("sbsopt.window"):
            continue
        for name, kernel in vars(module).items():
            if (isinstance(kernel, numba.core.registry.CPUDispatcher)
                    and kernel.py_func.__module__ == module_name):
                out[f"{module_name}.{name}"] = len(kernel.signatures)
    return out

warm_up()
before = variants()
rng = np.random.default_rng(1)
for n, j, chunking, instance, kv, guards in [
        (20, 4, True, None, True, False), (20, 4, False, None, False, True),
        (30, 6, True, [0, 0, 0, 1, 1, 1], True, True), (30, 6, False, [0, 0, 1, 1, 2, 2], False, False),
        (0, 3, True, None, True, False), (1, 1, True, None, True, False)]:
    w = PrefillWindow.from_arrays(
        rng.integers(1, 9000, n), rng.integers(0, 500, n), np.sort(rng.uniform(0, 1, n)),
        capacity_tokens=np.full(j, 8192), load_tokens=rng.integers(0, 3000, j),
        free_kv_blocks=rng.integers(50, 400, j) if kv else None,
        deadline_s=np.where(rng.random(n) < 0.3, 0.5, np.inf) if guards else None, now_s=1.0,
        allow_chunking=chunking, instance=instance)
    for method in ("greedy", "cpsat", "auto"):
        for options in ({}, {"local_search": 10}, {"exchange": 10_000}):
            solve(w, method=method, options=options, time_limit_s=0.05)
    lower_bound(w)
for n, j, instance in [(20, 4, None), (30, 6, [0, 0, 0, 1, 1, 1]), (0, 2, None)]:
    context = rng.integers(100, 20000, n)
    d = DecodeWindow.from_arrays(
        context, request_kv_blocks(context), batch_size=rng.integers(0, 10, j),
        max_batch_size=np.full(j, 16), kv_blocks_used=rng.integers(0, 100, j),
        free_kv_blocks=np.full(j, 2000), instance=instance)
    for method in ("greedy", "cpsat", "auto"):
        solve(d, method=method, time_limit_s=0.05)
    lower_bound(d)
after = variants()
print(json.dumps({"kernels": sorted(after),
                  "changed": {name: [before.get(name, 0), count] for name, count in after.items()
                              if count != before.get(name, 0)}}))
"""


def test_warm_up_loads_every_kernel_variant_the_solvers_use() -> None:
    """A fresh process: warm up, then every solver, option and window kind (chunking on and
    off, guards, KV limits or none, several instances, empty and one-request windows, decode):
    no kernel gains a variant, so none is compiled or loaded inside a timed solve."""
    done = subprocess.run([sys.executable, "-c", _BATTERY], capture_output=True, text=True,
                          timeout=600, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"sbsopt.window._kernels.drivers.prefill_solve",
            "sbsopt.window._kernels.chunks.chunk_cost"} <= set(report["kernels"])
    assert report["changed"] == {}


def test_warm_up_loads_the_lp_solvers_the_bounds_use() -> None:
    """A fresh process: after warm up, ``solve`` imports no solver library of its own (GLOP's
    import took 7 ms inside the first ``cpsat`` solve's budget)."""
    script = ("import sys\nfrom sbsopt.window import warm_up\nwarm_up()\n"
              "print('ortools.linear_solver.pywraplp' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, check=True)
    assert done.stdout.strip().splitlines()[-1] == "True"
