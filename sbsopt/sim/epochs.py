"""Decode epochs of the disaggregated simulator: closing one, admitting, and starting the next.

A decode instance advances in epochs (see :mod:`sbsopt.sim.engine`). Closing an epoch and
sizing the next are per-slot and per-rank loops over small arrays; at a trace's own light rate
there is an epoch or two per request, and numpy's per-call overhead on such arrays measured half
the simulator's time. So they run as compiled kernels that repeat numpy's arithmetic operation
for operation (same order of additions, same comparisons), so the results are bit-identical
(tests compare them with the numpy statements).
The admission in between asks the chunking policy, which is user code, so it stays in Python;
the seating of what it admits is compiled with the next epoch's plan (:func:`admit_plan`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sbsopt._jit import njit
from sbsopt.sim.engine import DecodeInstance
from sbsopt.sim.metrics import Status
from sbsopt.sim.steps import decode_pair_us

if TYPE_CHECKING:  # the simulator imports this module
    from sbsopt.sim.simulator import _Simulation

__all__ = ["start_epoch", "end_epoch", "close_slots", "least_active", "plan_epoch", "seat", "admit_plan"]

_COMPLETED = int(Status.COMPLETED)


@njit()
def close_slots(high, produced, tbt_s, now_s, completed, active, remaining, context, rid, rank, batch,
                kv_tokens, blocks_used, done, blocks_need, tbt_max_s, status, done_s):  # pragma: no cover - compiled
    """Advance the active slots below ``high`` by ``produced`` tokens and free the finished ones.

    Every active slot's request gets ``tbt_s`` as a candidate for its longest step; a slot
    whose remaining tokens reach zero leaves its rank's batch, KV tokens and blocks, and its
    request is marked ``completed`` at ``now_s``. The freed slots go to the head of ``done``, in
    increasing order; returns how many (an array returned would be boxed at every call).
    """
    ep = batch.shape[0]
    count = 0
    for s in range(high):
        if active[s]:
            remaining[s] -= produced
            context[s] += produced
            r = rid[s]
            if tbt_s > tbt_max_s[r]:
                tbt_max_s[r] = tbt_s
            if remaining[s] <= 0:
                done[count] = s
                count += 1
    for j in range(ep):
        kv_tokens[j] += produced * batch[j]
    if count:
        # per-rank sums first, then one subtraction per rank: numpy's bincount order
        leaving = np.zeros(ep, np.int64)
        tokens = np.zeros(ep)
        blocks = np.zeros(ep)
        for q in range(count):
            s = done[q]
            j = rank[s]
            leaving[j] += 1
            tokens[j] += context[s]
            blocks[j] += blocks_need[rid[s]]
            active[s] = False
            status[rid[s]] = completed
            done_s[rid[s]] = now_s
        for j in range(ep):
            batch[j] -= leaving[j]
            kv_tokens[j] -= tokens[j]
            # fractional MTP tokens: an emptied rank holds exactly nothing, not a rounding residue
            if batch[j] <= 0 or kv_tokens[j] <= 0.0:
                kv_tokens[j] = 0.0
            blocks_used[j] -= np.int64(blocks[j])
    return count


@njit()
def least_active(high, active, remaining):  # pragma: no cover - compiled
    """The fewest tokens left among the active slots below ``high`` (``inf`` when none is)."""
    least = np.inf
    for s in range(high):
        if active[s] and remaining[s] < least:
            least = remaining[s]
    return least


@njit()
def plan_epoch(high, active, remaining, step_tokens, batch, kv_tokens, q, a0, a1, shared, routed, dense,
               c):  # pragma: no cover - compiled
    """``(steps, first, last)``: the steps until the next completion among the active slots
    below ``high`` (0 when none is active) and the step times (us) of the epoch's first and
    last step (``decode_pair_us``)."""
    least = least_active(high, active, remaining)
    if least == np.inf:
        return 0, 0.0, 0.0
    steps = max(1, math.ceil(least / step_tokens - 1e-9))
    first, last = decode_pair_us(batch, kv_tokens, q, (steps - 1) * step_tokens, a0, a1, shared, routed, dense, c)
    return steps, first, last


@njit()
def seat(count, admitted, now_s, out_left, context, blocks_need, decode_start_s, high, rank, rid, remaining,
         slot_context, active, batch, kv_tokens, blocks_used, waiting_count, waiting_blocks):  # pragma: no cover
    """Seat the ``count`` admitted requests (rows ``(rank, request, slot)`` of ``admitted``, in
    admission order) and return the new slot mark. A seated request has generated its
    prefill's token; each statement is the simulator's former numpy statement's arithmetic."""
    for k in range(count):
        j, r, s = admitted[k, 0], admitted[k, 1], admitted[k, 2]
        if s >= high:
            high = s + 1
        rank[s] = j
        rid[s] = r
        remaining[s] = out_left[r] - 1
        slot_context[s] = context[r] + 1
        active[s] = True
        batch[j] += 1
        kv_tokens[j] += context[r] + 1
        blocks_used[j] += blocks_need[r]
        waiting_count[j] -= 1
        waiting_blocks[j] -= blocks_need[r]
        decode_start_s[r] = now_s
    return high


