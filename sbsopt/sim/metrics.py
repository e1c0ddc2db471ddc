"""Simulation results: the per-request table and the summary metrics.

Definitions
-----------
- TTFT = first prefill forward's end of the request's last chunk (first token) - arrival,
  split into ``sched_wait`` (arrival -> dispatch to an engine queue: the SBS buffer),
  ``engine_wait`` (dispatch -> first forward containing the request) and ``exec``
  (first forward start -> first token, including chunked forwards and waits between them).
- TPOT = (completion - first token) / (output_tokens - 1), for requests with > 1 output token;
  it includes the KV transfer and the decode admission wait.
- TBT (``tbt_max``) = the longest decode step the request took part in.
- E2E = completion - arrival.
- Throughput: input tokens of completed prefills per prefill GPU per second, output tokens per
  decode GPU per second, both over the span from the first arrival to the last completion; per
  node = per GPU x GPUs per node.
- Bubble fraction = idle DP-rank time inside real prefill forwards / (ranks x forward time),
  with a rank's busy time from the cost model's rank-local linearisation.
- Chunk utilization = prefill tokens processed / (forwards x ranks x chunk_tokens).
- Goodput = completed requests meeting every given SLO, per second of span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import pandas as pd

from sbsopt._validate import check_number

__all__ = ["SimResult", "Status", "RejectReason", "REJECT_REASONS"]


class Status(IntEnum):
    """Final state of a request."""

    PENDING = 0
    COMPLETED = 1
    REJECTED = 2
    IN_FLIGHT = 3
    NOT_ARRIVED = 4  # arrival after the horizon: counted as in flight


class RejectReason(IntEnum):
    """Why a request was rejected."""

    PROMPT_TOO_LONG = 1
    KV_TOO_LARGE = 2
    NO_LIVE_INSTANCE = 3  # every instance of the needed kind is dead, none recovers before the horizon
    FAULT_RETRY_LIMIT = 4  # lost to instance failures more than ``fault_max_retries`` times


REJECT_REASONS = {1: "prompt_too_long", 2: "kv_exceeds_unit_capacity", 3: "no_live_instance",
                  4: "fault_retry_limit"}
_STATUS_NAMES = {1: "completed", 2: "rejected", 3: "in_flight", 4: "in_flight"}


def _pct(values: np.ndarray, scale: float = 1000.0) -> dict:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99]) * scale
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(values.mean() * scale)}


@dataclass(frozen=True)
class SimResult:
    """One simulation run.

    Attributes
    ----------
    requests : pandas.DataFrame
        One row per request: arrival_s, input_tokens, output_tokens, cached_tokens, status,
        reject_reason, ttft_s, sched_wait_s, engine_wait_s, exec_s, tpot_s, tbt_max_s, e2e_s,
        prefill_unit, decode_unit.
    stats : dict
        Engine statistics (forwards, bubble and step rank-seconds, chunk tokens, ...).
    config : dict
        Router, interval, solver, cluster and scheduler parameters of the run.
    timeline : list or None
        ``(start_s, instance, step_s, new_tokens_per_rank)`` per prefill forward when recorded.
    sim_wall_s : float
        Wall time of the event loop.
    """

    requests: pd.DataFrame
    stats: dict
    config: dict
    timeline: list | None = field(default=None, repr=False)
    sim_wall_s: float = 0.0

    @classmethod
    def build(cls, sim, status: np.ndarray, wall_s: float) -> SimResult:
        arrival = sim.arrival
        table = pd.DataFrame({
            "arrival_s": arrival,
            "input_tokens": sim.inp,
            "output_tokens": sim.out,
            "cached_tokens": sim.cached,
            "status": [_STATUS_NAMES.get(int(s), "in_flight") for s in status],
            "reject_reason": [REJECT_REASONS.get(int(r), "") for r in sim.reason],
            "ttft_s": sim.ttft_end_s - arrival,
            "sched_wait_s": sim.dispatch_s - arrival,
            "engine_wait_s": sim.first_start_s - sim.dispatch_s,
            "exec_s": sim.ttft_end_s - sim.first_start_s,
            "tpot_s": np.where(sim.out > 1, (sim.done_s - sim.ttft_end_s) / np.maximum(sim.out - 1, 1), np.nan),
            "tbt_max_s": np.where(np.isfinite(sim.decode_start_s), sim.tbt_max_s, np.nan),
            "e2e_s": np.where(status == 1, sim.done_s - arrival, np.nan),
            "prefill_unit": sim.prefill_unit,
            "decode_unit": sim.decode_unit,
        })
        stats = {
            "forwards": sim.forwards,
            "forward_s": sim.forward_s,
            "bubble_rank_s": sim.bubble_rank_s,
            "step_rank_s": sim.step_rank_s,
            "chunk_tokens_done": sim.chunk_tokens_done,
            "chunk_capacity_tokens": sim.forwards * sim.pep * sim.cluster.chunk_tokens,
            "span_s": float(np.nanmax(sim.done_s) - arrival[0]) if np.isfinite(sim.done_s).any() else 0.0,
            "end_s": sim.now,
            "faults": [f.as_dict() for f in sim.faults],
            "slow_ranks": [r.as_dict() for r in sim.slow_ranks],
            "redispatched": sim.redispatched,
        }
        config = {
            "router": sim.router, "interval": sim.interval, "solver": sim.solver,
            "workload": sim.wl.name, "cluster": sim.cluster, "scheduler": sim.sched,
        }
        return cls(table, stats, config, sim.timeline, wall_s)

    def summary(self, *, ttft_slo_ms: float | None = None, tpot_slo_ms: float | None = None) -> dict:
        """JSON-able metrics (see the module docstring for definitions)."""
        t = self.requests
        cluster = self.config["cluster"]
        done = t["status"].to_numpy() == "completed"
        span = self.stats["span_s"]
        inp_tok = float(t["input_tokens"].to_numpy()[np.isfinite(t["ttft_s"].to_numpy())].sum())
        out_tok = float(t["output_tokens"].to_numpy()[done].sum())
        in_gpu = inp_tok / span / cluster.prefill_gpus if span > 0 else 0.0
        out_gpu = out_tok / span / cluster.decode_gpus if span > 0 else 0.0
        reasons = t.loc[t["status"] == "rejected", "reject_reason"].value_counts().to_dict()
        summary = {
            "requests": len(t),
            "completed": int(done.sum()),
            "rejected": int((t["status"] == "rejected").sum()),
            "in_flight": int((t["status"] == "in_flight").sum()),
            "rejected_reasons": {str(k): int(v) for k, v in reasons.items()},
            "router": self.config["router"],
            "interval": self.config["interval"] if self.config["router"] == "sbs" else None,
            "ttft_ms": _pct(t["ttft_s"].to_numpy()),
            "ttft_split_ms": {
                "sched_wait": _pct(t["sched_wait_s"].to_numpy())["mean"],
                "engine_wait": _pct(t["engine_wait_s"].to_numpy())["mean"],
                "exec": _pct(t["exec_s"].to_numpy())["mean"],
            },
            "tpot_ms": _pct(t["tpot_s"].to_numpy()),
            "tbt_max_ms": _pct(t["tbt_max_s"].to_numpy()),
            "e2e_ms": _pct(t["e2e_s"].to_numpy()),
            "throughput_tok_s_per_gpu": {"input": in_gpu, "output": out_gpu},
            "throughput_tok_s_per_node": {
                "input": in_gpu * cluster.gpus_per_node, "output": out_gpu * cluster.gpus_per_node,
            },
            "bubble_fraction": self.stats["bubble_rank_s"] / self.stats["step_rank_s"]
            if self.stats["step_rank_s"] > 0 else 0.0,
            "chunk_utilization": self.stats["chunk_tokens_done"] / self.stats["chunk_capacity_tokens"]
            if self.stats["chunk_capacity_tokens"] > 0 else 0.0,
            "prefill_forwards": self.stats["forwards"],
            "faults": self.stats.get("faults", []),
            "slow_ranks": self.stats.get("slow_ranks", []),
            "redispatched": self.stats.get("redispatched", 0),
            "span_s": span,
            "sim_wall_s": self.sim_wall_s,
        }
        if ttft_slo_ms is not None or tpot_slo_ms is not None:
            for name, slo in (("ttft_slo_ms", ttft_slo_ms), ("tpot_slo_ms", tpot_slo_ms)):
                if slo is not None:
                    check_number(name, slo, strict_min=True)
            ok = done.copy()
            if ttft_slo_ms is not None:
                ok &= t["ttft_s"].to_numpy() * 1000 <= ttft_slo_ms
            if tpot_slo_ms is not None:
                tpot = t["tpot_s"].to_numpy()
                ok &= ~(tpot * 1000 > tpot_slo_ms)
            summary["slo_attainment"] = float(ok.sum() / len(t)) if len(t) else 0.0
            summary["goodput_req_s"] = float(ok.sum() / span) if span > 0 else 0.0
        return summary
