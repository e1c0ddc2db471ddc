"""DP+EP engine instances of the disaggregated simulator: prefill units and decode units.

Each instance forms its iterations with a :class:`~sbsopt.sim.chunking.PrefillChunking` (see
:mod:`sbsopt.sim.chunking` for the protocol) and checks every answer, since a chunking is user
code.

Decode engines are advanced in epochs: between two batch-membership changes the number of
steps to the next completion is known and every running context grows by one token per step,
so an epoch's duration is the sum of an arithmetic series of step times (the step time at the
epoch's first and last step from the cost model, exact when the step time is affine in KV
tokens). An admission mid-epoch cuts the epoch at the next step boundary.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from sbsopt._jit import njit
from sbsopt.errors import SimulationError
from sbsopt.sim.chunking import PrefillChunking, PrefillTask

__all__ = ["PrefillInstance", "DecodeInstance", "steps_done"]


class PrefillInstance:
    """One prefill DP+EP instance: per-unit FIFO engine queues, lock-step non-preemptive forwards.

    State only; the simulator drives it. ``queued_tokens[j]`` / ``queued_requests[j]`` /
    ``running[j]`` are the true per-unit figures an engine report carries: the rows of
    ``state``, a float64 ``(3, ep)`` array (default: the instance's own), which the simulator
    makes a view of one array for the whole pool so that a report reads every instance at once.
    """

    def __init__(self, index: int, ep: int, chunk_tokens: int, policy: PrefillChunking,
                 state: np.ndarray | None = None) -> None:
        self.index = index
        self.ep = ep
        self.chunk_tokens = chunk_tokens
        self.policy = policy
        self.queues: list[deque] = [deque() for _ in range(ep)]
        self.queued_units: set[int] = set()  # the units whose queue is not empty: a forward visits only these
        state = np.zeros((3, ep), dtype=np.float64) if state is None else state
        self.queued_tokens, self.queued_requests, self.running = state
        self.queued = 0  # queued_requests' total, kept as an int: has_work runs before every forward
        self.busy = False
        self.start_pending = False
        self.phase_s = 0.0  # a dummy-forward boundary (idle_stepping)
        self.step_end_s = 0.0
        self.predicted_end_s = 0.0  # the scheduler's prediction of step_end_s (cost model)
        self.current: list[tuple[int, PrefillTask, int]] = []  # (unit, task, chunk tokens)

    def has_work(self) -> bool:
        return self.queued > 0

    def remove(self, unit: int, task: PrefillTask) -> None:
        """Take a queued task off ``unit`` (the reverse of :meth:`enqueue`)."""
        self.queues[unit].remove(task)
        if not self.queues[unit]:
            self.queued_units.discard(unit)
        self.queued_tokens[unit] -= task.remaining
        self.queued_requests[unit] -= 1
        self.queued -= 1

    def clear(self) -> list[int]:
        """Empty the instance as a failure does; return the ids of the requests it queued."""
        lost = [task.rid for queue in self.queues for task in queue]
        self.queues = [deque() for _ in range(self.ep)]
        self.queued_units = set()
        self.queued = 0
        for arr in (self.queued_tokens, self.queued_requests, self.running):
            arr[:] = 0.0
        self.busy = self.start_pending = False
        self.current = []
        return lost

    def enqueue(self, unit: int, task: PrefillTask) -> None:
        self.queues[unit].append(task)
        self.queued_units.add(unit)
        self.queued_tokens[unit] += task.remaining
        self.queued_requests[unit] += 1
        self.queued += 1

    def form_forward(self) -> tuple[list[tuple[int, PrefillTask, int]], np.ndarray, np.ndarray, np.ndarray]:
        """Chunks of the next forward and per-unit (new tokens, pairs, requests) arrays."""
        new = np.zeros(self.ep)
        pairs = np.zeros(self.ep)
        reqs = np.zeros(self.ep)
        chunks: list[tuple[int, PrefillTask, int]] = []
        for j in sorted(self.queued_units):
            queue = self.queues[j]
            formed = self.policy.form_prefill(queue, self.chunk_tokens)
            seen = set()
            # per-unit sums in Python numbers, written once: the same float additions in the
            # same order as adding into the arrays (token counts are whole, so exact)
            tokens, work, count = 0, 0.0, 0
            for task, n in formed:
                # a policy is user code: a chunk outside the protocol would corrupt the engine
                if not (type(n) is int or isinstance(n, np.integer)) or not 0 < n <= task.remaining \
                        or id(task) in seen:
                    raise SimulationError(
                        f"prefill chunking {self.policy.name!r}: form_prefill gave request "
                        f"{task.rid} a chunk of {n!r} tokens on unit {j} of prefill instance "
                        f"{self.index} ({task.remaining} left; one chunk per request and forward)")
                seen.add(id(task))
                chunks.append((j, task, n))
                tokens += n
                work += n * (task.done + n / 2.0)
                count += 1
            if tokens > self.chunk_tokens:
                raise SimulationError(
                    f"prefill chunking {self.policy.name!r}: form_prefill formed {int(tokens)} "
                    f"tokens on unit {j} of prefill instance {self.index}, over its budget of "
                    f"{self.chunk_tokens}")
            new[j] = tokens
            pairs[j] = work
            reqs[j] = self.running[j] = count
        return chunks, new, pairs, reqs

    def finish_forward(self, chunks) -> list[int]:
        """Apply a finished forward; returns the request ids whose prefill completed."""
        finished = []
        running = self.running
        for j, task, n in chunks:
            # between forwards nothing runs: form_forward counts from zeros (a unit whose
            # queue formed no chunk has its 0 written), so the units of the chunks are reset
            running[j] = 0.0
            task.remaining -= n
            task.done += n
            self.queued_tokens[j] -= n
            if task.remaining <= 0:
                queue = self.queues[j]
                # Finished tasks are at the head: chunks come from the head of the FIFO.
                queue.remove(task) if queue[0] is not task else queue.popleft()
                if not queue:
                    self.queued_units.discard(j)
                self.queued_requests[j] -= 1
                self.queued -= 1
                finished.append(task.rid)
        return finished


class DecodeInstance:
    """One decode DP+EP instance: continuous batching over slot arrays, advanced in epochs.

    ``counts`` (float64, rows ``batch`` and ``waiting_count``) and ``blocks`` (int64, rows
    ``blocks_used`` and ``waiting_blocks``), ``(2, ep)`` arrays, hold what an engine report
    carries (default: the instance's own; see :class:`PrefillInstance`).
    """

    def __init__(self, index: int, ep: int, max_batch: int, kv_blocks: int, policy: PrefillChunking,
                 counts: np.ndarray | None = None, blocks: np.ndarray | None = None) -> None:
        self.index = index
        self.ep = ep
        self.max_batch = max_batch
        self.kv_blocks = kv_blocks
        self.policy = policy
        slots = ep * max_batch
        self.slot_rank = np.zeros(slots, dtype=np.int64)
        self.slot_rid = np.full(slots, -1, dtype=np.int64)
        # float: with MTP a step yields 1 + acceptance tokens per request on average
        self.slot_remaining = np.zeros(slots, dtype=np.float64)
        self.slot_context = np.zeros(slots, dtype=np.float64)
        self.slot_active = np.zeros(slots, dtype=bool)
        self.free_slots = list(range(slots - 1, -1, -1))
        # one admission round's seats, rows (rank, request, slot): written in Python, seated compiled
        self.admitted = np.empty((slots, 3), dtype=np.int64)
        self.freed = np.empty(slots, dtype=np.int64)  # the slots an epoch's close freed
        # slots are taken lowest first and freed ones reused first, so every active slot sits
        # below this mark: per-epoch scans read that prefix, not all ep x max_batch slots
        self.high = 0
        counts = np.zeros((2, ep), dtype=np.float64) if counts is None else counts
        blocks = np.zeros((2, ep), dtype=np.int64) if blocks is None else blocks
        self.batch, self.waiting_count = counts
        self.blocks_used, self.waiting_blocks = blocks
        self.kv_tokens = np.zeros(ep, dtype=np.float64)
        # the arrays the epoch kernels take, in their order (sbsopt.sim.epochs: seat, close_slots)
        self.seating = (self.slot_rank, self.slot_rid, self.slot_remaining, self.slot_context, self.slot_active,
                        self.batch, self.kv_tokens, self.blocks_used, self.waiting_count, self.waiting_blocks)
        self.closing = (self.slot_active, self.slot_remaining, self.slot_context, self.slot_rid, self.slot_rank,
                        self.batch, self.kv_tokens, self.blocks_used, self.freed)
        self.waiting: list[deque] = [deque() for _ in range(ep)]
        self.queued = 0  # waiting_count's total, kept as an int: each epoch start reads it
        self.waiting_ranks: set[int] = set()  # the ranks whose queue is not empty, for the same reason
        # epoch state
        self.busy = False
        self.version = 0
        self.t0 = 0.0
        self.steps = 0
        self.d0 = 0.0
        self.slope = 0.0
        self.end_s = 0.0
        self.cut = False

    def clear(self) -> None:
        """Empty every slot and waiting queue and cancel the epoch in progress, as a failure does."""
        self.version += 1
        self.slot_active[:] = False
        self.slot_rid[:] = -1
        self.free_slots = list(range(len(self.slot_active) - 1, -1, -1))
        self.high = 0
        self.waiting = [deque() for _ in range(self.ep)]
        self.waiting_ranks = set()
        self.queued = 0
        for arr in (self.batch, self.kv_tokens, self.blocks_used, self.waiting_count, self.waiting_blocks):
            arr[:] = 0
        self.busy = self.cut = False

    def check_admission(self, rank: int, count, free: int, blocks_need: np.ndarray) -> None:
        """A policy is user code: refuse an admission past the batch, the queue or the KV."""
        waiting = self.waiting[rank]
        ok = (type(count) is int or isinstance(count, np.integer)) and 0 <= count <= len(waiting)
        if ok:
            need = 0
            for q, rid in enumerate(waiting):
                if q == count:
                    break
                need += int(blocks_need[rid])
            ok = self.batch[rank] + count <= self.max_batch and need <= free
        if not ok:
            raise SimulationError(
                f"prefill chunking {self.policy.name!r}: admit_decode admitted {count!r} of "
                f"{len(waiting)} waiting on rank {rank} of decode instance {self.index} (batch "
                f"{int(self.batch[rank])} of {self.max_batch}, {free} free KV blocks)")

    def epoch_time(self, steps: int) -> float:
        """Seconds taken by the first ``steps`` steps of the current epoch."""
        return steps * self.d0 + self.slope * steps * (steps - 1) / 2.0

    def steps_done_by(self, elapsed: float) -> int:
        """Whole steps of the current epoch completed within ``elapsed`` seconds."""
        return int(steps_done(self.d0, self.slope, self.steps, elapsed))


@njit()
def steps_done(d0, slope, steps, elapsed):  # pragma: no cover - compiled
    """:meth:`DecodeInstance.steps_done_by` of an epoch of ``steps`` steps whose first takes
    ``d0`` seconds and each next ``slope`` more: the root of the series' sum, then corrected
    against :meth:`DecodeInstance.epoch_time`'s formula (compiled: it runs at every mid-epoch
    admission; tests compare it with the Python statements)."""
    if abs(slope) < 1e-15:
        s = int(elapsed / d0) if d0 > 0 else steps
    else:
        a = d0 - slope / 2.0
        disc = a * a + 2.0 * slope * elapsed
        s = int((-a + math.sqrt(max(disc, 0.0))) / slope)
    s = min(max(s, 0), steps)
    while s < steps and (s + 1) * d0 + slope * (s + 1) * s / 2.0 <= elapsed:
        s += 1
    while s > 0 and s * d0 + slope * s * (s - 1) / 2.0 > elapsed:
        s -= 1
    return s
