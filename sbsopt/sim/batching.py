"""Iteration policies of colocated engines: Sarathi stall-free batching versus FairBatching.

A colocated engine runs iterations that mix prefill chunks and decode tokens. Before each
iteration it hands an :class:`IterationPolicy` an :class:`EngineSnapshot` (plain numpy arrays: running decodes with
the deadline of their next token, queued prefills with their remaining tokens and TTFT deadline,
free KV per DP rank) and gets back an :class:`IterationPlan` (which decodes run, which prefill
chunks of how many tokens, the budget chosen, which decodes were skipped). Policies are pure
functions; the iteration time comes from an :class:`IterationCostModel` built on the calibrated
cost model's public coefficients.

Notes
-----
An engine with ``ep`` DP ranks steps in lock-step: every request is pinned to one rank, each rank
forms its own part of the batch, and the iteration lasts ``base + max_j rank_time_j``. Token
caps and request caps apply per rank (each DP rank has its own scheduler); a FairBatching time
budget applies to the whole lock-step iteration.

Choices where the papers are silent (all parameters of :class:`FairBatchingPolicy`):

- the time budget is the smallest slack among decodes that can still meet their deadline
  (slack >= time of the mandatory part of the batch); decodes that are already late cannot be
  saved by any budget, so they do not shrink it: the budget then falls back to
  ``late_floor_fraction * tpot_slo`` (the paper's floor, which stops batches shrinking to nothing);
- a decode skipped ``max_consecutive_skips`` iterations in a row is forced into the next
  iteration regardless of the budget (the starvation bound), and the most urgent decode always
  runs (the progress guarantee);
- with no running decodes the budget is unlimited in time and the per-rank token cap
  ``max_tokens`` applies, so the iteration is filled with prefill.

References
----------
.. [1] H. Lyu, B. Liu, M. Wu, H. Chen, "FairBatching: Fairness-Aware Batch Formation for LLM
   Inference", arXiv:2510.14392, 2025.
.. [2] A. Agrawal et al., "Taming Throughput-Latency Tradeoff in LLM Inference with
   Sarathi-Serve", OSDI 2024.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sbsopt._validate import check_array, check_int, check_number
from sbsopt.errors import InvalidInputError

__all__ = [
    "IterationCostModel",
    "EngineSnapshot",
    "IterationPlan",
    "IterationPolicy",
    "SarathiPolicy",
    "FairBatchingPolicy",
    "ITERATION_POLICIES",
    "make_iteration_policy",
    "sarathi_plan",
    "fairbatching_plan",
    "load_estimate_us",
]

_I64 = np.int64
_EMPTY = np.zeros(0, dtype=_I64)


@dataclass(frozen=True)
class IterationCostModel:
    """Predicted time of one mixed prefill/decode iteration of a lock-step DP+EP engine.

    ``rank_time_j = us_per_prefill_token * n_j + us_per_pair * pairs_j
    + us_per_prefill_request * r_j + us_per_decode * b_j + us_per_kv_token * kv_j`` and the
    iteration lasts ``base + max_j rank_time_j``, where ``base`` is the largest fixed cost of the
    phases present (``prefill_base_us`` if any prefill token runs, ``decode_base_us`` if any
    decode runs). Adding work never shortens an iteration.

    Parameters
    ----------
    prefill_base_us, us_per_prefill_token, us_per_pair, us_per_prefill_request : float
        The prefill coefficients (``PrefillCoefficients`` of the cost model: base, alpha, beta,
        gamma). ``n_j`` new tokens, ``pairs_j = sum n_i (p_i + n_i / 2)`` causal token pairs
        with ``p_i`` tokens of the same request already prefilled.
    decode_base_us, us_per_decode, us_per_kv_token : float
        The decode coefficients (``DecodeCoefficients``: base, per request, per KV token read).
    ep : int
        Number of DP ranks stepping in lock-step.
    mtp_acceptance : float, default 0.0
        Multi-token prediction: a decode in an iteration runs 2 query tokens and the MTP
        module (priced by the decode coefficients) and yields ``1 + mtp_acceptance`` tokens
        (:attr:`decode_tokens`); 0 = no MTP.

    Examples
    --------
    >>> cost = IterationCostModel(prefill_base_us=1000.0, us_per_prefill_token=10.0, us_per_pair=0.0,
    ...     us_per_prefill_request=0.0, decode_base_us=800.0, us_per_decode=50.0, us_per_kv_token=0.0)
    >>> cost.rank_iteration_us(prefill_tokens=[100], pairs=[0], prefill_requests=[1],
    ...     decodes=[4], kv_tokens=[0])
    2200.0
    >>> cost.chunk_tokens_within(500.0, done_tokens=0, remaining_tokens=1000)
    50
    """

    prefill_base_us: float
    us_per_prefill_token: float
    us_per_pair: float
    us_per_prefill_request: float
    decode_base_us: float
    us_per_decode: float
    us_per_kv_token: float
    ep: int = 1
    mtp_acceptance: float = 0.0

    def __post_init__(self) -> None:
        for name in ("prefill_base_us", "us_per_prefill_token", "us_per_pair",
                     "us_per_prefill_request", "decode_base_us", "us_per_decode",
                     "us_per_kv_token"):
            check_number(name, getattr(self, name))
        if self.us_per_prefill_token <= 0.0 and self.us_per_pair <= 0.0:
            raise InvalidInputError("us_per_prefill_token", self.us_per_prefill_token,
                                    "a positive per-token cost (or a positive us_per_pair)")
        check_int("ep", self.ep, minimum=1)
        check_number("mtp_acceptance", self.mtp_acceptance, maximum=1.0)

    @property
    def decode_tokens(self) -> float:
        """Tokens a decode yields per iteration it runs in: ``1 + mtp_acceptance``."""
        return 1.0 + self.mtp_acceptance

    @classmethod
    def from_cost_model(cls, cm: Any, *, floor: str = "decode",
                        mtp_acceptance: float = 0.0) -> IterationCostModel:
        """Build from a :mod:`sbsopt.costmodel` ``CostModel`` (its public coefficients).

        The per-token, per-pair and per-request slopes are the cost model's. The fixed cost of an
        iteration that contains prefill tokens is an [ours] choice (the calibration has no mixed
        iterations): ``floor="decode"`` (default) uses the decode step's floor, because a
        colocated engine runs its mixed iterations in the low-latency mode of a decode step,
        not the throughput mode (normal all-to-all, prefill-sized dummy batches) whose floor
        the disaggregated prefill model carries; ``floor="prefill"`` uses that prefill floor
        (then every chunk costs a full prefill forward, several times the decode step).
        With ``mtp_acceptance > 0`` the decode coefficients are those of an MTP step (2 query
        tokens, the MTP layer); prefill chunks are priced without the MTP module.

        Examples
        --------
        >>> from sbsopt.costmodel import load_cost_model
        >>> cm = load_cost_model(ep=8, nodes=1)
        >>> plain, mtp = IterationCostModel.from_cost_model(cm), IterationCostModel.from_cost_model(
        ...     cm, mtp_acceptance=0.85)
        >>> mtp.decode_tokens, mtp.us_per_decode > plain.us_per_decode
        (1.85, True)
        """
        if floor not in ("decode", "prefill"):
            raise InvalidInputError("floor", floor, "'decode' or 'prefill'")
        p = cm.prefill_coefficients()
        d = cm.decode_coefficients(mtp_acceptance=mtp_acceptance)
        return cls(
            prefill_base_us=float(d.base_us if floor == "decode" else p.base_us),
            us_per_prefill_token=float(p.alpha_us_per_token),
            us_per_pair=float(p.beta_us_per_pair), us_per_prefill_request=float(p.gamma_us_per_request),
            decode_base_us=float(d.base_us), us_per_decode=float(d.us_per_request),
            us_per_kv_token=float(d.us_per_kv_token), ep=int(cm.ep), mtp_acceptance=float(mtp_acceptance),
        )

    def base_us(self, *, has_prefill: bool, has_decode: bool) -> float:
        """Fixed cost of an iteration with the given phases (0 for an empty iteration)."""
        base = 0.0
        if has_prefill:
            base = self.prefill_base_us
        if has_decode:
            base = max(base, self.decode_base_us)
        return base

    def rank_iteration_us(self, *, prefill_tokens: Any, pairs: Any, prefill_requests: Any,
                          decodes: Any, kv_tokens: Any) -> float:
        """Lock-step iteration time from per-rank totals (arrays of length ``ep``)."""
        n = np.asarray(prefill_tokens, dtype=np.float64)
        b = np.asarray(decodes, dtype=np.float64)
        rank = (self.us_per_prefill_token * n + self.us_per_pair * np.asarray(pairs, dtype=np.float64)
                + self.us_per_prefill_request * np.asarray(prefill_requests, dtype=np.float64)
                + self.us_per_decode * b + self.us_per_kv_token * np.asarray(kv_tokens, dtype=np.float64))
        base = self.base_us(has_prefill=bool(n.sum() > 0), has_decode=bool(b.sum() > 0))
        return float(base + (rank.max() if rank.size else 0.0))

    def prefill_chunk_us(self, tokens: Any, done_tokens: Any) -> Any:
        """Rank-local time of prefill chunks of ``tokens`` after ``done_tokens`` already prefilled."""
        n = np.asarray(tokens, dtype=np.float64)
        p = np.asarray(done_tokens, dtype=np.float64)
        return (self.us_per_prefill_token * n + self.us_per_pair * n * (p + 0.5 * n)
                + self.us_per_prefill_request * (n > 0))

    def decode_us(self, context_tokens: Any) -> Any:
        """Rank-local time of one decode token per request with these context lengths."""
        return self.us_per_decode + self.us_per_kv_token * np.asarray(context_tokens, dtype=np.float64)

    def chunk_tokens_within(self, available_us: float, *, done_tokens: int, remaining_tokens: int) -> int:
        """Largest chunk ``n <= remaining_tokens`` whose rank-local time fits ``available_us``."""
        avail = available_us - self.us_per_prefill_request
        if avail <= 0.0 or remaining_tokens <= 0:
            return 0
        if math.isinf(avail):
            return int(remaining_tokens)
        a = self.us_per_prefill_token + self.us_per_pair * done_tokens
        b = 0.5 * self.us_per_pair
        # b n^2 + a n <= avail, solved in the numerically stable form
        n = avail / a if b == 0.0 else 2.0 * avail / (a + math.sqrt(a * a + 4.0 * b * avail))
        return int(min(remaining_tokens, math.floor(n + 1e-9)))

    def plan_us(self, snapshot: EngineSnapshot, plan: IterationPlan) -> float:
        """Predicted time of ``plan`` on the engine described by ``snapshot``."""
        ep = self.ep
        rank = np.zeros(ep)
        if plan.decode_run.size:
            np.add.at(rank, snapshot.decode_rank[plan.decode_run],
                      self.decode_us(snapshot.decode_context_tokens[plan.decode_run]))
        if plan.prefill_index.size:
            np.add.at(rank, snapshot.prefill_rank[plan.prefill_index],
                      self.prefill_chunk_us(plan.prefill_chunk_tokens,
                                            snapshot.prefill_done_tokens[plan.prefill_index]))
        base = self.base_us(has_prefill=bool(plan.prefill_chunk_tokens.sum() > 0),
                            has_decode=bool(plan.decode_run.size))
        return float(base + rank.max()) if (plan.decode_run.size or plan.prefill_index.size) else 0.0


@dataclass(frozen=True)
class EngineSnapshot:
    """What an iteration policy sees of one engine before an iteration (arrays are read-only inputs).

    Parameters
    ----------
    now_s : float
        Start time of the iteration.
    decode_deadline_s : float64[D]
        Deadline of each running decode's next token (its envelope deadline).
    decode_context_tokens : int64[D]
        KV tokens each running decode reads (prompt plus tokens generated so far).
    decode_skips : int64[D]
        Consecutive iterations each decode has been skipped.
    decode_rank : int64[D]
        DP rank each decode is pinned to.
    prefill_remaining_tokens, prefill_done_tokens : int64[P]
        Prompt tokens still to prefill and already prefilled, in FCFS (arrival) order.
    prefill_deadline_s : float64[P]
        TTFT deadline of each queued prefill.
    prefill_kv_tokens : int64[P]
        KV tokens to reserve when the request's first chunk is scheduled (0 once started).
    prefill_rank : int64[P]
        DP rank each queued prefill is pinned to.
    kv_free_tokens : int64[ep]
        Unreserved KV tokens per rank.
    """

    now_s: float
    decode_deadline_s: np.ndarray
    decode_context_tokens: np.ndarray
    decode_skips: np.ndarray
    decode_rank: np.ndarray
    prefill_remaining_tokens: np.ndarray
    prefill_done_tokens: np.ndarray
    prefill_deadline_s: np.ndarray
    prefill_kv_tokens: np.ndarray
    prefill_rank: np.ndarray
    kv_free_tokens: np.ndarray

    @property
    def ep(self) -> int:
        """Number of DP ranks."""
        return int(self.kv_free_tokens.size)

    @classmethod
    def from_arrays(
        cls, *, now_s: float = 0.0, decode_deadline_s: Any = (), decode_context_tokens: Any = (),
        decode_skips: Any = None, decode_rank: Any = None, prefill_remaining_tokens: Any = (),
        prefill_done_tokens: Any = None, prefill_deadline_s: Any = None, prefill_kv_tokens: Any = None,
        prefill_rank: Any = None, kv_free_tokens: Any = (1 << 40,),
    ) -> EngineSnapshot:
        """Validated constructor; omitted per-request arrays default to zeros (rank 0, no skips).

        Examples
        --------
        >>> s = EngineSnapshot.from_arrays(decode_deadline_s=[0.05], decode_context_tokens=[100],
        ...                                prefill_remaining_tokens=[300])
        >>> s.ep, s.decode_rank.tolist(), s.prefill_deadline_s.tolist()
        (1, [0], [inf])
        """
        now = check_number("now_s", now_s, minimum=None)
        kv = check_array("kv_free_tokens", kv_free_tokens, dtype=_I64)
        if kv.size == 0:
            raise InvalidInputError("kv_free_tokens", kv_free_tokens, "one entry per DP rank (at least one)")
        deadline = check_array("decode_deadline_s", decode_deadline_s, minimum=None)
        d = deadline.size
        ctx = check_array("decode_context_tokens", decode_context_tokens, dtype=_I64)
        remaining = check_array("prefill_remaining_tokens", prefill_remaining_tokens, dtype=_I64, minimum=1)
        p = remaining.size

        def ints(name: str, values: Any, size: int, maximum: int | None = None) -> np.ndarray:
            out = check_array(name, np.zeros(size) if values is None else values, dtype=_I64)
            if out.size != size:
                raise InvalidInputError(f"{name}.size", out.size, f"{size} (one per request)")
            if maximum is not None and out.size and out.max() > maximum:
                raise InvalidInputError(name, out.tolist(), f"ranks in [0, {maximum}]")
            return out

        ctx = ints("decode_context_tokens", ctx, d)
        ttft = (np.full(p, np.inf) if prefill_deadline_s is None
                else np.ascontiguousarray(prefill_deadline_s, dtype=np.float64))
        if ttft.size != p or np.isnan(ttft).any():
            raise InvalidInputError("prefill_deadline_s", prefill_deadline_s, f"{p} deadlines (inf allowed)")
        return cls(
            now_s=now, decode_deadline_s=deadline, decode_context_tokens=ctx,
            decode_skips=ints("decode_skips", decode_skips, d),
            decode_rank=ints("decode_rank", decode_rank, d, kv.size - 1),
            prefill_remaining_tokens=remaining,
            prefill_done_tokens=ints("prefill_done_tokens", prefill_done_tokens, p),
            prefill_deadline_s=ttft,
            prefill_kv_tokens=ints("prefill_kv_tokens", prefill_kv_tokens, p),
            prefill_rank=ints("prefill_rank", prefill_rank, p, kv.size - 1),
            kv_free_tokens=kv,
        )


@dataclass(frozen=True)
class IterationPlan:
    """What one iteration contains; indices refer to the snapshot's arrays.

    Attributes
    ----------
    decode_run, decode_skipped : int64 arrays
        Running decodes that produce a token this iteration, and those that skip it.
    prefill_index, prefill_chunk_tokens : int64 arrays
        Queued prefills that get a chunk, and the chunk sizes (tokens).
    predicted_us : float
        Iteration time predicted by the policy's cost model.
    budget_us : float
        FairBatching's time budget (``inf`` when no decode bounds it; ``nan`` for Sarathi).
    token_budget : int
        Token budget per rank. Sarathi: the fixed setting. FairBatching: the adaptive batch
        capacity, i.e. the urgent decode tokens plus the prefill tokens the time budget leaves
        on the least loaded rank (at most the cap ``max_tokens``).
    forced_decodes : int
        Decodes that run only because of the consecutive-skip bound.
    """

    decode_run: np.ndarray
    decode_skipped: np.ndarray
    prefill_index: np.ndarray
    prefill_chunk_tokens: np.ndarray
    predicted_us: float
    budget_us: float
    token_budget: int
    forced_decodes: int = 0

    @property
    def tokens(self) -> int:
        """Tokens computed this iteration (decode tokens plus prefill chunk tokens)."""
        return int(self.decode_run.size + self.prefill_chunk_tokens.sum())


@runtime_checkable
class IterationPolicy(Protocol):
    """What a colocated engine needs from an iteration policy."""

    @property
    def name(self) -> str:
        """The policy's name, as reported in results."""
        ...

    def plan(self, snapshot: EngineSnapshot, cost: IterationCostModel) -> IterationPlan:
        """Form the next iteration."""
        ...


