"""The discrete-event simulator of a P/D-disaggregated DP+EP cluster.

Events sit on a heap as ``(time_s, priority, counter, kind, a, b)`` (kinds in :mod:`sbsopt.sim.events`)
with a per-simulation counter, so ties break the same way every run. Arrivals are merged from the sorted workload
instead of being pushed one by one, and engine-report boundaries are passed where their
priority puts them without being pushed (:mod:`sbsopt.sim.reports`). There is no per-token
loop: prefill advances per forward, decode per epoch (see :mod:`sbsopt.sim.engine` and
:mod:`sbsopt.sim.epochs`).

Request life: arrival -> (SBS: scheduler buffer, released per window) -> engine FIFO of a
prefill DP unit -> chunked forwards -> first token (TTFT) -> KV transfer P->D -> decode router
-> decode unit FIFO -> admitted when the unit has a batch slot and KV blocks for the request's
full length (``reserve`` KV policy: the engine knows ``max_tokens``, so no preemption or
recompute happens except after a fault; a request whose full length exceeds a unit's KV is rejected with the
reason ``kv_exceeds_unit_capacity``) -> one token per lock-step decode step -> completed.

Faults (:mod:`sbsopt.sim.faults`; handled in :mod:`sbsopt.sim.failures`). A dead instance's pending step/epoch is cancelled and it is
emptied: every request queued or running on a dead prefill instance is re-dispatched and its
prefill redone from scratch; every request waiting or decoding on a dead decode instance lost
its KV, so it goes back through prefill: the recompute covers the prompt and the tokens it
had generated (a vLLM-style recompute preemption), produces the next token, and decoding
resumes for the rest of the output; TTFT keeps the first token already delivered. Re-dispatch goes through
the normal router (SBS: back into the window buffer) restricted to live instances; a request
lost more than ``SchedulerConfig.fault_max_retries`` times is rejected (``fault_retry_limit``).
With no live instance of the needed kind, requests wait for a recovery scheduled before the
horizon, else they are rejected (``no_live_instance``). A recovered instance comes back empty
(cold prefix cache). A slow rank multiplies its instance's every step time by its factor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from heapq import heappop, heappush

import numpy as np

from sbsopt._seed import as_int_seed
from sbsopt.kvblocks import request_kv_blocks
from sbsopt.sim.chunking import PrefillTask, get_chunking
from sbsopt.sim.config import ClusterConfig, SchedulerConfig, check_router, parse_interval
from sbsopt.sim.engine import DecodeInstance, PrefillInstance
from sbsopt.sim.epochs import end_epoch, start_epoch
from sbsopt.sim.events import (
    ARRIVAL,
    DECODE_WINDOW,
    DFAIL,
    DRECOVER,
    EPOCH_END,
    KV_ARRIVE,
    PFAIL,
    POOLS,
    PRECOVER,
    REPORT,
    START,
    STEP_END,
    WINDOW,
)
from sbsopt.sim.failures import fail, recover
from sbsopt.sim.faults import check_faults
from sbsopt.sim.lookahead import lean_release, next_free_s, window_solver
from sbsopt.sim.metrics import RejectReason, SimResult, Status, final_status
from sbsopt.sim.remainders import Remainder, Remainders
from sbsopt.sim.reports import DECODE_POOL, PREFILL_POOL, apply_report
from sbsopt.sim.router import allocate_decode, allocate_prefill, router_pools
from sbsopt.sim.steps import StepTimes
from sbsopt.sim.windows import greedy_decode_window, units_hold_nothing
from sbsopt.workload.prefix_cache import PrefixCache

__all__ = ["run_simulation"]


def run_simulation(
    workload,
    *,
    cluster: ClusterConfig,
    scheduler: SchedulerConfig,
    router: str,
    interval: str,
    solver: str,
    batching,
    seed,
    horizon_s: float | None,
    prefill_model,
    decode_model,
    record_timeline: bool,
    faults=(),
    slow_ranks=(),
) -> SimResult:
    """Run one simulation (see :func:`sbsopt.sim.simulate` for the parameters)."""
    check_router(router, "disaggregated")
    interval, fixed_s = parse_interval(interval)
    faults, slow_ranks = check_faults(faults, slow_ranks, cluster)
    sim = _Simulation(workload, cluster, scheduler, router, interval, solver, get_chunking(batching),
                      as_int_seed(seed), horizon_s, prefill_model, decode_model, record_timeline,
                      fixed_s if fixed_s is not None else scheduler.fixed_interval_s, faults, slow_ranks)
    return sim.run()


class _Simulation:
    def __init__(self, wl, cluster, sched, router, interval, solver, policy, seed, horizon_s,
                 pcm, dcm, record_timeline, fixed_s, faults=(), slow_ranks=()):
        self.wl = wl
        self.cluster = cluster
        self.sched = sched
        self.router = router
        self.interval = interval
        self.solver = solver
        self.seed = seed
        self.horizon_s = math.inf if horizon_s is None else float(horizon_s)
        self.pcm = pcm
        self.dcm = dcm
        self.fixed_s = fixed_s
        self.sbs = router == "sbs"
        n = len(wl)
        self.n = n
        self.arrival = wl.arrival_s
        self.inp = wl.input_tokens
        self.out = wl.output_tokens
        # what the next prefill computes (the prompt; after a decode fault also the tokens
        # generated so far) and the tokens still to generate, the prefill's one included
        self.context = wl.input_tokens.astype(np.int64)
        self.out_left = wl.output_tokens.astype(np.int64)
        self.hashes = wl.block_hashes if cluster.prefix_cache_blocks > 0 else None
        P, D = cluster.prefill_instances, cluster.decode_instances
        pep, dep = cluster.prefill_ep, cluster.decode_ep
        self.pep, self.dep = pep, dep
        # each pool's report figures in one array (instances hold views): a report reads it whole
        self.pstate = np.zeros((3, P * pep))
        self.prefill = [PrefillInstance(k, pep, cluster.chunk_tokens, policy, self.pstate[:, k * pep:(k + 1) * pep])
                        for k in range(P)]
        kv_tokens = cluster.kv_capacity_tokens or int(dcm.kv_capacity_tokens_per_rank)
        self.kv_block_tokens = cluster.kv_block_tokens
        # MTP: a decode step runs 2 query tokens and yields 1 + acceptance tokens per request
        self.step_tokens = 1.0 + cluster.mtp_acceptance
        self.query_tokens = 2 if cluster.mtp_acceptance > 0 else 1
        self.kv_blocks = kv_tokens // cluster.kv_block_tokens
        self.dcounts, self.dblocks = np.zeros((2, D * dep)), np.zeros((2, D * dep), dtype=np.int64)
        self.decode = [DecodeInstance(k, dep, cluster.max_decode_batch, self.kv_blocks, policy,
                                      self.dcounts[:, k * dep:(k + 1) * dep], self.dblocks[:, k * dep:(k + 1) * dep])
                       for k in range(D)]
        self.caches = [PrefixCache(capacity_blocks=cluster.prefix_cache_blocks, block_tokens=wl.block_tokens)
                       for _ in range(P)]
        self.prouter, self.drouter = router_pools((P, D), (pep, dep), sched, router, seed, n)
        self.pview, self.dview = self.prouter.views[0], self.drouter.views[0]  # SBS's (one replica)
        # each prefill instance's flattened units, and all decode units (SBS windows' unit lists)
        self.punits = [np.arange(k * pep, (k + 1) * pep) for k in range(P)]
        self.dunits = np.arange(D * dep)
        # the pools with one view under router pinning, whose reports are written in place
        self.direct_pools = sum(bit for bit, pool in ((PREFILL_POOL, self.prouter), (DECODE_POOL, self.drouter))
                                if len(pool.views) == 1 and pool.pinning == "router")
        self.report_arrays = (self.pstate, self.pview.state, self.dcounts, self.dblocks, self.dview.state)
        # per-request record
        nan = np.full(n, np.nan)
        self.status = np.full(n, Status.PENDING, dtype=np.int8)
        self.reason = np.zeros(n, dtype=np.int8)
        self.cached = np.zeros(n, dtype=np.int64)
        self.dispatch_s = nan.copy()
        self.first_start_s = nan.copy()
        self.ttft_end_s = nan.copy()
        self.decode_arrive_s = nan.copy()
        self.decode_start_s = nan.copy()
        self.done_s = nan.copy()
        self.tbt_max_s = np.zeros(n)
        self.prefill_unit = np.full(n, -1, dtype=np.int64)
        self.decode_unit = np.full(n, -1, dtype=np.int64)
        self.blocks_need = request_kv_blocks(self.inp + self.out, cluster.kv_block_tokens)
        self.finished = 0
        self.in_transfer = 0
        self.next_arrival = 0
        # prefill forward statistics
        self.forwards = 0
        self.forward_s = 0.0
        self.bubble_rank_s = 0.0
        self.step_rank_s = 0.0
        self.chunk_tokens_done = 0.0
        self.timeline: list | None = [] if record_timeline else None
        pc = pcm.prefill_coefficients()
        self.pcoef = pc
        self.dcoef = dcm.decode_coefficients(query_tokens=self.query_tokens)
        self.step_times = StepTimes(pcm, dcm, self.query_tokens)
        # the epoch kernels' arguments that never change, unpacked into every call (sim.epochs)
        t = self.step_times.decode_tables
        self.plan_args = None if t is None else (self.query_tokens, t.a0, t.a1, t.shared, t.routed, t.dense,
                                                 t.constants)
        self.seat_args = (self.out_left, self.context, self.blocks_need, self.decode_start_s)
        self.close_args = (self.blocks_need, self.tbt_max_s, self.status, self.done_s)
        zeros = np.zeros(pep)
        self.dummy_s = float(pcm.prefill_step_us(zeros, zeros, zeros)) * 1e-6
        if cluster.stagger_start:
            for k, inst in enumerate(self.prefill):
                inst.phase_s = k * self.dummy_s / P
        # SBS state
        self.buffer: list[int] = []
        self.buffer_tokens = 0.0
        self.remainders = Remainders()  # what windows left of the requests they chunked
        self.window_armed = False
        self.window_at = 0.0
        self.window_version = 0
        self.last_window_s = 0.0
        self.tokens_since_window = 0.0
        self.ewma_tok_s: float | None = None
        self.dbuffer: list[int] = []
        # the instance an engine-paced release is filling, and the start its queue asked for
        self.forming: PrefillInstance | None = None
        self.forming_start: float | None = None
        self.dwindow_armed = False
        self.heap: list = []
        self.counter = 0
        self.now = 0.0
        # faults: per instance alive flag, failure generation, recovery time; unit masks are
        # None while everything is alive so fault-free runs take the unmasked paths
        self.faults = faults
        self.slow_ranks = slow_ranks
        self.pslow = np.ones(P)
        self.dslow = np.ones(D)
        for r in slow_ranks:
            slow = self.pslow if r.kind == "prefill" else self.dslow
            slow[r.index] = max(slow[r.index], r.factor)
        self.palive = np.ones(P, dtype=bool)
        self.dalive = np.ones(D, dtype=bool)
        self.pgen = [0] * P
        self.dgen = [0] * D
        self.precover = [math.inf] * P
        self.drecover = [math.inf] * D
        self.pmask: np.ndarray | None = None
        self.dmask: np.ndarray | None = None
        self.pstep_ver = [0] * P
        self.parked_p: list[int] = []
        self.parked_d: list[int] = []
        self.retries = np.zeros(n, dtype=np.int64)
        self.redispatched = 0
        # the next engine report's time, and the pools (bits) whose views await a report
        self.report_s = sched.report_period_s if sched.report_period_s > 0 and n else math.inf
        self.stale = 0
        # each pushed event kind's handler, called with the event's (a, b)
        self.handlers: dict[int, Callable[[int, int], None]] = {
            STEP_END: self.on_step_end, EPOCH_END: self.on_epoch_end, KV_ARRIVE: self.on_decode_arrival,
            WINDOW: self.on_window, DECODE_WINDOW: self.on_decode_window, START: self.on_start,
            PFAIL: partial(fail, self, True), DFAIL: partial(fail, self, False),
            PRECOVER: partial(recover, self, True), DRECOVER: partial(recover, self, False)}

    # ------------------------------------------------------------------ event loop
    def push(self, t: float, kind: int, a: int = 0, b: int = 0) -> None:
        self.counter += 1
        heappush(self.heap, (t, kind, self.counter, kind, a, b))

    def run(self) -> SimResult:
        wall0 = time.perf_counter()
        heap = self.heap
        arrival = self.arrival.tolist()  # Python floats: the loop compares them once per event
        n = self.n
        horizon = self.horizon_s
        pop = heappop
        handlers, pools_of = self.handlers, POOLS
        i = 0
        for f in self.faults:
            self.push(f.at_s, PFAIL if f.kind == "prefill" else DFAIL, f.index)
        while True:
            next_arrival = arrival[i] if i < n else math.inf
            if heap:
                top = heap[0]
                t, kind = top[0], top[1]
                if t < next_arrival or (t == next_arrival and kind < ARRIVAL):
                    if self.report_s <= t and (self.report_s < t or kind > REPORT) \
                            and not self.reports_before(t, kind):
                        break
                    if t > horizon:
                        break
                    pop(heap)
                    self.now = t
                    if self.stale & pools_of[kind]:
                        apply_report(self, pools_of[kind])
                    handlers[kind](top[4], top[5])
                    continue
            if i < n:
                if self.report_s <= next_arrival and not self.reports_before(next_arrival, ARRIVAL):
                    break
                if next_arrival > horizon:
                    break
                self.now = next_arrival
                i += 1
                self.next_arrival = i
                if self.stale & PREFILL_POOL:
                    apply_report(self, PREFILL_POOL)
                self.on_arrival(i - 1)
            else:
                if self.report_s < math.inf and self.report_s <= horizon:
                    self.now = self.report_s  # the last report, which finds nothing left to wait for
                break
        wall = time.perf_counter() - wall0
        return self.result(wall, arrived=i)

    def on_window(self, version: int, _: int) -> None:
        if version == self.window_version:
            self.window_armed = False
            self.release_window()

    def on_decode_window(self, _a: int, _b: int) -> None:
        self.dwindow_armed = False
        self.release_decode_window()

    def on_start(self, k: int, _: int) -> None:
        inst = self.prefill[k]
        inst.start_pending = False
        if self.palive[k]:
            self.try_start(inst)

    # ------------------------------------------------------------------ engine reports
    def reports_before(self, t: float, kind: int) -> bool:
        """Pass the report boundaries that come before the event ``(t, kind)`` in the tie
        order; ``False`` when one lies past the horizon (the run stops there).

        A boundary is no heap event and writes no view: it marks both pools' views stale, and
        a pool's report is applied before the next event of that pool (``POOLS``). Only that
        pool's events read or change its view and its engines' state, so that report reads
        the state the boundary would have read and the view is the same at every read."""
        period = self.sched.report_period_s
        while self.report_s < t or (self.report_s == t and kind > REPORT):
            if self.report_s > self.horizon_s:
                return False
            self.now = self.report_s
            self.stale = PREFILL_POOL | DECODE_POOL
            # Reports stop once every request finished: nothing reads the views after that.
            self.report_s = self.now + period if self.finished < self.n else math.inf
        return True

    def fresh_views(self) -> None:
        if self.sched.report_period_s == 0:
            apply_report(self)

    # ------------------------------------------------------------------ prefill side
    def on_arrival(self, rid: int) -> None:
        if self.inp[rid] > self.cluster.max_prompt_tokens:
            self.reject(rid, RejectReason.PROMPT_TOO_LONG)
            return
        self.route_prefill(rid)

    def route_prefill(self, rid: int) -> None:
        if self.pmask is not None and not self.palive.any():
            if self.recovery_pending(self.precover):
                self.parked_p.append(rid)
            else:
                self.reject(rid, RejectReason.NO_LIVE_INSTANCE)
            return
        if not self.sbs:
            self.fresh_views()
            unit = self.prouter.pick(rid, self.router, float(self.context[rid]), alive=self.pmask)
            self.dispatch(rid, unit)
            return
        self.buffer.append(rid)
        self.buffer_tokens += float(self.context[rid])
        self.tokens_since_window += float(self.context[rid])
        if self.interval == "engine_paced":
            self.pace_idle_instance()
        else:
            self.arm_window()

    def dispatch(self, rid: int, unit: int, chunk: int = 0) -> None:
        """Hand a request to the engine queue of a flattened prefill unit: whole, or only its
        first ``chunk`` new tokens (an SBS window's chunk), the rest kept in ``remainders``."""
        k = unit // self.pep
        cached = 0
        if self.hashes is not None:
            cache = self.caches[k]
            cached = cache.lookup(self.hashes[rid], input_tokens=int(self.inp[rid]))
            cache.insert(self.hashes[rid])
        self.cached[rid] = cached
        self.dispatch_s[rid] = self.now + self.sched.dispatch_latency_s
        self.prefill_unit[rid] = unit
        tokens = int(self.context[rid]) - cached
        if 0 < chunk < tokens:
            self.remainders.pin(rid, unit=unit, done=cached + chunk, tokens=tokens - chunk)
            tokens = chunk
        self.enqueue(unit, PrefillTask(rid, tokens, cached))

    def resume(self, rest: Remainder) -> None:
        """Queue the remainder of a chunked request on the unit that holds its chunk's KV."""
        task = PrefillTask(rest.rid, rest.tokens, rest.done)
        task.started = True  # its first forward was the chunk's
        self.pview.add(rest.unit, float(rest.tokens))
        self.enqueue(rest.unit, task)

    def enqueue(self, unit: int, task: PrefillTask) -> None:
        """Queue ``task`` on a flattened prefill unit; an idle instance then starts."""
        k, j = divmod(unit, self.pep)
        inst = self.prefill[k]
        inst.enqueue(j, task)
        if not inst.busy and not inst.start_pending:
            inst.start_pending = True
            at = self.next_start(inst, self.now + self.sched.dispatch_latency_s)
            if inst is self.forming:
                self.forming_start = at  # try_start decides once its forward is formed
            else:
                self.push(at, START, k)

    def next_start(self, inst: PrefillInstance, t: float) -> float:
        if not self.cluster.idle_stepping or self.dummy_s <= 0:
            return t
        cycles = math.ceil((t - inst.phase_s) / self.dummy_s - 1e-12)
        return inst.phase_s + max(cycles, 0) * self.dummy_s

    def try_start(self, inst: PrefillInstance) -> None:
        if inst.busy:
            return
        at = None  # the start a release asked for (enqueue), pushed once the forward is formed
        if self.sbs and self.interval == "engine_paced":
            self.forming = inst
            self.release_to(inst)
            self.forming = None
            at, self.forming_start = self.forming_start, None
        if not inst.has_work():
            inst.phase_s = self.now
            if at is not None:
                self.push(at, START, inst.index)
            return
        chunks, new, pairs, reqs = inst.form_forward()
        slow = self.pslow[inst.index]
        us, idle_us, tokens = self.step_times.prefill_forward(new, pairs, reqs, slow, self.pcoef)
        step_s = us * 1e-6 * slow
        for _, task, _ in chunks:
            if not task.started:
                task.started = True
                self.first_start_s[task.rid] = self.now
        self.bubble_rank_s += idle_us * 1e-6
        self.step_rank_s += step_s * inst.ep
        self.chunk_tokens_done += tokens
        self.forwards += 1
        self.forward_s += step_s
        if self.timeline is not None:
            self.timeline.append((self.now, inst.index, step_s, new.copy()))
        inst.busy = True
        inst.current = chunks
        inst.step_end_s = self.now + step_s
        # what the scheduler can predict: the cost model's step, not a slow rank's factor
        inst.predicted_end_s = self.now + step_s / self.pslow[inst.index]
        self.counter += 1  # the hot kinds are pushed inline: a push call costs more than the push
        heappush(self.heap, (inst.step_end_s, STEP_END, self.counter, STEP_END, inst.index, self.pstep_ver[inst.index]))
        if at is not None:
            # The release queued work on this instance and asked for a start: one due now would
            # come before this forward ends (nothing before it can end or kill the forward) and
            # only clear start_pending, which nothing reads while the instance is busy.
            if at == self.now and step_s > 0:
                inst.start_pending = False
            else:
                self.push(at, START, inst.index)

    def on_step_end(self, k: int, version: int) -> None:
        if version != self.pstep_ver[k]:
            return  # a failure cancelled this forward
        inst = self.prefill[k]
        chunks = inst.current
        inst.current = []
        inst.busy = False
        if self.sbs:
            # The scheduler predicted this forward's end: its tokens leave the virtual view.
            base = k * self.pep
            view = self.pview
            for j, task, n in chunks:
                view.tokens[base + j] = max(view.tokens[base + j] - n, 0.0)
                if task.remaining <= n:
                    view.waiting[base + j] = max(view.waiting[base + j] - 1.0, 0.0)
        for rid in inst.finish_forward(chunks):
            if self.remainders.chunk_ran(rid):
                continue  # a window's chunk: the rest of the prompt waits in the buffer
            if not self.ttft_end_s[rid] <= self.now:  # a recompute keeps the first token's time
                self.ttft_end_s[rid] = self.now
            if self.out_left[rid] <= 1:
                self.complete(rid)
            else:
                self.in_transfer += 1
                self.counter += 1
                t = self.now + self.step_times.kv_transfer_us(int(self.context[rid])) * 1e-6
                heappush(self.heap, (t, KV_ARRIVE, self.counter, KV_ARRIVE, rid, 0))
        if self.remainders and self.interval != "engine_paced":
            self.arm_window()  # a chunk ran: its remainder waits for the next window
        self.try_start(inst)

    # ------------------------------------------------------------------ SBS prefill windows
    def pace_idle_instance(self) -> None:
        best, best_t = None, math.inf
        for inst in self.prefill:
            if not inst.busy and not inst.start_pending and self.palive[inst.index]:
                t = self.next_start(inst, self.now)
                if t < best_t:
                    best, best_t = inst, t
        if best is not None:
            best.start_pending = True
            self.counter += 1
            heappush(self.heap, (best_t, START, self.counter, START, best.index, 0))

    def release_to(self, inst: PrefillInstance) -> None:
        """Engine-paced release: allocate the buffer onto one instance about to start a forward."""
        if not self.buffer and not self.remainders:
            return
        self.allocate(self.punits[inst.index], [inst.index], lookahead=True)
        if self.buffer and self.sched.lookahead_release:
            self.pace_idle_instance()  # what the lean forward left goes to an idle instance now

    def arm_window(self) -> None:
        """(Re)arm the next window: interval from the policy, early when the buffer is full."""
        sched = self.sched
        if self.interval == "fixed":
            delta = self.fixed_s
        else:
            target = sched.adaptive_target_fill * self.pep * self.cluster.chunk_tokens
            rate = self.ewma_tok_s or 0.0
            delta = target / rate if rate > 0 else sched.adaptive_max_s
            if self.buffer_tokens >= target:
                delta = 0.0  # early release: one forward's worth is already buffered
            delta = min(max(delta, sched.adaptive_min_s), sched.adaptive_max_s)
        at = max(self.last_window_s + delta, self.now)
        if self.window_armed and self.window_at <= at:
            return
        self.window_armed = True
        self.window_at = at
        self.window_version += 1
        self.push(at, WINDOW, self.window_version)

    def release_window(self) -> None:
        elapsed = self.now - self.last_window_s
        if elapsed > 0:
            sample = self.tokens_since_window / elapsed
            w = self.sched.adaptive_ewma
            self.ewma_tok_s = sample if self.ewma_tok_s is None else (1 - w) * self.ewma_tok_s + w * sample
        self.tokens_since_window = 0.0
        self.last_window_s = self.now
        # A window goes to the instances predicted free now: a unit of a busy instance cannot
        # take work before its non-preemptive forward ends, so the rest stays buffered.
        idle = [inst.index for inst in self.prefill if not inst.busy and self.palive[inst.index]]
        if (self.buffer or self.remainders) and idle:
            self.fresh_views()
            units = np.concatenate([np.arange(k * self.pep, (k + 1) * self.pep) for k in idle])
            self.allocate(units, idle)
        if self.buffer or self.remainders:
            self.arm_window()

    def allocate(self, units: np.ndarray, instances: list[int], lookahead: bool = False) -> None:
        """Solve one prefill window over the units of ``instances`` (flattened, in that order)
        and dispatch the assigned. A request's prefix-cache hit counts as the least over the
        window's instances (the window model has one cached length per request, and each
        instance has its own cache), so its cost is never underestimated. The ready remainders
        of chunked requests on these units go first, into the units' load; a request the
        answer chunks runs that chunk (``Remainders``)."""
        if self.remainders:
            for rest in self.remainders.take(units.tolist()):
                self.resume(rest)
        if not self.buffer:
            return
        hits = None
        if self.hashes is not None:
            caches = [self.caches[k] for k in instances]
            hits = [min(cache.lookup(self.hashes[r], input_tokens=int(self.inp[r])) for cache in caches)
                    for r in self.buffer]
        room = max(1, int(self.cluster.chunk_tokens * self.sched.window_forwards))
        if len(self.buffer) == 1 and len(instances) == 1 and self.solver == "greedy":
            # allocate_prefill's own shortcut, without its arrays: a lone request that fits
            # units holding nothing (under a token once clipped and truncated) goes whole to
            # the first unit
            rid = self.buffer[0]
            new = int(self.context[rid]) - (hits[0] if hits is not None else 0)
            if new <= room and units_hold_nothing(self.pview.tokens, units):
                unit = int(units[0])
                self.pview.add(unit, float(new))
                self.buffer_tokens -= float(self.context[rid])
                self.dispatch(rid, unit)
                self.buffer = []
                return
        load = self.pview.tokens[units]
        rids = np.asarray(self.buffer, dtype=np.int64)
        inp = self.context[rids]
        cached = np.zeros(len(rids), dtype=np.int64) if hits is None else np.array(hits, dtype=np.int64)
        capacity = np.full(len(load), room, dtype=np.int64)
        chunks: dict[int, int] = {}
        assignment = allocate_prefill(
            inp - cached, cached, self.arrival[rids], capacity_tokens=capacity,
            load_tokens=np.asarray(load), now_s=self.now, guard_s=self.sched.ttft_guard_s,
            coefficients=self.pcoef, solver=self.solver, seed=self.seed,
            instance=np.repeat(np.arange(len(instances)), self.pep) if len(instances) > 1 else None,
            chunks=chunks,
        )
        if lookahead and self.sched.lookahead_release:
            solve = window_solver(now_s=self.now, guard_s=self.sched.ttft_guard_s, coefficients=self.pcoef,
                                  solver=self.solver, seed=self.seed)
            free_s = next_free_s(self.prefill, self.palive, instances[0], lambda o: self.next_start(o, self.now))
            assignment, chunks = lean_release(
                inp - cached, cached, self.arrival[rids], capacity=capacity, load=np.asarray(load),
                assignment=assignment, chunks=chunks, solve=solve, step_times=self.step_times, now_s=self.now,
                next_free_s=free_s, guard_s=self.sched.ttft_guard_s, live_instances=int(self.palive.sum()),
                seen_arrival_s=self.arrival[:self.next_arrival], seen_tokens=self.context[:self.next_arrival])
        keep = []
        for idx, rid in enumerate(rids.tolist()):
            unit = int(assignment[idx])
            if unit < 0:
                keep.append(rid)
                continue
            chunk = chunks.get(idx, 0)
            self.pview.add(int(units[unit]), float(chunk or inp[idx] - cached[idx]))
            self.buffer_tokens -= float(self.context[rid])
            self.dispatch(rid, int(units[unit]), chunk)
        self.buffer = keep

    # ------------------------------------------------------------------ decode side
    def on_decode_arrival(self, rid: int, _: int = 0) -> None:
        self.in_transfer -= 1
        self.decode_arrive_s[rid] = self.now
        if self.blocks_need[rid] > self.kv_blocks:
            self.reject(rid, RejectReason.KV_TOO_LARGE)
            return
        self.route_decode(rid)

    def route_decode(self, rid: int) -> None:
        if self.dmask is not None and not self.dalive.any():
            if self.recovery_pending(self.drecover):
                self.parked_d.append(rid)
            else:
                self.reject(rid, RejectReason.NO_LIVE_INSTANCE)
            return
        if not self.sbs:
            self.fresh_views()
            unit = self.drouter.pick(rid, self.router, float(self.blocks_need[rid]), alive=self.dmask)
            self.enqueue_decode(rid, unit)
            return
        self.dbuffer.append(rid)
        if not self.dwindow_armed:
            self.dwindow_armed = True
            self.counter += 1
            t = self.now + self.sched.decode_interval_s
            heappush(self.heap, (t, DECODE_WINDOW, self.counter, DECODE_WINDOW, 0, 0))

    def release_decode_window(self) -> None:
        if not self.dbuffer:
            return
        self.fresh_views()
        rids = np.asarray(self.dbuffer, dtype=np.int64)
        view = self.dview
        # SBS windows only see live units; unit indices map back through ``units``
        units = self.dunits if self.dmask is None else np.flatnonzero(self.dmask)
        if not len(units):
            return  # every decode instance is dead: the buffer waits for a recovery
        if self.solver == "greedy":
            assignment = greedy_decode_window(
                rids, self.context, self.blocks_need, units, view, max_batch=self.cluster.max_decode_batch,
                capacity_blocks=self.kv_blocks, block_tokens=self.kv_block_tokens, coefficients=self.dcoef,
                iqr_k=self.sched.iqr_k)
        else:
            assignment = allocate_decode(
                self.context[rids], self.blocks_need[rids], batch_size=(view.running + view.waiting)[units],
                max_batch_size=self.cluster.max_decode_batch, kv_blocks_used=view.tokens[units],
                kv_capacity_blocks=self.kv_blocks, kv_block_tokens=self.kv_block_tokens,
                coefficients=self.dcoef, iqr_k=self.sched.iqr_k, solver=self.solver, seed=self.seed,
            )
            assignment = np.where(assignment >= 0, units[assignment], -1)
        keep = []
        for rid, unit in zip(self.dbuffer, assignment.tolist(), strict=True):
            if unit < 0:
                keep.append(rid)
            else:
                view.add(unit, float(self.blocks_need[rid]))
                self.enqueue_decode(rid, unit)
        self.dbuffer = keep
        if keep:
            self.dwindow_armed = True
            self.push(self.now + self.sched.decode_interval_s, DECODE_WINDOW)

    def enqueue_decode(self, rid: int, unit: int) -> None:
        k, j = divmod(unit, self.dep)
        inst = self.decode[k]
        self.decode_unit[rid] = unit
        inst.waiting[j].append(rid)
        inst.waiting_ranks.add(j)
        inst.waiting_count[j] += 1
        inst.queued += 1
        inst.waiting_blocks[j] += self.blocks_need[rid]
        if not inst.busy:
            self.start_epoch(inst)
        elif not inst.cut and inst.batch[j] < inst.max_batch and \
                inst.blocks_used[j] + self.blocks_need[rid] <= inst.kv_blocks:
            s_next = min(inst.steps_done_by(self.now - inst.t0) + 1, inst.steps)
            inst.cut = True
            if s_next < inst.steps:
                inst.steps = s_next
                inst.version += 1
                inst.end_s = inst.t0 + inst.epoch_time(s_next)
                self.counter += 1
                heappush(self.heap, (inst.end_s, EPOCH_END, self.counter, EPOCH_END, inst.index, inst.version))

    def start_epoch(self, inst: DecodeInstance) -> None:
        if start_epoch(self, inst):
            self.counter += 1
            heappush(self.heap, (inst.end_s, EPOCH_END, self.counter, EPOCH_END, inst.index, inst.version))

    def on_epoch_end(self, k: int, version: int) -> None:
        inst = self.decode[k]
        if version != inst.version:
            return  # a cut or a failure replaced this epoch
        end_epoch(self, inst)
        self.start_epoch(inst)

    # ------------------------------------------------------------------ faults
    def recovery_pending(self, recover: list[float]) -> bool:
        return any(t < math.inf and t <= self.horizon_s for t in recover)

    # ------------------------------------------------------------------ bookkeeping
    def complete(self, rid: int) -> None:
        self.status[rid] = Status.COMPLETED
        self.done_s[rid] = self.now
        self.finished += 1

    def reject(self, rid: int, reason: int) -> None:
        self.status[rid] = Status.REJECTED
        self.reason[rid] = reason
        self.done_s[rid] = self.now
        self.finished += 1

    def result(self, wall_s: float, *, arrived: int) -> SimResult:
        # Every arrived, unfinished request must sit in exactly one place.
        located = (
            len(self.buffer) + len(self.dbuffer) + self.in_transfer + len(self.parked_p) + len(self.parked_d)
            + self.remainders.ready_count
            + sum(int(p.queued_requests.sum()) for p in self.prefill)
            + sum(int(d.waiting_count.sum()) + int(d.slot_active.sum()) for d in self.decode)
        )
        status = final_status(self.status, arrived=arrived, finished=self.finished, located=located,
                              drained=math.isinf(self.horizon_s))
        return SimResult.build(self, status, wall_s)
