"""One simulation run as a flat parameter dict -> one tidy result row, and the SLO it is judged by.

A run's parameters include its seed, so a row depends on nothing but its parameters: the same
table comes back from a serial loop, a process pool of any size, or Ray.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbsopt._validate import check_number
from sbsopt.errors import InvalidInputError
from sbsopt.sim.config import (
    DEFAULT_INTERVAL,
    DEFAULT_ROUTER,
    DEFAULT_SOLVER,
    DEFAULT_TPOT_SLO_MS,
    DEFAULT_TTFT_SLO_MS,
    ClusterConfig,
    SchedulerConfig,
    check_mode,
    check_router,
)

__all__ = ["SLO", "Policy", "RUN_PARAMETERS", "CLUSTER_PARAMETERS", "SCHEDULER_PARAMETERS", "check_run_params",
           "run_cluster", "run_one"]

# Fields of sbsopt.sim.ClusterConfig a run may set (sbsopt.sim.config loads without the simulator).
CLUSTER_PARAMETERS = tuple(f.name for f in dataclasses.fields(ClusterConfig))
# Fields of sbsopt.sim.SchedulerConfig a run may set (disaggregated mode; none set: the defaults).
SCHEDULER_PARAMETERS = tuple(f.name for f in dataclasses.fields(SchedulerConfig))
# Everything else a run understands, with its default (None: the mode's default, see Policy).
_RUN_DEFAULTS: dict[str, Any] = {
    "trace": "azure-conv", "limit": 400, "rate": None, "load": None, "router": None,
    "interval": None, "solver": None, "batching": "default", "seed": 0,
    "horizon_s": None, "ttft_slo_ms": None, "tpot_slo_ms": None, "duration_s": None,
    # As in ``sbsopt simulate``: colocated runs ``instances`` engines of ``ep`` ranks each
    # (sbsopt.sim.colocated.colocated_cluster) and ignores the four P/D instance/EP fields.
    "mode": "disaggregated", "token_budget": None, "instances": None, "ep": None,
}
RUN_PARAMETERS = tuple(_RUN_DEFAULTS) + CLUSTER_PARAMETERS + SCHEDULER_PARAMETERS


@dataclass(frozen=True)
class SLO:
    """Service-level objective: a request attains it when TTFT <= ``ttft_ms`` and TPOT <= ``tpot_ms``.

    A run meets the SLO when at least ``attainment`` of its requests attain it; rejected and
    unfinished requests count as misses.

    Examples
    --------
    >>> SLO(ttft_ms=1000, tpot_ms=50).meets({"slo_attainment": 0.95})
    True
    """

    ttft_ms: float = DEFAULT_TTFT_SLO_MS
    tpot_ms: float = DEFAULT_TPOT_SLO_MS
    attainment: float = 0.9

    def __post_init__(self) -> None:
        check_number("ttft_slo_ms", self.ttft_ms, strict_min=True)
        check_number("tpot_slo_ms", self.tpot_ms, strict_min=True)
        check_number("attainment", self.attainment, strict_min=True, maximum=1.0)

    def meets(self, row: dict) -> bool:
        """Whether a result row (or summary) attains the SLO."""
        value = row.get("slo_attainment")
        return value is not None and not math.isnan(value) and value >= self.attainment


@dataclass(frozen=True)
class Policy:
    """Scheduling policy of a run: cluster router, SBS interval policy, window solver, engine batching.

    ``mode`` is ``"disaggregated"`` or ``"colocated"``; ``router``, ``interval`` and ``solver``
    default to the mode's (colocated: no interval or solver); ``token_budget`` is Sarathi's
    per-rank budget or FairBatching's per-rank cap of colocated engines.

    Raises
    ------
    InvalidInputError
        A router of the other mode, or an option that does not apply to the mode.

    Examples
    --------
    >>> Policy(mode="colocated").router
    'round_robin'
    >>> Policy(mode="colocated", interval="fixed:5")
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: interval = 'fixed:5': expected None in colocated mode (an option of disaggregated mode)
    """

    router: str | None = None
    interval: str | None = None
    solver: str | None = None
    batching: str = "default"
    mode: str = "disaggregated"
    token_budget: int | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode)
        object.__setattr__(self, "router", check_router(self.router or DEFAULT_ROUTER[self.mode], self.mode))
        if self.mode == "colocated":
            for name in ("interval", "solver"):
                if getattr(self, name) is not None:
                    raise InvalidInputError(name, getattr(self, name),
                                            "None in colocated mode (an option of disaggregated mode)")
        else:
            object.__setattr__(self, "interval", self.interval or DEFAULT_INTERVAL)
            object.__setattr__(self, "solver", self.solver or DEFAULT_SOLVER)
            if self.token_budget is not None:
                raise InvalidInputError("token_budget", self.token_budget,
                                        "None in disaggregated mode (an option of colocated mode)")

    def as_params(self) -> dict:
        """The policy as run parameters."""
        return dataclasses.asdict(self)


def check_run_params(params: dict, *, field: str = "parameter") -> None:
    """Raise :class:`InvalidInputError` naming the first parameter a run does not understand."""
    for name in params:
        if name != "workload" and name not in RUN_PARAMETERS:
            raise InvalidInputError(field, name, f"one of {', '.join(RUN_PARAMETERS)}")


@functools.lru_cache(maxsize=16)
def _trace(name: str, limit: int | None):
    from sbsopt.workload import load_trace

    return load_trace(name, limit=limit)


def run_cluster(params: dict):
    """The :class:`~sbsopt.sim.ClusterConfig` a run simulates (colocated: ``instances`` x ``ep``).

    Examples
    --------
    >>> run_cluster({"mode": "colocated", "instances": 3, "ep": 8}).prefill_instances
    3
    """
    fields = {k: params[k] for k in CLUSTER_PARAMETERS if k in params}
    if params.get("mode", "disaggregated") == "colocated":
        from sbsopt.sim.colocated import colocated_cluster

        for name in ("prefill_instances", "decode_instances", "prefill_ep", "decode_ep"):
            fields.pop(name, None)
        return colocated_cluster(params.get("instances"), params.get("ep"), **fields)
    return ClusterConfig(**fields)


def run_gpus(params: dict) -> int:
    """GPUs of a run's cluster (a colocated run has no decode instances)."""
    cluster = run_cluster(params)
    if params.get("mode", "disaggregated") == "colocated":
        return cluster.prefill_instances * cluster.prefill_ep
    return cluster.prefill_instances * cluster.prefill_ep + cluster.decode_instances * cluster.decode_ep


