"""The mock engine: the simulator's colocated engine in real time, rank pinning, load reports."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
import pytest
from _servekit import EP, mock_engines, run

from sbsopt.serve.mock.engine import MockEngine
from sbsopt.sim.batching import IterationCostModel, make_iteration_policy
from sbsopt.sim.colocated import simulate_colocated

COST = IterationCostModel(prefill_base_us=5000.0, us_per_prefill_token=20.0, us_per_pair=0.0,
                          us_per_prefill_request=0.0, decode_base_us=5000.0, us_per_decode=100.0,
                          us_per_kv_token=0.0, ep=2)


def test_engine_timing_matches_the_colocated_simulator() -> None:
    arrival = np.array([0.0, 0.0, 0.05, 0.1])
    inp, out = np.array([800, 300, 1500, 100]), np.array([5, 3, 4, 6])

    async def body() -> list[float]:
        engine = MockEngine(ep=2, cost=COST, policy=make_iteration_policy("sarathi"), kv_capacity_tokens=10**6,
                            speed=5.0)
        task = asyncio.create_task(engine.run())
        t0 = engine.now()
        reqs = []
        for a, n, m in zip(arrival, inp, out, strict=True):
            await asyncio.sleep(max(a - (engine.now() - t0), 0) / 5.0)
            reqs.append(engine.submit(int(n), int(m)))
        ttft = []
        for r in reqs:
            first = await r.tokens.get()
            ttft.append(first[1] - r.arrival_s)
            while await r.tokens.get() is not None:
                pass
        task.cancel()
        return ttft

    from types import SimpleNamespace

    sim = simulate_colocated(SimpleNamespace(arrival_s=arrival, input_tokens=inp, output_tokens=out), ep=2,
                             cost=COST, batching="sarathi")
    ttft = run(body)
    np.testing.assert_allclose(ttft, sim.requests["ttft_s"].to_numpy(), rtol=0.1, atol=0.005)


def test_rank_pinning_by_body_or_header_and_load_report() -> None:
    async def body() -> None:
        async with mock_engines(1, speed=1.0) as (url,), aiohttp.ClientSession() as s:
            long = {"prompt": [1] * 4000, "max_tokens": 50, "stream": True}
            r1 = await s.post(url + "/v1/completions", json={**long, "data_parallel_rank": 5})
            r2 = await s.post(url + "/v1/chat/completions", headers={"X-Data-Parallel-Rank": "7"},
                              json={"messages": [{"role": "user", "content": "x" * 4000}], "max_tokens": 50,
                                    "stream": True})
            assert r1.headers["X-Data-Parallel-Rank"] == "5" and r2.headers["X-Data-Parallel-Rank"] == "7"
            async with s.get(url + "/v1/load") as resp:
                load = await resp.json()
            assert load["ep"] == EP and len(load["ranks"]) == EP and load["token_budget"] == 512
            busy = {j for j, rank in enumerate(load["ranks"]) if rank["waiting"] + rank["running"]}
            assert busy == {5, 7}
            assert load["ranks"][5]["queued_tokens"] > 0 or load["ranks"][5]["running"] == 1
            r1.close()
            r2.close()
            async with s.post(url + "/v1/completions", json={**long, "data_parallel_rank": EP}) as bad:
                assert bad.status == 400 and (await bad.json())["error"]["field"] == "data_parallel_rank"
            async with s.post(url + "/v1/completions", json={"prompt": "hello world", "max_tokens": 3}) as ok:
                answer = await ok.json()
            assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
            assert answer["choices"][0]["text"] == " t0 t1 t2"

    run(body)


@pytest.mark.parametrize("body", [{"prompt": [1], "max_tokens": 0}, {"prompt": 5}, {"messages": []},
                                  {"prompt": [1] * 10, "max_tokens": 10**9}])
def test_bad_requests_are_400(body) -> None:
    async def go() -> None:
        async with mock_engines(1) as (url,), aiohttp.ClientSession() as s, \
                s.post(url + "/v1/completions", data=json.dumps(body)) as resp:
            assert resp.status == 400
            assert set((await resp.json())["error"]) == {"field", "message"}

    run(go)
