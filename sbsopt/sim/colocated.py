"""Colocated serving: instances that run prefill chunks and decodes in the same iterations.

Each instance is a lock-step DP+EP engine with ``ep`` DP ranks (``ep=1`` is a plain single-GPU
engine). A cluster router (:mod:`sbsopt.sim.router`, on a view of whole engines) sends each
arriving request to an instance; inside the instance the request is pinned to the rank with the
fewest outstanding tokens. Before every iteration the engine hands its
:class:`~sbsopt.sim.batching.EngineSnapshot` to an iteration policy and runs the returned plan for
the time the cost model predicts (the same model for every policy, so a policy cannot win by
predicting optimistically). The result is a :class:`~sbsopt.sim.metrics.SimResult`, as in
disaggregated mode, with one row per iteration in ``iterations``.

Notes
-----
Choices where the papers are silent:

- KV for the whole request (prompt plus output) is reserved when its first chunk is scheduled
  and freed when it completes, so decodes are never preempted; a request that cannot fit one
  rank's KV capacity is rejected at arrival (``kv_exceeds_unit_capacity``), as is a prompt
  over ``ClusterConfig.max_prompt_tokens`` (``prompt_too_long``).
- Token ``k`` (0-based) of a request is due at ``first_token + k * tpot_slo`` when
  ``deadline_anchor="first_token"`` (the default: exactly the TPOT metric) or at
  ``arrival + ttft_slo + k * tpot_slo`` with ``"arrival"`` (the paper's envelope).
- A request is dispatched on arrival (``sched_wait_s = 0``); ``tbt_max_s`` is the longest
  iteration its decode ran in.
- Multi-token prediction (``ClusterConfig.mtp_acceptance``, or the ``mtp_acceptance`` of an
  explicit ``cost``): a decode runs 2 query tokens and the MTP module in every iteration it is
  in and yields ``1 + mtp_acceptance`` tokens, counted fractionally as in the disaggregated
  simulator; the request completes when its count reaches its output length.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from typing import Any

import numpy as np

from sbsopt._validate import check_int, check_number
from sbsopt.errors import InvalidInputError, SimulationError
from sbsopt.sim.batching import (
    EngineSnapshot,
    IterationCostModel,
    IterationPlan,
    IterationPolicy,
    load_estimate_us,
    make_iteration_policy,
)
from sbsopt.sim.config import DEFAULT_TPOT_SLO_MS, DEFAULT_TTFT_SLO_MS, ClusterConfig, check_router
from sbsopt.sim.metrics import ITERATION_COLUMNS, RejectReason, SimResult, request_table
from sbsopt.sim.router import RouterView, pick_unit

__all__ = ["colocated_cluster", "default_colocated_ep", "simulate_colocated"]

_QUEUED, _DECODING, _DONE, _REJECTED = 1, 2, 3, 4
_GPUS_PER_NODE = 8


def default_colocated_ep(model: str = "deepseek-v3", hardware: str = "h800", *, max_nodes: int = 16) -> int:
    """DP ranks of the default colocated instance: one node of 8 GPUs, or the fewest whole
    nodes on which the model fits with KV room left."""
    from sbsopt.costmodel import load_cost_model

    for nodes in range(1, max_nodes + 1):
        ep = nodes * _GPUS_PER_NODE
        if load_cost_model(model=model, hardware=hardware, ep=ep).kv_capacity_tokens_per_rank > 0:
            return ep
    return _GPUS_PER_NODE  # simulate_colocated's typed error names the problem


def colocated_cluster(instances: int | None = None, ep: int | None = None, **fields: Any) -> ClusterConfig:
    """The :class:`~sbsopt.sim.ClusterConfig` of ``instances`` colocated engines of ``ep`` ranks.

    ``instances`` defaults to 1 and ``ep`` to :func:`default_colocated_ep` of the model; other
    cluster ``fields`` (``model``, ``kv_capacity_tokens``, ...) pass through.

    Examples
    --------
    >>> c = colocated_cluster(3, 8)
    >>> c.prefill_instances, c.prefill_ep
    (3, 8)
    """
    if ep is None:
        ep = default_colocated_ep(fields.get("model", ClusterConfig.model),
                                  fields.get("hardware", ClusterConfig.hardware))
    return ClusterConfig(prefill_instances=1 if instances is None else instances, prefill_ep=ep, **fields)


class _Instance:
    """Mutable per-instance queues of one run (private to :func:`simulate_colocated`)."""

    def __init__(self, ep: int, kv_capacity: int) -> None:
        self.decodes: list[int] = []
        self.prefills: list[int] = []
        self.kv_free = np.full(ep, kv_capacity, dtype=np.int64)
        # tokens still to compute, for rank pinning (fractional with MTP)
        self.outstanding = np.zeros(ep, dtype=np.float64)
        self.busy = False


def _policy(batching: str | IterationPolicy, token_budget: int | None, tpot_slo_s: float) -> IterationPolicy:
    if isinstance(batching, str):
        return make_iteration_policy(batching, tpot_slo_s=tpot_slo_s, token_budget=token_budget)
    if not isinstance(batching, IterationPolicy):
        raise InvalidInputError("batching", type(batching).__name__,
                                "a name or an object with name and plan in colocated mode")
    if token_budget is not None:
        raise InvalidInputError("token_budget", token_budget, "None with a policy object (set it on the object)")
    return batching


def simulate_colocated(
    workload: Any, *, instances: int | None = None, ep: int | None = None,
    batching: str | IterationPolicy = "sarathi", token_budget: int | None = None,
    ttft_slo_ms: float | None = None, tpot_slo_ms: float | None = None,
    router: str = "round_robin", cost: IterationCostModel | None = None,
    kv_capacity_tokens_per_rank: int | None = None, deadline_anchor: str = "first_token",
    horizon_s: float | None = None, cluster: ClusterConfig | None = None, cost_models: Any = None,
    model: str = "deepseek-v3", hardware: str = "h800",
) -> SimResult:
    """Simulate ``instances`` colocated engines of ``ep`` ranks serving ``workload``.

    Parameters
    ----------
    workload
        Anything with ``arrival_s`` (sorted), ``input_tokens`` and ``output_tokens`` arrays
        (a :class:`sbsopt.workload.Workload`).
    instances, ep : int, optional
        Instances and DP ranks per instance; default ``cluster.prefill_instances`` and
        ``cluster.prefill_ep`` when a cluster is given (see :func:`colocated_cluster`), else one
        instance on one node of 8 GPUs, or on the fewest whole nodes that hold the model with
        KV room (DeepSeek-V3 does not fit on one 8xH800 node: 2 nodes, ``ep=16``).
    batching : {"default", "sarathi", "fairbatching"} or an IterationPolicy
        Iteration policy, built by :func:`~sbsopt.sim.batching.make_iteration_policy` from a
        name (``"default"`` is Sarathi; FairBatching targets ``tpot_slo_ms``).
    token_budget : int, optional
        Sarathi's per-rank token budget (default 512) or FairBatching's per-rank token cap;
        only with a policy name.
    ttft_slo_ms, tpot_slo_ms : float, optional
        The deadlines the engines schedule for; default
        :data:`~sbsopt.sim.config.DEFAULT_TTFT_SLO_MS` and ``DEFAULT_TPOT_SLO_MS``.
    router : {"round_robin", "least_tokens", "fair_load"}
        Cluster router (:data:`sbsopt.sim.config.ROUTER_MODES`); ``fair_load`` sends a request
        to the instance with the smallest :func:`~sbsopt.sim.batching.load_estimate_us` after
        adding the request.
    cost : IterationCostModel, optional
        Default: from ``cost_models[0]`` (the cost-model pair :func:`sbsopt.sim.simulate`
        passes) or ``load_cost_model(model, hardware, ep=ep)``, with the cluster's
        ``mtp_acceptance``; an explicit ``cost`` carries its own ``mtp_acceptance``.
    kv_capacity_tokens_per_rank : int, optional
        Default: ``cluster.kv_capacity_tokens``, else the cost model's
        ``kv_capacity_tokens_per_rank`` (unlimited with an explicit ``cost`` and no capacity).
    horizon_s : float, optional
        Stop at this simulated time; unfinished requests are reported ``in_flight``.

    Returns
    -------
    SimResult
        Deterministic: the run has no randomness.

    Raises
    ------
    InvalidInputError
        A router of the other mode, an unknown policy, bad sizes or an unsorted workload.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> cost = IterationCostModel(prefill_base_us=2000.0, us_per_prefill_token=20.0, us_per_pair=0.0,
    ...     us_per_prefill_request=0.0, decode_base_us=2000.0, us_per_decode=100.0, us_per_kv_token=0.0)
    >>> wl = SimpleNamespace(arrival_s=np.array([0.0, 0.01]), input_tokens=np.array([100, 200]),
    ...                      output_tokens=np.array([3, 2]))
    >>> res = simulate_colocated(wl, ep=1, cost=cost, batching="fairbatching", tpot_slo_ms=50)
    >>> res.summary()["completed"], res.requests["ttft_s"].round(4).tolist()
    (2, [0.004, 0.006])
    """
    wall = time.perf_counter()
    if cluster is not None:
        instances = cluster.prefill_instances if instances is None else instances
        ep = cluster.prefill_ep if ep is None else ep
        if kv_capacity_tokens_per_rank is None:
            kv_capacity_tokens_per_rank = cluster.kv_capacity_tokens
        model, hardware = cluster.model, cluster.hardware
    if ep is None:
        ep = _GPUS_PER_NODE
        if cost is None and kv_capacity_tokens_per_rank is None:
            ep = default_colocated_ep(model, hardware)
    instances = check_int("instances", 1 if instances is None else instances, minimum=1)
    ep = check_int("ep", ep, minimum=1)
    cluster = dataclasses.replace(cluster or ClusterConfig(), prefill_instances=instances, prefill_ep=ep,
                                  model=model, hardware=hardware)
    ttft_slo = check_number("ttft_slo_ms", DEFAULT_TTFT_SLO_MS if ttft_slo_ms is None else ttft_slo_ms,
                            strict_min=True) / 1e3
    tpot_slo = check_number("tpot_slo_ms", DEFAULT_TPOT_SLO_MS if tpot_slo_ms is None else tpot_slo_ms,
                            strict_min=True) / 1e3
    check_router(router, "colocated")
    if deadline_anchor not in ("first_token", "arrival"):
        raise InvalidInputError("deadline_anchor", deadline_anchor, "'first_token' or 'arrival'")
    horizon = math.inf if horizon_s is None else check_number("horizon_s", horizon_s)
    policy = _policy(batching, token_budget, tpot_slo)
    if cost is None:
        cm = cost_models[0] if cost_models is not None and cost_models[0].ep == ep else None
        if cm is None:
            from sbsopt.costmodel import load_cost_model

            cm = load_cost_model(model=model, hardware=hardware, ep=ep)
        cost = IterationCostModel.from_cost_model(cm, mtp_acceptance=cluster.mtp_acceptance)
        if kv_capacity_tokens_per_rank is None:
            kv_capacity_tokens_per_rank = int(cm.kv_capacity_tokens_per_rank)
            if kv_capacity_tokens_per_rank < 1:
                raise InvalidInputError(
                    "ep", ep, f"enough ranks for {model} to fit on {hardware} with KV room left "
                    "(the cost model leaves 0 KV tokens per rank; try ep >= 16, or pass "
                    "kv_capacity_tokens_per_rank)")
    if cost.ep != ep:
        raise InvalidInputError("cost.ep", cost.ep, f"the engine's ep ({ep})")
    kv_cap = (1 << 62) if kv_capacity_tokens_per_rank is None else check_int(
        "kv_capacity_tokens_per_rank", kv_capacity_tokens_per_rank, minimum=1)

    arrival = np.asarray(workload.arrival_s, dtype=np.float64)
    n_in = np.asarray(workload.input_tokens, dtype=np.int64)
    n_out = np.maximum(np.asarray(workload.output_tokens, dtype=np.int64), 1)
    n = arrival.size
    if n and (np.diff(arrival) < 0).any():
        raise InvalidInputError("workload.arrival_s", "unsorted", "arrival times in ascending order")
    if (n_in < 1).any():
        raise InvalidInputError("workload.input_tokens", int(n_in.min()), "at least 1 token per prompt")

    state = np.zeros(n, dtype=np.int8)
    inst_of = np.full(n, -1, dtype=np.int64)
    rank_of = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=np.int64)          # prompt tokens prefilled
    produced = np.zeros(n, dtype=np.float64)    # output tokens generated (fractional with MTP)
    decode_tokens = cost.decode_tokens
    skips = np.zeros(n, dtype=np.int64)
    max_skips = np.zeros(n, dtype=np.int64)
    first = np.full(n, np.nan)
    last = np.full(n, np.nan)
    reason = np.zeros(n, dtype=np.int8)
    first_start = np.full(n, np.nan)
    tbt_max = np.full(n, np.nan)
    ttft_deadline = arrival + ttft_slo
    anchor_arrival = deadline_anchor == "arrival"

    engines = [_Instance(ep, kv_cap) for _ in range(instances)]
    records: dict[str, list[float]] = {name: [] for name in ITERATION_COLUMNS}
    heap: list[tuple[float, int, int, EngineSnapshot, IterationPlan, np.ndarray, np.ndarray]] = []
    counter = 0
    view = RouterView(instances, 1)  # the router sees whole engines; an engine pins the rank

    def snapshot(e: _Instance, now: float) -> tuple[EngineSnapshot, np.ndarray, np.ndarray]:
        dec = np.asarray(e.decodes, dtype=np.int64)
        pre = np.asarray(e.prefills, dtype=np.int64)
        if anchor_arrival:
            deadline = ttft_deadline[dec] + produced[dec] * tpot_slo
        else:
            deadline = first[dec] + produced[dec] * tpot_slo
        snap = EngineSnapshot(
            now_s=now, decode_deadline_s=deadline,
            decode_context_tokens=n_in[dec] + produced[dec].astype(np.int64),
            decode_skips=skips[dec], decode_rank=rank_of[dec],
            prefill_remaining_tokens=n_in[pre] - done[pre], prefill_done_tokens=done[pre],
            prefill_deadline_s=ttft_deadline[pre],
            prefill_kv_tokens=np.where(done[pre] > 0, 0, n_in[pre] + n_out[pre]),
            prefill_rank=rank_of[pre], kv_free_tokens=e.kv_free.copy(),
        )
        return snap, dec, pre

    def start(k: int, now: float) -> None:
        nonlocal counter
        e = engines[k]
        if not e.decodes and not e.prefills:
            e.busy = False
            return
        snap, dec, pre = snapshot(e, now)
        plan = policy.plan(snap, cost)
        duration_us = cost.plan_us(snap, plan)
        if duration_us <= 0.0:
            raise SimulationError(f"instance {k}: policy {policy.name} formed an empty iteration "
                                  f"with {dec.size} decodes and {pre.size} prefills queued")
        for name, value in zip(ITERATION_COLUMNS, (now, k, duration_us, plan.budget_us, plan.token_budget,
                                              plan.tokens,
                                              int(plan.prefill_chunk_tokens.sum()), plan.decode_run.size,
                                              plan.decode_skipped.size, plan.forced_decodes), strict=True):
            records[name].append(value)
        # KV is reserved when the first chunk is scheduled, so later snapshots see it gone
        new = pre[plan.prefill_index][done[pre[plan.prefill_index]] == 0]
        first_start[new] = now
        np.subtract.at(e.kv_free, rank_of[new], n_in[new] + n_out[new])
        e.busy = True
        counter += 1
        heapq.heappush(heap, (now + duration_us / 1e6, counter, k, snap, plan, dec, pre))

    def finish(end: float, k: int, snap: EngineSnapshot, plan: IterationPlan, dec: np.ndarray,
               pre: np.ndarray) -> None:
        e = engines[k]
        ran = dec[plan.decode_run]
        tbt_max[ran] = np.fmax(tbt_max[ran], end - snap.now_s)
        skips[ran] = 0
        skipped = dec[plan.decode_skipped]
        skips[skipped] += 1
        max_skips[skipped] = np.maximum(max_skips[skipped], skips[skipped])
        produced[ran] += decode_tokens
        last[ran] = end
        np.subtract.at(e.outstanding, rank_of[ran], decode_tokens)
        chunked = pre[plan.prefill_index]
        done[chunked] += plan.prefill_chunk_tokens
        np.subtract.at(e.outstanding, rank_of[chunked], plan.prefill_chunk_tokens)
        finished_prefill = chunked[done[chunked] >= n_in[chunked]]
        first[finished_prefill] = end
        last[finished_prefill] = end
        produced[finished_prefill] = 1
        np.subtract.at(e.outstanding, rank_of[finished_prefill], 1)
        completed = np.concatenate([ran, finished_prefill])
        completed = completed[produced[completed] >= n_out[completed] - 1e-9]
        # the last MTP step may overshoot the output length: return what was not computed
        np.add.at(e.outstanding, rank_of[completed], produced[completed] - n_out[completed])
        state[completed] = _DONE
        np.add.at(e.kv_free, rank_of[completed], n_in[completed] + n_out[completed])
        state[finished_prefill[produced[finished_prefill] < n_out[finished_prefill] - 1e-9]] = _DECODING
        e.decodes = [i for i in e.decodes if state[i] == _DECODING] + [
            int(i) for i in finished_prefill if state[i] == _DECODING]
        e.prefills = [i for i in e.prefills if state[i] == _QUEUED]

    def route(i: int, now: float) -> int:
        # the engines report their true state at every decision
        if router == "least_tokens":
            view.tokens[:] = [e.outstanding.sum() for e in engines]
        elif router == "fair_load":
            extra = float(cost.prefill_chunk_us(n_in[i], 0))
            view.load_us[:] = [load_estimate_us(snapshot(e, now)[0], cost, tpot_slo_s=tpot_slo) + extra
                               for e in engines]
        return pick_unit(view, router, float(n_in[i] + n_out[i]))

    i = 0
    while i < n or heap:
        t_arrival = arrival[i] if i < n else math.inf
        if heap and heap[0][0] <= t_arrival:
            end, _, k, snap, plan, dec, pre = heapq.heappop(heap)
            if end > horizon:
                heap.clear()
                break
            finish(end, k, snap, plan, dec, pre)
            start(k, end)
            continue
        if t_arrival > horizon:
            break
        too_long = n_in[i] > cluster.max_prompt_tokens
        if too_long or n_in[i] + n_out[i] > kv_cap:
            state[i] = _REJECTED
            reason[i] = RejectReason.PROMPT_TOO_LONG if too_long else RejectReason.KV_TOO_LARGE
            i += 1
            continue
        k = route(i, t_arrival)
        e = engines[k]
        j = int(np.argmin(e.outstanding))
        inst_of[i], rank_of[i], state[i] = k, j, _QUEUED
        e.outstanding[j] += n_in[i] + n_out[i]
        e.prefills.append(i)
        if not e.busy:
            start(k, t_arrival)
        i += 1

    status = np.full(n, "in_flight", dtype=object)
    status[state == _DONE] = "completed"
    status[state == _REJECTED] = "rejected"
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where((state == _DONE) & (n_out > 1), (last - first) / (n_out - 1), np.nan)
    routed = inst_of >= 0
    unit = np.where(routed, inst_of * ep + rank_of, -1)
    table = request_table(
        arrival_s=arrival, input_tokens=n_in, output_tokens=n_out, cached_tokens=np.zeros(n, dtype=np.int64),
        status=status, reason=reason, ttft_s=first - arrival,
        sched_wait_s=np.where(routed, 0.0, np.nan), engine_wait_s=first_start - arrival,
        exec_s=first - first_start, tpot_s=tpot, tbt_max_s=tbt_max,
        e2e_s=np.where(state == _DONE, last - arrival, np.nan), prefill_unit=unit, decode_unit=unit,
        max_consecutive_skips=max_skips)
    done_at = np.where(state == _DONE, last, np.where(state == _REJECTED, arrival, np.nan))
    stats = {"span_s": float(np.nanmax(done_at) - arrival[0]) if np.isfinite(done_at).any() else 0.0,
             "faults": [], "slow_ranks": [], "redispatched": 0}
    config = {"mode": "colocated", "router": router, "interval": None, "solver": None, "batching": policy.name,
              "workload": getattr(workload, "name", None), "cluster": cluster, "scheduler": None,
              "ttft_slo_ms": ttft_slo * 1e3, "tpot_slo_ms": tpot_slo * 1e3, "deadline_anchor": deadline_anchor}
    return SimResult(table, stats, config, sim_wall_s=time.perf_counter() - wall,
                     iterations=_iteration_table(records))


def _iteration_table(records: dict[str, list[float]]):
    import pandas as pd

    return pd.DataFrame({name: np.asarray(values, dtype=np.float64) for name, values in records.items()})
