"""Colocated serving: instances that run prefill chunks and decodes in the same iterations.

Each instance is a lock-step DP+EP engine with ``ep`` DP ranks (``ep=1`` is a plain single-GPU
engine). A cluster router sends each arriving request to an instance; inside the instance the
request is pinned to the rank with the fewest outstanding tokens. Before every iteration the
engine hands its :class:`~sbsopt.sim.batching.EngineSnapshot` to a batching policy and runs the
returned plan for the time the cost model predicts (the same model for every policy, so a
policy cannot win by predicting optimistically).

Notes
-----
Choices where the papers are silent:

- KV for the whole request (prompt plus output) is reserved when its first chunk is scheduled
  and freed when it completes, so decodes are never preempted; a request that cannot fit one
  rank's KV capacity is rejected at arrival with reason ``"exceeds_kv_capacity"``.
- Token ``k`` (0-based) of a request is due at ``first_token + k * tpot_slo`` when
  ``deadline_anchor="first_token"`` (the default: exactly the TPOT metric) or at
  ``arrival + ttft_slo + k * tpot_slo`` with ``"arrival"`` (the paper's envelope).
- SLO attainment counts rejected and unfinished requests as misses.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbsopt._validate import check_int, check_number
from sbsopt.errors import InvalidInputError, SimulationError
from sbsopt.sim.batching import (
    EngineSnapshot,
    FairBatchingPolicy,
    IterationCostModel,
    IterationPlan,
    SarathiPolicy,
    load_estimate_us,
    make_policy,
)

__all__ = ["COLOCATED_ROUTERS", "DEFAULT_TTFT_SLO_MS", "DEFAULT_TPOT_SLO_MS", "ColocatedResult",
           "default_colocated_ep", "simulate_colocated"]

COLOCATED_ROUTERS = ("round_robin", "least_tokens", "fair_load")
# [ours] SLOs for DeepSeek-V3 on H800 DP+EP engines, whose lock-step decode step alone is
# 40-100 ms: neither paper states SLOs for this deployment.
DEFAULT_TTFT_SLO_MS = 2000.0
DEFAULT_TPOT_SLO_MS = 100.0

_QUEUED, _DECODING, _DONE, _REJECTED = 1, 2, 3, 4
_ITER_FIELDS = ("start_s", "instance", "predicted_us", "budget_us", "token_budget", "tokens",
                "prefill_tokens", "decodes", "skipped", "forced")


@dataclass(frozen=True)
class ColocatedResult:
    """Outcome of one colocated run; every field is always present.

    Attributes
    ----------
    requests : dict of numpy arrays
        Per request: ``arrival_s``, ``input_tokens``, ``output_tokens``, ``instance``, ``ttft_s``,
        ``tpot_s`` (nan if unfinished or a single output token), ``e2e_s``, ``status``
        (``"completed"``, ``"rejected"``, ``"in_flight"``), ``reason``,
        ``max_consecutive_skips`` (longest run of iterations the request's decode sat out).
    iterations : dict of numpy arrays
        Per iteration: ``start_s``, ``instance``, ``predicted_us``, ``budget_us`` (nan for a fixed
        token budget), ``token_budget`` (per rank), ``tokens``, ``prefill_tokens``, ``decodes``,
        ``skipped``, ``forced``.
    batching, router : str
    instances, ep : int
    ttft_slo_s, tpot_slo_s : float
    sim_wall_s : float
    """

    requests: dict[str, np.ndarray]
    iterations: dict[str, np.ndarray]
    batching: str
    router: str
    instances: int
    ep: int
    ttft_slo_s: float
    tpot_slo_s: float
    sim_wall_s: float

    def summary(self, *, ttft_slo_ms: float | None = None, tpot_slo_ms: float | None = None) -> dict[str, Any]:
        """JSON-able summary: latency percentiles, SLO attainment, goodput, batching statistics.

        The SLOs default to those the run was simulated with.
        """
        ttft_slo = self.ttft_slo_s if ttft_slo_ms is None else ttft_slo_ms / 1e3
        tpot_slo = self.tpot_slo_s if tpot_slo_ms is None else tpot_slo_ms / 1e3
        r = self.requests
        n = int(r["arrival_s"].size)
        status = r["status"]
        completed = status == "completed"
        ttft_ok = completed & (r["ttft_s"] <= ttft_slo)
        tpot_ok = completed & ~(r["tpot_s"] > tpot_slo)
        both = ttft_ok & tpot_ok
        span = float(r["arrival_s"].max() - r["arrival_s"].min()) if n > 1 else 0.0
        end = float(np.nanmax(r["arrival_s"] + r["e2e_s"])) if completed.any() else 0.0
        duration = max(end - (float(r["arrival_s"].min()) if n else 0.0), 1e-9)
        it = self.iterations
        gpus = self.instances * self.ep
        out: dict[str, Any] = {
            "mode": "colocated", "batching": self.batching, "router": self.router,
            "instances": self.instances, "ep": self.ep,
            "requests": n, "completed": int(completed.sum()),
            "rejected": int((status == "rejected").sum()), "in_flight": int((status == "in_flight").sum()),
            "offered_rate_req_s": (n - 1) / span if span > 0 else 0.0,
            "ttft_ms": _percentiles(r["ttft_s"][completed] * 1e3),
            "tpot_ms": _percentiles(r["tpot_s"][completed & np.isfinite(r["tpot_s"])] * 1e3),
            "slo_attainment": {"ttft": _fraction(ttft_ok, n), "tpot": _fraction(tpot_ok, n),
                               "both": _fraction(both, n)},
            "ttft_slo_ms": ttft_slo * 1e3, "tpot_slo_ms": tpot_slo * 1e3,
            "goodput_req_s": float(both.sum()) / duration,
            "throughput_tok_s_per_gpu": {
                "input": float(r["input_tokens"][completed].sum()) / duration / gpus,
                "output": float(r["output_tokens"][completed].sum()) / duration / gpus,
            },
            "iterations": int(it["start_s"].size),
            "iteration_ms": _percentiles(it["predicted_us"] / 1e3),
            "batch_tokens": _percentiles(it["tokens"].astype(np.float64)),
            "decode_skips": int(it["skipped"].sum()),
            "forced_decodes": int(it["forced"].sum()),
            "sim_wall_s": self.sim_wall_s,
            # fields of the disaggregated summary with no meaning here, kept for one schema
            "ttft_split_ms": {"sched_wait": None, "engine_wait": None, "exec": None},
            "bubble_fraction": None, "chunk_utilization": None,
        }
        budgets = it["budget_us"][np.isfinite(it["budget_us"])]
        if self.batching == "fairbatching":
            out["budget_ms"] = _percentiles(budgets / 1e3)
            out["budget_tokens"] = _percentiles(it["token_budget"])
            out["unbounded_budget_iterations"] = int(np.isinf(it["budget_us"]).sum())
        return out


_GPUS_PER_NODE = 8


def default_colocated_ep(model: str = "deepseek-v3", hardware: str = "h800", *, max_nodes: int = 16) -> int:
    """DP ranks of the default colocated instance: one node of 8 GPUs, or the fewest whole
    nodes on which the model fits with KV room left."""
    from sbsopt.costmodel import load_cost_model

    for nodes in range(1, max_nodes + 1):
        ep = nodes * _GPUS_PER_NODE
        if load_cost_model(model=model, hardware=hardware, ep=ep).kv_capacity_tokens_per_rank > 0:
            return ep
    return _GPUS_PER_NODE  # the typed error below names the problem


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(values.mean())}


def _fraction(mask: np.ndarray, n: int) -> float:
    return float(mask.sum()) / n if n else 1.0


class _Instance:
    """Mutable per-instance queues of one run (private to :func:`simulate_colocated`)."""

    def __init__(self, ep: int, kv_capacity: int) -> None:
        self.decodes: list[int] = []
        self.prefills: list[int] = []
        self.kv_free = np.full(ep, kv_capacity, dtype=np.int64)
        self.outstanding = np.zeros(ep, dtype=np.int64)  # tokens still to compute, for rank pinning
        self.busy = False


def simulate_colocated(
    workload: Any, *, instances: int | None = None, ep: int | None = None,
    batching: str | SarathiPolicy | FairBatchingPolicy = "sarathi",
    policy: SarathiPolicy | FairBatchingPolicy | None = None, token_budget: int | None = None,
    ttft_slo_ms: float = DEFAULT_TTFT_SLO_MS, tpot_slo_ms: float = DEFAULT_TPOT_SLO_MS,
    router: str = "round_robin", cost: IterationCostModel | None = None,
    kv_capacity_tokens_per_rank: int | None = None, deadline_anchor: str = "first_token",
    horizon_s: float | None = None, cluster: Any = None, cost_models: Any = None,
    model: str = "deepseek-v3", hardware: str = "h800", **ignored: Any,
) -> ColocatedResult:
    """Simulate ``instances`` colocated engines of ``ep`` ranks serving ``workload``.

    Parameters
    ----------
    workload
        Anything with ``arrival_s`` (sorted), ``input_tokens`` and ``output_tokens`` arrays
        (a :class:`sbsopt.workload.Workload`).
    instances, ep : int, optional
        Instances and DP ranks per instance; default ``cluster.prefill_instances`` and
        ``cluster.prefill_ep`` when a :class:`sbsopt.sim.ClusterConfig` is given, else one
        instance on one node of 8 GPUs, or on the fewest whole nodes that hold the model with
        KV room (DeepSeek-V3 does not fit on one 8xH800 node: 2 nodes, ``ep=16``).
    batching : {"sarathi", "fairbatching"} or a policy object
        Engine policy, built by :func:`~sbsopt.sim.batching.make_policy` unless ``policy`` is given.
        ``"default"`` means ``"sarathi"``.
    token_budget : int, optional
        Sarathi's per-rank token budget (default 512) or FairBatching's per-rank token cap.
    router : {"round_robin", "least_tokens", "fair_load"}
        Cluster router; ``fair_load`` sends a request to the instance with the smallest
        :func:`~sbsopt.sim.batching.load_estimate_us` after adding the request.
    cost : IterationCostModel, optional
        Default: from ``cost_models[0]`` (the cost-model pair :func:`sbsopt.sim.simulate`
        passes) or ``load_cost_model(model, hardware, ep=ep)``.
    kv_capacity_tokens_per_rank : int, optional
        Default: the cost model's ``kv_capacity_tokens_per_rank`` (or unlimited with an explicit
        ``cost`` and no capacity).
    horizon_s : float, optional
        Stop at this simulated time; unfinished requests are reported ``in_flight``.
    **ignored
        Options of the disaggregated simulator with no meaning here (``scheduler``,
        ``interval``, ``solver``, ``seed``), accepted so that :func:`sbsopt.sim.simulate` can
        forward them.

    Returns
    -------
    ColocatedResult
        Deterministic: the run has no randomness.

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
    unknown = set(ignored) - {"scheduler", "interval", "solver", "seed", "record_timeline"}
    if unknown:
        raise InvalidInputError("simulate_colocated options", sorted(unknown), "known keyword arguments")
    if instances is None:
        instances = 1 if cluster is None else cluster.prefill_instances
    if ep is None and cluster is not None:
        ep = cluster.prefill_ep
    if ep is None:
        ep = _GPUS_PER_NODE
        if cost is None and kv_capacity_tokens_per_rank is None:
            ep = default_colocated_ep(model, hardware)
    instances = check_int("instances", instances, minimum=1)
    ep = check_int("ep", ep, minimum=1)
    if kv_capacity_tokens_per_rank is None and cluster is not None:
        kv_capacity_tokens_per_rank = cluster.kv_capacity_tokens
    if cluster is not None:
        model, hardware = cluster.model, cluster.hardware
    if batching == "default":
        batching = "sarathi"
    if policy is None and not isinstance(batching, str):
        policy = batching
    ttft_slo = check_number("ttft_slo_ms", ttft_slo_ms, strict_min=True) / 1e3
    tpot_slo = check_number("tpot_slo_ms", tpot_slo_ms, strict_min=True) / 1e3
    if router not in COLOCATED_ROUTERS:
        raise InvalidInputError("router", router, f"one of {list(COLOCATED_ROUTERS)} in colocated mode")
    if deadline_anchor not in ("first_token", "arrival"):
        raise InvalidInputError("deadline_anchor", deadline_anchor, "'first_token' or 'arrival'")
    horizon = math.inf if horizon_s is None else check_number("horizon_s", horizon_s)
    if policy is None:
        policy = make_policy(batching, tpot_slo_s=tpot_slo, token_budget=token_budget)
    if cost is None:
        cm = cost_models[0] if cost_models is not None and cost_models[0].ep == ep else None
        if cm is None:
            from sbsopt.costmodel import load_cost_model

            cm = load_cost_model(model=model, hardware=hardware, ep=ep)
        cost = IterationCostModel.from_cost_model(cm)
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
    produced = np.zeros(n, dtype=np.int64)      # output tokens generated
    skips = np.zeros(n, dtype=np.int64)
    max_skips = np.zeros(n, dtype=np.int64)
    first = np.full(n, np.nan)
    last = np.full(n, np.nan)
    reason = np.full(n, "", dtype=object)
    ttft_deadline = arrival + ttft_slo
    anchor_arrival = deadline_anchor == "arrival"

    engines = [_Instance(ep, kv_cap) for _ in range(instances)]
    records: dict[str, list[float]] = {name: [] for name in _ITER_FIELDS}
    heap: list[tuple[float, int, int, EngineSnapshot, IterationPlan, np.ndarray, np.ndarray]] = []
    counter = 0
    rr = 0

    def snapshot(e: _Instance, now: float) -> tuple[EngineSnapshot, np.ndarray, np.ndarray]:
        dec = np.asarray(e.decodes, dtype=np.int64)
        pre = np.asarray(e.prefills, dtype=np.int64)
        if anchor_arrival:
            deadline = ttft_deadline[dec] + produced[dec] * tpot_slo
        else:
            deadline = first[dec] + produced[dec] * tpot_slo
        snap = EngineSnapshot(
            now_s=now, decode_deadline_s=deadline, decode_context_tokens=n_in[dec] + produced[dec],
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
        for name, value in zip(_ITER_FIELDS, (now, k, duration_us, plan.budget_us, plan.token_budget,
                                              plan.tokens,
                                              int(plan.prefill_chunk_tokens.sum()), plan.decode_run.size,
                                              plan.decode_skipped.size, plan.forced_decodes), strict=True):
            records[name].append(value)
        # KV is reserved when the first chunk is scheduled, so later snapshots see it gone
        new = pre[plan.prefill_index][done[pre[plan.prefill_index]] == 0]
        np.subtract.at(e.kv_free, rank_of[new], n_in[new] + n_out[new])
        e.busy = True
        counter += 1
        heapq.heappush(heap, (now + duration_us / 1e6, counter, k, snap, plan, dec, pre))

    def finish(end: float, k: int, plan: IterationPlan, dec: np.ndarray, pre: np.ndarray) -> None:
        e = engines[k]
        ran = dec[plan.decode_run]
        skips[ran] = 0
        skipped = dec[plan.decode_skipped]
        skips[skipped] += 1
        max_skips[skipped] = np.maximum(max_skips[skipped], skips[skipped])
        produced[ran] += 1
        last[ran] = end
        np.subtract.at(e.outstanding, rank_of[ran], 1)
        chunked = pre[plan.prefill_index]
        done[chunked] += plan.prefill_chunk_tokens
        np.subtract.at(e.outstanding, rank_of[chunked], plan.prefill_chunk_tokens)
        finished_prefill = chunked[done[chunked] >= n_in[chunked]]
        first[finished_prefill] = end
        last[finished_prefill] = end
        produced[finished_prefill] = 1
        np.subtract.at(e.outstanding, rank_of[finished_prefill], 1)
        completed = np.concatenate([ran, finished_prefill])
        completed = completed[produced[completed] >= n_out[completed]]
        state[completed] = _DONE
        np.add.at(e.kv_free, rank_of[completed], n_in[completed] + n_out[completed])
        state[finished_prefill[produced[finished_prefill] < n_out[finished_prefill]]] = _DECODING
        e.decodes = [i for i in e.decodes if state[i] == _DECODING] + [
            int(i) for i in finished_prefill if state[i] == _DECODING]
        e.prefills = [i for i in e.prefills if state[i] == _QUEUED]

    def route(i: int, now: float) -> int:
        nonlocal rr
        if router == "round_robin":
            rr = (rr + 1) % instances
            return (rr - 1) % instances
        if router == "least_tokens":
            return int(np.argmin([e.outstanding.sum() for e in engines]))
        loads = []
        for e in engines:
            snap, _, _ = snapshot(e, now)
            extra = float(cost.prefill_chunk_us(n_in[i], 0))
            loads.append(load_estimate_us(snap, cost, tpot_slo_s=tpot_slo) + extra)
        return int(np.argmin(loads))

    i = 0
    while i < n or heap:
        t_arrival = arrival[i] if i < n else math.inf
        if heap and heap[0][0] <= t_arrival:
            end, _, k, _snap, plan, dec, pre = heapq.heappop(heap)
            if end > horizon:
                heap.clear()
                break
            finish(end, k, plan, dec, pre)
            start(k, end)
            continue
        if t_arrival > horizon:
            break
        if n_in[i] + n_out[i] > kv_cap:
            state[i] = _REJECTED
            reason[i] = "exceeds_kv_capacity"
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
    reason[state == _QUEUED] = "not_started" if horizon_s is not None else ""
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where((state == _DONE) & (n_out > 1), (last - first) / (n_out - 1), np.nan)
    requests = {
        "arrival_s": arrival, "input_tokens": n_in, "output_tokens": n_out, "instance": inst_of,
        "ttft_s": first - arrival, "tpot_s": tpot,
        "e2e_s": np.where(state == _DONE, last - arrival, np.nan),
        "status": status, "reason": reason, "max_consecutive_skips": max_skips,
    }
    iterations = {name: np.asarray(values, dtype=np.float64) for name, values in records.items()}
    return ColocatedResult(requests=requests, iterations=iterations, batching=policy.name, router=router,
                           instances=instances, ep=ep, ttft_slo_s=ttft_slo, tpot_slo_s=tpot_slo,
                           sim_wall_s=time.perf_counter() - wall)
