"""The public entry point :func:`simulate` and load scaling against the cost model."""

from __future__ import annotations

from typing import Any

import numpy as np

from sbsopt._validate import check_number
from sbsopt.errors import InvalidInputError
from sbsopt.sim.config import (
    DEFAULT_INTERVAL,
    DEFAULT_ROUTER,
    DEFAULT_SOLVER,
    ClusterConfig,
    SchedulerConfig,
    check_mode,
    check_router,
)
from sbsopt.sim.metrics import SimResult

__all__ = ["simulate", "prefill_capacity_tok_s", "offered_load", "scale_to_load"]

def _cost_models(cluster: ClusterConfig):
    from sbsopt.costmodel import load_cost_model

    prefill = load_cost_model(cluster.model, cluster.hardware, ep=cluster.prefill_ep)
    decode = load_cost_model(cluster.model, cluster.hardware, ep=cluster.decode_ep)
    return prefill, decode


def prefill_capacity_tok_s(workload, cluster: ClusterConfig, *, prefill_model=None, decode_model=None) -> float:
    """Prompt tokens/s the cluster sustains on this workload's length mix at saturation.

    The saturation request rate of :func:`sbsopt.sim.capacity.saturation_capacity` (a
    saturated prefill queue through the engine's own forwards, lock-step max and quadratic
    attention included; the decode side's limit too) times the mean prompt. Measured once per
    (trace lengths, cluster, cost model) and cached.
    """
    return _capacity(workload, cluster, prefill_model, decode_model).tok_s


def _capacity(workload, cluster: ClusterConfig, prefill_model=None, decode_model=None, mode="disaggregated"):
    from sbsopt.sim.capacity import saturation_capacity

    return saturation_capacity(workload, cluster, prefill_model=prefill_model, decode_model=decode_model,
                               mode=mode)


def offered_load(workload, cluster: ClusterConfig, *, prefill_model=None, decode_model=None) -> float:
    """The workload's mean arrival rate over the cluster's saturation rate on its length mix."""
    rate = workload.rate_req_s if len(workload) > 1 else float("inf")
    if not np.isfinite(rate):
        return float("inf")
    return rate / _capacity(workload, cluster, prefill_model, decode_model).req_s


def scale_to_load(workload, cluster: ClusterConfig, load: float, *, prefill_model=None, decode_model=None,
                  mode: str = "disaggregated"):
    """Rescale arrival times to ``load`` times the cluster's saturation rate on this length mix.

    ``load=1`` is the measured saturation throughput
    (:func:`sbsopt.sim.capacity.saturation_capacity`), so a long-prompt trace gets a lower
    request rate than a short-prompt one at the same load.

    Examples
    --------
    >>> from sbsopt.workload import load_trace
    >>> wl = load_trace("azure-conv", limit=50)
    >>> c = ClusterConfig(prefill_instances=1)
    >>> round(offered_load(scale_to_load(wl, c, 0.5), c), 3)
    0.5
    """
    load = check_number("load", load, strict_min=True)
    if len(workload) < 2:
        raise InvalidInputError("workload", workload.name, "at least two requests with distinct arrival times")
    capacity = _capacity(workload, cluster, prefill_model, decode_model, mode)
    return workload.with_rate(load * capacity.req_s)


