"""What the simulator does when an instance fails or recovers (see :mod:`sbsopt.sim.simulator`).

Faults are rare events, so they are plain functions of the simulation, kept out of its module.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sbsopt.sim.events import DECODE_WINDOW, DRECOVER, PRECOVER
from sbsopt.sim.metrics import RejectReason
from sbsopt.workload.prefix_cache import PrefixCache

if TYPE_CHECKING:  # the simulator imports this module
    from sbsopt.sim.simulator import _Simulation

__all__ = ["fail", "recover"]

def fail(sim: _Simulation, prefill: bool, k: int, _: int = 0) -> None:
    """Instance ``k`` (prefill or decode) dies now: it is emptied and what it held is routed again."""
    spec = next(f for f in sim.faults if f.at_s == sim.now and (f.kind == "prefill") == prefill
                and f.index == k)
    alive, gen, recover = (sim.palive, sim.pgen, sim.precover) if prefill else \
        (sim.dalive, sim.dgen, sim.drecover)
    if alive[k]:
        lost = kill_prefill(sim, k) if prefill else kill_decode(sim, k)
    else:
        lost = []  # already dead: the later recovery time wins
    alive[k] = False
    gen[k] += 1
    recover[k] = spec.recover_at_s
    update_masks(sim)
    if spec.recover_after_s is not None:
        sim.push(spec.recover_at_s, PRECOVER if prefill else DRECOVER, k, gen[k])
    for rid in lost:
        if sim.retries[rid] >= sim.sched.fault_max_retries:
            sim.reject(rid, RejectReason.FAULT_RETRY_LIMIT)
            continue
        sim.retries[rid] += 1
        sim.redispatched += 1
        sim.first_start_s[rid] = np.nan
        sim.route_prefill(rid)
    drop_if_hopeless(sim)


def drop_if_hopeless(sim: _Simulation) -> None:
    """Reject what waits for a kind of instance that is all dead and never recovers in time."""
    if not sim.palive.any() and not sim.recovery_pending(sim.precover):
        for rid in sim.parked_p + sim.buffer:
            sim.reject(rid, RejectReason.NO_LIVE_INSTANCE)
        sim.parked_p, sim.buffer, sim.buffer_tokens = [], [], 0.0
    if not sim.dalive.any() and not sim.recovery_pending(sim.drecover):
        for rid in sim.parked_d + sim.dbuffer:
            sim.reject(rid, RejectReason.NO_LIVE_INSTANCE)
        sim.parked_d, sim.dbuffer = [], []


def update_masks(sim: _Simulation) -> None:
    """Unit masks of the live instances; ``None`` while a pool is all alive (the unmasked paths)."""
    sim.pmask = None if sim.palive.all() else np.repeat(sim.palive, sim.pep)
    sim.dmask = None if sim.dalive.all() else np.repeat(sim.dalive, sim.dep)


def kill_prefill(sim: _Simulation, k: int) -> list[int]:
    """Empty prefill instance ``k``; the ids of the requests it held."""
    lost = sim.prefill[k].clear()
    # a chunked request's remainder lost its chunk's KV with the instance: it starts over
    queued = set(lost)
    lost += [rid for rid in sim.remainders.drop(range(k * sim.pep, (k + 1) * sim.pep))
             if rid not in queued]
    sim.pstep_ver[k] += 1  # cancels the forward in progress
    sim.caches[k] = PrefixCache(capacity_blocks=sim.cluster.prefix_cache_blocks,
                                 block_tokens=sim.wl.block_tokens)
    return lost


def kill_decode(sim: _Simulation, k: int) -> list[int]:
    """Empty decode instance ``k``; the ids of the requests it held, set up for their recompute."""
    inst = sim.decode[k]
    active = np.flatnonzero(inst.slot_active)
    running = inst.slot_rid[active]
    waiting = [rid for w in inst.waiting for rid in w]
    # what each lost request had generated is recomputed with its prompt: a running one
    # still needs its slot's remaining tokens less the steps of this epoch already done,
    # a waiting one had its prefill's token
    done = inst.steps_done_by(sim.now - inst.t0) if inst.busy else 0
    left = np.ceil(inst.slot_remaining[active] - done * sim.step_tokens - 1e-9)
    sim.out_left[running] = np.maximum(left, 1).astype(np.int64)
    sim.out_left[waiting] -= 1
    lost = running.tolist() + waiting
    sim.context[lost] = sim.inp[lost] + sim.out[lost] - sim.out_left[lost]
    inst.clear()
    return lost


def recover(sim: _Simulation, prefill: bool, k: int, gen: int) -> None:
    """Instance ``k`` comes back empty, unless a later failure (``gen``) superseded this recovery."""
    if gen != (sim.pgen if prefill else sim.dgen)[k]:
        return
    if prefill:
        sim.palive[k] = True
        sim.precover[k] = math.inf
        sim.prefill[k].phase_s = sim.now
    else:
        sim.dalive[k] = True
        sim.drecover[k] = math.inf
    update_masks(sim)
    if prefill:
        parked, sim.parked_p = sim.parked_p, []
        for rid in parked:
            sim.route_prefill(rid)
        if sim.sbs and sim.buffer:
            if sim.interval == "engine_paced":
                sim.pace_idle_instance()
            else:
                sim.arm_window()
    else:
        parked, sim.parked_d = sim.parked_d, []
        for rid in parked:
            sim.route_decode(rid)
        if sim.sbs and sim.dbuffer and not sim.dwindow_armed:
            sim.dwindow_armed = True
            sim.push(sim.now, DECODE_WINDOW)
