"""Decode epochs of the disaggregated simulator: closing one, admitting, and starting the next.

A decode instance advances in epochs (see :mod:`sbsopt.sim.engine`). Closing an epoch and
sizing the next are per-slot and per-rank loops over small arrays; at a trace's own light rate
there is an epoch or two per request, and numpy's per-call overhead on such arrays measured half
the simulator's time. So they run as compiled kernels that repeat numpy's arithmetic operation
for operation (same order of additions, same comparisons), so the results are bit-identical
(tests compare them with the numpy statements).
The admission in between stays in Python: it asks the chunking policy, which is user code.
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

__all__ = ["start_epoch", "end_epoch", "close_slots", "least_active", "plan_epoch"]

_COMPLETED = int(Status.COMPLETED)


@njit()
def close_slots(high, produced, tbt_s, now_s, completed, active, remaining, context, rid, rank, batch,
                kv_tokens, blocks_used, blocks_need, tbt_max_s, status, done_s):  # pragma: no cover - compiled
    """Advance the active slots below ``high`` by ``produced`` tokens and free the finished ones.

    Every active slot's request gets ``tbt_s`` as a candidate for its longest step; a slot
    whose remaining tokens reach zero leaves its rank's batch, KV tokens and blocks, and its
    request is marked ``completed`` at ``now_s``. Returns the freed slots, in increasing order.
    """
    ep = batch.shape[0]
    done = np.empty(high, np.int64)
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
    return done[:count]


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


def end_epoch(sim: _Simulation, inst: DecodeInstance) -> None:
    """Close ``inst``'s epoch at ``sim.now``: every running request produced the epoch's
    tokens, the finished ones complete and free their slots."""
    s = inst.steps
    last_step = inst.d0 + inst.slope * (s - 1)
    done = close_slots(inst.high, s * sim.step_tokens, max(inst.d0, last_step), sim.now, _COMPLETED,
                       inst.slot_active, inst.slot_remaining, inst.slot_context, inst.slot_rid, inst.slot_rank,
                       inst.batch, inst.kv_tokens, inst.blocks_used, sim.blocks_need, sim.tbt_max_s, sim.status,
                       sim.done_s)
    if len(done):
        inst.free_slots.extend(done.tolist())
        sim.finished += len(done)
    inst.busy = False


def start_epoch(sim: _Simulation, inst: DecodeInstance) -> bool:
    """Admit what the policy lets in on each rank, then start an epoch that runs until the
    next completion; ``False`` (``inst`` left idle) when nothing runs."""
    blocks = sim.blocks_need
    for j in inst.waiting_count.nonzero()[0].tolist() if inst.queued else ():
        waiting = inst.waiting[j]
        free = int(inst.kv_blocks - inst.blocks_used[j])
        count = inst.policy.admit_decode(waiting, int(inst.batch[j]), inst.max_batch, free,
                                         lambda r: int(blocks[r]))
        inst.check_admission(j, count, free, blocks)
        for _ in range(count):
            rid = waiting.popleft()
            slot = inst.free_slots.pop()
            if slot >= inst.high:
                inst.high = slot + 1
            inst.slot_rank[slot] = j
            inst.slot_rid[slot] = rid
            inst.slot_remaining[slot] = sim.out_left[rid] - 1
            inst.slot_context[slot] = sim.context[rid] + 1
            inst.slot_active[slot] = True
            inst.batch[j] += 1
            inst.kv_tokens[j] += sim.context[rid] + 1
            inst.blocks_used[j] += blocks[rid]
            inst.waiting_count[j] -= 1
            inst.queued -= 1
            inst.waiting_blocks[j] -= blocks[rid]
            sim.decode_start_s[rid] = sim.now
    y = sim.step_tokens
    t = sim.step_times.decode_tables
    if t is not None:
        steps, d0_us, d1_us = plan_epoch(inst.high, inst.slot_active, inst.slot_remaining, y, inst.batch,
                                         inst.kv_tokens, sim.query_tokens, t.a0, t.a1, t.shared, t.routed, t.dense,
                                         t.constants)
    else:  # a cost model of the user's: its public method
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
