"""Discrete-event simulator of a DP+EP cluster: P/D-disaggregated (SBS versus immediate dispatch)
or colocated engines (Sarathi versus FairBatching iterations).

Names are imported on first use, so that ``sbsopt.sim.config`` (router names, cluster fields,
SLO defaults) loads without pandas or the simulator.

Examples
--------
>>> from sbsopt.workload import load_trace
>>> from sbsopt.sim import ClusterConfig, simulate
>>> wl = load_trace("azure-conv", limit=20)
>>> res = simulate(wl, cluster=ClusterConfig(prefill_instances=1, decode_instances=1), router="round_robin")
>>> s = res.summary()
>>> s["completed"] + s["rejected"] + s["in_flight"] == s["requests"] == 20
True
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Capacity",
    "ChunkedPrefill",
    "ClusterConfig",
    "DEFAULT_ROUTER",
    "DP_PINNINGS",
    "FaultSpec",
    "IMMEDIATE_ROUTERS",
    "INTERVALS",
    "ITERATION_POLICIES",
    "IterationPolicy",
    "MODES",
    "PREFILL_CHUNKINGS",
    "PrefillChunking",
    "REJECT_REASONS",
    "ROUTERS",
    "ROUTER_MODES",
    "STATUSES",
    "SchedulerConfig",
    "SimResult",
    "SlowRank",
    "Status",
    "colocated_cluster",
    "offered_load",
    "parse_fault",
    "parse_slow_rank",
    "prefill_capacity_tok_s",
    "register_chunking",
    "routers_for",
    "saturation_capacity",
    "scale_to_load",
    "simulate",
]

_HOMES = {
    "sbsopt.sim.api": ("offered_load", "prefill_capacity_tok_s", "scale_to_load", "simulate"),
    "sbsopt.sim.batching": ("ITERATION_POLICIES", "IterationPolicy"),
    "sbsopt.sim.capacity": ("Capacity", "saturation_capacity"),
    "sbsopt.sim.chunking": ("ChunkedPrefill", "PREFILL_CHUNKINGS", "PrefillChunking", "register_chunking"),
    "sbsopt.sim.colocated": ("colocated_cluster",),
    "sbsopt.sim.config": ("ClusterConfig", "DEFAULT_ROUTER", "DP_PINNINGS", "IMMEDIATE_ROUTERS", "INTERVALS", "MODES", "ROUTERS",
                          "ROUTER_MODES", "SchedulerConfig", "routers_for"),
    "sbsopt.sim.faults": ("FaultSpec", "SlowRank", "parse_fault", "parse_slow_rank"),
    "sbsopt.sim.metrics": ("REJECT_REASONS", "STATUSES", "SimResult", "Status"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'sbsopt.sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
