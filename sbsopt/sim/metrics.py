"""Simulation results of both modes: the per-request table, the iteration table and the summary metrics.

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

In colocated mode (:mod:`sbsopt.sim.colocated`) one engine serves both phases: its GPUs count
for both throughputs, a request's prefill and decode unit are the same rank, and the engine
statistics are those of its mixed iterations (:data:`ITERATION_COLUMNS`) instead of prefill
forwards; a statistic of the other mode is ``None`` in the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import pandas as pd

from sbsopt._stats import percentiles
from sbsopt._validate import check_number
from sbsopt.errors import SimulationError

__all__ = ["SimResult", "Status", "final_status", "RejectReason", "REJECT_REASONS", "STATUSES", "REQUEST_COLUMNS",
           "ITERATION_COLUMNS", "request_table"]


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
STATUSES = ("completed", "rejected", "in_flight")
REQUEST_COLUMNS = ("arrival_s", "input_tokens", "output_tokens", "cached_tokens", "status", "reject_reason",
                   "ttft_s", "sched_wait_s", "engine_wait_s", "exec_s", "tpot_s", "tbt_max_s", "e2e_s",
                   "prefill_unit", "decode_unit", "max_consecutive_skips")
# One row per colocated iteration: start, instance, predicted time and time budget (us; budget
# nan for a fixed token budget, inf when no decode bounds it), per-rank token budget, tokens
# computed, prefill tokens, decodes run, decodes skipped, decodes forced by the skip bound.
ITERATION_COLUMNS = ("start_s", "instance", "predicted_us", "budget_us", "token_budget", "tokens",
                     "prefill_tokens", "decodes", "skipped", "forced")


def final_status(status: np.ndarray, *, arrived: int, finished: int, located: int,
                 drained: bool) -> np.ndarray:
    """Each request's end status, checking that none was lost.

    Pending requests become ``IN_FLIGHT`` (arrived) or ``NOT_ARRIVED``.

    Parameters
    ----------
    status : numpy.ndarray
        The simulator's per-request :class:`Status` codes (not modified).
    arrived : int
        Requests that arrived (the first ``arrived`` ids).
    finished : int
        The simulator's count of completed plus rejected requests.
    located : int
        Arrived, unfinished requests found in buffers, engine queues, transfers and batches.
    drained : bool
        The event queue ran empty (no horizon): then nothing may be left in flight.

    Raises
    ------
    SimulationError
        A request is lost: the counts do not add up, or one in flight is nowhere.

    Examples
    --------
    >>> final_status(np.array([Status.COMPLETED, Status.PENDING, Status.PENDING]), arrived=2,
    ...              finished=1, located=1, drained=False).tolist() == [Status.COMPLETED,
    ...     Status.IN_FLIGHT, Status.NOT_ARRIVED]
    True
    """
    status = status.copy()
    status[(status == Status.PENDING) & (np.arange(status.size) < arrived)] = Status.IN_FLIGHT
    status[status == Status.PENDING] = Status.NOT_ARRIVED
    completed = int((status == Status.COMPLETED).sum())
    rejected = int((status == Status.REJECTED).sum())
    in_flight = int(((status == Status.IN_FLIGHT) | (status == Status.NOT_ARRIVED)).sum())
    if completed + rejected + in_flight != status.size or finished != completed + rejected:
        raise SimulationError(
            f"requests lost: completed {completed} + rejected {rejected} + in flight {in_flight} "
            f"!= {status.size} requests (finished counter {finished})"
        )
    arrived_unfinished = int((status == Status.IN_FLIGHT).sum())
    if located != arrived_unfinished:
        raise SimulationError(
            f"{arrived_unfinished} requests in flight but {located} found in buffers, engine "
            f"queues, KV transfer and decode batches"
        )
    if drained and in_flight:
        raise SimulationError(f"{in_flight} requests never finished although the event queue drained")
    return status


def request_table(*, status: np.ndarray, reason: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
    """The per-request table of :data:`REQUEST_COLUMNS` from arrays; ``status`` holds names of
    :data:`STATUSES` and ``reason`` :class:`RejectReason` values (0 = not rejected).

    Raises
    ------
    SimulationError
        A column is missing or unknown, or a status is not one of :data:`STATUSES`.
    """
    names = {*columns, "status", "reject_reason"}
    if names != set(REQUEST_COLUMNS) or not set(np.unique(np.asarray(status, dtype=object))) <= set(STATUSES):
        raise SimulationError(f"request table with columns {sorted(names)} and statuses "
                              f"{sorted(set(np.asarray(status).tolist()))}: expected {REQUEST_COLUMNS} and {STATUSES}")
    data = {**columns, "status": list(status), "reject_reason": [REJECT_REASONS.get(int(r), "") for r in reason]}
    return pd.DataFrame({name: data[name] for name in REQUEST_COLUMNS})


def _empty_iterations() -> pd.DataFrame:
    return pd.DataFrame({name: np.zeros(0) for name in ITERATION_COLUMNS})


@dataclass(frozen=True)
class SimResult:
    """One simulation run.

    Attributes
    ----------
    requests : pandas.DataFrame
        One row per request, the columns of :data:`REQUEST_COLUMNS`; ``status`` is one of
        :data:`STATUSES`, ``reject_reason`` one of :data:`REJECT_REASONS` (``""`` unless rejected).
    stats : dict
        Engine statistics (span; disaggregated: forwards, bubble and step rank-seconds, chunk
        tokens, faults, ...).
    config : dict
        Mode, router, interval, solver, batching, cluster and scheduler of the run (colocated:
        interval, solver and scheduler are ``None``; the SLOs the engines scheduled for).
    timeline : list or None
        ``(start_s, instance, step_s, new_tokens_per_rank)`` per prefill forward when recorded
        (disaggregated mode).
    sim_wall_s : float
        Wall time of the event loop.
    iterations : pandas.DataFrame
        One row per colocated iteration, the columns of :data:`ITERATION_COLUMNS` (empty in
        disaggregated mode).
    """

    requests: pd.DataFrame
    stats: dict
    config: dict
    timeline: list | None = field(default=None, repr=False)
    sim_wall_s: float = 0.0
    iterations: pd.DataFrame = field(default_factory=_empty_iterations, repr=False)

    @classmethod
    def build(cls, sim, status: np.ndarray, wall_s: float) -> SimResult:
        arrival = sim.arrival
        table = request_table(
            arrival_s=arrival, input_tokens=sim.inp, output_tokens=sim.out, cached_tokens=sim.cached,
            status=np.asarray([_STATUS_NAMES.get(int(s), "in_flight") for s in status], dtype=object),
            reason=sim.reason,
            ttft_s=sim.ttft_end_s - arrival,
            sched_wait_s=sim.dispatch_s - arrival,
            engine_wait_s=sim.first_start_s - sim.dispatch_s,
            exec_s=sim.ttft_end_s - sim.first_start_s,
            tpot_s=np.where(sim.out > 1, (sim.done_s - sim.ttft_end_s) / np.maximum(sim.out - 1, 1), np.nan),
            tbt_max_s=np.where(np.isfinite(sim.decode_start_s), sim.tbt_max_s, np.nan),
            e2e_s=np.where(status == 1, sim.done_s - arrival, np.nan),
            prefill_unit=sim.prefill_unit,
            decode_unit=sim.decode_unit,
            # disaggregated decodes never sit out a step
            max_consecutive_skips=np.zeros(len(arrival), dtype=np.int64),
        )
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
            "mode": "disaggregated", "router": sim.router, "interval": sim.interval, "solver": sim.solver,
            "batching": sim.prefill[0].policy.name, "workload": sim.wl.name, "cluster": sim.cluster,
            "scheduler": sim.sched,
        }
        return cls(table, stats, config, sim.timeline, wall_s)

    def summary(self, *, ttft_slo_ms: float | None = None, tpot_slo_ms: float | None = None) -> dict:
        """JSON-able metrics, the same keys in both modes (see the module docstring for definitions).

        With an SLO given: ``slo_attainment`` (share of requests completed within every given
        SLO; rejected and unfinished ones miss), ``slo_attainment_ttft`` and
        ``slo_attainment_tpot`` (each SLO alone, ``None`` when not given) and ``goodput_req_s``.

        Raises
        ------
        InvalidInputError
            A non-positive SLO.
        """
        t = self.requests
        cluster = self.config["cluster"]
        colocated = self.config["mode"] == "colocated"
        done = t["status"].to_numpy() == "completed"
        span = self.stats["span_s"]
        arrival = t["arrival_s"].to_numpy()
        inp_tok = float(t["input_tokens"].to_numpy()[np.isfinite(t["ttft_s"].to_numpy())].sum())
        out_tok = float(t["output_tokens"].to_numpy()[done].sum())
        # a colocated engine's GPUs serve both phases
        gpus_in, gpus_out = (cluster.prefill_gpus,) * 2 if colocated else (cluster.prefill_gpus, cluster.decode_gpus)
        in_gpu = inp_tok / span / gpus_in if span > 0 else 0.0
        out_gpu = out_tok / span / gpus_out if span > 0 else 0.0
        reasons = t.loc[t["status"] == "rejected", "reject_reason"].value_counts().to_dict()
        offered = float(arrival[-1] - arrival[0]) if len(t) > 1 else 0.0
        summary = {
            "mode": self.config["mode"],
            "requests": len(t),
            "completed": int(done.sum()),
            "rejected": int((t["status"] == "rejected").sum()),
            "in_flight": int((t["status"] == "in_flight").sum()),
            "rejected_reasons": {str(k): int(v) for k, v in reasons.items()},
            "router": self.config["router"],
            "interval": self.config["interval"] if self.config["router"] == "sbs" else None,
            "batching": self.config["batching"],
            "gpus": gpus_in if colocated else gpus_in + gpus_out,
            "offered_rate_req_s": (len(t) - 1) / offered if offered > 0 else 0.0,
            "ttft_ms": percentiles(t["ttft_s"].to_numpy()),
            "ttft_split_ms": {
                "sched_wait": percentiles(t["sched_wait_s"].to_numpy())["mean"],
                "engine_wait": percentiles(t["engine_wait_s"].to_numpy())["mean"],
                "exec": percentiles(t["exec_s"].to_numpy())["mean"],
            },
            "tpot_ms": percentiles(t["tpot_s"].to_numpy()),
            "tbt_max_ms": percentiles(t["tbt_max_s"].to_numpy()),
            "e2e_ms": percentiles(t["e2e_s"].to_numpy()),
            "throughput_tok_s_per_gpu": {"input": in_gpu, "output": out_gpu},
            "throughput_tok_s_per_node": {
                "input": in_gpu * cluster.gpus_per_node, "output": out_gpu * cluster.gpus_per_node,
            },
            **(self._iteration_stats() if colocated else self._forward_stats()),
            "faults": self.stats.get("faults", []),
            "slow_ranks": self.stats.get("slow_ranks", []),
            "redispatched": self.stats.get("redispatched", 0),
            "span_s": span,
            "sim_wall_s": self.sim_wall_s,
        }
        if ttft_slo_ms is not None or tpot_slo_ms is not None:
            n = len(t)
            ttft_ok = tpot_ok = None
            ok = done.copy()
            if ttft_slo_ms is not None:
                check_number("ttft_slo_ms", ttft_slo_ms, strict_min=True)
                ttft_ok = done & (t["ttft_s"].to_numpy() * 1000 <= ttft_slo_ms)
                ok &= ttft_ok
            if tpot_slo_ms is not None:
                check_number("tpot_slo_ms", tpot_slo_ms, strict_min=True)
                tpot_ok = done & ~(t["tpot_s"].to_numpy() * 1000 > tpot_slo_ms)
                ok &= tpot_ok
            summary["ttft_slo_ms"], summary["tpot_slo_ms"] = ttft_slo_ms, tpot_slo_ms
            summary["slo_attainment"] = float(ok.sum() / n) if n else 0.0
            summary["slo_attainment_ttft"] = None if ttft_ok is None else (float(ttft_ok.sum() / n) if n else 0.0)
            summary["slo_attainment_tpot"] = None if tpot_ok is None else (float(tpot_ok.sum() / n) if n else 0.0)
            summary["goodput_req_s"] = float(ok.sum() / span) if span > 0 else 0.0
        return summary

    def _forward_stats(self) -> dict:
        """Prefill-forward statistics of a disaggregated run; the colocated ones are ``None``."""
        st = self.stats
        return {
            "bubble_fraction": st["bubble_rank_s"] / st["step_rank_s"] if st["step_rank_s"] > 0 else 0.0,
            "chunk_utilization": st["chunk_tokens_done"] / st["chunk_capacity_tokens"]
            if st["chunk_capacity_tokens"] > 0 else 0.0,
            "prefill_forwards": st["forwards"],
            **dict.fromkeys(_ITERATION_KEYS),
        }

    def _iteration_stats(self) -> dict:
        """Mixed-iteration statistics of a colocated run; the disaggregated ones are ``None``.

        The time budget statistics are ``None`` for a policy without one (Sarathi: nan budgets).
        """
        it = self.iterations
        budget = it["budget_us"].to_numpy()
        timed = bool((~np.isnan(budget)).any())
        return {
            "bubble_fraction": None, "chunk_utilization": None, "prefill_forwards": None,
            "iterations": len(it),
            "iteration_ms": percentiles(it["predicted_us"].to_numpy() / 1e3, 1.0),
            "batch_tokens": percentiles(it["tokens"].to_numpy(), 1.0),
            "decode_skips": int(it["skipped"].sum()),
            "forced_decodes": int(it["forced"].sum()),
            "budget_ms": percentiles(budget / 1e3, 1.0) if timed else None,
            "budget_tokens": percentiles(it["token_budget"].to_numpy(), 1.0) if timed else None,
            "unbounded_budget_iterations": int(np.isinf(budget).sum()) if timed else None,
        }


_ITERATION_KEYS = ("iterations", "iteration_ms", "batch_tokens", "decode_skips", "forced_decodes", "budget_ms",
                   "budget_tokens", "unbounded_budget_iterations")
