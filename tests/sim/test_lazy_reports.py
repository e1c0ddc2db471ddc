"""Lazy engine reports and the simulator's shortcuts leave every result as the eager loop had it.

The reference is the simulator with a heap event per report period (``_REPORT`` events, a report
skipped when nothing was handled since the previous one, the chain stopped once every request
finished or nothing is left) and with every start an enqueue asks for pushed as an event.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import sys
import time

import pytest

from sbsopt.costmodel import load_cost_model
from sbsopt.sim import ClusterConfig, SchedulerConfig, simulate
from sbsopt.sim.reports import apply_report
from sbsopt.workload import load_trace

simulator = sys.modules.get("sbsopt.sim.simulator") or __import__("sbsopt.sim.simulator", fromlist=["x"])


class _Eager(simulator._Simulation):
    @property
    def forming(self):  # no release is "forming": every start goes on the heap
        return None

    @forming.setter
    def forming(self, value) -> None:
        pass

    def run(self):
        wall0 = time.perf_counter()
        heap, arrival, n, i = self.heap, self.arrival, self.n, 0
        self.report_s = math.inf  # no lazy boundaries
        self.handled, self.handled_at_report = 0, -2
        if self.sched.report_period_s > 0 and n:
            self.push(self.sched.report_period_s, simulator.REPORT)
        for f in self.faults:
            self.push(f.at_s, simulator.PFAIL if f.kind == "prefill" else simulator.DFAIL, f.index)
        while True:
            next_arrival = arrival[i] if i < n else math.inf
            if heap and (heap[0][0] < next_arrival or (heap[0][0] == next_arrival
                                                       and heap[0][1] < simulator.ARRIVAL)):
                t, _, _, kind, a, b = heapq.heappop(heap)
                if t > self.horizon_s:
                    break
                self.now = t
                self.handled += 1
                if kind == simulator.REPORT:
                    self.on_report()
                else:
                    self.handlers[kind](a, b)
            elif i < n:
                if next_arrival > self.horizon_s:
                    break
                self.now = float(next_arrival)
                i += 1
                self.next_arrival = i
                self.handled += 1
                self.on_arrival(i - 1)
            else:
                break
        return self.result(time.perf_counter() - wall0, arrived=i)

    def on_report(self) -> None:
        if self.handled != self.handled_at_report + 1:
            apply_report(self)
        self.handled_at_report = self.handled
        if self.finished < self.n and (self.heap or self.next_arrival < self.n):
            self.push(self.now + self.sched.report_period_s, simulator.REPORT)


def _digest(res) -> str:
    t = res.requests
    h = hashlib.sha256()
    for col in sorted(t.columns):
        h.update(col.encode() + t[col].astype(str).str.cat(sep=",").encode())
    h.update(repr(sorted(res.stats.items())).encode())
    return h.hexdigest()


@pytest.mark.parametrize(("router", "load", "scheduler", "extra"), [
    ("sbs", None, {}, {}),
    ("sbs", 0.9, {"report_period_s": 0.013}, {}),
    ("sbs", 0.7, {"report_period_s": 0.05 * 7}, {"horizon_s": 0.05 * 40}),
    ("sbs", 0.7, {}, {"faults": ["decode:0@2s+1s", "prefill:1@1.5s+1s"]}),
    ("sbs", 0.7, {"dispatch_latency_s": 0.003}, {"interval": "adaptive"}),
    ("least_tokens", 0.7, {}, {"horizon_s": 0.05 * 37}),
    ("vllm_score", 0.9, {"router_replicas": 3, "dp_pinning": "engine"}, {}),
    ("shortest_queue", 0.7, {"router_replicas": 2}, {"faults": ["prefill:0@1s+2s"]}),
])
def test_lazy_reports_equal_eager_report_events(monkeypatch, router, load, scheduler, extra):
    wl = load_trace("azure-conv", limit=500)
    kwargs = dict(cluster=ClusterConfig(), router=router, load=load, scheduler=SchedulerConfig(**scheduler), **extra)
    lazy = _digest(simulate(wl, **kwargs))
    monkeypatch.setattr(simulator, "_Simulation", _Eager)
    assert _digest(simulate(wl, **kwargs)) == lazy


class _Public:
    """A cost model seen through its public methods only (the simulator does not trust it)."""

    def __init__(self, model) -> None:
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.mark.parametrize("load", [None, 0.9])
def test_the_compiled_step_paths_equal_a_models_public_methods(load):
    wl = load_trace("azure-conv", limit=400)
    cluster = ClusterConfig()
    models = (load_cost_model(cluster.model, cluster.hardware, ep=cluster.prefill_ep),
              load_cost_model(cluster.model, cluster.hardware, ep=cluster.decode_ep))
    trusted = simulate(wl, cluster=cluster, router="sbs", load=load, cost_models=models)
    public = simulate(wl, cluster=cluster, router="sbs", load=load, cost_models=tuple(_Public(m) for m in models))
    assert _digest(public) == _digest(trusted)
