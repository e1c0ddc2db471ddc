"""One ``sbsopt serve`` process's state: configuration, worker state, scheduler, metrics and the
client session, with the report puller; :data:`SERVICE` is its key on the aiohttp application.

The routes (:mod:`sbsopt.serve.sidecar`, :mod:`sbsopt.serve.proxy`) and the application
(:mod:`sbsopt.serve.app`) read it through that key.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from sbsopt.errors import InvalidInputError
from sbsopt.serve.config import ServeConfig
from sbsopt.serve.http import BadRequest
from sbsopt.serve.metrics import Metrics
from sbsopt.serve.state import ClusterState, parse_report
from sbsopt.serve.windows import Scheduler

__all__ = ["Service", "SERVICE"]


#: consecutive failed report pulls that mark a worker down (a failed request marks it at once)
_PULLS_TO_DOWN = 3


class Service:
    """One sidecar + front process.

    Parameters
    ----------
    config : ServeConfig
    executor : concurrent.futures.Executor, optional
        Where window solves run (default: a pool of 2 threads).
    """

    def __init__(self, config: ServeConfig, *, executor: ThreadPoolExecutor | None = None) -> None:
        from sbsopt.costmodel import load_cost_model

        self.config = config
        self.metrics = Metrics()
        self.state = ClusterState(config)
        self.executor = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="sbsopt-solve")
        model = load_cost_model(model=config.model, hardware=config.hardware, ep=config.ep)
        self._coefficients = {"prefill": model.prefill_coefficients(), "decode": model.decode_coefficients()}
        self.clock: Callable[[], float] = time.monotonic
        self.scheduler = Scheduler(config, self.state, self.metrics, self.executor,
                                   coefficients=self.coefficients, clock=self.clock)
        self.session: aiohttp.ClientSession | None = None
        self.draining = False
        self.ids = itertools.count()
        self._pull: asyncio.Task | None = None
        self._failed_pulls = [0] * len(config.workers)

    def coefficients(self, phase: str) -> Any:
        """The step-cost coefficients of ``phase`` for the configured cards and ``ep``."""
        return self._coefficients[phase]

    def worker_index(self, value: object) -> int:
        """A worker given by URL or index.

        Raises
        ------
        BadRequest
            Unknown worker.
        """
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(self.config.workers):
            return value
        if isinstance(value, str) and value.rstrip("/") in self.config.workers:
            return self.config.workers.index(value.rstrip("/"))
        raise BadRequest("worker", f"worker = {value!r}: expected one of {list(self.config.workers)} or its index")

    # ------------------------------------------------------------------ lifecycle
    async def on_startup(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
        if self.config.policy == "sbs":
            await self.scheduler.warm_up()
        self.scheduler.start()
        if self.config.report_period_s > 0:
            await self.pull_once()
            self._pull = asyncio.create_task(self._pull_loop(), name="sbsopt-report-pull")

    async def on_shutdown(self, app: web.Application) -> None:
        self.draining = True
        await self.scheduler.drain()

    async def on_cleanup(self, app: web.Application) -> None:
        if self._pull is not None:
            self._pull.cancel()
            await asyncio.gather(self._pull, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ reports (tier 1)
    async def _pull_worker(self, worker: int) -> None:
        assert self.session is not None
        requested = self.clock()
        timeout = aiohttp.ClientTimeout(total=max(0.5, 5 * self.config.report_period_s))
        try:
            async with self.session.get(self.config.workers[worker] + "/v1/load", timeout=timeout) as resp:
                if resp.status == 404:  # an engine without a load endpoint: push reports instead
                    self.metrics.reports_failed += 1
                    return
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(resp.request_info, resp.history, status=resp.status)
                report = parse_report(msgspec.json.decode(await resp.read()), self.config.ep)
        except (aiohttp.ClientError, TimeoutError, ConnectionError, msgspec.DecodeError, InvalidInputError):
            self.metrics.reports_failed += 1
            self._failed_pulls[worker] += 1
            # one slow report on a busy host is not a dead worker: a worker that serves requests
            # but misses a report would otherwise be taken out and its requests rejected
            if self._failed_pulls[worker] >= _PULLS_TO_DOWN:
                self.state.mark_down(worker, self.clock())
            return
        self._failed_pulls[worker] = 0
        self.state.apply_report(worker, report, requested_at=requested, now=self.clock())

    async def pull_once(self) -> None:
        """Pull every worker's ``/v1/load`` once (concurrently) and re-check the release rule."""
        await asyncio.gather(*(self._pull_worker(w) for w in range(len(self.config.workers))))
        self.scheduler.poke()

    async def _pull_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.report_period_s)
            await self.pull_once()


#: Where the application keeps its :class:`Service`.
SERVICE = web.AppKey("service", Service)
