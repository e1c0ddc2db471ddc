"""A window's landing time: learnt from the front's forwards, and what a paced release waits for."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import numpy as np
import pytest
from _servekit import EP, run, running, serve_front
from aiohttp import web

from sbsopt.errors import InvalidInputError
from sbsopt.serve.config import ServeConfig
from sbsopt.serve.landing import LandingTime
from sbsopt.serve.metrics import Metrics
from sbsopt.serve.mock.server import build_mock_app, create_engine
from sbsopt.serve.service import SERVICE
from sbsopt.serve.state import ClusterState, parse_report
from sbsopt.serve.windows import PrefillItem, Scheduler


def test_the_prior_holds_until_enough_windows_landed_then_the_fit_covers_them() -> None:
    lt = LandingTime(0.005, 0.0005, history=32, min_windows=8, quantile=0.9)
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 60, 7)
    for n in sizes:
        lt.observe(int(n), 0.002 + 0.001 * n + rng.uniform(0, 0.004))
    assert lt.lead_s(40) == pytest.approx(0.025)  # seven windows: still the prior
    sizes = rng.integers(1, 60, 25)
    landed = 0.002 + 0.001 * sizes + rng.uniform(0, 0.004, len(sizes))
    for n, s in zip(sizes, landed, strict=True):
        lt.observe(int(n), float(s))
    covered = np.mean([s <= lt.lead_s(int(n)) for n, s in zip(sizes, landed, strict=True)])
    assert covered >= 0.8 and lt.lead_s(40) > 0.04  # about 1 ms a request, not the prior's 0.5
    lt.observe(0, 1.0)  # an empty window, and nonsense, teach nothing
    lt.observe(3, math.nan)
    assert lt.observed == 32


def test_one_slow_window_barely_moves_the_lead() -> None:
    # A host stall delays one large window by 0.9 s. A least-squares slope followed it (the
    # lead of a 60-request window grew by 68 ms, for the 64 windows the sample stays); the
    # median of pairwise slopes and a residual quantile move by a fraction of a millisecond.
    lt = LandingTime(0.005, 0.0005, history=64, min_windows=8, quantile=0.9)
    rng = np.random.default_rng(1)
    for n in rng.integers(1, 61, 64):
        lt.observe(int(n), 0.002 + 0.0005 * n + rng.uniform(0, 0.004))
    before = np.array([lt.lead_s(n) for n in (1, 30, 60)])
    assert before == pytest.approx([0.006, 0.0205, 0.0355], abs=0.001)  # 0.5 ms a request, 90% covered
    lt.observe(60, 0.9)
    after = np.array([lt.lead_s(n) for n in (1, 30, 60)])
    assert np.abs(after - before).max() < 0.001


def test_the_lead_is_capped_at_a_quarter_of_the_running_forward() -> None:
    # A lead of a quarter of the forward costs for certain what a late landing costs one
    # window in four: however slow the landings, no longer lead is planned.
    lt = LandingTime(0.3, 0.0, history=16, min_windows=4)
    assert lt.lead_s(5, forward_s=0.4) == pytest.approx(0.1)  # the prior too
    for n in (1, 5, 10, 20, 40):
        lt.observe(n, 0.5)
    assert lt.lead_s(5) == pytest.approx(0.5)  # no forward known: no cap
    assert lt.lead_s(5, forward_s=0.4) == pytest.approx(0.1)
    assert lt.lead_s(5, forward_s=4.0) == pytest.approx(0.5)


def test_a_report_of_a_new_forward_caps_the_lead_of_its_worker() -> None:
    # The running forward's length is what is left of it when a report first shows it (the
    # counter moved); with landings of 0.3 s the lead onto that worker is a quarter of it.
    config = ServeConfig(workers=("http://a:1", "http://b:1"), ep=2, pace_min_windows=1)
    state = ClusterState(config)
    for n in (1, 2):
        state.landing.observe(n, 0.3)

    def report(ends_ms: float, forwards: int) -> None:
        body = {"ranks": [{}, {}], "forward_ends_in_ms": ends_ms, "forwards": forwards}
        for worker in (0, 1):
            state.apply_report(worker, parse_report(body, 2), requested_at=0.0, now=0.0)

    report(150.0, 3)  # the first report: no forward seen starting yet
    assert state.pace_lead_s(1, 0) == pytest.approx(0.3) and state.forward_bound(0.0).tolist() == [False, False]
    report(400.0, 4)  # a new forward: 400 ms long
    assert state.pace_lead_s(1, 0) == pytest.approx(0.1) and state.pace_lead_s(1) == pytest.approx(0.3)
    assert state.forward_bound(0.0).tolist() == [True, True]  # 0.4 s left, released 0.1 s before
    assert state.next_pace_s(0.0) == pytest.approx(0.3)
    report(50.0, 4)  # the same forward, later: its length stands
    assert state.pace_lead_s(1, 1) == pytest.approx(0.1)


def test_landing_options_are_validated_by_name() -> None:
    with pytest.raises(InvalidInputError, match="pace_quantile"):
        ServeConfig(workers=("http://a:1",), pace_quantile=1.5)
    with pytest.raises(InvalidInputError, match="pace_min_windows"):
        ServeConfig(workers=("http://a:1",), pace_min_windows=0)
    assert LandingTime(0.01, 0.0, history=0).lead_s(100) == 0.01  # history 0: the prior only


def test_the_front_learns_a_slow_network_and_paces_windows_on_it() -> None:
    # Every completion reaches the engine 40 ms late (an injected network): after a few windows
    # the paced release leads the forward end by at least that, against the prior's 5 ms.
    delay_s = 0.04

    @web.middleware
    async def slow(request: web.Request, handler):  # noqa: ANN001, ANN202 - aiohttp's middleware protocol
        if request.path == "/v1/completions":
            await asyncio.sleep(delay_s)
        return await handler(request)

    async def body() -> tuple[int, float, float]:
        app = build_mock_app(create_engine(ep=EP, speed=10.0, role="prefill"))
        app.middlewares.append(slow)
        async with running(app) as worker, \
                serve_front([worker], report_period_s=0.01, window_forwards=1.0, pace_min_windows=4) as (url, front), \
                aiohttp.ClientSession() as s:
            async def one(tokens: int) -> None:
                async with s.post(url + "/v1/completions", json={"prompt": [1] * tokens, "max_tokens": 1,
                                                                 "stream": True}) as resp:
                    await resp.read()

            for burst in range(8):
                await asyncio.gather(*(one(500 + 300 * i) for i in range(burst % 3 + 1)))
            async with s.get(url + "/metrics") as resp:
                metrics = await resp.text()
            state = front[SERVICE].state
            return state.landing.observed, state.pace_lead_s(1), state.pace_lead_s(3), metrics

    observed, lead_1, lead_3, metrics = run(body)
    assert observed >= 4 and f"sbsopt_window_landing_seconds_count {observed}" in metrics
    assert lead_1 >= delay_s and lead_3 >= delay_s


def test_an_overdue_window_waits_for_a_paced_forward_to_end() -> None:
    # Past its guard a request is assigned at once, but not onto a paced worker in the middle of
    # a forward: it would wait in the engine's queue all the same (the simulator assigns it at
    # the next window); an unpaced worker takes it now.
    config = ServeConfig(workers=("http://a:1", "http://b:1"), ep=2, ttft_guard_s=0.1)
    state = ClusterState(config)
    busy = {"ranks": [{}, {}], "forward_ends_in_ms": 500.0, "forwards": 3, "token_budget": 1000}
    state.apply_report(0, parse_report(busy, 2), requested_at=0.0, now=0.0)
    state.apply_report(1, parse_report(busy, 2), requested_at=0.0, now=0.0)
    clock = [0.0]
    with ThreadPoolExecutor(1) as pool:
        scheduler = Scheduler(config, state, Metrics(), pool, coefficients=lambda phase: None,
                              clock=lambda: clock[0])
        scheduler.buffer.append(PrefillItem("r0", 100, 0, 0.0, 0.1, future=None))  # type: ignore[arg-type]
        clock[0] = 0.2  # overdue; both forwards end at 0.5
        assert scheduler._workers_for_window(force=False) == []
        assert scheduler._next_timeout() == pytest.approx(0.5 - state.pace_lead_s(1) - 0.2)
        assert scheduler._workers_for_window(force=True) == [0, 1]
        state.apply_report(1, parse_report({"ranks": [{}, {}]}, 2), requested_at=0.2, now=0.2)  # b: not paced
        assert scheduler._workers_for_window(force=False) == [1]


def test_a_paced_release_plans_the_landing_of_one_forward_of_the_buffer() -> None:
    # The lead is the landing time of the requests the next forward can take, oldest first: a
    # large buffer's overflow waits in the engine's queue for later forwards whenever it lands.
    config = ServeConfig(workers=("http://a:1",), ep=2, default_token_budget=1000, window_forwards=1.0,
                         pace_lead_s=0.0, pace_lead_per_request_s=0.001)
    state = ClusterState(config)
    with ThreadPoolExecutor(1) as pool:
        scheduler = Scheduler(config, state, Metrics(), pool, coefficients=lambda phase: None, clock=lambda: 0.0)
        for i, tokens in enumerate((600, 900, 400, 500, 5000)):
            scheduler.buffer.append(PrefillItem(f"r{i}", tokens, 0, 0.0, 9.0, future=None))  # type: ignore[arg-type]
        assert scheduler._landing_requests() == 3  # 1,900 of the 2,000 tokens one forward takes
        for ends_ms, ready in ((4.0, []), (2.5, [0])):  # 3 requests land in 3 ms (all 5 in 5 ms)
            report = {"ranks": [{}, {}], "forward_ends_in_ms": ends_ms, "forwards": 1}
            state.apply_report(0, parse_report(report, 2), requested_at=0.0, now=0.0)
            assert scheduler._workers_for_window(force=False) == ready
