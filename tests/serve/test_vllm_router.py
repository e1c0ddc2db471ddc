"""The vLLM router (``pip install vllm-router``, a fork of the SGLang router) in front of two mock
engines: round robin, and its DP-aware mode, which pins the rank it chose in the
``X-data-parallel-rank`` header. Skipped when the package is not installed.

It runs as ``python -m vllm_router.launch_router`` of this interpreter, not as the
``vllm-router`` command: ``.venv/bin/python -m pytest`` (CI) does not put ``.venv/bin`` on
``PATH``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from _servekit import EP, free_port, mock_engines, router_process, run

from sbsopt.serve.replay import replay
from sbsopt.workload import load_trace

pytest.importorskip("vllm_router", reason="vllm-router is not installed (pip install vllm-router)")


@contextlib.asynccontextmanager
async def vllm_router(workers: list[str], *, dp_size: int = 1) -> AsyncIterator[str]:
    """The vLLM router (round robin) on a loopback port; ``dp_size`` > 1 registers one worker
    per rank of each engine (``--intra-node-data-parallel-size``)."""
    port = free_port()
    argv = [sys.executable, "-m", "vllm_router.launch_router", "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *workers,
            "--policy", "round_robin", "--intra-node-data-parallel-size", str(dp_size)]
    async with router_process(argv, port, len(workers) * dp_size) as url:
        yield url


async def _received(workers: list[str]) -> list[int]:
    """Requests each rank of each worker received, flattened."""
    out = []
    async with aiohttp.ClientSession() as s:
        for worker in workers:
            async with s.get(worker + "/v1/load") as resp:
                out += [rank["received"] for rank in (await resp.json())["ranks"]]
    return out


def test_vllm_router_round_robin_is_an_immediate_baseline() -> None:
    workload = load_trace("azure-code", limit=40).with_rate(8.0)
    speed = 8.0

    async def body() -> tuple[dict, list[int]]:
        async with mock_engines(2, speed=speed) as workers, vllm_router(workers) as url:
            result = await replay(workload, url, time_scale=speed, timeout_s=60)  # token-id prompts pass
            received = await _received(workers)
            return result.summary(), [sum(received[:EP]), sum(received[EP:])]

    s, counts = run(body, timeout=90)
    assert s["completed"] == 40 and counts == [20, 20]


def test_vllm_router_dp_aware_mode_pins_ranks_and_keeps_a_body_rank() -> None:
    # With --intra-node-data-parallel-size the router visits every rank (URL@rank) once before
    # any twice and sends its choice in the X-data-parallel-rank header; a data_parallel_rank
    # already in the body is passed through untouched, and the mock engine honours the body
    # first, so a sidecar's rank reaches the engine (measured with vllm-router 0.1.17).
    async def body() -> tuple[list[int], list[int]]:
        async with mock_engines(2, speed=20.0) as workers, vllm_router(workers, dp_size=EP) as url, \
                aiohttp.ClientSession() as s:
            for _ in range(2 * EP):
                async with s.post(url + "/v1/completions", json={"model": "m", "prompt": [1] * 50,
                                                                 "max_tokens": 1}) as resp:
                    assert resp.status == 200
            spread = await _received(workers)
            pinned = []
            for _ in range(4):
                async with s.post(url + "/v1/completions", json={"model": "m", "prompt": [1] * 50, "max_tokens": 1,
                                                                 "data_parallel_rank": 5}) as resp:
                    pinned.append((await resp.json())["data_parallel_rank"])
            return spread, pinned

    spread, pinned = run(body, timeout=90)
    assert spread == [1] * (2 * EP)
    assert pinned == [5] * 4