def run_one(params: dict) -> dict:
    """Simulate one run and return its tidy row: the parameters, then flat metrics.

    ``params`` holds names of :data:`RUN_PARAMETERS` (missing ones take their defaults) and
    optionally ``workload``, a ready :class:`~sbsopt.workload.Workload` used instead of ``trace``.
    ``duration_s`` makes the run a time window rather than a request count: the first
    ``rate * duration_s`` requests (or those arriving before ``duration_s`` without a rate), so
    that a higher rate simulates proportionally more requests and overload shows up as a growing
    queue instead of one short burst.
    Fields of :data:`SCHEDULER_PARAMETERS` (``router_replicas``, ``dp_pinning``, ...) make a
    :class:`~sbsopt.sim.SchedulerConfig` (disaggregated mode).
    Metric columns: request counts, ``ttft_p50_ms`` ... ``tpot_p99_ms``, the mean TTFT split
    (``sched_wait_ms``: the SBS buffer, ``engine_wait_ms``: the engine queue, ``exec_ms``),
    throughputs, ``gpus``, ``tokens_per_s``, ``span_s`` (first arrival to last completion),
    ``arrival_span_s``, ``bubble_fraction``, ``chunk_utilization``, ``decode_batch_mean`` and
    ``decode_batch_imbalance`` (:func:`_decode_batches`), ``slo_attainment`` and its TTFT and
    TPOT parts (NaN when no SLO is given), ``sim_wall_s``.
    """
    from sbsopt.sim import simulate

    check_run_params(params)
    run = {**_RUN_DEFAULTS, **{k: v for k, v in params.items() if k in _RUN_DEFAULTS}}
    cluster = run_cluster(params)
    colocated = run["mode"] == "colocated"
    if colocated:
        # the SLOs a run is judged by are the deadlines its colocated engines schedule for
        engine = {"token_budget": run["token_budget"], "ttft_slo_ms": run["ttft_slo_ms"],
                  "tpot_slo_ms": run["tpot_slo_ms"]}
    else:
        engine = {"interval": run["interval"], "solver": run["solver"], "token_budget": run["token_budget"]}
    scheduler = {k: params[k] for k in SCHEDULER_PARAMETERS if k in params}
    if scheduler:  # colocated mode has no scheduler: simulate refuses one, naming the mode
        engine["scheduler"] = SchedulerConfig(**scheduler)
    workload = params.get("workload")
    if workload is None:
        workload = _trace(run["trace"], run["limit"])
    elif run["limit"] is not None:
        workload = workload.head(run["limit"])
    if run["duration_s"] is not None:
        duration = check_number("duration_s", run["duration_s"], strict_min=True)
        if run["rate"] is not None:
            count = math.ceil(check_number("rate", run["rate"], strict_min=True) * duration) + 1
        else:
            count = int((workload.arrival_s < duration).sum())
        workload = workload.head(max(min(count, len(workload)), 2))
    result = simulate(workload, cluster=cluster, router=run["router"], batching=run["batching"], mode=run["mode"],
                      seed=run["seed"], horizon_s=run["horizon_s"], load=run["load"], rate=run["rate"], **engine)
    summary = result.summary(ttft_slo_ms=run["ttft_slo_ms"], tpot_slo_ms=run["tpot_slo_ms"])
    row = {k: v for k, v in params.items() if k != "workload"}
    row.setdefault("trace", getattr(workload, "name", run["trace"]))
    row.update(_flatten(summary, run_gpus(params)))
    row.update(_decode_batches(result.requests, cluster) if not colocated else
               {"decode_batch_mean": float("nan"), "decode_batch_imbalance": float("nan")})
    return row


