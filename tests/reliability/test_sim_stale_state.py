"""The simulator under a lagging router view and tight KV memory.

The router only sees engine reports every ``report_period_s`` (plus its own virtual updates);
with a long lag and a small KV pool it routes on stale numbers.  Whatever it decides, no
decode rank may ever hold more KV blocks than it has (the simulator checks every admission
and raises ``SimulationError`` otherwise; test_sim_policy_contract.py shows the check firing),
and every request ends completed, rejected with a reason, or in flight: none is lost.  Faults (``--fail``, ``--slow-rank``) are tested in
tests/sim/test_faults.py.
"""

from __future__ import annotations

import pytest

from sbsopt.sim import ClusterConfig, SchedulerConfig, simulate
from sbsopt.workload import load_trace


def _account(summary: dict, n: int) -> None:
    assert summary["requests"] == n
    assert summary["completed"] + summary["rejected"] + summary["in_flight"] == n
    if summary["rejected"]:
        assert sum(summary.get("rejected_reasons", {}).values()) == summary["rejected"]


@pytest.mark.parametrize("report_period_s", [0.0, 0.05, 1.0, 10.0])
@pytest.mark.parametrize("router", ["sbs", "least_tokens"])
def test_lagging_view_never_over_admits_kv(report_period_s: float, router: str) -> None:
    wl = load_trace("azure-conv", limit=300, seed=0)
    # A KV pool of a few long contexts per rank: the stale view will misjudge it.
    cluster = ClusterConfig(prefill_instances=2, decode_instances=1, kv_capacity_tokens=40_000)
    sched = SchedulerConfig(report_period_s=report_period_s)
    res = simulate(wl, cluster=cluster, scheduler=sched, router=router, seed=0)
    _account(res.summary(), len(wl))


def test_horizon_cut_keeps_every_request_accounted_for() -> None:
    wl = load_trace("azure-conv", limit=300, seed=0)
    cluster = ClusterConfig(prefill_instances=1, decode_instances=1)
    span = float(wl.arrival_s[-1] - wl.arrival_s[0])
    for horizon in (0.0, span / 3, span):
        res = simulate(wl, cluster=cluster, router="sbs", horizon_s=horizon, seed=0)
        _account(res.summary(), len(wl))
