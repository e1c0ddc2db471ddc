"""The planning API on the simulator: highest rate at an SLO, fewest instances at a rate."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sbsopt._validate import check_int, check_number
from sbsopt.errors import InvalidInputError
from sbsopt.plan.backends import Runner
from sbsopt.plan.cost import DEFAULT_GPU_HOUR_PRICE, PlanCost, plan_cost
from sbsopt.plan.runs import SLO, Policy, run_gpus, run_one
from sbsopt.plan.search import (
    MaxRateResult,
    MinInstancesResult,
    search_max_rate,
    search_min_instances,
)

if TYPE_CHECKING:
    from sbsopt.sim.config import SchedulerConfig

__all__ = ["BURST_SLO_MULTIPLE", "CapacityPlan", "InstancePlan", "burst_reason", "max_rate", "min_instances",
           "step_params"]

#: A search step is a steady state only when its arrivals span at least this many TTFT SLOs:
#: a shorter burst drains within the SLO however far above saturation its rate is.
BURST_SLO_MULTIPLE = 2.0


def burst_reason(requests: int, rate_req_s: float, duration_s: float, ttft_slo_ms: float) -> str | None:
    """Why a run of ``rate_req_s`` over ``duration_s`` is a burst, or ``None`` when it is steady.

    A step simulates ``min(requests, rate * duration_s + 1)`` requests (:func:`run_one`); their
    arrivals must span ``BURST_SLO_MULTIPLE`` TTFT SLOs.

    Examples
    --------
    >>> burst_reason(2000, 1000.0, 10.0, 4000.0)
    '2000 requests at 1000 req/s arrive within 2 s, under 2x the TTFT SLO (8 s)'
    >>> burst_reason(20000, 1000.0, 10.0, 4000.0) is None
    True
    """
    count = min(requests, math.ceil(rate_req_s * duration_s) + 1)
    span = (count - 1) / rate_req_s
    need = BURST_SLO_MULTIPLE * ttft_slo_ms / 1000.0
    if span >= need:
        return None
    return (f"{count} requests at {rate_req_s:.4g} req/s arrive within {span:.3g} s, under "
            f"{BURST_SLO_MULTIPLE:g}x the TTFT SLO ({need:.3g} s)")


@dataclass(frozen=True)
class CapacityPlan:
    """Answer of :func:`max_rate`: the search result plus the cost of the confirmed plan.

    ``bounded`` is ``False`` when the search found no failing rate below the saturation
    throughput (the answer is then that throughput: ``capped``), or when the confirming run
    was a burst rather than a steady state (``burst`` says why).
    """

    search: MaxRateResult
    cost: PlanCost | None
    gpus: int
    slo: SLO
    policy: Policy
    saturation_req_s: float = math.inf
    capacity_method: str | None = None
    capped: bool = False
    burst: str | None = None

    @property
    def bounded(self) -> bool:
        """A failing rate was found within the tolerance, below saturation, in a steady run."""
        return self.search.bounded and not self.capped and self.burst is None

    @property
    def message(self) -> str:
        s = self.search
        if not s.feasible:
            return s.message
        if self.burst is not None:
            return (f"unbounded: the confirming run was a burst, not a steady state ({self.burst}); "
                    "simulate more requests or a longer duration")
        if self.capped:
            return (f"unbounded: the SLO holds up to the cluster's saturation throughput "
                    f"{self.saturation_req_s:.4g} req/s ({self.capacity_method}); the answer is capped there")
        return s.message

    def as_dict(self) -> dict:
        """JSON-able answer (``max_rate_req_s``, ``tolerance_req_s``, ``confirm``, ``gpus`` ...)."""
        s = self.search
        return {"feasible": s.feasible, "bounded": self.bounded, "max_rate_req_s": s.rate_req_s,
                "fail_rate_req_s": s.fail_rate_req_s, "tolerance_req_s": s.tolerance_req_s,
                "saturation_req_s": self.saturation_req_s, "capacity_method": self.capacity_method,
                "capped": self.capped, "steady": self.burst is None, "burst": self.burst,
                "confirm": s.confirm, "fail": s.fail, "evaluations": s.evaluations, "message": self.message,
                "gpus": self.gpus, **({} if self.cost is None else _cost_fields(self.cost)),
                "slo": dataclasses.asdict(self.slo), "policy": self.policy.as_params()}


@dataclass(frozen=True)
class InstancePlan:
    """Answer of :func:`min_instances`."""

    search: MinInstancesResult
    cost: PlanCost | None
    rate_req_s: float
    slo: SLO
    policy: Policy
    burst: str | None = None

    def as_dict(self) -> dict:
        """JSON-able answer (``prefill_instances``, ``decode_instances``, ``gpus``, ``cost_per_million_tokens``).

        ``steady`` is ``False`` (``burst`` says why) when each point simulated a burst rather than
        a steady state: a burst drains within the SLO on too few instances.
        """
        s = self.search
        p, d = s.prefill_instances, s.decode_instances
        message = s.message
        if self.policy.mode == "colocated":
            # the search ran on engines only (its decode axis is a dummy of size 1)
            d = None if d is None else 0
            message = (f"{p} colocated engines ({s.evaluations} simulations)" if s.feasible else
                       "infeasible: the SLO fails even with the most colocated engines allowed "
                       "(max_prefill)")
        if self.burst is not None and s.feasible:
            message = f"not a steady answer: each point simulated a burst ({self.burst}); {message}"
        return {"feasible": s.feasible, "steady": self.burst is None, "burst": self.burst,
                "rate_req_s": self.rate_req_s, "prefill_instances": p,
                "decode_instances": d, "pd_ratio": None if p is None or not d else p / d,
                "gpus": None if self.cost is None else self.cost.gpus,
                "cost_per_million_tokens": None if self.cost is None else self.cost.cost_per_million_tokens,
                **({} if self.cost is None else _cost_fields(self.cost)),
                "metrics": s.metrics, "frontier": [list(x) for x in s.frontier],
                "evaluations": s.evaluations, "message": message,
                "slo": dataclasses.asdict(self.slo), "policy": self.policy.as_params()}


@contextlib.contextmanager
def _runner(runner: Runner | None, backend, workers, address, progress):
    if runner is not None:
        yield runner
        return
    with Runner(backend=backend, workers=workers, address=address, progress=progress) as own:
        yield own


def _cost_fields(cost: PlanCost) -> dict:
    return {k: v for k, v in cost.as_dict().items() if k != "gpus"}


def _cost_of(metrics: dict | None, price: float) -> PlanCost | None:
    """The plan's cost at steady state: the tokens served over the arrival span.

    A plan that meets its SLO keeps up with the arrivals; the drain after the last arrival is an
    artefact of simulating a finite window (its length depends on the window, not the plan), so it
    counts neither as serving time nor as idle GPU time.
    """
    if metrics is None or not metrics.get("span_s", 0) > 0:
        return None
    tokens = metrics["tokens_per_s"] * metrics["span_s"]
    arrivals_s = metrics.get("arrival_span_s", float("nan"))
    duration_s = arrivals_s if arrivals_s > 0 else metrics["span_s"]
    return plan_cost(gpus=metrics["gpus"], tokens=tokens, duration_s=duration_s, gpu_hour_price=price)


def _base(workload, cluster, policy: Policy, slo: SLO, seed: int, duration_s: float,
          scheduler: SchedulerConfig | None = None) -> dict:
    from sbsopt.sim import ClusterConfig
    from sbsopt.workload import load_trace

    if isinstance(workload, str):
        workload = load_trace(workload)
    cluster = cluster or ClusterConfig()
    # Colocated, as in sbsopt.sim.simulate: the cluster's prefill instances are the engines.
    engines = {"instances": cluster.prefill_instances, "ep": cluster.prefill_ep} if policy.mode == "colocated" else {}
    # only a given scheduler: colocated runs refuse one
    routing = {} if scheduler is None else dataclasses.asdict(scheduler)
    return {"workload": workload, **dataclasses.asdict(cluster), **engines, **policy.as_params(), **routing, "seed": seed,
            "limit": None, "duration_s": check_number("duration_s", duration_s, strict_min=True),
            "ttft_slo_ms": slo.ttft_ms, "tpot_slo_ms": slo.tpot_ms}


def step_params(trace, cluster, policy: Policy | str | dict | None, slo: SLO | None, rate: float, *,
                scheduler: SchedulerConfig | None = None, duration_s: float = 10.0, seed: int = 0) -> dict:
    """The :func:`~sbsopt.plan.run_one` parameters of :func:`max_rate`'s step at ``rate``.

    To simulate another policy at a rate a search tried, on the same window and seed.

    Examples
    --------
    >>> p = step_params("azure-conv", None, "least_tokens", None, 50.0, duration_s=4)
    >>> p["router"], p["rate"], p["duration_s"], p["ttft_slo_ms"]
    ('least_tokens', 50.0, 4.0, 2000.0)
    """
    rate = check_number("rate", rate, strict_min=True)
    return {**_base(trace, cluster, _policy(policy), slo or SLO(), seed, duration_s, scheduler), "rate": rate}


def _policy(policy) -> Policy:
    if policy is None:
        return Policy()
    if isinstance(policy, str):
        return Policy(router=policy)
    if isinstance(policy, dict):
        return Policy(**policy)
    return policy


def max_rate(
    trace,
    cluster=None,
    policy: Policy | str | dict | None = None,
    slo: SLO | None = None,
    *,
    scheduler: SchedulerConfig | None = None,
    tolerance_req_s: float | None = None,
    rate_min: float | None = None,
    rate_max: float | None = None,
    duration_s: float = 10.0,
    seed: int = 0,
    gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    runner: Runner | None = None,
) -> CapacityPlan:
    """Highest request rate at which the SLO holds (arrival times of ``trace`` rescaled).

    Parameters
    ----------
    trace : Workload or str
        Requests (a :class:`~sbsopt.workload.Workload` or a ``load_trace`` name).
        Each search step simulates a ``duration_s`` window of it at the rate tried: its first
        ``rate * duration_s`` requests, arrival times rescaled (a steady load, not one burst).
    cluster : ClusterConfig, optional
        With ``policy.mode == "colocated"``: ``prefill_instances`` engines of ``prefill_ep``
        ranks serving both phases (as :func:`sbsopt.sim.simulate` reads it).
    policy : Policy, str (router) or dict
    slo : SLO, optional
        Default ``SLO()``: TTFT 2 s, TPOT 100 ms, 90 % attainment.
    scheduler : SchedulerConfig, optional
        Scheduler parameters of every step (disaggregated mode), e.g. production-shaped
        immediate routing ``SchedulerConfig(router_replicas=3, dp_pinning="bootstrap_room")``;
        default: the simulator's.
    tolerance_req_s : float, optional
        Width of the final bracket; default 2 % of the cluster's saturation throughput on the
        trace's length mix (:func:`sbsopt.sim.saturation_capacity`).
    rate_min, rate_max : float, optional
        Search range; default 1/50 of that throughput and the throughput itself. A larger
        ``rate_max`` is lowered to it: no answer exceeds the saturation throughput.
    backend, workers, address, progress
        Execution (see :func:`sbsopt.plan.run_tasks`); each round simulates ``workers``
        rates in parallel.
    runner : Runner, optional
        An open :class:`~sbsopt.plan.Runner` to reuse (then the four options above are ignored).

    duration_s : float
        Simulated arrival window per step (default 10 s; the trace must hold
        ``rate_max * duration_s`` requests, otherwise the window shrinks).

    Returns
    -------
    CapacityPlan
        ``search.rate_req_s`` passed in simulation and ``search.fail_rate_req_s`` (within the
        tolerance above it) failed; ``search.feasible`` is ``False`` when ``rate_min`` fails.
        ``bounded`` is ``False`` (with ``capped`` or ``burst`` saying why) when the SLO still
        holds at the saturation throughput, or when the confirming run's arrivals span fewer
        than :data:`BURST_SLO_MULTIPLE` TTFT SLOs (a burst drains within the SLO at any rate).

    Notes
    -----
    The search reuses work by memoising every simulated rate and sharing one workload and one
    cost model per worker; a simulation itself cannot be resumed at another rate, because a new
    rate rescales every arrival time.
    """
    from sbsopt.sim import saturation_capacity

    policy, slo = _policy(policy), slo or SLO()
    base = _base(trace, cluster, policy, slo, seed, duration_s, scheduler)
    workload = base["workload"]
    if len(workload) < 2:
        raise InvalidInputError("trace", len(workload), "at least two requests")
    from sbsopt.sim import ClusterConfig

    cluster = cluster or ClusterConfig()
    saturation = saturation_capacity(workload, cluster, mode=policy.mode)
    capacity_rate = saturation.req_s
    tol = check_number("tolerance_req_s", tolerance_req_s if tolerance_req_s is not None
                       else 0.02 * capacity_rate, strict_min=True)
    lo = check_number("rate_min", rate_min if rate_min is not None else capacity_rate / 50, strict_min=True)
    hi = check_number("rate_max", rate_max if rate_max is not None else capacity_rate, minimum=lo)
    # a rate above saturation only measures how fast a finite window drains
    lo, hi = min(lo, capacity_rate), min(hi, capacity_rate)
    with _runner(runner, backend, workers, address, progress) as runner:

        def evaluate(rates: list[float]) -> list[tuple[bool, dict]]:
            rows = runner.map(run_one, [{**base, "rate": r} for r in rates], description="max_rate")
            return [(slo.meets(row), row) for row in rows]

        result = search_max_rate(evaluate, rate_min=lo, rate_max=hi, tolerance_req_s=tol,
                                 initial=min(max(capacity_rate, lo), hi), parallel=runner.parallel)
    capped = result.feasible and not result.bounded and result.rate_req_s is not None \
        and result.rate_req_s >= capacity_rate * (1 - 1e-9)
    burst = None if result.rate_req_s is None else \
        burst_reason(len(workload), result.rate_req_s, base["duration_s"], slo.ttft_ms)
    return CapacityPlan(result, _cost_of(result.confirm, gpu_hour_price), run_gpus(base), slo, policy,
                        saturation_req_s=capacity_rate, capacity_method=saturation.method, capped=capped,
                        burst=burst)


def min_instances(
    trace,
    rate: float,
    slo: SLO | None = None,
    policy: Policy | str | dict | None = None,
    *,
    cluster=None,
    scheduler: SchedulerConfig | None = None,
    max_prefill: int = 8,
    max_decode: int = 4,
    duration_s: float = 10.0,
    seed: int = 0,
    gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    runner: Runner | None = None,
) -> InstancePlan:
    """Fewest prefill and decode instances (and the P:D ratio) that meet the SLO at ``rate``.

    Walks the monotone frontier of the ``max_prefill x max_decode`` grid (see
    :func:`sbsopt.plan.search_min_instances`): about ``max_prefill + max_decode`` simulations,
    ``workers`` decode counts at a time.
    The other cluster fields come from ``cluster`` (default ``ClusterConfig()``), the scheduler
    parameters from ``scheduler`` (as in :func:`max_rate`); the answer
    minimises GPUs. An infeasible grid gives ``search.feasible = False``, not an error.
    In colocated mode the search is over engines only (``max_decode`` is ignored; the answer's
    ``prefill_instances`` is the engine count and ``decode_instances`` is 0).
    Each point simulates a ``duration_s`` window of ``trace`` at ``rate`` (see :func:`max_rate`).
    """
    rate = check_number("rate", rate, strict_min=True)
    check_int("max_prefill", max_prefill, minimum=1)
    check_int("max_decode", max_decode, minimum=1)
    policy, slo = _policy(policy), slo or SLO()
    base = {**_base(trace, cluster, policy, slo, seed, duration_s, scheduler), "rate": rate}
    colocated = policy.mode == "colocated"
    pep, dep = (base["ep"], 0) if colocated else (base["prefill_ep"], base["decode_ep"])

    def task(p: int, d: int) -> dict:
        return {**base, "instances": p} if colocated else {**base, "prefill_instances": p, "decode_instances": d}

    with _runner(runner, backend, workers, address, progress) as runner:

        def evaluate(points: list[tuple[int, int]]) -> list[tuple[bool, dict]]:
            rows = runner.map(run_one, [task(p, d) for p, d in points], description="min_instances")
            return [(slo.meets(row), row) for row in rows]

        result = search_min_instances(evaluate, max_prefill=max_prefill, max_decode=1 if colocated else max_decode,
                                      gpus=lambda p, d: p * pep + d * dep, parallel=runner.parallel)
    burst = burst_reason(len(base["workload"]), rate, base["duration_s"], slo.ttft_ms)
    return InstancePlan(result, _cost_of(result.metrics, gpu_hour_price), rate, slo, policy, burst)
