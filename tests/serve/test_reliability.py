"""The front under failures: a down or slow worker, a worker dying mid-stream, client
disconnects, 1,000 concurrent streams, and graceful shutdown that drains the buffer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import aiohttp
from _servekit import mock_engines, run, running, serve_front
from aiohttp import web

_CLI = "import sys; from sbsopt.cli import main; sys.exit(main(sys.argv[1:]))"
REQ = {"prompt": [1] * 300, "max_tokens": 4, "stream": True}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _stream(session: aiohttp.ClientSession, url: str, body: dict | None = None) -> tuple[int, list[str]]:
    """Status and the ``data:`` payloads of one streamed completion."""
    async with session.post(url + "/v1/completions", json=body or REQ) as resp:
        if resp.status != 200:
            return resp.status, [await resp.text()]
        events = [line[5:].strip().decode() async for line in resp.content if line.startswith(b"data:")]
        return resp.status, events


def _tokens(events: list[str]) -> int:
    return sum(1 for e in events if e != "[DONE]" and json.loads(e).get("choices", [{}])[0].get("text"))


def test_down_worker_is_retried_on_another_worker() -> None:
    async def body() -> None:
        dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
        async with mock_engines(1, speed=20.0) as (alive,), \
                serve_front([dead, alive], policy="round_robin", report_period_s=0, connect_timeout_s=1.0) \
                as (url, app), aiohttp.ClientSession() as s:
            started = time.monotonic()
            results = await asyncio.gather(*(_stream(s, url) for _ in range(6)))
            assert all(status == 200 and events[-1] == "[DONE]" and _tokens(events) == 4
                       for status, events in results)
            assert time.monotonic() - started < 10
            async with s.get(url + "/metrics") as resp:
                text = await resp.text()
            assert "sbsopt_upstream_retries_total 0" not in text  # the dead worker was retried away from

    run(body)


def test_slow_worker_times_out_and_is_retried_no_client_hangs() -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)  # headers, then nothing: a stuck engine
        await asyncio.sleep(60)
        return resp

    slow = web.Application()
    slow.router.add_post("/v1/completions", hang)

    async def body() -> None:
        async with running(slow) as slow_url, mock_engines(1, speed=20.0) as (alive,), \
                serve_front([slow_url, alive], policy="round_robin", report_period_s=0,
                            first_byte_timeout_s=0.5) as (url, _), aiohttp.ClientSession() as s:
            started = time.monotonic()
            results = await asyncio.gather(*(_stream(s, url) for _ in range(4)))
            assert all(status == 200 and _tokens(events) == 4 for status, events in results)
            assert time.monotonic() - started < 5
        async with running(slow) as slow_url, \
                serve_front([slow_url], policy="round_robin", report_period_s=0, first_byte_timeout_s=0.3,
                            ep=16) as (url, _), aiohttp.ClientSession() as s:
            status, events = await asyncio.wait_for(_stream(s, url), 5)  # nowhere to retry: an error, fast
            assert status == 502 and "upstream_unavailable" in events[0]

    run(body)


def test_worker_disappearing_mid_stream_ends_the_stream_with_an_error_event() -> None:
    async def die(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": [{"index": 0, "text": " t0"}]}\n\n')
        await asyncio.sleep(0.05)
        request.transport.close()  # the worker process vanishes
        await asyncio.sleep(1)
        return resp

    dying = web.Application()
    dying.router.add_post("/v1/completions", die)

    async def body() -> None:
        async with running(dying) as worker, serve_front([worker], policy="round_robin", report_period_s=0) \
                as (url, _), aiohttp.ClientSession() as s:
            status, events = await asyncio.wait_for(_stream(s, url), 5)
            assert status == 200 and _tokens(events) == 1
            assert "[DONE]" not in events
            assert json.loads(events[-1])["error"]["code"] == "upstream_disconnected"

    run(body)


def test_client_disconnect_cancels_the_upstream_request() -> None:
    async def body() -> None:
        async with mock_engines(1, speed=1.0) as (worker,), \
                serve_front([worker], policy="least_tokens", report_period_s=0) as (url, _):
            async with aiohttp.ClientSession() as s:
                resp = await s.post(url + "/v1/completions", json={**REQ, "max_tokens": 10_000})
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        break  # first token seen, then the client goes away
                resp.close()
            engine_health = None
            for _ in range(100):
                await asyncio.sleep(0.05)
                async with aiohttp.ClientSession() as s, s.get(worker + "/health") as r:
                    engine_health = await r.json()
                if engine_health["cancelled"] == 1:
                    break
            assert engine_health == {**engine_health, "cancelled": 1, "completed": 0}
            async with aiohttp.ClientSession() as s, s.get(worker + "/v1/load") as r:
                load = await r.json()
            assert sum(rank["running"] + rank["waiting"] for rank in load["ranks"]) == 0
            assert sum(rank["kv_blocks_used"] for rank in load["ranks"]) == 0

    run(body)


def test_a_thousand_concurrent_streams() -> None:
    async def body() -> None:
        async with mock_engines(2, speed=50.0) as workers, \
                serve_front(workers, report_period_s=0.01, ttft_guard_s=0.05) as (url, app):
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as s:
                small = {"prompt": [1] * 20, "max_tokens": 2, "stream": True}
                results = await asyncio.gather(*(_stream(s, url, small) for _ in range(1000)))
                done = 0
                for worker in workers:
                    async with s.get(worker + "/health") as r:
                        done += (await r.json())["completed"]
            assert [status for status, _ in results] == [200] * 1000
            assert all(_tokens(events) == 2 and events[-1] == "[DONE]" for _, events in results)
            assert done == 1000  # every stream was generated by an engine exactly once

    run(body, timeout=90)


def test_sigterm_drains_the_buffer_and_answers_everything(tmp_path) -> None:
    async def body() -> None:
        async with mock_engines(1, speed=20.0) as (worker,):
            port = _free_port()
            config = tmp_path / "serve.json"
            # a fixed 60 s interval: nothing is released unless the shutdown drains the buffer
            config.write_text(json.dumps({"workers": [worker], "ep": 16, "interval": "fixed:60000",
                                          "ttft_guard_s": 600, "report_period_s": 0}))
            proc = subprocess.Popen([sys.executable, "-c", _CLI, "serve", "--port", str(port),
                                     "--config", str(config)], stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                url = f"http://127.0.0.1:{port}"
                async with aiohttp.ClientSession() as s:
                    for _ in range(300):
                        try:
                            async with s.get(url + "/health") as r:
                                if r.status == 200:
                                    break
                        except aiohttp.ClientError:
                            await asyncio.sleep(0.1)
                    calls = [asyncio.create_task(s.post(url + "/v1/route", json={"id": f"r{i}", "prompt_tokens": 500}))
                             for i in range(20)]
                    for _ in range(100):
                        async with s.get(url + "/health") as r:
                            if (await r.json())["buffered"] == 20:
                                break
                        await asyncio.sleep(0.05)
                    proc.send_signal(signal.SIGTERM)
                    answers = [await (await c).json() for c in calls]
                assert sorted(a["id"] for a in answers) == sorted(f"r{i}" for i in range(20))
                assert {a["status"] for a in answers} == {"assigned"}
                assert await asyncio.to_thread(proc.wait, 20) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()

    run(body, timeout=90)
