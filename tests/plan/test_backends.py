"""Execution backends: same results, in task order, for serial, a process pool and Ray."""

from __future__ import annotations

import os

import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.plan import Runner, run_tasks, sweep

GRID = {"router": ["sbs", "least_tokens"], "seed": [0, 1]}
BASE = {"limit": 60, "rate": 30.0, "ttft_slo_ms": 500.0, "tpot_slo_ms": 50.0}


def _square(x: int) -> int:
    return x * x


def _worker_env(_: int) -> tuple[str | None, str | None]:
    return os.environ.get("NUMBA_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS")


def _deterministic(table):
    return table.drop(columns=["sim_wall_s"])


@pytest.fixture(scope="module")
def serial_table():
    return _deterministic(sweep(GRID, base=BASE, backend="serial"))


def test_process_pool_keeps_order_and_limits_worker_threads():
    assert run_tasks(_square, range(7), backend="local", workers=2) == [x * x for x in range(7)]
    assert set(run_tasks(_worker_env, range(4), backend="local", workers=2)) == {("1", "1")}


def test_runner_reuses_its_pool_across_batches():
    with Runner(backend="local", workers=2) as runner:
        assert runner.map(_square, [1, 2, 3]) == [1, 4, 9]
        pool = runner._pool
        assert runner.map(_square, [4, 5]) == [16, 25] and runner._pool is pool
    assert runner._pool is None


def test_sweep_table_is_tidy_and_independent_of_worker_count(serial_table):
    assert len(serial_table) == 4 and list(serial_table["seed"]) == [0, 1, 0, 1]
    assert list(serial_table["router"]) == ["sbs", "sbs", "least_tokens", "least_tokens"]
    assert (serial_table["completed"] + serial_table["rejected"] + serial_table["in_flight"] == 60).all()
    pooled = _deterministic(sweep(GRID, base=BASE, backend="local", workers=2))
    assert pooled.equals(serial_table)


def test_ray_backend_returns_the_same_table(serial_table):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'sbsopt[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}})
    try:
        assert run_tasks(_square, range(5), backend="ray") == [0, 1, 4, 9, 16]
        table = _deterministic(sweep(GRID, base=BASE, backend="ray"))
        assert table.equals(serial_table)
    finally:
        ray.shutdown()


@pytest.mark.parametrize("kwargs, field", [({"backend": "dask"}, "backend"), ({"workers": 0}, "workers"),
                                           ({"backend": "local", "address": "x:1"}, "address")])
def test_bad_backend_options(kwargs, field):
    with pytest.raises(InvalidInputError, match=field):
        run_tasks(_square, [1], **kwargs)


def test_ray_missing_is_a_typed_error(monkeypatch):
    import sys

    from sbsopt.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(BackendUnavailableError, match="ray"):
        run_tasks(_square, [1, 2], backend="ray")
