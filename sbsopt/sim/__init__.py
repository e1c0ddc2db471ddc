"""Discrete-event simulator of a P/D-disaggregated DP+EP cluster: SBS versus immediate dispatch.

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

from sbsopt.sim.api import offered_load, prefill_capacity_tok_s, scale_to_load, simulate
from sbsopt.sim.config import (
    IMMEDIATE_ROUTERS,
    INTERVALS,
    ROUTERS,
    ClusterConfig,
    SchedulerConfig,
)
from sbsopt.sim.engine import BATCHING_POLICIES, BatchingPolicy, ChunkedPrefill, register_batching
from sbsopt.sim.faults import FaultSpec, SlowRank, parse_fault, parse_slow_rank
from sbsopt.sim.metrics import SimResult, Status

__all__ = [
    "BATCHING_POLICIES",
    "BatchingPolicy",
    "ChunkedPrefill",
    "ClusterConfig",
    "FaultSpec",
    "IMMEDIATE_ROUTERS",
    "INTERVALS",
    "ROUTERS",
    "SchedulerConfig",
    "SimResult",
    "SlowRank",
    "Status",
    "offered_load",
    "parse_fault",
    "parse_slow_rank",
    "prefill_capacity_tok_s",
    "register_batching",
    "scale_to_load",
    "simulate",
]