def simulate(
    workload,
    *,
    cluster: ClusterConfig | None = None,
    scheduler: SchedulerConfig | None = None,
    router: str | None = None,
    interval: str | None = None,
    solver: str | None = None,
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
    token_budget: int | None = None,
    ttft_slo_ms: float | None = None,
    tpot_slo_ms: float | None = None,
) -> SimResult:
    """Simulate a workload on a P/D-disaggregated DP+EP cluster, or on colocated engines.

    Parameters
    ----------
    workload : Workload
        Requests (see :func:`sbsopt.workload.load_trace`).
    cluster, scheduler : ClusterConfig, SchedulerConfig
        Cluster shape and scheduler parameters (defaults: DeepSeek's deployment, our SBS
        constants). Colocated: ``cluster.prefill_instances`` engines of ``cluster.prefill_ep``
        ranks (:func:`sbsopt.sim.colocated.colocated_cluster`); no scheduler.
    router : str, optional
        Cluster router of the mode (:data:`sbsopt.sim.config.ROUTER_MODES`); default
        :data:`~sbsopt.sim.config.DEFAULT_ROUTER` (``sbs``; colocated ``round_robin``).
    interval : {"engine_paced", "adaptive", "fixed", "fixed:MS"}, optional
        SBS window interval policy (disaggregated; default ``engine_paced``).
    solver : {"greedy", "cpsat", "auto"}, optional
        Window solver of :func:`sbsopt.window.solve` (disaggregated; default ``greedy``).
    batching : str or a policy object
        Disaggregated: a :class:`~sbsopt.sim.chunking.PrefillChunking` (``"default"`` =
        ``"sarathi"``, chunked prefill + continuous batching). Colocated: an
        :class:`~sbsopt.sim.batching.IterationPolicy` (``"default"`` = ``"sarathi"``,
        ``"fairbatching"``).
    mode : {"disaggregated", "colocated"}
    seed : int
        Seed of the window solvers; the simulation itself has no randomness (arrivals come
        from the workload), so equal inputs give equal results.
    horizon_s : float, optional
        Stop at this simulated time; unfinished requests are counted in flight.
    load, rate, limit : optional
        ``limit`` keeps the first N requests; then ``load`` rescales arrivals to that fraction
        of the cluster's saturation rate on the workload's own length mix (:func:`scale_to_load`,
        :func:`sbsopt.sim.capacity.saturation_capacity`) or ``rate`` to that many requests/s.
    cost_models : (prefill, decode), optional
        Cost-model objects (default: ``load_cost_model`` for the cluster's cards and EP sizes).
    record_timeline : bool
        Keep per-forward per-rank token counts in ``SimResult.timeline`` (disaggregated).
    faults : sequence of FaultSpec or str
        Instance failures (``"decode:2@600s+120s"``, see :mod:`sbsopt.sim.faults`; disaggregated).
    slow_ranks : sequence of SlowRank or str
        Straggler DP ranks (``"prefill:0:3:2.0"``; disaggregated).
    token_budget : int, optional
        Colocated: Sarathi's per-rank token budget or FairBatching's per-rank cap (the
        disaggregated chunk is ``cluster.chunk_tokens``).
    ttft_slo_ms, tpot_slo_ms : float, optional
        Colocated: the deadlines the engines schedule for (default
        :data:`~sbsopt.sim.config.DEFAULT_TTFT_SLO_MS` / ``DEFAULT_TPOT_SLO_MS``). Disaggregated
        engines schedule no deadlines: judge a run with ``SimResult.summary(ttft_slo_ms=...)``.

    Returns
    -------
    SimResult
        The same type, table columns, statuses and reject reasons in both modes.

    Raises
    ------
    InvalidInputError
        Unknown mode, a router/batching/interval of the other mode or unknown, an option that
        does not apply to the mode (named with the mode), bad load/rate.
    SimulationError
        An invariant was violated (completed + rejected + in flight != requests).

    Examples
    --------
    >>> from sbsopt.workload import load_trace
    >>> simulate(load_trace("azure-conv", limit=5), mode="colocated", interval="fixed:5")
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: interval = 'fixed:5': expected None in colocated mode (an option of disaggregated mode)
    """
    check_mode(mode)
    other_mode_options: dict[str, dict[str, Any]] = {
        "disaggregated": {"token_budget": token_budget, "ttft_slo_ms": ttft_slo_ms, "tpot_slo_ms": tpot_slo_ms},
        "colocated": {"scheduler": scheduler, "interval": interval, "solver": solver,
                      "record_timeline": record_timeline or None, "faults": list(faults) or None,
                      "slow_ranks": list(slow_ranks) or None}}
    other = other_mode_options[mode]
    for name, value in other.items():
        if value is not None:
            raise InvalidInputError(name, value, f"None in {mode} mode (an option of "
                                    f"{'colocated' if mode == 'disaggregated' else 'disaggregated'} mode)")
    router = check_router(DEFAULT_ROUTER[mode] if router is None else router, mode)
    cluster = cluster or ClusterConfig()
    if load is not None and rate is not None:
        raise InvalidInputError("load", load, "either load or rate, not both")
    prefill_model, decode_model = cost_models if cost_models is not None else _cost_models(cluster)
    if limit is not None:
        workload = workload.head(limit)
    if load is not None:
        workload = scale_to_load(workload, cluster, load, prefill_model=prefill_model, decode_model=decode_model,
                                 mode=mode)
    elif rate is not None:
        workload = workload.with_rate(rate)
    if mode == "colocated":
        from sbsopt.sim.colocated import simulate_colocated

        return simulate_colocated(workload, cluster=cluster, router=router, batching=batching,
                                  token_budget=token_budget, ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms,
                                  horizon_s=horizon_s, cost_models=(prefill_model, decode_model))
    from sbsopt.sim.simulator import run_simulation

    return run_simulation(
        workload, cluster=cluster, scheduler=scheduler or SchedulerConfig(), router=router,
        interval=DEFAULT_INTERVAL if interval is None else interval, solver=DEFAULT_SOLVER if solver is None else solver,
        batching=batching, seed=seed, horizon_s=horizon_s, prefill_model=prefill_model, decode_model=decode_model,
        record_timeline=record_timeline, faults=faults, slow_ranks=slow_ranks,
    )
