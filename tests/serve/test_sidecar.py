"""The sidecar endpoints over real sockets: oracle over HTTP, routing, reports, errors, metrics."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from _servekit import EP, mock_engines, run, serve_front

from sbsopt.oracle import answer_line
from sbsopt.serve.service import SERVICE

PROBLEM = {"id": "w1", "phase": "decode", "method": "greedy",
           "requests": [{"id": "a", "context_tokens": 4000, "kv_blocks": 63}],
           "units": [{"id": "x", "batch_size": 0, "max_batch_size": 2, "kv_blocks_used": 0, "free_kv_blocks": 100}]}


async def _post(session: aiohttp.ClientSession, url: str, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json(content_type=None)


def test_window_is_the_oracle_over_http() -> None:
    async def body() -> None:
        async with mock_engines(1) as workers, serve_front(workers) as (url, _), aiohttp.ClientSession() as s:
            status, answer = await _post(s, url + "/v1/window", PROBLEM)
            assert status == 200 and answer["assignment"] == {"a": "x"}
            expected = json.loads(answer_line(json.dumps(PROBLEM)))
            # the same schema and decision; the objective is priced with the service's ep
            assert set(answer) == set(expected)
            assert {k: answer[k] for k in ("id", "status", "assignment", "deferred", "chunks", "method")} == \
                {k: expected[k] for k in ("id", "status", "assignment", "deferred", "chunks", "method")}
            bad = {**PROBLEM, "requests": [{"id": "a", "context_tokens": -1, "kv_blocks": 1}]}
            status, err = await _post(s, url + "/v1/window", bad)
            assert status == 400
            assert err == json.loads(answer_line(json.dumps(bad)))  # the oracle's own error object
            assert err["error"]["field"] == "requests[0].context_tokens"
            # many concurrent callers are all answered
            results = await asyncio.gather(*(_post(s, url + "/v1/window", {**PROBLEM, "id": f"w{i}"})
                                             for i in range(50)))
            assert sorted(a["id"] for _, a in results) == sorted(f"w{i}" for i in range(50))
            assert {st for st, _ in results} == {200}

    run(body)


@pytest.mark.parametrize("path", ["/v1/window", "/v1/route", "/v1/route/decode", "/v1/completions",
                                  "/v1/chat/completions", "/v1/report"])
def test_malformed_and_oversized_bodies(path: str) -> None:
    async def body() -> None:
        async with mock_engines(1) as workers, serve_front(workers, max_body_bytes=10_000) as (url, _), \
                aiohttp.ClientSession() as s:
            for raw in (b"{not json", b"[1, 2]", b"", b'{"id": 5}'):
                status, err = await _post(s, url + path, raw)
                assert status == 400, (raw, err)
                assert err["status"] == "error" and set(err["error"]) == {"field", "message"}
            status, err = await _post(s, url + path, b'{"x": "' + b"y" * 20_000 + b'"}')
            assert status == 413 and err["error"]["field"] in ("body", "line")
            # the server still answers afterwards
            async with s.get(url + "/health") as resp:
                assert resp.status == 200

    run(body)


def test_route_fields_are_validated_by_name() -> None:
    async def body() -> None:
        async with mock_engines(1) as workers, serve_front(workers) as (url, _), aiohttp.ClientSession() as s:
            status, err = await _post(s, url + "/v1/route", {"id": "r", "prompt_tokens": 0})
            assert status == 400 and err["error"]["field"] == "prompt_tokens" and err["id"] == "r"
            status, err = await _post(s, url + "/v1/route", {"id": "r", "prompt_tokens": 10, "cached_tokens": 10})
            assert status == 400 and err["error"]["field"] == "cached_tokens"

    run(body)


def test_sbs_route_answers_every_request_in_windows() -> None:
    async def body() -> None:
        async with mock_engines(2) as workers, serve_front(workers, report_period_s=0.01) as (url, app), \
                aiohttp.ClientSession() as s:
            reqs = [{"id": f"r{i}", "prompt_tokens": 100 + 37 * i} for i in range(64)]
            answers = await asyncio.gather(*(_post(s, url + "/v1/route", r) for r in reqs))
            assert [a["id"] for _, a in answers] == [r["id"] for r in reqs]
            assert all(a["status"] == "assigned" for _, a in answers)
            assert all(a["worker"] in workers and 0 <= a["dp_rank"] < EP for _, a in answers)
            assert all(1 <= a["chunk"] <= r["prompt_tokens"] for (_, a), r in zip(answers, reqs, strict=True))
            windows = {a["window"] for _, a in answers}
            assert None not in windows and len(windows) < len(reqs)  # buffered, not one by one
            units = {(a["worker"], a["dp_rank"]) for _, a in answers}
            assert len(units) > EP  # spread over both workers' ranks
            too_long = await _post(s, url + "/v1/route", {"id": "big", "prompt_tokens": 10**7})
            assert too_long[1] == {"id": "big", "status": "rejected", "reason": "prompt_too_long"}
            async with s.get(url + "/metrics") as resp:
                text = await resp.text()
            assert 'sbsopt_decisions_total{policy="sbs",kind="prefill"} 64' in text
            assert 'sbsopt_rejections_total{reason="prompt_too_long"} 1' in text
            assert "sbsopt_window_size_count" in text and "sbsopt_buffer_wait_seconds_bucket" in text

    run(body)


def test_immediate_policy_answers_at_once_round_robin() -> None:
    async def body() -> None:
        async with mock_engines(2) as workers, serve_front(workers, policy="round_robin") as (url, _), \
                aiohttp.ClientSession() as s:
            answers = [(await _post(s, url + "/v1/route", {"id": f"r{i}", "prompt_tokens": 50}))[1] for i in range(4)]
            assert [(a["worker_index"], a["dp_rank"]) for a in answers] == [(0, 0), (1, 0), (0, 1), (1, 1)]
            assert all(a["window"] is None for a in answers)

    run(body)


def test_decode_route_uses_iqr_lex_and_reports_reconcile() -> None:
    async def body() -> None:
        async with mock_engines(1) as workers, serve_front(workers, report_period_s=0) as (url, app), \
                aiohttp.ClientSession() as s:
            ranks = [{"running": 5, "kv_blocks_used": 500, "kv_blocks_free": 1000} for _ in range(EP)]
            ranks[3] = {"running": 0, "kv_blocks_used": 0, "kv_blocks_free": 1500}
            status, ok = await _post(s, url + "/v1/report", {"worker": workers[0], "ranks": ranks})
            assert status == 200
            _, a = await _post(s, url + "/v1/route/decode", {"id": "d", "context_tokens": 1000})
            assert a["status"] == "assigned" and a["dp_rank"] == 3  # the emptiest rank, lexicographically
            state = app[SERVICE].state
            assert state.decode_batch()[3] == 1  # virtual update until the next report
            status, err = await _post(s, url + "/v1/report", {"worker": "http://nope:1", "ranks": ranks})
            assert status == 400 and err["error"]["field"] == "worker"
            status, err = await _post(s, url + "/v1/report", {"worker": 0, "ranks": ranks[:2]})
            assert status == 400 and err["error"]["field"] == "ranks"

    run(body)
