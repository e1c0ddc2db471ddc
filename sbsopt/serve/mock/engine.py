"""The mock engine's scheduler loop (asyncio, no HTTP): the simulator's colocated engine in real time.

Each iteration: snapshot the queues (:class:`~sbsopt.sim.batching.EngineSnapshot`), let the
iteration policy form the plan, sleep the plan's predicted time (``IterationCostModel.plan_us``
divided by ``speed``, against an absolute target so that sleeps do not drift), then apply it
exactly as :func:`sbsopt.sim.colocated.simulate_colocated` does: KV reserved at the first chunk,
the first token at the end of the last prefill chunk, one token per decode iteration. Every
token is pushed to its request's queue as ``(index, model_time_s)``; ``None`` ends the stream.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sbsopt._validate import check_int, check_number
from sbsopt.errors import InvalidInputError
from sbsopt.kvblocks import KV_BLOCK_TOKENS, request_kv_blocks

__all__ = ["MockRequest", "MockEngine"]

_QUEUED, _DECODING, _DONE, _CANCELLED = 1, 2, 3, 4


class ModelClock:
    """Model time: real time since the first reading, times ``speed``.

    ``clock`` (seconds) defaults to the running event loop's clock.
    """

    def __init__(self, speed: float, clock: Callable[[], float] | None = None) -> None:
        self.speed = speed
        self._clock = clock
        self._t0: float | None = None

    def now(self) -> float:
        """Model time in seconds."""
        real = self._clock() if self._clock is not None else asyncio.get_running_loop().time()
        if self._t0 is None:
            self._t0 = real
        return (real - self._t0) * self.speed


def check_submission(prompt_tokens: int, max_tokens: int, rank: int | None, *, ep: int,
                     max_prompt_tokens: int) -> None:
    """What both mock engines refuse of a request: bad counts, a prompt over the limit, a bad rank.

    Raises
    ------
    InvalidInputError
        Naming ``prompt_tokens``, ``max_tokens``, ``prompt`` or ``data_parallel_rank``.
    """
    check_int("prompt_tokens", prompt_tokens, minimum=1)
    check_int("max_tokens", max_tokens, minimum=1)
    if prompt_tokens > max_prompt_tokens:
        raise InvalidInputError("prompt", prompt_tokens, f"at most {max_prompt_tokens} prompt tokens")
    if rank is not None and not 0 <= rank < ep:
        raise InvalidInputError("data_parallel_rank", rank, f"a rank in [0, {ep - 1}]")


class MockRequest:
    """One request inside the mock engine; ``tokens`` yields ``(index, model_time_s)`` then ``None``."""

    __slots__ = ("rid", "prompt_tokens", "max_tokens", "rank", "done", "produced", "state", "tokens",
                 "arrival_s", "first_s", "kv_reserved")

    def __init__(self, rid: int, prompt_tokens: int, max_tokens: int, rank: int, arrival_s: float) -> None:
        self.rid = rid
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.rank = rank
        self.done = 0
        self.produced = 0
        self.state = _QUEUED
        self.tokens: asyncio.Queue = asyncio.Queue()
        self.arrival_s = arrival_s
        self.first_s = math.nan
        self.kv_reserved = False


class MockEngine:
    """One DP+EP instance of ``ep`` ranks, timed by the cost model.

    Parameters
    ----------
    ep : int
        DP ranks.
    cost : IterationCostModel
        Iteration pricing (``cost.ep == ep``).
    policy : IterationPolicy
        Iteration formation (:func:`sbsopt.sim.batching.make_iteration_policy`).
    kv_capacity_tokens : int
        KV tokens per rank; a request whose prompt plus output exceeds it is refused.
    speed : float
        Real time runs ``speed`` times faster than model time.
    ttft_slo_s, tpot_slo_s : float
        Deadlines handed to the policy (FairBatching uses them).
    max_prompt_tokens : int
        Longer prompts are refused.
    kv_block_tokens : int
        Block size of the KV figures in :meth:`load`.
    clock : callable, optional
        Real seconds (default: the running loop's clock).

    Examples
    --------
    >>> from sbsopt.sim.batching import IterationCostModel, make_iteration_policy
    >>> cost = IterationCostModel(prefill_base_us=2000.0, us_per_prefill_token=20.0, us_per_pair=0.0,
    ...     us_per_prefill_request=0.0, decode_base_us=2000.0, us_per_decode=100.0, us_per_kv_token=0.0)
    >>> async def demo():
    ...     engine = MockEngine(ep=1, cost=cost, policy=make_iteration_policy("sarathi"),
    ...                         kv_capacity_tokens=10_000, speed=100.0)
    ...     task = asyncio.create_task(engine.run())
    ...     req = engine.submit(100, 3)
    ...     times = []
    ...     while (event := await req.tokens.get()) is not None:
    ...         times.append(event[1] - req.arrival_s)
    ...     task.cancel()
    ...     return [round(t, 3) for t in times]
    >>> ttft, *rest = asyncio.run(demo())
    >>> 0.004 <= ttft < 0.02 and len(rest) == 2  # 4 ms modelled (+ timer slack x speed)
    True
    """

    role = "colocated"

    def __init__(self, *, ep: int, cost: Any, policy: Any, kv_capacity_tokens: int, speed: float = 1.0,
                 ttft_slo_s: float = 2.0, tpot_slo_s: float = 0.1, max_prompt_tokens: int = 131_072,
                 kv_block_tokens: int = KV_BLOCK_TOKENS, clock: Callable[[], float] | None = None) -> None:
        self.ep = check_int("ep", ep, minimum=1)
        if cost.ep != ep:
            raise InvalidInputError("cost.ep", cost.ep, f"the engine's ep ({ep})")
        self.cost = cost
        self.policy = policy
        self.kv_capacity = check_int("kv_capacity_tokens", kv_capacity_tokens, minimum=1)
        self.speed = check_number("speed", speed, strict_min=True)
        self.ttft_slo_s = ttft_slo_s
        self.tpot_slo_s = tpot_slo_s
        self.max_prompt_tokens = max_prompt_tokens
        self.kv_block_tokens = check_int("kv_block_tokens", kv_block_tokens, minimum=1)
        self._model_clock = ModelClock(self.speed, clock)
        self.kv_free = np.full(ep, kv_capacity_tokens, dtype=np.int64)
        self.outstanding = np.zeros(ep, dtype=np.int64)
        self.received = np.zeros(ep, dtype=np.int64)
        self.prefills: list[MockRequest] = []
        self.decodes: list[MockRequest] = []
        self._ids = itertools.count()
        self._work = asyncio.Event()
        self.iterations = 0
        self.busy_until_s = 0.0
        self.completed = 0
        self.cancelled = 0
        self.max_lag_s = 0.05

    @property
    def token_budget(self) -> int:
        """Per-rank tokens of one iteration (Sarathi's budget, FairBatching's cap)."""
        return int(getattr(self.policy, "token_budget", getattr(self.policy, "max_tokens", 512)))

    def now(self) -> float:
        """Model time in seconds (real time since the first call times ``speed``)."""
        return self._model_clock.now()

    # ------------------------------------------------------------------ requests
    def submit(self, prompt_tokens: int, max_tokens: int, rank: int | None = None) -> MockRequest:
        """Queue a request (pinned to ``rank``, else the rank with the fewest outstanding tokens).

        Raises
        ------
        InvalidInputError
            Bad rank, prompt over ``max_prompt_tokens``, or prompt + output over one rank's KV.
        """
        check_submission(prompt_tokens, max_tokens, rank, ep=self.ep, max_prompt_tokens=self.max_prompt_tokens)
        if prompt_tokens + max_tokens > self.kv_capacity:
            raise InvalidInputError("max_tokens", max_tokens, f"prompt + max_tokens within one rank's KV capacity "
                                    f"({self.kv_capacity} tokens; prompt has {prompt_tokens})")
        if rank is None:
            rank = int(np.argmin(self.outstanding))
        req = MockRequest(next(self._ids), prompt_tokens, max_tokens, rank, self.now())
        self.outstanding[rank] += prompt_tokens + max_tokens
        self.received[rank] += 1
        self.prefills.append(req)
        self._work.set()
        return req

    def cancel(self, req: MockRequest) -> None:
        """Drop a request (client went away): frees its rank's KV and outstanding tokens."""
        if req.state in (_DONE, _CANCELLED):
            return
        if req.kv_reserved:
            self.kv_free[req.rank] += req.prompt_tokens + req.max_tokens
        self.outstanding[req.rank] -= (req.prompt_tokens - req.done) + (req.max_tokens - req.produced)
        req.state = _CANCELLED
        self.cancelled += 1
        self.prefills = [r for r in self.prefills if r is not req]
        self.decodes = [r for r in self.decodes if r is not req]

    def load(self) -> dict[str, Any]:
        """Per-rank state for the sidecar (``GET /v1/load``)."""
        waiting = np.zeros(self.ep, dtype=np.int64)
        queued = np.zeros(self.ep, dtype=np.int64)
        running = np.zeros(self.ep, dtype=np.int64)
        for r in self.prefills:
            waiting[r.rank] += 1
            queued[r.rank] += r.prompt_tokens - r.done
        for r in self.decodes:
            running[r.rank] += 1
        used = self.kv_capacity - self.kv_free
        block = self.kv_block_tokens
        used_blocks = request_kv_blocks(used, block)
        return {"ep": self.ep, "token_budget": self.token_budget, "iterations": self.iterations,
                "busy_for_ms": round(max(self.busy_until_s - self.now(), 0.0) * 1e3, 3),
                "ranks": [{"waiting": int(waiting[j]), "running": int(running[j]), "queued_tokens": int(queued[j]),
                           "kv_blocks_used": int(used_blocks[j]),
                           "kv_blocks_free": int(self.kv_free[j] // block), "received": int(self.received[j])}
                          for j in range(self.ep)]}

    # ------------------------------------------------------------------ iterations
    def _snapshot(self, now: float) -> tuple[Any, list[MockRequest], list[MockRequest]]:
        from sbsopt.sim.batching import EngineSnapshot

        dec, pre = list(self.decodes), list(self.prefills)
        i64 = np.int64
        snap = EngineSnapshot(
            now_s=now,
            decode_deadline_s=np.array([r.first_s + r.produced * self.tpot_slo_s for r in dec], dtype=np.float64),
            decode_context_tokens=np.array([r.prompt_tokens + r.produced for r in dec], dtype=i64),
            decode_skips=np.zeros(len(dec), dtype=i64), decode_rank=np.array([r.rank for r in dec], dtype=i64),
            prefill_remaining_tokens=np.array([r.prompt_tokens - r.done for r in pre], dtype=i64),
            prefill_done_tokens=np.array([r.done for r in pre], dtype=i64),
            prefill_deadline_s=np.array([r.arrival_s + self.ttft_slo_s for r in pre], dtype=np.float64),
            prefill_kv_tokens=np.array([0 if r.kv_reserved else r.prompt_tokens + r.max_tokens for r in pre],
                                       dtype=i64),
            prefill_rank=np.array([r.rank for r in pre], dtype=i64), kv_free_tokens=self.kv_free.copy(),
        )
        return snap, dec, pre

    def _apply(self, plan: Any, dec: list[MockRequest], pre: list[MockRequest], end: float) -> None:
        for i in plan.decode_run.tolist():
            r = dec[i]
            if r.state != _DECODING:
                continue
            r.produced += 1
            self.outstanding[r.rank] -= 1
            r.tokens.put_nowait((r.produced - 1, end))
            if r.produced >= r.max_tokens:
                self._finish(r)
        for i, n in zip(plan.prefill_index.tolist(), plan.prefill_chunk_tokens.tolist(), strict=True):
            r = pre[i]
            if r.state != _QUEUED:
                continue
            r.done += n
            self.outstanding[r.rank] -= n
            if r.done >= r.prompt_tokens:
                r.first_s = end
                r.produced = 1
                self.outstanding[r.rank] -= 1
                r.tokens.put_nowait((0, end))
                if r.produced >= r.max_tokens:
                    self._finish(r)
                else:
                    r.state = _DECODING
                    self.decodes.append(r)
        self.prefills = [r for r in self.prefills if r.state == _QUEUED]
        self.decodes = [r for r in self.decodes if r.state == _DECODING]

    def _finish(self, r: MockRequest) -> None:
        r.state = _DONE
        self.kv_free[r.rank] += r.prompt_tokens + r.max_tokens
        self.completed += 1
        r.tokens.put_nowait(None)

    async def run(self) -> None:
        """Run iterations forever (cancel the task to stop)."""
        loop = asyncio.get_running_loop()
        end = -math.inf
        while True:
            if not self.prefills and not self.decodes:
                self._work.clear()
                await self._work.wait()
                end = -math.inf  # idle: the next iteration starts when work arrived
                continue
            # A busy engine starts its next iteration at the modelled end of the last one, not at
            # the (later) real time the host got round to it: host overhead (planning, HTTP
            # writes) must not stretch the modelled timeline, as long as it is shorter than an
            # iteration on average (a host further behind than ``max_lag_s`` real seconds drops the
            # backlog instead of replaying it).
            now = self.now()
            start = now if end == -math.inf else max(end, now - self.max_lag_s * self.speed)
            snap, dec, pre = self._snapshot(start)
            plan = self.policy.plan(snap, self.cost)
            duration_us = self.cost.plan_us(snap, plan)
            # KV is reserved when the first chunk is scheduled, as in the simulator
            for i in plan.prefill_index.tolist():
                r = pre[i]
                if not r.kv_reserved:
                    r.kv_reserved = True
                    self.kv_free[r.rank] -= r.prompt_tokens + r.max_tokens
            if duration_us <= 0.0:  # nothing schedulable (KV full): wait for a change
                self._work.clear()
                await self._work.wait()
                end = -math.inf
                continue
            end = start + duration_us / 1e6
            self.busy_until_s = end
            target = loop.time() + (end - self.now()) / self.speed
            await asyncio.sleep(max(target - loop.time(), 0.0))
            self.iterations += 1
            self._apply(plan, dec, pre, end)
