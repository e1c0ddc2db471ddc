"""DP+EP engine instances and the engine-level batching protocol.

Batching protocol ("form the next iteration")
---------------------------------------------
An engine asks its :class:`BatchingPolicy` two questions, once per lock-step iteration:

``form_prefill(queue, budget_tokens) -> list[tuple[PrefillTask, int]]``
    Given one DP unit's FIFO engine queue (a ``deque`` of :class:`PrefillTask`, never to be
    mutated by the policy) and the unit's per-forward token budget, return the chunks of this
    forward: ``(task, new_tokens)`` pairs, ``0 < new_tokens <= task.remaining``, in order, with
    a total of at most ``budget_tokens``. The engine applies them (advancing ``task.done``,
    popping finished tasks).
``admit_decode(waiting, running, max_batch, free_blocks, blocks_of) -> int``
    Given one decode unit's FIFO of waiting request ids, its running count, max batch, free KV
    blocks and a function ``rid -> blocks needed``, return how many of the head of ``waiting``
    to admit before the next decode step.

:class:`ChunkedPrefill` (Sarathi-like chunked prefill on prefill units: FIFO, fill the budget,
split the last prompt) with continuous-batching FIFO admission is the default
(``batching="default"`` or ``"sarathi"``). Other policies (``sbsopt.sim.batching``) register
themselves in :data:`BATCHING_POLICIES` via :func:`register_batching`.

Decode engines are advanced in epochs: between two batch-membership changes the number of
steps to the next completion is known and every running context grows by one token per step,
so an epoch's duration is the sum of an arithmetic series of step times (the step time at the
epoch's first and last step from the cost model, exact when the step time is affine in KV
tokens). An admission mid-epoch cuts the epoch at the next step boundary.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from sbsopt.errors import InvalidInputError, SimulationError

__all__ = [
    "PrefillTask",
    "BatchingPolicy",
    "ChunkedPrefill",
    "BATCHING_POLICIES",
    "register_batching",
    "get_batching",
    "PrefillInstance",
    "DecodeInstance",
]


class PrefillTask:
    """A request's prefill on one DP unit: ``remaining`` new tokens, ``done`` context so far.

    ``done`` starts at the cached prefix; attention pairs of a chunk of n tokens are
    ``n * (done + n / 2)``.
    """

    __slots__ = ("rid", "remaining", "done", "started")

    def __init__(self, rid: int, new_tokens: int, cached_tokens: int) -> None:
        self.rid = rid
        self.remaining = new_tokens
        self.done = cached_tokens
        self.started = False


class BatchingPolicy(Protocol):
    """Forms one iteration of an engine (see the module docstring)."""

    name: str

    def form_prefill(self, queue: deque, budget_tokens: int) -> list[tuple[PrefillTask, int]]: ...

    def admit_decode(
        self,
        waiting: deque,
        running: int,
        max_batch: int,
        free_blocks: int,
        blocks_of: Callable[[int], int],
    ) -> int: ...


class ChunkedPrefill:
    """Sarathi-like chunked prefill (FIFO, fill the budget, split the last prompt) + FIFO decode admission.

    Examples
    --------
    >>> q = deque([PrefillTask(0, 300, 0), PrefillTask(1, 500, 0)])
    >>> [(t.rid, n) for t, n in ChunkedPrefill().form_prefill(q, 512)]
    [(0, 300), (1, 212)]
    """

    name = "sarathi"

    def form_prefill(self, queue: deque, budget_tokens: int) -> list[tuple[PrefillTask, int]]:
        chunks = []
        left = budget_tokens
        for task in queue:
            if left <= 0:
                break
            take = task.remaining if task.remaining < left else left
            chunks.append((task, take))
            left -= take
        return chunks

    def admit_decode(self, waiting, running, max_batch, free_blocks, blocks_of) -> int:
        count = 0
        for rid in waiting:
            need = blocks_of(rid)
            if running + count >= max_batch or need > free_blocks:
                break
            free_blocks -= need
            count += 1
        return count


BATCHING_POLICIES: dict[str, Callable[[], BatchingPolicy]] = {
    "default": ChunkedPrefill,
    "sarathi": ChunkedPrefill,
}


def register_batching(name: str, factory: Callable[[], BatchingPolicy]) -> None:
    """Register an engine batching policy under ``name`` (duplicates are refused)."""
    if name in BATCHING_POLICIES:
        raise InvalidInputError("batching", name, "a name not registered yet")
    BATCHING_POLICIES[name] = factory


def get_batching(batching: str | BatchingPolicy) -> BatchingPolicy:
    """A policy object from a name (importing ``sbsopt.sim.batching`` if it exists) or as is."""
    if not isinstance(batching, str):
        return batching
    if batching not in BATCHING_POLICIES:
        try:
            import sbsopt.sim.batching  # noqa: F401 - registers its policies
        except ImportError:
            pass
    if batching not in BATCHING_POLICIES:
        raise InvalidInputError("batching", batching, f"one of {', '.join(sorted(BATCHING_POLICIES))}")
    return BATCHING_POLICIES[batching]()


class PrefillInstance:
    """One prefill DP+EP instance: per-unit FIFO engine queues, lock-step non-preemptive forwards.

    State only; the simulator drives it. ``queued_tokens[j]`` / ``waiting[j]`` / ``running[j]``
    are the true per-unit figures an engine report carries.
    """

    def __init__(self, index: int, ep: int, chunk_tokens: int, policy: BatchingPolicy) -> None:
        self.index = index
        self.ep = ep
        self.chunk_tokens = chunk_tokens
        self.policy = policy
        self.queues: list[deque] = [deque() for _ in range(ep)]
        self.queued_tokens = np.zeros(ep, dtype=np.float64)
        self.queued_requests = np.zeros(ep, dtype=np.float64)
        self.running = np.zeros(ep, dtype=np.float64)
        self.busy = False
        self.start_pending = False
        self.phase_s = 0.0  # a dummy-forward boundary (idle_stepping)
        self.step_end_s = 0.0
        self.current: list[tuple[PrefillTask, int]] = []

    def has_work(self) -> bool:
        return bool(self.queued_requests.sum() > 0)

    def enqueue(self, unit: int, task: PrefillTask) -> None:
        self.queues[unit].append(task)
        self.queued_tokens[unit] += task.remaining
        self.queued_requests[unit] += 1

    def form_forward(self):
        """Chunks of the next forward and per-unit (new tokens, pairs, requests) arrays."""
        new = np.zeros(self.ep)
        pairs = np.zeros(self.ep)
        reqs = np.zeros(self.ep)
        chunks = []
        self.running[:] = 0.0
        for j, queue in enumerate(self.queues):
            if not queue:
                continue
            formed = self.policy.form_prefill(queue, self.chunk_tokens)
            seen = set()
            for task, n in formed:
                # a policy is user code: a chunk outside the protocol would corrupt the engine
                if not (type(n) is int or isinstance(n, np.integer)) or not 0 < n <= task.remaining \
                        or id(task) in seen:
                    raise SimulationError(
                        f"batching policy {self.policy.name!r}: form_prefill gave request "
                        f"{task.rid} a chunk of {n!r} tokens on unit {j} of prefill instance "
                        f"{self.index} ({task.remaining} left; one chunk per request and forward)")
                seen.add(id(task))
                chunks.append((j, task, n))
                new[j] += n
                pairs[j] += n * (task.done + n / 2.0)
                reqs[j] += 1
            if new[j] > self.chunk_tokens:
                raise SimulationError(
                    f"batching policy {self.policy.name!r}: form_prefill formed {int(new[j])} "
                    f"tokens on unit {j} of prefill instance {self.index}, over its budget of "
                    f"{self.chunk_tokens}")
            self.running[j] = reqs[j]
        return chunks, new, pairs, reqs

    def finish_forward(self, chunks) -> list[int]:
        """Apply a finished forward; returns the request ids whose prefill completed."""
        finished = []
        for j, task, n in chunks:
            task.remaining -= n
            task.done += n
            self.queued_tokens[j] -= n
            if task.remaining <= 0:
                queue = self.queues[j]
                # Finished tasks are at the head: chunks come from the head of the FIFO.
                queue.remove(task) if queue[0] is not task else queue.popleft()
                self.queued_requests[j] -= 1
                finished.append(task.rid)
        self.running[:] = 0.0
        return finished


class DecodeInstance:
    """One decode DP+EP instance: continuous batching over slot arrays, advanced in epochs."""

    def __init__(self, index: int, ep: int, max_batch: int, kv_blocks: int, policy: BatchingPolicy) -> None:
        self.index = index
        self.ep = ep
        self.max_batch = max_batch
        self.kv_blocks = kv_blocks
        self.policy = policy
        slots = ep * max_batch
        self.slot_rank = np.zeros(slots, dtype=np.int64)
        self.slot_rid = np.full(slots, -1, dtype=np.int64)
        self.slot_remaining = np.zeros(slots, dtype=np.int64)
        self.slot_context = np.zeros(slots, dtype=np.int64)
        self.slot_active = np.zeros(slots, dtype=bool)
        self.free_slots = list(range(slots - 1, -1, -1))
        self.batch = np.zeros(ep, dtype=np.float64)
        self.kv_tokens = np.zeros(ep, dtype=np.float64)
        self.blocks_used = np.zeros(ep, dtype=np.int64)
        self.waiting: list[deque] = [deque() for _ in range(ep)]
        self.waiting_count = np.zeros(ep, dtype=np.float64)
        self.waiting_blocks = np.zeros(ep, dtype=np.int64)
        # epoch state
        self.busy = False
        self.version = 0
        self.t0 = 0.0
        self.steps = 0
        self.d0 = 0.0
        self.slope = 0.0
        self.end_s = 0.0
        self.cut = False

    def epoch_time(self, steps: int) -> float:
        """Seconds taken by the first ``steps`` steps of the current epoch."""
        return steps * self.d0 + self.slope * steps * (steps - 1) / 2.0

    def steps_done_by(self, elapsed: float) -> int:
        """Whole steps of the current epoch completed within ``elapsed`` seconds."""
        if abs(self.slope) < 1e-15:
            s = int(elapsed / self.d0) if self.d0 > 0 else self.steps
        else:
            a = self.d0 - self.slope / 2.0
            disc = a * a + 2.0 * self.slope * elapsed
            s = int((-a + math.sqrt(max(disc, 0.0))) / self.slope)
        s = min(max(s, 0), self.steps)
        while s < self.steps and self.epoch_time(s + 1) <= elapsed:
            s += 1
        while s > 0 and self.epoch_time(s) > elapsed:
            s -= 1
        return s
