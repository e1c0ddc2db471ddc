"""Multi-tier worker state of the sidecar: engine reports plus the sidecar's virtual updates.

Tier 1 is each worker's last load report (``GET /v1/load`` pulled every
``report_period_s``, or pushed to ``POST /v1/report``): authoritative but stale. Tier 2 is the
sidecar's own virtual update after every assignment (the request's tokens on its unit), so
that the next decision sees it before any report can. They are reconciled when a fresh report
arrives. An engine that counts the requests each rank has received (``received``) tells the
sidecar exactly how many of its assignments the report includes: that many of the oldest
virtual updates of the rank are dropped. Without the counter, virtual updates older than the
report's request time minus ``settle_s`` are dropped (the report is assumed to count them),
younger ones are kept on top of it.

A worker whose reports carry ``forward_ends_in_ms`` runs non-preemptive lock-step forwards (a
disaggregated prefill instance): it is *paced*. The sidecar then also predicts when its running
forward ends, from the report and from its own releases (a window sent to it starts a forward
that lasts the cost model's step time). Such a prediction holds until a report shows that the
engine has started a forward since the release (``forwards``, its count of forwards started),
or, without the counter, by the ``settle_s`` rule. A report that shows a new forward (the
counter moved) also gives its length, short by at most the report's age: what is left of it,
``forward_ends_in_ms``. It caps the lead of a paced release
(:class:`~sbsopt.serve.landing.LandingTime`).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Annotated

import msgspec
import numpy as np

from sbsopt.errors import InvalidInputError
from sbsopt.serve.config import ServeConfig
from sbsopt.serve.landing import LandingTime
from sbsopt.sim.router import RouterView, pick_unit

__all__ = ["RankLoad", "LoadReport", "ClusterState", "parse_report"]

_Count = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
#: a virtual update (or a window's landing) this old is given up even if no counter has seen it:
#: its request never reached the engine (its caller vanished between the answer and the forward)
LOST_S = 10.0


class RankLoad(msgspec.Struct, frozen=True):
    """One DP rank of a load report."""

    waiting: _Count = 0
    running: _Count = 0
    queued_tokens: _Count = 0
    kv_blocks_used: _Count = 0
    kv_blocks_free: _Count | None = None
    #: new tokens of this rank in the running forward (counted in ``queued_tokens`` too)
    forward_tokens: _Count = 0
    #: requests this rank has received since the engine started (a counter)
    received: _Count | None = None


class LoadReport(msgspec.Struct, frozen=True):
    """A worker's load report (``GET /v1/load`` of the mock engine, or pushed to ``/v1/report``).

    ``forward_ends_in_ms`` (real milliseconds until the running forward ends, 0 when idle) marks
    an engine with non-preemptive forwards: the sidecar paces its windows on it.
    """

    ranks: list[RankLoad]
    token_budget: Annotated[int, msgspec.Meta(ge=1)] | None = None
    worker: str | int | None = None
    forward_ends_in_ms: Annotated[float, msgspec.Meta(ge=0.0, le=3.6e6)] | None = None
    #: forwards the engine has started (the running one included), a counter
    forwards: _Count | None = None


def parse_report(obj: object, ep: int) -> LoadReport:
    """Validate a decoded JSON report for a worker of ``ep`` ranks.

    Raises
    ------
    InvalidInputError
        A field of the wrong type or range (named), or not ``ep`` ranks.

    Examples
    --------
    >>> parse_report({"ranks": [{"waiting": 1}, {}]}, 2).ranks[0].waiting
    1
    >>> parse_report({"ranks": [{}]}, 2)
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: ranks = 1: expected 2 ranks (the worker's ep)
    """
    try:
        report = msgspec.convert(obj, LoadReport)
    except msgspec.ValidationError as exc:
        from sbsopt.oracle.server import field_of

        raise InvalidInputError(field_of(str(exc)) or "report", obj, f"a load report ({exc})") from None
    if len(report.ranks) != ep:
        raise InvalidInputError("ranks", len(report.ranks), f"{ep} ranks (the worker's ep)")
    return report


class ClusterState:
    """The sidecar's picture of every unit (``u = worker * ep + rank``), two tiers.

    Parameters
    ----------
    config : ServeConfig
        Workers, ``ep``, ``settle_s``, ``down_s`` and the default token budget.

    Examples
    --------
    >>> from sbsopt.serve import ServeConfig
    >>> s = ClusterState(ServeConfig(workers=("http://a:1", "http://b:1"), ep=2))
    >>> s.add_virtual(3, 100.0, now=1.0)
    >>> s.tokens().tolist()
    [0.0, 0.0, 0.0, 100.0]
    >>> s.apply_report(1, parse_report({"ranks": [{"queued_tokens": 7}, {}]}, 2), requested_at=1.2, now=1.3)
    >>> s.tokens().tolist()  # the report (requested 0.2 s later) already counts the assignment
    [0.0, 0.0, 7.0, 0.0]
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.n_workers = len(config.workers)
        self.ep = config.ep
        size = self.n_workers * self.ep
        self.rep_tokens = np.zeros(size)
        self.rep_waiting = np.zeros(size)
        self.rep_running = np.zeros(size)
        self.rep_kv_used = np.zeros(size)
        self.rep_kv_free = np.full(size, np.inf)
        self.rep_forward = np.zeros(size)
        # paced workers: clock time their running forward ends (report), and the sidecar's own
        # predictions (time of the release, predicted end) not yet seen in a report
        self.paced = np.zeros(self.n_workers, dtype=bool)
        self.forward_end = np.full(self.n_workers, -math.inf)
        # (release time, predicted end, the worker's forward counter at the release)
        self._virtual_end: list[deque[tuple[float, float, int]]] = [deque() for _ in range(self.n_workers)]
        self.rep_forwards = np.full(self.n_workers, -1, dtype=np.int64)
        # paced workers: length of the running forward, real seconds (inf: not seen yet)
        self.forward_s = np.full(self.n_workers, math.inf)
        self.rep_received = np.full(size, -1, dtype=np.int64)
        self.token_budget = np.full(self.n_workers, config.default_token_budget, dtype=np.int64)
        self.reported_at = np.full(self.n_workers, -math.inf)
        self.down_until = np.zeros(self.n_workers)
        # per worker: (time, unit, prefill tokens, decode kv blocks) not yet seen in a report
        self._virtual: list[deque[tuple[float, int, float, float]]] = [deque() for _ in range(self.n_workers)]
        self._view = RouterView(self.n_workers, self.ep)
        self.reports = 0
        self.landing = LandingTime(config.pace_lead_s, config.pace_lead_per_request_s, history=config.pace_history,
                                   min_windows=config.pace_min_windows, quantile=config.pace_quantile)

    # ------------------------------------------------------------------ tier 1
    def apply_report(self, worker: int, report: LoadReport, *, requested_at: float, now: float) -> None:
        """Overwrite a worker's tier-1 state; drop the virtual updates the report has seen."""
        sl = slice(worker * self.ep, (worker + 1) * self.ep)
        self.rep_tokens[sl] = [r.queued_tokens for r in report.ranks]
        self.rep_waiting[sl] = [r.waiting for r in report.ranks]
        self.rep_running[sl] = [r.running for r in report.ranks]
        self.rep_kv_used[sl] = [r.kv_blocks_used for r in report.ranks]
        self.rep_kv_free[sl] = [np.inf if r.kv_blocks_free is None else r.kv_blocks_free for r in report.ranks]
        self.rep_forward[sl] = [r.forward_tokens for r in report.ranks]
        if report.token_budget is not None:
            self.token_budget[worker] = report.token_budget
        self.paced[worker] = report.forward_ends_in_ms is not None
        if report.forward_ends_in_ms is not None:
            # measured by the engine between the request and its answer: the request time errs
            # early, so a window is sent before the forward ends rather than after
            self.forward_end[worker] = requested_at + report.forward_ends_in_ms / 1000.0
        self.reported_at[worker] = now
        self.down_until[worker] = 0.0
        cutoff = requested_at - self.config.settle_s
        self._reconcile_tokens(worker, report, cutoff, now)
        ends = self._virtual_end[worker]
        if report.forwards is not None:
            started = report.forwards
            if 0 <= self.rep_forwards[worker] < started and report.forward_ends_in_ms:
                self.forward_s[worker] = report.forward_ends_in_ms / 1000.0
            kept = [e for e in ends if e[2] >= started and e[1] > now - LOST_S]
            ends.clear()
            ends.extend(kept)
            self.rep_forwards[worker] = started
        else:
            while ends and ends[0][0] <= cutoff:
                ends.popleft()
        self.reports += 1

    def _reconcile_tokens(self, worker: int, report: LoadReport, cutoff: float, now: float) -> None:
        """Drop the virtual updates of ``worker`` that ``report`` already counts."""
        sl = slice(worker * self.ep, (worker + 1) * self.ep)
        pending = self._virtual[worker]
        counters = [r.received for r in report.ranks]
        received = None if any(c is None for c in counters) else np.array(counters, dtype=np.int64)
        previous = self.rep_received[sl].copy()
        if received is not None:
            self.rep_received[sl] = received
        if received is None or (previous < 0).any():
            # no counter (or its first reading): the time rule
            while pending and pending[0][0] <= cutoff:
                pending.popleft()
            return
        arrived = np.maximum(received - previous, 0)
        base = worker * self.ep
        kept: list[tuple[float, int, float, float]] = []
        for entry in pending:
            j = entry[1] - base
            if entry[2] > 0 and arrived[j] > 0:  # a prefill assignment the engine has received
                arrived[j] -= 1
            elif entry[2] <= 0 and entry[0] <= cutoff:  # decode placements: the time rule
                pass
            elif entry[0] > now - LOST_S:  # else the request never reached the engine
                kept.append(entry)
        pending.clear()
        pending.extend(kept)

    def mark_down(self, worker: int, now: float) -> None:
        """A worker failed a report or a request: skip it for ``down_s`` (or until it reports)."""
        self.down_until[worker] = now + self.config.down_s

    def alive_workers(self, now: float) -> np.ndarray:
        """Boolean per worker: not marked down."""
        return self.down_until <= now

    def alive_units(self, now: float) -> np.ndarray:
        """Boolean per unit: its worker is not marked down."""
        return np.repeat(self.alive_workers(now), self.ep)

    # ------------------------------------------------------------------ tier 2
    def add_virtual(self, unit: int, tokens: float, *, now: float, kv_blocks: float = 0.0) -> None:
        """Record an assignment the engine has not reported yet."""
        self._virtual[unit // self.ep].append((now, unit, float(tokens), float(kv_blocks)))

    def _virtual_sum(self, column: int, *, count: bool = False) -> np.ndarray:
        out = np.zeros(self.n_workers * self.ep)
        for pending in self._virtual:
            for entry in pending:
                if count:
                    out[entry[1]] += 1.0 if entry[column] > 0 else 0.0
                else:
                    out[entry[1]] += entry[column]
        return out

    def add_virtual_forward(self, worker: int, end: float, *, now: float) -> None:
        """Record that a window sent to paced ``worker`` at ``now`` keeps it busy until ``end``."""
        self._virtual_end[worker].append((now, end, int(self.rep_forwards[worker])))

    def tokens(self) -> np.ndarray:
        """Queued prefill tokens per unit (report + virtual)."""
        return self.rep_tokens + self._virtual_sum(2)

    def window_tokens(self) -> np.ndarray:
        """Queued prefill tokens per unit that a window released now must queue behind.

        A paced worker's running forward is not counted: a window is released onto it only when
        that forward ends (:meth:`ready_workers`), so the window joins the next one.
        """
        running = np.where(np.repeat(self.paced, self.ep), self.rep_forward, 0.0)
        return np.maximum(self.tokens() - running, 0.0)

    def busy_until(self, worker: int) -> float:
        """Predicted clock time the paced ``worker``'s running or virtual forward ends."""
        ends = self._virtual_end[worker]
        return max(self.forward_end[worker], max(e[1] for e in ends) if ends else -math.inf)

    def waiting(self) -> np.ndarray:
        """Waiting requests per unit (report + virtual prefill assignments)."""
        return self.rep_waiting + self._virtual_sum(2, count=True)

    def decode_batch(self) -> np.ndarray:
        """Running + waiting requests per unit, with virtual decode assignments."""
        return self.rep_running + self.rep_waiting + self._virtual_sum(3, count=True)

    def kv_used(self) -> np.ndarray:
        """KV blocks used per unit, with virtual decode assignments."""
        return self.rep_kv_used + self._virtual_sum(3)

    # ------------------------------------------------------------------ decisions
    def pick(self, policy: str, tokens: float, *, now: float, exclude: frozenset[int] = frozenset()) -> int | None:
        """One unit under an immediate policy (:func:`sbsopt.sim.router.pick_unit`), virtually updated.

        ``None`` when no worker is alive (outside ``exclude``).
        """
        alive = self.alive_workers(now)
        for w in exclude:
            alive[w] = False
        if not alive.any():
            return None
        view = self._view
        view.tokens[:] = self.tokens()
        view.waiting[:] = self.waiting()
        view.running[:] = self.rep_running
        unit = pick_unit(view, policy, float(tokens), alive=np.repeat(alive, self.ep))
        self.add_virtual(unit, tokens, now=now)
        return unit

    def capacity_tokens(self, worker: int) -> int:
        """Window capacity of each unit of ``worker``: its token budget times ``window_forwards``."""
        return max(1, int(self.token_budget[worker] * self.config.window_forwards))

    def pace_lead_s(self, buffered: int, worker: int | None = None) -> float:
        """How long before a paced worker's forward ends a window of ``buffered`` requests is sent:
        its landing time (:attr:`landing`), at most a fraction of ``worker``'s running forward
        (:attr:`forward_s`; ``None``: no cap)."""
        forward_s = math.inf if worker is None else float(self.forward_s[worker])
        return self.landing.lead_s(buffered, forward_s=forward_s)

    def ready_workers(self, now: float, buffered: int = 1) -> list[int]:
        """Engine-paced readiness: live workers with a rank whose queued prefill is below the window
        capacity (that rank will run out of work within ``window_forwards`` iterations, so a
        window onto it is due; a full worker gets nothing until a report shows it drained).

        A paced worker is ready only when its running forward ends within :meth:`pace_lead_s`
        of a window of ``buffered`` requests (the simulator's rule: a window is released onto an instance about to start a forward, and
        requests that arrive meanwhile wait in the sidecar, not in the engine's queue)."""
        tokens = self.window_tokens().reshape(self.n_workers, self.ep)
        alive = self.alive_workers(now)
        bound = self.forward_bound(now, buffered)
        return [w for w in range(self.n_workers)
                if alive[w] and tokens[w].min() < self.capacity_tokens(w) and not bound[w]]

    def forward_bound(self, now: float, buffered: int = 1) -> np.ndarray:
        """Boolean per worker: paced, and its running forward ends later than :meth:`pace_lead_s`
        of a window of ``buffered`` requests from ``now`` (a window sent now would wait in its
        queue for that forward to end)."""
        return np.array([bool(self.paced[w]) and self.busy_until(w) > now + self.pace_lead_s(buffered, w)
                         for w in range(self.n_workers)], dtype=bool)

    def next_pace_s(self, now: float, buffered: int = 1) -> float | None:
        """Clock time the next busy paced worker becomes ready (``None``: none is busy)."""
        alive = self.alive_workers(now)
        times = [self.busy_until(w) - self.pace_lead_s(buffered, w) for w in range(self.n_workers)
                 if self.paced[w] and alive[w]]
        later = [t for t in times if t > now]
        return min(later) if later else None
