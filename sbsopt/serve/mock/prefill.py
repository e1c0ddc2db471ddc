"""The mock engine's prefill role: the simulator's disaggregated prefill instance in real time.

One :class:`PrefillEngine` is one :class:`sbsopt.sim.engine.PrefillInstance` (the very class the
simulator steps), driven by the wall clock instead of an event heap:

- per-rank FIFO engine queues; a request is pinned to its ``data_parallel_rank`` (else the rank
  with the fewest queued tokens);
- lock-step, non-preemptive forwards: each forward takes up to ``chunk_tokens`` new tokens per
  rank (the simulator's chunking, :func:`sbsopt.sim.chunking.get_chunking`), lasts
  ``CostModel.prefill_step_us(new, pairs, requests)`` (the max over ranks: idle ranks run a
  dummy batch), and a request that arrives mid-forward waits in its rank's queue for the next;
- when a request's last chunk completes, its first token is emitted at the forward's end (its
  TTFT, as the simulator's ``ttft_end_s``) and the response ends: a prefill instance hands the
  KV to a decode instance, which this mock does not model (``max_tokens`` is not generated).

Host overhead is kept out of the modelled timeline as in :class:`~sbsopt.serve.mock.engine.MockEngine`:
a busy engine starts its next forward at the modelled end of the last one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sbsopt._validate import check_int, check_number
from sbsopt.errors import InvalidInputError
from sbsopt.serve.mock.engine import MockRequest, ModelClock, check_submission
from sbsopt.sim.chunking import PrefillTask, get_chunking
from sbsopt.sim.engine import PrefillInstance

__all__ = ["PrefillEngine"]

_QUEUED, _DONE, _CANCELLED = 1, 3, 4


class PrefillEngine:
    """One disaggregated prefill DP+EP instance of ``ep`` ranks, timed by the cost model.

    Parameters
    ----------
    ep : int
        DP ranks.
    cost_model : CostModel
        :func:`sbsopt.costmodel.load_cost_model` for ``ep`` ranks; only ``prefill_step_us`` is used.
    chunk_tokens : int
        New tokens per rank in one forward (the simulator's ``ClusterConfig.chunk_tokens``).
    speed : float
        Real time runs ``speed`` times faster than model time.
    max_prompt_tokens : int
        Longer prompts are refused.
    gather_s : float
        Real seconds an idle engine waits after the first request before forming its forward,
        so that the requests of one window (separate HTTP calls sent together) share it. The
        forward is timed from the first request's arrival, as the simulator starts an idle
        instance at dispatch.
    clock : callable, optional
        Real seconds (default: the running loop's clock).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> cm = SimpleNamespace(ep=2, prefill_step_us=lambda new, pairs, reqs: 1000.0 + 10.0 * float(max(new)))
    >>> async def demo():
    ...     engine = PrefillEngine(ep=2, cost_model=cm, chunk_tokens=1000, speed=50.0, gather_s=0.0)
    ...     task = asyncio.create_task(engine.run())
    ...     req = engine.submit(1500, 8, rank=1)
    ...     first = await req.tokens.get()
    ...     end = await req.tokens.get()
    ...     task.cancel()
    ...     return first[0], round(first[1] - req.arrival_s, 3), end
    >>> asyncio.run(demo())  # two forwards: 1000 tokens (11 ms), then 500 (6 ms)
    (0, 0.017, None)
    """

    role = "prefill"

    def __init__(self, *, ep: int, cost_model: Any, chunk_tokens: int, speed: float = 1.0,
                 max_prompt_tokens: int = 131_072, gather_s: float = 0.002,
                 clock: Callable[[], float] | None = None) -> None:
        self.ep = check_int("ep", ep, minimum=1)
        if getattr(cost_model, "ep", ep) != ep:
            raise InvalidInputError("cost_model.ep", cost_model.ep, f"the engine's ep ({ep})")
        self.cost_model = cost_model
        self.chunk_tokens = check_int("chunk_tokens", chunk_tokens, minimum=1)
        self.speed = check_number("speed", speed, strict_min=True)
        self.max_prompt_tokens = check_int("max_prompt_tokens", max_prompt_tokens, minimum=1)
        self.gather_s = check_number("gather_s", gather_s)
        self.instance = PrefillInstance(0, ep, chunk_tokens, get_chunking("default"))
        self._model_clock = ModelClock(self.speed, clock)
        self._requests: dict[int, MockRequest] = {}
        self._tasks: dict[int, PrefillTask] = {}
        self._forward: list[tuple[int, PrefillTask, int]] = []
        self.forward_tokens = np.zeros(ep)
        self.forward_end_s = -math.inf
        self.received = np.zeros(ep, dtype=np.int64)
        self.started = 0
        self._next_id = 0
        self._idle_arrival_s: float | None = None
        self._work = asyncio.Event()
        self.forwards = 0
        self.completed = 0
        self.cancelled = 0
        self.max_lag_s = 0.05

    @property
    def token_budget(self) -> int:
        """Per-rank new tokens of one forward (the chunk capacity)."""
        return self.chunk_tokens

    def now(self) -> float:
        """Model time in seconds (real time since the first call times ``speed``)."""
        return self._model_clock.now()

    # ------------------------------------------------------------------ requests
    def submit(self, prompt_tokens: int, max_tokens: int, rank: int | None = None) -> MockRequest:
        """Queue a request's prefill (pinned to ``rank``, else the rank with the fewest queued tokens).

        Raises
        ------
        InvalidInputError
            Bad rank or a prompt over ``max_prompt_tokens``.
        """
        check_submission(prompt_tokens, max_tokens, rank, ep=self.ep, max_prompt_tokens=self.max_prompt_tokens)
        inst = self.instance
        if rank is None:
            rank = int(np.argmin(inst.queued_tokens))
        rid = self._next_id
        self._next_id += 1
        req = MockRequest(rid, prompt_tokens, max_tokens, rank, self.now())
        task = PrefillTask(rid, prompt_tokens, 0)
        self._requests[rid] = req
        self._tasks[rid] = task
        if not inst.has_work() and not self._forward and self._idle_arrival_s is None:
            self._idle_arrival_s = req.arrival_s
        inst.enqueue(rank, task)
        self.received[rank] += 1
        self._work.set()
        return req

    def cancel(self, req: MockRequest) -> None:
        """Drop a request (client went away); a chunk in the running forward still completes."""
        if req.state in (_DONE, _CANCELLED):
            return
        req.state = _CANCELLED
        self.cancelled += 1
        if not any(task.rid == req.rid for _, task, _ in self._forward):
            self._remove(req.rid)

    def _remove(self, rid: int) -> None:
        task = self._tasks.pop(rid)
        req = self._requests.pop(rid)
        if task.remaining > 0:
            self.instance.remove(req.rank, task)

    def load(self) -> dict[str, Any]:
        """Per-rank state for the sidecar (``GET /v1/load``), the simulator's engine report.

        ``queued_tokens`` counts every token not yet prefilled (the running forward's
        included), ``forward_tokens`` the running forward's, ``received`` the requests each rank
        has received, ``forwards`` the forwards started, and ``forward_ends_in_ms`` the real
        milliseconds until the running forward ends (0 when idle): a sidecar paces its windows
        on it.
        """
        inst = self.instance
        real_left = max(self.forward_end_s - self.now(), 0.0) / self.speed
        running = inst.running  # requests in the running forward (zero between forwards)
        return {"ep": self.ep, "role": self.role, "token_budget": self.token_budget, "iterations": self.forwards,
                "forward_ends_in_ms": round(real_left * 1e3, 3), "forwards": self.started,
                "ranks": [{"waiting": int(inst.queued_requests[j] - running[j]), "running": int(running[j]),
                           "queued_tokens": int(inst.queued_tokens[j]),
                           "forward_tokens": int(self.forward_tokens[j]) if self._forward else 0,
                           "kv_blocks_used": 0, "received": int(self.received[j])} for j in range(self.ep)]}

    # ------------------------------------------------------------------ forwards
    def _finish(self, finished: list[int], end_s: float) -> None:
        for rid in finished:
            req = self._requests.get(rid)
            if req is None:
                continue
            if req.state == _QUEUED:
                req.first_s = end_s
                req.produced = 1
                req.state = _DONE
                self.completed += 1
                req.tokens.put_nowait((0, end_s))
                req.tokens.put_nowait(None)
            self._tasks.pop(rid, None)
            self._requests.pop(rid, None)
        # a request cancelled during the forward leaves the queue now that its chunk is applied
        for rid in [rid for rid, req in self._requests.items() if req.state == _CANCELLED]:
            self._remove(rid)

    async def run(self) -> None:
        """Run forwards forever (cancel the task to stop)."""
        inst = self.instance
        end: float | None = None  # modelled end of the last forward; None while idle
        while True:
            if not inst.has_work():
                end = None
                self._work.clear()
                await self._work.wait()
                if self.gather_s > 0:
                    await asyncio.sleep(self.gather_s)
                continue
            now = self.now()
            if end is None:
                # an idle instance starts when the work reached it (the simulator's dispatch time)
                start = now if self._idle_arrival_s is None else min(self._idle_arrival_s, now)
            else:
                start = max(end, now - self.max_lag_s * self.speed)
            self._idle_arrival_s = None
            chunks, new, pairs, reqs = inst.form_forward()
            self.started += 1
            step_s = float(self.cost_model.prefill_step_us(new, pairs, reqs)) * 1e-6
            self._forward = chunks
            self.forward_tokens = new
            end = start + step_s
            self.forward_end_s = end
            await asyncio.sleep(max((end - self.now()) / self.speed, 0.0))
            self.forwards += 1
            finished = inst.finish_forward(chunks)
            self._forward = []
            self._finish(finished, end)