@njit()
def admit_plan(count, admitted, now_s, out_left, context, blocks_need, decode_start_s, high, rank, rid, remaining,
               slot_context, active, batch, kv_tokens, blocks_used, waiting_count, waiting_blocks, step_tokens, q, a0,
               a1, shared, routed, dense, c):  # pragma: no cover - compiled
    """:func:`seat` then :func:`plan_epoch` in one call: ``(high, steps, first, last)``."""
    high = seat(count, admitted, now_s, out_left, context, blocks_need, decode_start_s, high, rank, rid, remaining,
                slot_context, active, batch, kv_tokens, blocks_used, waiting_count, waiting_blocks)
    steps, first, last = plan_epoch(high, active, remaining, step_tokens, batch, kv_tokens, q, a0, a1, shared,
                                    routed, dense, c)
    return high, steps, first, last


def end_epoch(sim: _Simulation, inst: DecodeInstance) -> None:
    """Close ``inst``'s epoch at ``sim.now``: every running request produced the epoch's
    tokens, the finished ones complete and free their slots."""
    s = inst.steps
    d0 = inst.d0
    count = close_slots(inst.high, s * sim.step_tokens, max(d0, d0 + inst.slope * (s - 1)), sim.now, _COMPLETED,
                        *inst.closing, *sim.close_args)
    if count:
        inst.free_slots.extend(inst.freed[:count].tolist())
        sim.finished += count
    inst.busy = False


def start_epoch(sim: _Simulation, inst: DecodeInstance) -> bool:
    """Admit what the policy lets in on each rank, then start an epoch that runs until the
    next completion; ``False`` (``inst`` left idle) when nothing runs."""
    blocks = sim.blocks_need
    count = 0
    admitted = inst.admitted
    for j in sorted(inst.waiting_ranks) if inst.queued else ():
        waiting = inst.waiting[j]
        free = int(inst.kv_blocks - inst.blocks_used[j])
        take = inst.policy.admit_decode(waiting, int(inst.batch[j]), inst.max_batch, free, lambda r: int(blocks[r]))
        inst.check_admission(j, take, free, blocks)
        # a rank's admission reads only its own rank's state, so the seating waits for admit_plan
        for _ in range(take):
            row = admitted[count]
            row[0], row[1], row[2] = j, waiting.popleft(), inst.free_slots.pop()
            count += 1
        inst.queued -= int(take)
        if not waiting:
            inst.waiting_ranks.discard(j)
    y = sim.step_tokens
    if sim.plan_args is not None:
        if count:
            inst.high, steps, d0_us, d1_us = admit_plan(count, admitted, sim.now, *sim.seat_args, inst.high,
                                                        *inst.seating, y, *sim.plan_args)
        else:
            steps, d0_us, d1_us = plan_epoch(inst.high, inst.slot_active, inst.slot_remaining, y, inst.batch,
                                             inst.kv_tokens, *sim.plan_args)
    else:  # a cost model of the user's: its public method
        if count:
            inst.high = seat(count, admitted, sim.now, *sim.seat_args, inst.high, *inst.seating)
        least = least_active(inst.high, inst.slot_active, inst.slot_remaining)
        steps = 0 if least == math.inf else max(1, math.ceil(float(least) / y - 1e-9))
        if steps:
            d0_us = sim.step_times.decode_us(inst.batch, inst.kv_tokens)
            d1_us = sim.step_times.decode_us(inst.batch, inst.kv_tokens + (steps - 1) * y * inst.batch) \
                if steps > 1 else d0_us
    if not steps:
        inst.busy = False
        return False
    slow = sim.dslow[inst.index]
    d0 = d0_us * 1e-6 * slow
    d1 = d1_us * 1e-6 * slow if steps > 1 else d0
    inst.busy = True
    inst.cut = False
    inst.t0 = sim.now
    inst.steps = steps
    inst.d0 = d0
    inst.slope = (d1 - d0) / (steps - 1) if steps > 1 else 0.0
    inst.version += 1
    inst.end_s = sim.now + inst.epoch_time(steps)
    return True
