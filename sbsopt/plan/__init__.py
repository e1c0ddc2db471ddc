"""Capacity planning: highest rate at an SLO, fewest instances at a rate, parameter sweeps, cost.

Every function runs many independent simulations on a pluggable backend (serial, a local
process pool, or Ray) with identical results for the same seeds.

Examples
--------
>>> from sbsopt.plan import search_max_rate
>>> r = search_max_rate(lambda rates: [(x <= 3.0, {}) for x in rates], rate_min=0.5, rate_max=10,
...                     tolerance_req_s=0.05)
>>> r.feasible, r.rate_req_s <= 3.0 < r.fail_rate_req_s
(True, True)
"""

from sbsopt.plan.backends import BACKENDS, Runner, default_workers, run_tasks
from sbsopt.plan.cost import DEFAULT_GPU_HOUR_PRICE, PlanCost, cluster_gpus, plan_cost
from sbsopt.plan.mechanism import MECHANISM_METRICS, attribute
from sbsopt.plan.planner import CapacityPlan, InstancePlan, max_rate, min_instances, step_params
from sbsopt.plan.runs import (
    CLUSTER_PARAMETERS,
    RUN_PARAMETERS,
    SCHEDULER_PARAMETERS,
    SLO,
    Policy,
    check_run_params,
    run_one,
)
from sbsopt.plan.search import (
    MaxRateResult,
    MinInstancesResult,
    search_max_rate,
    search_min_instances,
)
from sbsopt.plan.shape import PDShape, pd_shape
from sbsopt.plan.sweep import expand_grid, load_grid, plot_sweep, sweep

__all__ = [
    "BACKENDS",
    "CLUSTER_PARAMETERS",
    "CapacityPlan",
    "DEFAULT_GPU_HOUR_PRICE",
    "InstancePlan",
    "MECHANISM_METRICS",
    "MaxRateResult",
    "MinInstancesResult",
    "PDShape",
    "PlanCost",
    "Policy",
    "RUN_PARAMETERS",
    "Runner",
    "SCHEDULER_PARAMETERS",
    "SLO",
    "attribute",
    "check_run_params",
    "cluster_gpus",
    "default_workers",
    "expand_grid",
    "load_grid",
    "max_rate",
    "min_instances",
    "pd_shape",
    "plan_cost",
    "plot_sweep",
    "run_one",
    "run_tasks",
    "search_max_rate",
    "search_min_instances",
    "step_params",
    "sweep",
]
