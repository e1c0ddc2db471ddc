"""End to end over the wire: two mock engines, ``serve`` in front, a replayed trace."""

from __future__ import annotations

import aiohttp
import pytest
from _benchmarks import load_benchmark
from _servekit import EP, mock_engines, run, serve_front

from sbsopt.serve.replay import replay
from sbsopt.sim import simulate
from sbsopt.sim.colocated import colocated_cluster
from sbsopt.workload import load_trace

RATE = 8.0  # req/s: about 60% of two 16-rank engines' prefill capacity on azure-code


async def _replay(workload, speed: float, **options):
    async with mock_engines(2, speed=speed) as workers, \
            serve_front(workers, report_period_s=0.005, settle_s=0.01, ttft_guard_s=1.0 / speed, **options) \
            as (url, _), aiohttp.ClientSession() as s:
        result = await replay(workload, url, time_scale=speed, timeout_s=60)
        generated = 0
        for worker in workers:
            async with s.get(worker + "/health") as resp:
                generated += (await resp.json())["completed"]
    return result, generated


def test_500_requests_through_sbs_are_all_answered() -> None:
    workload = load_trace("azure-code", limit=500).with_rate(RATE)
    result, generated = run(lambda: _replay(workload, 12.0), timeout=90)
    s = result.summary()
    assert s["requests"] == 500
    assert s["completed"] + s["rejected"] + s["in_flight"] == 500  # the simulator's accounting
    assert s["completed"] == 500 and generated == 500
    assert all(r.tokens_received == r.output_tokens for r in result.records)
    assert s["router"] == "sbs" and set(s["ttft_ms"]) == {"p50", "p90", "p99", "mean"}


def test_replayed_ttft_agrees_with_simulate() -> None:
    # Measured on a shared 2-core host: at --speed 2 the replay's mean TTFT was within 5% of the
    # simulator's (p50 within 4%); at speed 4 host jitter adds up to ~50%. Tolerance: 30%.
    workload = load_trace("azure-code", limit=120).with_rate(RATE)
    # the mock engine has no multi-token prediction: compare with a simulator without it
    sim = simulate(workload, mode="colocated", cluster=colocated_cluster(2, EP, mtp_acceptance=0.0),
                   router="round_robin").summary()
    result, _ = run(lambda: _replay(workload, 2.0, policy="round_robin", pin_rank=False), timeout=90)
    s = result.summary()
    assert s["completed"] == sim["completed"] == 120
    for key in ("mean", "p50"):
        assert s["ttft_ms"][key] == pytest.approx(sim["ttft_ms"][key], rel=0.30), (key, s["ttft_ms"], sim["ttft_ms"])
    assert s["tpot_ms"]["mean"] == pytest.approx(sim["tpot_ms"]["mean"], rel=0.30)


def test_sbs_beats_immediate_through_the_stack_when_the_simulator_says_so(tmp_path) -> None:
    """``benchmarks/serve.py --stack`` on its defaults, once per policy: azure-code's first 1,000
    requests at 20 req/s, ``sbsopt replay`` -> ``sbsopt serve`` -> two ``sbsopt mock-engine --role
    prefill`` processes at speed 2. When ``sbsopt simulate`` on the same trace and cluster puts
    SBS's mean TTFT below both immediate policies', the stack must too.

    Measured on the shared 2-core host (about 100 s for the three runs; the simulator: SBS 15%
    below): with a least-squares landing fit, the stack's SBS mean TTFT was 1-8% below the best
    immediate policy's in six runs and 3% above it in one run with a second CPU-bound pytest on
    the host the whole time (the windows' landing time then has a tail of hundreds of ms). With
    the robust fit and the lead capped at a quarter of the forward (``sbsopt.serve.landing``):
    8-12% below in five runs, four of them with that second pytest. On 300 requests the
    direction is noise (-6% to +2%): the simulator's own gap swings with arrival jitter there.
    """
    bench = load_benchmark("serve")
    immediate = [policy for policy in bench.STACK_POLICIES if policy != "sbs"]
    sim = {policy: s["ttft_ms"]["mean"] for policy, s in bench.stack_simulated().items()}
    if sim["sbs"] >= min(sim[policy] for policy in immediate):
        pytest.skip(f"the simulator does not put SBS ahead on this trace: mean TTFT {sim}")
    replays = bench.stack_replays(tmp_path, timeout_s=120)
    stack = {policy: runs[0]["ttft_ms"]["mean"] for policy, runs in replays.items()}
    print({"simulate": sim, "stack": stack})
    assert all(runs[0]["completed"] == 1000 for runs in replays.values()), replays
    assert stack["sbs"] < min(stack[policy] for policy in immediate), {"simulate": sim, "stack": stack}
