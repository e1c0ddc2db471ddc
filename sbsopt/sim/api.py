"""The public entry point :func:`simulate` and load scaling against the cost model."""

from __future__ import annotations

import numpy as np

from sbsopt._validate import check_number
from sbsopt.errors import InvalidInputError
from sbsopt.sim.config import ClusterConfig, SchedulerConfig
from sbsopt.sim.metrics import SimResult

__all__ = ["simulate", "prefill_capacity_tok_s", "offered_load", "scale_to_load"]

_MODES = ("disaggregated", "colocated")


def _cost_models(cluster: ClusterConfig):
    from sbsopt.costmodel import load_cost_model

    prefill = load_cost_model(cluster.model, cluster.hardware, ep=cluster.prefill_ep)
    decode = load_cost_model(cluster.model, cluster.hardware, ep=cluster.decode_ep)
    return prefill, decode


def prefill_capacity_tok_s(workload, cluster: ClusterConfig, *, prefill_model=None) -> float:
    """Prefill tokens/s the cluster sustains on this workload's prompt mix.

    One reference forward has every rank full (``chunk_tokens``) of prompts drawn from the
    workload: attention pairs per rank ``chunk_tokens * E[n^2] / (2 E[n])`` (token-weighted
    mean half-length) and ``chunk_tokens / E[n]`` requests. Capacity =
    ``instances * ep * chunk_tokens / step``.
    """
    if prefill_model is None:
        prefill_model = _cost_models(cluster)[0]
    n = workload.input_tokens.astype(np.float64)
    ep, chunk = cluster.prefill_ep, cluster.chunk_tokens
    half = float((n**2).mean() / (2.0 * n.mean())) if len(n) else 0.0
    new = np.full(ep, float(chunk))
    pairs = new * half
    reqs = np.full(ep, max(chunk / n.mean(), 1.0) if len(n) else 1.0)
    step_s = float(prefill_model.prefill_step_us(new, pairs, reqs)) * 1e-6
    return cluster.prefill_instances * ep * chunk / step_s


def offered_load(workload, cluster: ClusterConfig, *, prefill_model=None) -> float:
    """Offered prefill tokens/s of the workload over the cluster's prefill capacity."""
    span = float(workload.arrival_s[-1]) if len(workload) > 1 else 0.0
    if span <= 0:
        return float("inf")
    offered = float(workload.input_tokens.sum()) / span
    return offered / prefill_capacity_tok_s(workload, cluster, prefill_model=prefill_model)


def scale_to_load(workload, cluster: ClusterConfig, load: float, *, prefill_model=None):
    """Rescale arrival times so that :func:`offered_load` equals ``load``.

    Examples
    --------
    >>> from sbsopt.workload import load_trace
    >>> wl = load_trace("azure-conv", limit=50)
    >>> c = ClusterConfig(prefill_instances=1)
    >>> round(offered_load(scale_to_load(wl, c, 0.5), c), 3)
    0.5
    """
    load = check_number("load", load, strict_min=True)
    current = offered_load(workload, cluster, prefill_model=prefill_model)
    if not np.isfinite(current):
        raise InvalidInputError("workload", workload.name, "at least two requests with distinct arrival times")
    return workload.scaled(load / current)


def simulate(
    workload,
    *,
    cluster: ClusterConfig | None = None,
    scheduler: SchedulerConfig | None = None,
    router: str = "sbs",
    interval: str = "engine_paced",
    solver: str = "greedy",
    batching="default",
    mode: str = "disaggregated",
    seed=0,
    horizon_s: float | None = None,
    load: float | None = None,
    rate: float | None = None,
    limit: int | None = None,
    cost_models=None,
    record_timeline: bool = False,
    faults=(),
    slow_ranks=(),
) -> SimResult:
    """Simulate a workload on a P/D-disaggregated DP+EP cluster.

    Parameters
    ----------
    workload : Workload
        Requests (see :func:`sbsopt.workload.load_trace`).
    cluster, scheduler : ClusterConfig, SchedulerConfig
        Cluster shape and scheduler parameters (defaults: DeepSeek's deployment, our SBS
        constants).
    router : {"sbs", "round_robin", "least_requests", "least_tokens", "vllm_score", "shortest_queue"}
        Cluster router, used for both prefill and decode.
    interval : {"engine_paced", "adaptive", "fixed", "fixed:MS"}
        SBS window interval policy (ignored by immediate routers).
    solver : {"greedy", "cpsat", "auto"}
        Window solver of :func:`sbsopt.window.solve`.
    batching : str or BatchingPolicy
        Engine batching policy (``"default"`` = Sarathi-like chunked prefill + continuous batching).
    mode : {"disaggregated", "colocated"}
        ``colocated`` runs ``sbsopt.sim.colocated.simulate_colocated`` when installed.
    seed : int
        Seed of the window solvers; the simulation itself has no randomness (arrivals come
        from the workload), so equal inputs give equal results.
    horizon_s : float, optional
        Stop at this simulated time; unfinished requests are counted in flight.
    load, rate, limit : optional
        ``limit`` keeps the first N requests; then ``load`` rescales arrivals to that fraction
        of the prefill capacity (:func:`scale_to_load`) or ``rate`` to that many requests/s.
    cost_models : (prefill, decode), optional
        Cost-model objects (default: ``load_cost_model`` for the cluster's cards and EP sizes).
    record_timeline : bool
        Keep per-forward per-rank token counts in ``SimResult.timeline``.
    faults : sequence of FaultSpec or str
        Instance failures (``"decode:2@600s+120s"``, see :mod:`sbsopt.sim.faults`);
        disaggregated mode only.
    slow_ranks : sequence of SlowRank or str
        Straggler DP ranks (``"prefill:0:3:2.0"``); disaggregated mode only.

    Returns
    -------
    SimResult

    Raises
    ------
    InvalidInputError
        Unknown router/interval/mode, bad load/rate.
    SimulationError
        An invariant was violated (completed + rejected + in flight != requests).
    """
    cluster = cluster or ClusterConfig()
    scheduler = scheduler or SchedulerConfig()
    if mode not in _MODES:
        raise InvalidInputError("mode", mode, f"one of {', '.join(_MODES)}")
    if load is not None and rate is not None:
        raise InvalidInputError("load", load, "either load or rate, not both")
    prefill_model, decode_model = cost_models if cost_models is not None else _cost_models(cluster)
    if limit is not None:
        workload = workload.head(limit)
    if load is not None:
        workload = scale_to_load(workload, cluster, load, prefill_model=prefill_model)
    elif rate is not None:
        workload = workload.with_rate(rate)
    if mode == "colocated":
        if faults or slow_ranks:
            raise InvalidInputError("faults", list(faults) + list(slow_ranks), "none in colocated mode")
        try:
            from sbsopt.sim.colocated import simulate_colocated
        except ImportError:
            raise InvalidInputError("mode", mode, "disaggregated (sbsopt.sim.colocated is not installed)") from None
        return simulate_colocated(workload, cluster=cluster, scheduler=scheduler, router=router,
                                  interval=interval, solver=solver, batching=batching, seed=seed,
                                  horizon_s=horizon_s, cost_models=(prefill_model, decode_model))
    from sbsopt.sim.simulator import run_simulation

    return run_simulation(
        workload, cluster=cluster, scheduler=scheduler, router=router, interval=interval,
        solver=solver, batching=batching, seed=seed, horizon_s=horizon_s,
        prefill_model=prefill_model, decode_model=decode_model, record_timeline=record_timeline,
        faults=faults, slow_ranks=slow_ranks,
    )
