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

from sbsopt._validate import check_number
from sbsopt.errors import InvalidInputError

__all__ = ["SLO", "Policy", "RUN_PARAMETERS", "CLUSTER_PARAMETERS", "check_run_params", "run_one"]

# Fields of sbsopt.sim.ClusterConfig a run may set (kept literal: importing the simulator here
# would make every worker pay for it before it sets its thread limits).
CLUSTER_PARAMETERS = (
    "prefill_instances", "decode_instances", "prefill_ep", "decode_ep", "gpus_per_node",
    "chunk_tokens", "max_decode_batch", "kv_block_tokens", "kv_capacity_tokens",
    "prefix_cache_blocks", "idle_stepping", "stagger_start", "max_prompt_tokens", "model", "hardware",
)
# Everything else a run understands, with its default.
_RUN_DEFAULTS: dict[str, Any] = {
    "trace": "azure-conv", "limit": 400, "rate": None, "load": None, "router": "sbs",
    "interval": "engine_paced", "solver": "greedy", "batching": "default", "seed": 0,
    "horizon_s": None, "ttft_slo_ms": None, "tpot_slo_ms": None, "duration_s": None,
}
RUN_PARAMETERS = tuple(_RUN_DEFAULTS) + CLUSTER_PARAMETERS


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

    ttft_ms: float = 1000.0
    tpot_ms: float = 100.0
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
    """Scheduling policy of a run: cluster router, SBS interval policy, window solver, engine batching."""

    router: str = "sbs"
    interval: str = "engine_paced"
    solver: str = "greedy"
    batching: str = "default"

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


def run_one(params: dict) -> dict:
    """Simulate one run and return its tidy row: the parameters, then flat metrics.

    ``params`` holds names of :data:`RUN_PARAMETERS` (missing ones take their defaults) and
    optionally ``workload``, a ready :class:`~sbsopt.workload.Workload` used instead of ``trace``.
    ``duration_s`` makes the run a time window rather than a request count: the first
    ``rate * duration_s`` requests (or those arriving before ``duration_s`` without a rate), so
    that a higher rate simulates proportionally more requests and overload shows up as a growing
    queue instead of one short burst.
    Metric columns: request counts, ``ttft_p50_ms`` ... ``tpot_p99_ms``, throughputs, ``gpus``,
    ``tokens_per_s``, ``span_s``, ``slo_attainment`` (NaN when no SLO is given), ``sim_wall_s``.
    """
    from sbsopt.sim import ClusterConfig, simulate

    check_run_params(params)
    run = {**_RUN_DEFAULTS, **{k: v for k, v in params.items() if k in _RUN_DEFAULTS}}
    cluster = ClusterConfig(**{k: params[k] for k in CLUSTER_PARAMETERS if k in params})
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
    result = simulate(workload, cluster=cluster, router=run["router"], interval=run["interval"],
                      solver=run["solver"], batching=run["batching"], seed=run["seed"],
                      horizon_s=run["horizon_s"], load=run["load"], rate=run["rate"])
    summary = result.summary(ttft_slo_ms=run["ttft_slo_ms"], tpot_slo_ms=run["tpot_slo_ms"])
    row = {k: v for k, v in params.items() if k != "workload"}
    row.setdefault("trace", getattr(workload, "name", run["trace"]))
    row.update(_flatten(summary, cluster))
    return row


def _flatten(summary: dict, cluster) -> dict:
    gpus = cluster.prefill_instances * cluster.prefill_ep + cluster.decode_instances * cluster.decode_ep
    tput = summary["throughput_tok_s_per_gpu"]
    out = {key: summary[key] for key in ("requests", "completed", "rejected", "in_flight")}
    for metric in ("ttft_ms", "tpot_ms"):
        for q in ("p50", "p90", "p99", "mean"):
            out[f"{metric[:-3]}_{q}_ms"] = float(summary[metric][q])
    out["input_tok_s_per_gpu"] = float(tput["input"])
    out["output_tok_s_per_gpu"] = float(tput["output"])
    out["gpus"] = gpus
    out["tokens_per_s"] = (out["input_tok_s_per_gpu"] + out["output_tok_s_per_gpu"]) * gpus
    out["span_s"] = float(summary.get("span_s", float("nan")))
    out["goodput_req_s"] = float(summary.get("goodput_req_s", float("nan")))
    out["bubble_fraction"] = float(summary.get("bubble_fraction", float("nan")))
    out["chunk_utilization"] = float(summary.get("chunk_utilization", float("nan")))
    out["slo_attainment"] = float(summary.get("slo_attainment", float("nan")))
    out["sim_wall_s"] = float(summary.get("sim_wall_s", float("nan")))
    return out