def _fill_prefill(snapshot: EngineSnapshot, cost: IterationCostModel, order: np.ndarray, *,
                  rank_room: np.ndarray, token_room: np.ndarray, request_room: np.ndarray,
                  new_room: np.ndarray, time_limited: bool,
                  min_chunk_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Give chunks to prefills in ``order``, rank by rank, within time, token, request and KV room.

    ``request_room`` bounds the requests in the batch, ``new_room`` the requests not yet started.

    A rank stops admitting at its first prefill that does not fit (FCFS/EDF, no overtaking), so
    the scan ends once every rank is closed.
    """
    ep = snapshot.ep
    open_ranks = np.ones(ep, dtype=bool)
    kv_free = snapshot.kv_free_tokens.astype(_I64).copy()
    chosen: list[int] = []
    chunks: list[int] = []
    open_count = ep
    for i in order.tolist():
        j = int(snapshot.prefill_rank[i])
        if not open_ranks[j]:
            continue
        remaining = int(snapshot.prefill_remaining_tokens[i])
        need_kv = int(snapshot.prefill_kv_tokens[i])
        n = min(remaining, int(token_room[j]))
        if time_limited:
            n = min(n, cost.chunk_tokens_within(float(rank_room[j]),
                                                done_tokens=int(snapshot.prefill_done_tokens[i]),
                                                remaining_tokens=remaining))
        is_new = int(snapshot.prefill_done_tokens[i]) == 0
        fits = (n >= min(remaining, min_chunk_tokens) and n > 0 and request_room[j] > 0
                and (not is_new or new_room[j] > 0) and need_kv <= kv_free[j])
        if not fits:
            open_ranks[j] = False
            open_count -= 1
            if open_count == 0:
                break
            continue
        chosen.append(i)
        chunks.append(n)
        token_room[j] -= n
        request_room[j] -= 1
        new_room[j] -= is_new
        kv_free[j] -= need_kv
        if time_limited:
            rank_room[j] -= float(cost.prefill_chunk_us(n, int(snapshot.prefill_done_tokens[i])))
    return np.asarray(chosen, dtype=_I64), np.asarray(chunks, dtype=_I64)


def sarathi_plan(snapshot: EngineSnapshot, cost: IterationCostModel, *, token_budget: int = 512,
                 max_requests: int = 128, min_chunk_tokens: int = 1) -> IterationPlan:
    """Sarathi-Serve stall-free batching: every decode first, then FCFS prefill chunks.

    Per rank, decode tokens count against ``token_budget``; partially prefilled requests (ahead
    in FCFS order) continue, then new ones are admitted while the budget, KV (reserved for the
    whole request at admission) and the running-request cap ``max_requests`` allow. Decodes are
    never paused.

    Examples
    --------
    >>> cost = IterationCostModel(prefill_base_us=1000.0, us_per_prefill_token=10.0, us_per_pair=0.0,
    ...     us_per_prefill_request=0.0, decode_base_us=800.0, us_per_decode=50.0, us_per_kv_token=0.0)
    >>> s = EngineSnapshot.from_arrays(decode_deadline_s=[0.0, 0.0], decode_context_tokens=[10, 10],
    ...                                prefill_remaining_tokens=[300, 400])
    >>> plan = sarathi_plan(s, cost, token_budget=512)
    >>> plan.decode_run.tolist(), plan.prefill_chunk_tokens.tolist()
    ([0, 1], [300, 210])
    """
    token_budget = check_int("token_budget", token_budget, minimum=1)
    max_requests = check_int("max_requests", max_requests, minimum=1)
    ep = snapshot.ep
    decodes = np.bincount(snapshot.decode_rank, minlength=ep).astype(_I64)
    started = np.bincount(snapshot.prefill_rank[snapshot.prefill_done_tokens > 0], minlength=ep)
    token_room = np.maximum(token_budget - decodes, 0)
    # started prefills already hold a running slot; only new admissions consume the cap
    new_room = np.maximum(max_requests - decodes - started, 0)
    order = np.arange(snapshot.prefill_remaining_tokens.size, dtype=_I64)
    index, chunks = _fill_prefill(snapshot, cost, order, rank_room=np.zeros(ep), token_room=token_room,
                                  request_room=np.full(ep, order.size, dtype=_I64), new_room=new_room,
                                  time_limited=False,
                                  min_chunk_tokens=min_chunk_tokens)
    plan = IterationPlan(decode_run=np.arange(snapshot.decode_rank.size, dtype=_I64),
                         decode_skipped=_EMPTY, prefill_index=index, prefill_chunk_tokens=chunks,
                         predicted_us=0.0, budget_us=math.nan, token_budget=token_budget)
    return _with_prediction(plan, snapshot, cost)


def _with_prediction(plan: IterationPlan, snapshot: EngineSnapshot, cost: IterationCostModel) -> IterationPlan:
    return IterationPlan(decode_run=plan.decode_run, decode_skipped=plan.decode_skipped,
                         prefill_index=plan.prefill_index, prefill_chunk_tokens=plan.prefill_chunk_tokens,
                         predicted_us=cost.plan_us(snapshot, plan), budget_us=plan.budget_us,
                         token_budget=plan.token_budget, forced_decodes=plan.forced_decodes)


def _take_decodes(candidates: np.ndarray, slack_us: np.ndarray, snapshot: EngineSnapshot,
                  decode_cost_us: np.ndarray, rank_room: np.ndarray, request_room: np.ndarray) -> np.ndarray:
    """Per rank, the longest slack-ordered prefix of ``candidates`` that fits the rank's room."""
    if candidates.size == 0:
        return _EMPTY
    ranks = snapshot.decode_rank[candidates]
    order = np.lexsort((candidates, slack_us[candidates], ranks))
    cand, ranks = candidates[order], ranks[order]
    cost = decode_cost_us[cand]
    cum = np.cumsum(cost)
    starts = np.searchsorted(ranks, ranks, side="left")
    within = cum - (cum[starts] - cost[starts])
    position = np.arange(cand.size) - starts
    keep = (within <= rank_room[ranks] + 1e-9) & (position < request_room[ranks])
    # a prefix per rank: once one decode does not fit, the later ones on that rank wait too
    first_miss = np.full(snapshot.ep, np.iinfo(_I64).max)
    np.minimum.at(first_miss, ranks[~keep], position[~keep])
    keep &= position < first_miss[ranks]
    taken = cand[keep]
    np.subtract.at(rank_room, ranks[keep], cost[keep])
    np.subtract.at(request_room, ranks[keep], 1)
    return taken


def fairbatching_plan(
    snapshot: EngineSnapshot, cost: IterationCostModel, *, tpot_slo_s: float,
    max_tokens: int = 8192, max_requests: int = 256, max_consecutive_skips: int = 4,
    urgency_margin: float = 1.0, min_chunk_tokens: int = 32, late_floor_fraction: float = 1.0,
) -> IterationPlan:
    """FairBatching: a time budget from decode slack, then urgent decodes, prefill, the rest.

    1. *Mandatory decodes*: those skipped ``max_consecutive_skips`` times in a row, plus the
       decode with the least slack (progress guarantee); ``t_mand`` is their iteration time.
    2. *Budget*: the least slack among decodes with ``slack >= t_mand`` (those a budget can
       still save); if every decode is late, ``max(t_mand, late_floor_fraction * tpot_slo)``;
       unlimited when no decode runs. Never below ``t_mand``.
    3. *Formation*, each group by slack ascending, per rank while the lock-step time stays within
       the budget: urgent decodes (slack < budget + ``urgency_margin * tpot_slo``), prefill
       chunks by TTFT deadline (largest chunk that fits, at least ``min_chunk_tokens`` unless the
       request needs fewer; with no decode running the first prefill always gets a chunk),
       non-urgent decodes. Decodes left out are skipped.

    Guarantees: a running decode is skipped at most ``max_consecutive_skips`` iterations in a
    row; a decode included in the plan is predicted to miss its deadline only if it misses it
    in the mandatory part alone; every non-empty engine makes progress.

    Examples
    --------
    >>> cost = IterationCostModel(prefill_base_us=1000.0, us_per_prefill_token=10.0, us_per_pair=0.0,
    ...     us_per_prefill_request=0.0, decode_base_us=1000.0, us_per_decode=50.0, us_per_kv_token=0.0)
    >>> s = EngineSnapshot.from_arrays(decode_deadline_s=[0.010, 0.200], decode_context_tokens=[10, 10],
    ...                                prefill_remaining_tokens=[5000], prefill_deadline_s=[1.0])
    >>> plan = fairbatching_plan(s, cost, tpot_slo_s=0.05)
    >>> plan.budget_us, plan.decode_run.tolist(), plan.decode_skipped.tolist()
    (10000.0, [0], [1])
    >>> plan.prefill_chunk_tokens.tolist(), plan.predicted_us
    ([895], 10000.0)
    """
    tpot_us = check_number("tpot_slo_s", tpot_slo_s, strict_min=True) * 1e6
    max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    max_requests = check_int("max_requests", max_requests, minimum=1)
    max_skips = check_int("max_consecutive_skips", max_consecutive_skips, minimum=0)
    margin = check_number("urgency_margin", urgency_margin)
    min_chunk = check_int("min_chunk_tokens", min_chunk_tokens, minimum=1)
    floor_fraction = check_number("late_floor_fraction", late_floor_fraction)
    ep = snapshot.ep
    d = snapshot.decode_deadline_s.size
    slack_us = (snapshot.decode_deadline_s - snapshot.now_s) * 1e6
    decode_cost = cost.decode_us(snapshot.decode_context_tokens)

    mandatory = snapshot.decode_skips >= max_skips
    if d:
        mandatory[int(np.argmin(slack_us))] = True
    rank_time = np.zeros(ep)
    mand_idx = np.flatnonzero(mandatory).astype(_I64)
    np.add.at(rank_time, snapshot.decode_rank[mand_idx], decode_cost[mand_idx])
    base = cost.base_us(has_prefill=False, has_decode=d > 0)
    t_mand = base + float(rank_time.max()) if d else 0.0

    savable = slack_us >= t_mand
    if not d:
        budget = math.inf
    elif savable.any():
        budget = float(slack_us[savable].min())
    else:
        budget = max(t_mand, floor_fraction * tpot_us)
    budget = max(budget, t_mand)

    request_room = np.full(ep, max_requests, dtype=_I64)
    np.subtract.at(request_room, snapshot.decode_rank[mand_idx], 1)
    rank_room = budget - base - rank_time
    free = np.flatnonzero(~mandatory).astype(_I64)
    urgent = free[slack_us[free] < budget + margin * tpot_us]
    run_urgent = _take_decodes(urgent, slack_us, snapshot, decode_cost, rank_room, request_room)

    # entering prefill may raise the fixed cost of the iteration to the prefill base
    extra_base = cost.base_us(has_prefill=True, has_decode=d > 0) - base
    order = np.argsort(snapshot.prefill_deadline_s, kind="stable").astype(_I64)
    taken = np.concatenate([mand_idx, run_urgent])
    token_room = np.maximum(max_tokens - np.bincount(snapshot.decode_rank[taken], minlength=ep), 0)
    prefill_room = rank_room - extra_base
    if extra_base > 0.0 and prefill_room.min() < 0.0:
        # the higher base would push an already full rank past the budget
        prefill_room = np.zeros(ep)
    # the adaptive batch capacity in tokens: what the budget leaves the least loaded rank
    capacity = max_tokens - token_room + np.minimum(token_room, [
        cost.chunk_tokens_within(float(room), done_tokens=0, remaining_tokens=max_tokens)
        for room in prefill_room])
    index, chunks = _prefill_under_budget(snapshot, cost, order, rank_room=prefill_room,
                                          token_room=token_room, request_room=request_room,
                                          min_chunk=min_chunk, progress=d == 0)
    if chunks.sum() > 0:
        rank_room = rank_room - extra_base
        np.subtract.at(rank_room, snapshot.prefill_rank[index],
                       cost.prefill_chunk_us(chunks, snapshot.prefill_done_tokens[index]))
    rest = np.setdiff1d(free, run_urgent, assume_unique=True)
    run_rest = _take_decodes(rest, slack_us, snapshot, decode_cost, rank_room, request_room)

    run = np.sort(np.concatenate([mand_idx, run_urgent, run_rest]))
    skipped = np.setdiff1d(np.arange(d, dtype=_I64), run, assume_unique=True)
    forced = int(np.count_nonzero(snapshot.decode_skips[mand_idx] >= max_skips))
    plan = IterationPlan(decode_run=run, decode_skipped=skipped, prefill_index=index,
                         prefill_chunk_tokens=chunks, predicted_us=0.0, budget_us=budget,
                         token_budget=int(capacity.max()), forced_decodes=forced)
    return _with_prediction(plan, snapshot, cost)


def _prefill_under_budget(snapshot: EngineSnapshot, cost: IterationCostModel, order: np.ndarray, *,
                          rank_room: np.ndarray, token_room: np.ndarray, request_room: np.ndarray,
                          min_chunk: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    index, chunks = _fill_prefill(snapshot, cost, order, rank_room=rank_room.copy(),
                                  token_room=token_room.copy(), request_room=request_room.copy(),
                                  new_room=np.full(snapshot.ep, order.size, dtype=_I64),
                                  time_limited=True, min_chunk_tokens=min_chunk)
    if index.size or not progress or order.size == 0:
        return index, chunks
    # progress guarantee on an engine with no decodes: the most urgent prefill gets a chunk
    # of min_chunk tokens even if the time budget (unlimited here) or the cap would refuse it
    for i in order.tolist():
        j = int(snapshot.prefill_rank[i])
        if int(snapshot.prefill_kv_tokens[i]) <= int(snapshot.kv_free_tokens[j]):
            n = min(int(snapshot.prefill_remaining_tokens[i]), max(min_chunk, int(token_room[j])))
            return np.asarray([i], dtype=_I64), np.asarray([n], dtype=_I64)
    return index, chunks


def load_estimate_us(snapshot: EngineSnapshot, cost: IterationCostModel, *, tpot_slo_s: float) -> float:
    """Scalar load of an engine for a cluster router: predicted time to drain its prefill queue
    plus the decode pressure.

    ``drain = max_j sum_i prefill_time_i`` over the prefills pinned to rank ``j`` (lock-step:
    the busiest rank sets the pace); decodes take a share ``s = min(0.9, t_dec / (y * tpot_slo))``
    of every iteration, where ``t_dec`` is the decode-only iteration time and ``y`` the tokens
    it yields per decode (:attr:`IterationCostModel.decode_tokens`), so the queue drains in
    ``drain / (1 - s)``; the estimate adds ``t_dec`` (one decode iteration must run first).

    Examples
    --------
    >>> cost = IterationCostModel(prefill_base_us=0.0, us_per_prefill_token=10.0, us_per_pair=0.0,
    ...     us_per_prefill_request=0.0, decode_base_us=1000.0, us_per_decode=0.0, us_per_kv_token=0.0)
    >>> s = EngineSnapshot.from_arrays(decode_deadline_s=[1.0], decode_context_tokens=[10],
    ...                                prefill_remaining_tokens=[100])
    >>> load_estimate_us(s, cost, tpot_slo_s=0.004)
    2333.33...
    """
    tpot_us = check_number("tpot_slo_s", tpot_slo_s, strict_min=True) * 1e6
    ep = snapshot.ep
    drain = np.zeros(ep)
    if snapshot.prefill_remaining_tokens.size:
        np.add.at(drain, snapshot.prefill_rank,
                  cost.prefill_chunk_us(snapshot.prefill_remaining_tokens, snapshot.prefill_done_tokens))
    dec = np.zeros(ep)
    if snapshot.decode_rank.size:
        np.add.at(dec, snapshot.decode_rank, cost.decode_us(snapshot.decode_context_tokens))
        t_dec = cost.decode_base_us + float(dec.max())
    else:
        t_dec = 0.0
    share = min(0.9, t_dec / (cost.decode_tokens * tpot_us))
    return float(drain.max()) / (1.0 - share) + t_dec


@dataclass(frozen=True)
class SarathiPolicy:
    """Sarathi stall-free batching with a fixed per-rank token budget (see :func:`sarathi_plan`)."""

    token_budget: int = 512
    max_requests: int = 128
    name: str = field(default="sarathi", init=False)

    def plan(self, snapshot: EngineSnapshot, cost: IterationCostModel) -> IterationPlan:
        """Form the next iteration."""
        return sarathi_plan(snapshot, cost, token_budget=self.token_budget, max_requests=self.max_requests)


@dataclass(frozen=True)
class FairBatchingPolicy:
    """FairBatching with its parameters (see :func:`fairbatching_plan`)."""

    tpot_slo_s: float = 0.1
    max_tokens: int = 8192
    max_requests: int = 256
    max_consecutive_skips: int = 4
    urgency_margin: float = 1.0
    min_chunk_tokens: int = 32
    late_floor_fraction: float = 1.0
    name: str = field(default="fairbatching", init=False)

    def plan(self, snapshot: EngineSnapshot, cost: IterationCostModel) -> IterationPlan:
        """Form the next iteration."""
        return fairbatching_plan(
            snapshot, cost, tpot_slo_s=self.tpot_slo_s, max_tokens=self.max_tokens,
            max_requests=self.max_requests, max_consecutive_skips=self.max_consecutive_skips,
            urgency_margin=self.urgency_margin, min_chunk_tokens=self.min_chunk_tokens,
            late_floor_fraction=self.late_floor_fraction,
        )


ITERATION_POLICIES: dict[str, type] = {"default": SarathiPolicy, "sarathi": SarathiPolicy,
                                      "fairbatching": FairBatchingPolicy}


def make_iteration_policy(name: str, *, tpot_slo_s: float = 0.1, token_budget: int | None = None,
                          **options: Any) -> SarathiPolicy | FairBatchingPolicy:
    """A policy by name; ``token_budget`` is Sarathi's budget or FairBatching's per-rank cap.

    ``"default"`` is Sarathi; ``tpot_slo_s`` is FairBatching's target (Sarathi has none).

    Raises
    ------
    InvalidInputError
        An unknown name, or an option the policy does not have.

    Examples
    --------
    >>> make_iteration_policy("sarathi", token_budget=2048).token_budget
    2048
    >>> make_iteration_policy("fairbatching", tpot_slo_s=0.05).tpot_slo_s
    0.05
    """
    if name not in ITERATION_POLICIES:
        raise InvalidInputError("batching", name, f"one of {', '.join(ITERATION_POLICIES)} in colocated mode")
    policy = ITERATION_POLICIES[name]
    valid = [f.name for f in fields(policy) if f.name != "name"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InvalidInputError(f"{name} option", unknown[0], f"one of {', '.join(valid)}")
    if policy is SarathiPolicy:
        if token_budget is not None:
            options["token_budget"] = token_budget
        return SarathiPolicy(**options)
    if token_budget is not None:
        options["max_tokens"] = token_budget
    return FairBatchingPolicy(tpot_slo_s=tpot_slo_s, **options)
