"""The SGLang model gateway (``pip install sglang-router``) in front of two mock engines: the
immediate-dispatch baseline of a real router, and the sidecar steering it with its ``manual``
policy. Skipped when the package is not installed."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from _servekit import EP, free_port, mock_engines, router_process, run, serve_front

from sbsopt.serve.replay import replay
from sbsopt.workload import load_trace

pytest.importorskip("sglang_router", reason="sglang-router is not installed (pip install sglang-router)")


@contextlib.asynccontextmanager
async def sglang_router(workers: list[str], policy: str, *, dp_aware: bool = False) -> AsyncIterator[str]:
    """``python -m sglang_router.launch_router`` on a loopback port; yields its URL once every
    worker is registered and healthy (``dp_aware``: one per DP rank of each engine)."""
    port = free_port()
    argv = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *workers, "--policy", policy, *(["--dp-aware"] if dp_aware else [])]
    async with router_process(argv, port, len(workers) * (EP if dp_aware else 1)) as url:
        yield url


async def _completed(workers: list[str]) -> list[int]:
    async with aiohttp.ClientSession() as s:
        counts = []
        for worker in workers:
            async with s.get(worker + "/health") as resp:
                counts.append((await resp.json())["completed"])
        return counts


def test_sglang_router_round_robin_is_an_immediate_baseline() -> None:
    workload = load_trace("azure-code", limit=40).with_rate(8.0)
    speed = 8.0

    async def body() -> tuple[dict, list[int]]:
        async with mock_engines(2, speed=speed) as workers, sglang_router(workers, "round_robin") as url:
            # the router takes string prompts only: 4 characters a token, as the mock counts
            result = await replay(workload, url, time_scale=speed, timeout_s=60, text_prompts=True)
            return result.summary(), await _completed(workers)

    s, counts = run(body, timeout=90)
    assert s["completed"] == 40 and counts == [20, 20]
    assert s["ttft_ms"]["mean"] is not None and s["tpot_ms"]["mean"] is not None


def test_sglang_router_dp_aware_mode_runs_on_mock_engines() -> None:
    # --dp-aware reads dp_size from each engine's /get_server_info, registers one worker per rank
    # (URL@rank) and pins the rank it chose in the body: round robin then visits every rank once
    # before any twice. It overwrites a data_parallel_rank already in the body (measured), so a
    # sidecar's rank does not survive this mode.
    workload = load_trace("azure-code", limit=40).with_rate(8.0)
    speed = 8.0

    async def body() -> tuple[dict, list[int]]:
        async with mock_engines(2, speed=speed) as workers, sglang_router(workers, "round_robin",
                                                                          dp_aware=True) as url:
            result = await replay(workload, url, time_scale=speed, timeout_s=60, text_prompts=True)
            received = []
            async with aiohttp.ClientSession() as s:
                for worker in workers:
                    async with s.get(worker + "/v1/load") as resp:
                        received += [rank["received"] for rank in (await resp.json())["ranks"]]
            return result.summary(), received

    s, received = run(body, timeout=90)
    assert s["completed"] == 40 and sum(received) == 40
    assert len(received) == 2 * EP and max(received) - min(received) <= 1


def test_sidecar_rank_survives_the_sglang_router_manual_policy() -> None:
    # What the router (sglang-router 0.3.2) does with a sidecar answer, as measured: it passes
    # ``data_parallel_rank`` in the body through to the engine, and its manual policy keeps one
    # ``X-SMG-Routing-Key`` on one worker; ``X-SMG-Target-Worker`` did not pin a chosen worker
    # (by index, URL or id), so the worker choice stays the router's (see docs/guides/serve.md).
    async def body() -> None:
        async with mock_engines(2, speed=20.0) as workers, sglang_router(workers, "manual") as router, \
                serve_front(workers, report_period_s=0.01) as (sidecar, _), aiohttp.ClientSession() as s:
            served = set()
            for i, tokens in enumerate((3000, 200, 5000, 800, 1200, 60)):
                async with s.post(sidecar + "/v1/route", json={"id": f"r{i}", "prompt_tokens": tokens}) as resp:
                    answer = await resp.json()
                assert answer["status"] == "assigned"
                before = await _completed(workers)
                async with s.post(router + "/v1/completions", headers={"X-SMG-Routing-Key": "one-session"},
                                  json={"model": "m", "prompt": "abcd" * tokens, "max_tokens": 2,
                                        "data_parallel_rank": answer["dp_rank"]}) as resp:
                    done = await resp.json()
                after = await _completed(workers)
                assert done["data_parallel_rank"] == answer["dp_rank"]  # the rank reached the engine
                served.add([a - b for a, b in zip(after, before, strict=True)].index(1))
            assert len(served) == 1  # one routing key, one worker

    run(body, timeout=90)
