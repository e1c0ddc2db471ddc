"""The sidecar's schedulers: SBS prefill windows, decode windows, and immediate dispatch.

Every accepted request gets a future that is always resolved with an answer: assigned
(``worker``, ``dp_rank``, ``chunk``) or rejected with a reason. Windows are solved one at a time
in a thread pool (the greedy kernels release the GIL), so the event loop keeps accepting
requests while a window is solved.

Release rule (the simulator's, :mod:`sbsopt.sim.simulator`):

- ``engine_paced``: the buffer is allocated onto the workers predicted to run out of queued
  prefill within their next iteration (:meth:`ClusterState.ready_workers`); checked on every
  arrival and every report.
- ``fixed:MS``: a window every MS milliseconds over every live worker.
- In both, a request past its TTFT guard is assigned on the next check even if no worker is
  ready, to the least-loaded unit, except onto a paced worker in the middle of a forward: that
  one gets it when the forward is about to end, as the simulator assigns it at the next window.

``chunk`` in an answer is the number of the request's new tokens the window planned into the
unit's next ``window_forwards`` iterations (equal to its new tokens unless the solver split it).
The request is always assigned whole: the caller sends the whole prompt to ``(worker,
dp_rank)`` and the engine chunk-prefills the rest on the same rank (its KV must stay there).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbsopt.kvblocks import request_kv_blocks
from sbsopt.serve.config import ServeConfig
from sbsopt.serve.metrics import Metrics
from sbsopt.serve.state import LOST_S, ClusterState

__all__ = ["PrefillItem", "Scheduler", "solve_prefill_window"]


@dataclass
class PrefillItem:
    """One accepted request; ``future`` resolves to its answer.

    ``arrival_s`` and ``cut_s`` (when the window that answered it was cut from the buffer, or
    the immediate decision was taken) are scheduler times (:meth:`Scheduler.now`): ``cut_s -
    arrival_s`` is the request's wait in the buffer, and everything after ``cut_s`` is the
    sidecar's own work (solve, answer). ``landing_seen``: the front forwards the request and
    sees when it reaches the engine (:meth:`Scheduler.landed`).
    """

    rid: str
    new_tokens: int
    cached_tokens: int
    arrival_s: float
    deadline_s: float
    future: asyncio.Future
    kind: str = "prefill"
    kv_blocks: int = 0
    cut_s: float = math.nan
    landing_seen: bool = False


def solve_prefill_window(
    new_tokens: np.ndarray, cached_tokens: np.ndarray, arrival_s: np.ndarray, deadline_s: np.ndarray, *,
    capacity_tokens: np.ndarray, load_tokens: np.ndarray, now_s: float, coefficients: Any, solver: str,
    instance: np.ndarray | None, seed: int = 0,
) -> tuple[np.ndarray, dict[int, int]]:
    """PBAA allocation of one window, as :func:`sbsopt.sim.router.allocate_prefill` (keeping chunks),
    except for requests past their deadline that the solver deferred: they go to the least-loaded
    unit, past its room. The sidecar's forced windows (the drain on shutdown) rely on this; the
    simulator keeps such requests buffered for the next instance to free instead.

    Returns
    -------
    (assignment, chunks)
        Unit index per request (-1 deferred) and the planned first-chunk tokens of split requests.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> coef = PrefillCoefficients(50_000.0, 80.0, 0.01, 600.0)
    >>> a, _ = solve_prefill_window(np.array([100, 200]), np.zeros(2, np.int64), np.zeros(2), np.full(2, 9.0),
    ...     capacity_tokens=np.array([512, 512]), load_tokens=np.array([0, 0]), now_s=0.0,
    ...     coefficients=coef, solver="greedy", instance=None)
    >>> sorted(a.tolist())
    [0, 1]
    """
    from sbsopt.window import PrefillWindow, solve

    load = np.minimum(load_tokens, capacity_tokens)
    window = PrefillWindow.from_arrays(
        new_tokens.astype(np.int64), cached_tokens.astype(np.int64), arrival_s,
        capacity_tokens=capacity_tokens.astype(np.int64), load_tokens=load.astype(np.int64),
        deadline_s=deadline_s, now_s=now_s, coefficients=coefficients, allow_chunking=True, instance=instance,
    )
    result = solve(window, method=solver, seed=seed)
    assignment = np.array(result.assignment, dtype=np.int64, copy=True)
    late = (assignment < 0) & (deadline_s <= now_s)
    if late.any():
        level = load_tokens.astype(np.float64).copy()
        np.add.at(level, assignment[assignment >= 0], new_tokens[assignment >= 0])
        for i in np.flatnonzero(late):
            j = int(np.argmin(level))
            assignment[i] = j
            level[j] += new_tokens[i]
    return assignment, {int(i): int(k) for i, k in result.chunks.items()}


class Scheduler:
    """Buffers, windows and answers of one sidecar (the policy of ``config.policy``).

    Parameters
    ----------
    config : ServeConfig
    state : ClusterState
    metrics : Metrics
    executor : concurrent.futures.Executor
        Where window solves run.
    coefficients : callable
        ``coefficients(phase)`` -> the cost model's prefill/decode coefficients.
    clock : callable
        Seconds (monotonic); window problems see times relative to the scheduler's start.
    """

    def __init__(self, config: ServeConfig, state: ClusterState, metrics: Metrics, executor: Executor, *,
                 coefficients: Callable[[str], Any], clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.state = state
        self.metrics = metrics
        self.executor = executor
        self.coefficients = coefficients
        self._clock = clock
        self._t0 = clock()
        self.buffer: list[PrefillItem] = []
        self.dbuffer: list[PrefillItem] = []
        self._wake = asyncio.Event()
        self._dwake = asyncio.Event()
        self._last_window = -math.inf
        self._closing = False
        self.windows = 0
        self._tasks: list[asyncio.Task] = []
        # window -> [clock at its cut, requests assigned, requests landed]: windows still landing
        self._landing: dict[int, list[float]] = {}

    def now(self) -> float:
        """Seconds since the scheduler started (window problems need times >= 0)."""
        return self._clock() - self._t0

    @property
    def buffered(self) -> int:
        return len(self.buffer) + len(self.dbuffer)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the window loops (call from the running event loop)."""
        if self.config.policy == "sbs":
            self._tasks.append(asyncio.create_task(self._prefill_loop(), name="sbs-prefill-windows"))
        self._tasks.append(asyncio.create_task(self._decode_loop(), name="sbs-decode-windows"))

    async def warm_up(self) -> None:
        """Solve one tiny window in the pool so that the first real window does not pay the
        kernels' load/compile time."""
        coef = self.coefficients("prefill")
        await asyncio.get_running_loop().run_in_executor(self.executor, lambda: solve_prefill_window(
            np.array([10, 20]), np.zeros(2, np.int64), np.zeros(2), np.ones(2), capacity_tokens=np.array([64, 64]),
            load_tokens=np.zeros(2), now_s=0.0, coefficients=coef, solver=self.config.solver,
            instance=np.array([0, 1])))

    def poke(self) -> None:
        """A report arrived or a worker changed state: re-check the release rule."""
        self._wake.set()

    async def drain(self) -> None:
        """Release everything buffered (forced windows), answer it, then stop the loops."""
        self._closing = True
        for _ in range(3):
            if self.buffer:
                await self._release(force=True)
            if self.dbuffer:
                await self._release_decode(force=True)
        for item in self.buffer + self.dbuffer:  # no live worker at all
            self._reject(item, "shutting_down")
        self.buffer, self.dbuffer = [], []
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ admission
    def submit(self, rid: str, prompt_tokens: int, *, cached_tokens: int = 0,
               deadline_ms: float | None = None, landing_seen: bool = False) -> PrefillItem:
        """Accept one prefill request; its ``future`` resolves to its answer dict.

        ``landing_seen``: the front will forward it and report when it lands (:meth:`landed`).
        """
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        now = self.now()
        new = max(int(prompt_tokens) - int(cached_tokens), 1)
        item = PrefillItem(rid, new, int(cached_tokens), now, self._deadline(now, deadline_ms), fut,
                           landing_seen=landing_seen)
        if self._closing:
            self._reject(item, "shutting_down")
        elif prompt_tokens > self.config.max_prompt_tokens:
            self._reject(item, "prompt_too_long")
        elif self.buffered >= self.config.max_buffered:
            self._reject(item, "buffer_full")
        elif self.config.policy != "sbs":
            unit = self.state.pick(self.config.policy, float(new), now=self._clock())
            item.cut_s = self.now()
            if unit is None:
                self._reject(item, "no_live_worker")
            else:
                self._assign(item, unit, new, window=None)
        else:
            self.buffer.append(item)
            self._wake.set()
        return item

    def submit_decode(self, rid: str, context_tokens: int, kv_blocks: int | None) -> PrefillItem:
        """Accept one decode placement; buffered into the next decode window (every policy)."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        now = self.now()
        blocks = kv_blocks if kv_blocks is not None else request_kv_blocks(int(context_tokens),
                                                                             self.config.kv_block_tokens)
        item = PrefillItem(rid, int(context_tokens), 0, now, now + self.config.ttft_guard_s, fut, "decode",
                           int(blocks))
        if self._closing:
            self._reject(item, "shutting_down")
        elif self.buffered >= self.config.max_buffered:
            self._reject(item, "buffer_full")
        else:
            self.dbuffer.append(item)
            self._dwake.set()
        return item

    def reroute(self, tokens: float, exclude: frozenset[int]) -> int | None:
        """A unit off the excluded workers for a retry (least tokens, immediately)."""
        return self.state.pick("least_tokens", tokens, now=self._clock(), exclude=exclude)

    def _deadline(self, now: float, deadline_ms: float | None) -> float:
        guard = now + self.config.ttft_guard_s
        return guard if deadline_ms is None else min(guard, now + max(deadline_ms, 0.0) / 1000.0)

    # ------------------------------------------------------------------ answers
    def _answer(self, item: PrefillItem, body: dict[str, Any]) -> None:
        if not item.future.done():
            item.future.set_result(body)

    def _reject(self, item: PrefillItem, reason: str) -> None:
        self.metrics.reject(reason)
        self._answer(item, {"id": item.rid, "status": "rejected", "reason": reason})

    def _assign(self, item: PrefillItem, unit: int, chunk: int, *, window: int | None) -> None:
        worker, rank = divmod(unit, self.config.ep)
        wait_s = item.cut_s - item.arrival_s
        self.metrics.decision(self.config.policy if item.kind == "prefill" else "iqr_lex", item.kind)
        if window is not None:
            self.metrics.buffer_wait_s.observe(wait_s)
        self._answer(item, {"id": item.rid, "status": "assigned", "worker": self.config.workers[worker],
                            "worker_index": worker, "dp_rank": rank, "chunk": chunk, "window": window,
                            "wait_ms": round(wait_s * 1e3, 3)})

    # ------------------------------------------------------------------ prefill windows
    def _next_timeout(self) -> float | None:
        if not self.buffer:
            return None
        now = self.now()
        due = min(item.deadline_s for item in self.buffer)
        fixed = self.config.fixed_interval_s
        if fixed is not None:
            due = min(due, self._last_window + fixed)
        elif self.config.report_period_s == 0:
            due = min(due, now + 0.01)  # no reports: readiness moves only with time
        else:
            clock = self._clock()
            pace = self.state.next_pace_s(clock, self._landing_requests())
            if pace is not None:  # a paced worker's forward is about to end
                # past the guard, the window still waits for it (:meth:`_workers_for_window`)
                due = now + pace - clock if due <= now else min(due, now + pace - clock)
        return max(due - now, 0.0)

    def _landing_requests(self) -> int:
        """Requests of the buffer a paced release has to land before the forward ends: as many,
        oldest first, as one worker's next forward can take (the rest of a window waits in the
        engine's queue for later forwards, so it may land later)."""
        capacity = self.config.ep * int(self.state.token_budget.max() * self.config.window_forwards)
        total = count = 0
        for item in self.buffer:  # stops at the capacity: a backlog costs no more than a forward
            total += item.new_tokens
            if total > capacity:
                break
            count += 1
        return max(1, count)

    async def _prefill_loop(self) -> None:
        while True:
            timeout = self._next_timeout()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            if self.buffer:
                try:
                    await self._release(force=False)
                except Exception:  # noqa: BLE001 - the loop must outlive one bad window
                    self.metrics.error("window_loop")

    def _workers_for_window(self, force: bool) -> list[int]:
        now = self.now()
        alive = np.flatnonzero(self.state.alive_workers(self._clock())).tolist()
        overdue = force or min(item.deadline_s for item in self.buffer) <= now
        fixed = self.config.fixed_interval_s
        if fixed is not None:
            return alive if overdue or now >= self._last_window + fixed else []
        clock = self._clock()
        landing = self._landing_requests()
        ready = self.state.ready_workers(clock, landing)
        if ready or not overdue:
            return ready
        if force:
            return alive
        # Past the guard, the simulator assigns a request at the next window, which a paced
        # worker gets when its running forward ends: a window sent to it earlier would only wait
        # in its queue, and take the place of the requests that arrive before that end. Other
        # workers (not paced, or full) take it now.
        bound = self.state.forward_bound(clock, landing)
        return [w for w in alive if not bound[w]]

    async def _release(self, *, force: bool) -> None:
        workers = self._workers_for_window(force)
        if not workers:
            self._expire_without_workers()
            return
        items, self.buffer = self.buffer, []
        now = self.now()
        cut_clock = self._clock()
        for it in items:
            it.cut_s = now
        self._last_window = now
        ep = self.config.ep
        units = np.concatenate([np.arange(w * ep, (w + 1) * ep) for w in workers])
        capacity = np.concatenate([np.full(ep, self.state.capacity_tokens(w), dtype=np.int64) for w in workers])
        load = self.state.window_tokens()[units]
        deadline = np.array([now if force else it.deadline_s for it in items])
        started = time.perf_counter()
        try:
            assignment, chunks = await asyncio.get_running_loop().run_in_executor(
                self.executor, lambda: solve_prefill_window(
                    np.array([it.new_tokens for it in items], np.int64),
                    np.array([it.cached_tokens for it in items], np.int64),
                    np.array([it.arrival_s for it in items]), deadline,
                    capacity_tokens=capacity, load_tokens=load, now_s=now,
                    coefficients=self.coefficients("prefill"), solver=self.config.solver,
                    instance=np.repeat(np.arange(len(workers)), ep) if len(workers) > 1 else None))
        except Exception:  # noqa: BLE001 - a failed solve must not lose the window
            self.metrics.error("window_solve")
            assignment, chunks = np.full(len(items), -1, np.int64), {}
            if force:
                order = np.argsort(load, kind="stable")
                assignment = order[np.arange(len(items)) % len(order)]
        self.windows += 1
        self.metrics.window("prefill", len(items), time.perf_counter() - started)
        keep = []
        wall = self._clock()
        placed = np.zeros(len(units))
        placed_requests = np.zeros(len(units))
        seen = 0
        for i, item in enumerate(items):
            if item.future.done():  # the caller went away while the window was solved
                continue
            j = int(assignment[i])
            if j < 0:
                keep.append(item)
                continue
            unit = int(units[j])
            self.state.add_virtual(unit, float(item.new_tokens), now=wall)
            self._assign(item, unit, int(chunks.get(i, item.new_tokens)), window=self.windows)
            placed[j] += item.new_tokens
            placed_requests[j] += 1
            seen += item.landing_seen
        self._predict_forwards(workers, units, load, capacity, placed, placed_requests, wall)
        self.buffer = keep + self.buffer
        self._expect_landing(self.windows, cut_clock, seen)

    def _expect_landing(self, window: int, cut_clock: float, requests: int) -> None:
        """Wait for the landings of the ``requests`` of ``window`` whose landing the front sees
        (:meth:`landed`); a window that never finishes landing (a client went away between the
        answer and its forward, or a retry went to another worker) is forgotten."""
        stale = cut_clock - LOST_S
        while self._landing:
            oldest = next(iter(self._landing))  # windows are kept in the order of their cuts
            if self._landing[oldest][0] >= stale:
                break
            del self._landing[oldest]
        if requests:
            self._landing[window] = [cut_clock, float(requests), 0.0]

    def landed(self, window: int | None) -> None:
        """One request of ``window`` reached its engine (the front got the engine's response
        headers). When the window's last request has landed, the time since its cut trains
        the paced release's lead (:attr:`ClusterState.landing`)."""
        if window is None or (entry := self._landing.get(window)) is None:
            return
        entry[2] += 1
        if entry[2] >= entry[1]:
            del self._landing[window]
            seconds = self._clock() - entry[0]
            self.state.landing.observe(int(entry[1]), seconds)
            self.metrics.landing_s.observe(seconds)

    def _predict_forwards(self, workers: list[int], units: np.ndarray, load: np.ndarray, capacity: np.ndarray,
                          placed: np.ndarray, placed_requests: np.ndarray, wall: float) -> None:
        """Tier-2 state of paced workers: a window sent to one starts its next forward, which
        lasts the cost model's step time for the tokens it will hold (a rank's queue beyond the
        chunk capacity waits for later forwards), so the next window waits for that forward's
        end unless a report says otherwise."""
        coef = self.coefficients("prefill")
        ep = self.config.ep
        for g, w in enumerate(workers):
            sl = slice(g * ep, (g + 1) * ep)
            if not self.state.paced[w] or not placed_requests[sl].any():
                continue
            tokens = np.minimum(load[sl] + placed[sl], capacity[sl])
            rank_us = (coef.alpha_us_per_token * tokens + coef.beta_us_per_pair * tokens * tokens / 2.0
                       + coef.gamma_us_per_request * placed_requests[sl])
            step_s = (coef.base_us + float(rank_us.max())) * 1e-6
            start = max(wall, self.state.busy_until(w))
            self.state.add_virtual_forward(w, start + step_s, now=wall)

    def _expire_without_workers(self) -> None:
        """No live worker: requests past their guard are rejected rather than held forever."""
        now = self.now()
        keep = []
        for item in self.buffer:
            if item.deadline_s <= now and not self.state.alive_workers(self._clock()).any():
                self._reject(item, "no_live_worker")
            else:
                keep.append(item)
        self.buffer = keep

    # ------------------------------------------------------------------ decode windows
    async def _decode_loop(self) -> None:
        while True:
            await self._dwake.wait()
            await asyncio.sleep(self.config.decode_interval_s)
            self._dwake.clear()
            if self.dbuffer:
                try:
                    await self._release_decode(force=False)
                except Exception:  # noqa: BLE001 - the loop must outlive one bad window
                    self.metrics.error("window_loop")
                if self.dbuffer:
                    self._dwake.set()

    async def _release_decode(self, *, force: bool) -> None:
        from sbsopt.sim.router import allocate_decode

        state = self.state
        alive = np.flatnonzero(state.alive_units(self._clock()))
        items, self.dbuffer = self.dbuffer, []
        cut = self.now()
        for it in items:
            it.cut_s = cut
        if not len(alive):
            now = self.now()
            for item in items:
                (self._reject(item, "no_live_worker") if force or item.deadline_s <= now
                 else self.dbuffer.append(item))
            return
        used = state.kv_used()
        capacity = used + state.rep_kv_free
        cap = int(np.nanmin(np.where(np.isfinite(capacity), capacity, 2**40)[alive]))
        started = time.perf_counter()
        try:
            assignment = await asyncio.get_running_loop().run_in_executor(self.executor, lambda: allocate_decode(
                np.array([it.new_tokens for it in items], np.int64), np.array([it.kv_blocks for it in items], np.int64),
                batch_size=state.decode_batch()[alive], max_batch_size=self.config.max_decode_batch,
                kv_blocks_used=used[alive], kv_capacity_blocks=max(cap, 1),
                kv_block_tokens=self.config.kv_block_tokens, coefficients=self.coefficients("decode"),
                iqr_k=self.config.iqr_k, solver=self.config.solver, seed=0))
        except Exception:  # noqa: BLE001 - a failed solve must not lose the window
            self.metrics.error("window_solve")
            assignment = np.full(len(items), -1, np.int64)
        self.metrics.window("decode", len(items), time.perf_counter() - started)
        now, wall = self.now(), self._clock()
        for i, item in enumerate(items):
            j = int(assignment[i])
            if j >= 0:
                unit = int(alive[j])
                state.add_virtual(unit, 0.0, now=wall, kv_blocks=float(max(item.kv_blocks, 1)))
                self._assign(item, unit, item.new_tokens, window=None)
            elif force or item.deadline_s <= now:
                self._reject(item, "no_decode_capacity")
            else:
                self.dbuffer.append(item)
