"""SchedulerConfig.lookahead_release: an engine-paced SBS window leaves what would stack on the
instance about to start to an instance that frees soon (``sbsopt.sim.lookahead.lean_release``)."""

import numpy as np
import pytest

import sbsopt.sim.simulator as simulator
from sbsopt.sim import ClusterConfig, SchedulerConfig, simulate
from sbsopt.workload import load_trace


def _spy_lean(monkeypatch):
    """Record (placed by the window, placed by the answer run) of every lean_release call."""
    calls = []
    original = simulator.lean_release

    def spy(*args, **kwargs):
        answer, chunks = original(*args, **kwargs)
        calls.append((int((kwargs["assignment"] >= 0).sum()), int((answer >= 0).sum())))
        return answer, chunks

    monkeypatch.setattr(simulator, "lean_release", spy)
    return calls


def test_lookahead_brings_arxiv_p99_under_round_robin():
    # arXiv at load 0.5: without the lookahead the instances' phases bunch, one instance
    # stacks two prompts per unit while the next frees milliseconds later, and SBS's p99 is
    # above round robin's; with it both mean and p99 are below
    wl = load_trace("arxiv", limit=5000)
    cluster = ClusterConfig()
    rr = simulate(wl, cluster=cluster, router="round_robin", load=0.5).summary()["ttft_ms"]
    runs = {flag: simulate(wl, cluster=cluster, router="sbs", load=0.5,
                           scheduler=SchedulerConfig(lookahead_release=flag)).summary()
            for flag in (False, True)}
    assert runs[False]["ttft_ms"]["p99"] > 1.1 * rr["p99"]
    assert runs[True]["ttft_ms"]["p99"] < rr["p99"]
    assert runs[True]["ttft_ms"]["mean"] < runs[False]["ttft_ms"]["mean"] < rr["mean"]
    assert runs[True]["completed"] == runs[False]["completed"] == 5000


@pytest.mark.parametrize("router", ["round_robin", "least_tokens"])
def test_immediate_routers_ignore_lookahead(router):
    wl = load_trace("arxiv", limit=1500)
    a, b = (simulate(wl, cluster=ClusterConfig(), router=router, load=0.7,
                     scheduler=SchedulerConfig(lookahead_release=flag)).requests
            for flag in (False, True))
    np.testing.assert_array_equal(a["ttft_s"].to_numpy(), b["ttft_s"].to_numpy())


def test_lean_forwards_run_below_saturation_and_rarely_at_it(monkeypatch):
    calls = _spy_lean(monkeypatch)
    wl = load_trace("arxiv", limit=5000)
    simulate(wl, cluster=ClusterConfig(), router="sbs", load=0.5)
    lean = [c for c in calls if c[1] < c[0]]
    assert len(lean) >= 20  # the lean forward leaves requests for the next instance
    assert all(answer >= 1 for _, answer in lean)
    calls.clear()
    # at load 0.9 the instances run stacked forwards back to back: lean forwards would not
    # keep up with the arrivals, so nearly every window keeps its answer, and the mean TTFT
    # stays where it was without the lookahead
    on = simulate(wl, cluster=ClusterConfig(), router="sbs", load=0.9).summary()
    assert calls
    assert sum(c[1] < c[0] for c in calls) <= 0.1 * len(calls)
    off = simulate(wl, cluster=ClusterConfig(), router="sbs", load=0.9,
                   scheduler=SchedulerConfig(lookahead_release=False)).summary()
    assert on["ttft_ms"]["mean"] < 1.05 * off["ttft_ms"]["mean"]


def test_lookahead_does_not_leave_guarded_requests(monkeypatch):
    # a request past its TTFT guard is deferred only for want of room: whatever the lean
    # forward leaves behind is younger than the guard
    original = simulator.lean_release
    left = []

    def spy(new, cached, arrival_s, **kwargs):
        answer, out = original(new, cached, arrival_s, **kwargs)
        rest = (kwargs["assignment"] >= 0) & (answer < 0)
        left.append(float((kwargs["now_s"] - arrival_s[rest]).max()) if rest.any() else 0.0)
        return answer, out

    monkeypatch.setattr(simulator, "lean_release", spy)
    guard = 0.3
    simulate(load_trace("arxiv", limit=3000), cluster=ClusterConfig(), router="sbs", load=0.7,
             scheduler=SchedulerConfig(ttft_guard_s=guard))
    assert any(age > 0 for age in left)
    assert max(left) < guard


def test_lookahead_off_never_calls_lean_release(monkeypatch):
    calls = _spy_lean(monkeypatch)
    wl = load_trace("arxiv", limit=1000)
    simulate(wl, cluster=ClusterConfig(), router="sbs", load=0.5,
             scheduler=SchedulerConfig(lookahead_release=False))
    assert calls == []
