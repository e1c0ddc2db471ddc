"""Execution backends for many independent simulations: serial, a local process pool, or Ray.

Every task is a plain, picklable function applied to one parameter dict; the seed of a run is one
of its parameters, so results never depend on the backend or the worker count.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

from sbsopt._optional import require
from sbsopt.errors import InvalidInputError

__all__ = ["BACKENDS", "Runner", "run_tasks", "default_workers"]

BACKENDS = ("serial", "local", "ray")

# Worker processes run one simulation each: a multi-threaded Numba/BLAS inside every worker
# would oversubscribe the cores the pool already fills.
_WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}


def default_workers() -> int:
    """One worker per core available to this process."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


def _default_start_method() -> str:
    # fork where available: a spawned worker re-imports numpy, pandas, Numba and the simulator
    # (seconds per pool on a busy machine), a forked one inherits them. sbsopt's kernels are
    # single-threaded (no Numba parallel=True), so a fork copies no live worker threads of ours.
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _init_worker() -> None:
    os.environ.update(_WORKER_ENV)


class Runner:
    """A backend kept open across several batches (a search runs one batch per round).

    Use as a context manager; :meth:`map` may be called any number of times. The process pool
    (or the Ray connection) starts on the first batch that needs it and stops on exit.

    Examples
    --------
    >>> with Runner(backend="serial") as runner:
    ...     runner.map(abs, [-1, 2]), runner.map(abs, [-3])
    ([1, 2], [3])
    """

    def __init__(self, *, backend: str = "local", workers: int | None = None, address: str | None = None,
                 progress: bool = False, start_method: str | None = None) -> None:
        if backend not in BACKENDS:
            raise InvalidInputError("backend", backend, f"one of {', '.join(BACKENDS)}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise InvalidInputError("workers", workers, "a positive integer")
        if address is not None and backend != "ray":
            raise InvalidInputError("address", address, "only with backend='ray'")
        if start_method is not None and start_method not in multiprocessing.get_all_start_methods():
            raise InvalidInputError("start_method", start_method,
                                    f"one of {', '.join(multiprocessing.get_all_start_methods())}")
        self.backend, self.workers, self.address, self.progress = backend, workers, address, progress
        self.start_method = start_method or _default_start_method()
        self._pool: ProcessPoolExecutor | None = None

    @property
    def parallel(self) -> int:
        """Tasks worth submitting per batch."""
        return 1 if self.backend == "serial" else (self.workers or default_workers())

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the process pool, if one was started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], *, description: str = "runs") -> list[Any]:
        """``[fn(t) for t in tasks]``, computed on the backend, in task order."""
        tasks = list(tasks)
        if not tasks:
            return []
        bar = _progress(len(tasks), description) if self.progress else None
        try:
            # a lone task (or a pool of one) runs here rather than paying for a worker start
            if self.backend == "serial" or (self.backend == "local" and (
                    self.parallel == 1 or (len(tasks) == 1 and self._pool is None))):
                results = []
                for task in tasks:
                    results.append(fn(task))
                    _tick(bar)
                return results
            if self.backend == "local":
                return self._run_pool(fn, tasks, bar)
            return _run_ray(fn, tasks, self.workers, self.address, bar)
        finally:
            if bar is not None:
                bar.close()

    def _run_pool(self, fn, tasks, bar) -> list:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.parallel, initializer=_init_worker,
                                             mp_context=multiprocessing.get_context(self.start_method))
        results: list = [None] * len(tasks)
        futures = {self._pool.submit(fn, task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            _tick(bar)
        return results


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    description: str = "runs",
) -> list[Any]:
    """Apply ``fn`` to every task and return the results in task order.

    Parameters
    ----------
    fn : callable
        A module-level (picklable) function of one task.
    tasks : sequence
        Picklable task descriptions (parameter dicts).
    backend : {"serial", "local", "ray"}
        ``local``: a process pool (forked workers where the platform allows, one per core by
        default, each limited to one Numba/OpenMP thread). ``ray``: Ray tasks, on ``address`` or on a local
        ``ray.init()`` when no address is given (``pip install sbsopt[ray]``).
    workers : int, optional
        Pool size (``local``) or CPUs of a local Ray instance; default one per core.
    address : str, optional
        Ray cluster address (``ray`` only).
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    list
        ``[fn(t) for t in tasks]``, whatever the backend.

    Raises
    ------
    InvalidInputError
        Unknown backend or bad worker count.
    BackendUnavailableError
        ``backend="ray"`` without Ray installed.

    Examples
    --------
    >>> run_tasks(abs, [-1, 2, -3], backend="serial")
    [1, 2, 3]
    """
    with Runner(backend=backend, workers=workers, address=address, progress=progress) as runner:
        return runner.map(fn, tasks, description=description)


def _progress(total: int, description: str):
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (logs would fill with frames)
    return tqdm(total=total, desc=description, leave=False, disable=None)


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)


def _run_ray(fn, tasks, workers, address, bar) -> list:
    ray = require("ray", "ray", feature="--backend ray (or use --backend local)")
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=workers or default_workers(), include_dashboard=False,
                     runtime_env={"env_vars": dict(_WORKER_ENV)}, log_to_driver=False)
        else:
            ray.init(address=address, runtime_env={"env_vars": dict(_WORKER_ENV)}, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(fn)
    refs = [remote.remote(task) for task in tasks]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list = [None] * len(tasks)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            results[index[ref]] = ray.get(ref)
            _tick(bar)
    return results