def _decode_batches(requests, cluster) -> dict:
    """Decode batch per decode DP unit by Little's law: its mean over the units, and max over mean.

    A completed request occupies its decode unit from its first token to its completion (KV
    transfer and admission wait included: the unit holds it in its queue); a unit's request-seconds
    over the arrival span are its batch in a steady window (over the whole span the drain of the
    longest outputs would dilute it). Decode steps run in lock-step at the pace of the fullest
    unit, so an imbalance above 1 is decode time the other units spend waiting.
    """
    units = cluster.decode_instances * cluster.decode_ep
    done = (requests["status"] == "completed").to_numpy()
    unit = requests["decode_unit"].to_numpy()[done]
    seconds = (requests["e2e_s"] - requests["ttft_s"]).to_numpy()[done]
    keep = unit >= 0  # a one-token request finishes at prefill, on no decode unit
    arrival = requests["arrival_s"].to_numpy()
    span_s = float(arrival[-1] - arrival[0]) if len(arrival) > 1 else 0.0
    if span_s <= 0 or not keep.any():
        return {"decode_batch_mean": float("nan"), "decode_batch_imbalance": float("nan")}
    batch = np.bincount(unit[keep], weights=seconds[keep], minlength=units) / span_s
    return {"decode_batch_mean": float(batch.mean()), "decode_batch_imbalance": float(batch.max() / batch.mean())}


def _flatten(summary: dict, gpus: int) -> dict:
    tput = summary["throughput_tok_s_per_gpu"]
    out = {key: summary[key] for key in ("requests", "completed", "rejected", "in_flight")}
    for metric in ("ttft_ms", "tpot_ms"):
        for q in ("p50", "p90", "p99", "mean"):
            out[f"{metric[:-3]}_{q}_ms"] = _num(summary[metric][q])
    out["input_tok_s_per_gpu"] = _num(tput["input"])
    out["output_tok_s_per_gpu"] = _num(tput["output"])
    out["gpus"] = gpus
    out["tokens_per_s"] = (out["input_tok_s_per_gpu"] + out["output_tok_s_per_gpu"]) * gpus
    out["span_s"] = _num(summary.get("span_s", float("nan")))
    offered = _num(summary.get("offered_rate_req_s", float("nan")))
    out["arrival_span_s"] = (out["requests"] - 1) / offered if offered > 0 else float("nan")
    for part in ("sched_wait", "engine_wait", "exec"):
        out[f"{part}_ms"] = _num(summary["ttft_split_ms"][part])
    out["goodput_req_s"] = _num(summary.get("goodput_req_s", float("nan")))
    out["bubble_fraction"] = _num(summary.get("bubble_fraction", float("nan")))
    out["chunk_utilization"] = _num(summary.get("chunk_utilization", float("nan")))
    for key in ("slo_attainment", "slo_attainment_ttft", "slo_attainment_tpot"):
        out[key] = _num(summary.get(key, float("nan")))
    out["sim_wall_s"] = _num(summary.get("sim_wall_s", float("nan")))
    return out


def _num(value) -> float:
    # A statistic of the other mode (bubbles in colocated mode, ...) is None in the summary.
    return float("nan") if value is None else float(value)
