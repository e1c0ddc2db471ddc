"""Trace replay over HTTP (``sbsopt replay``): requests sent at the trace's timestamps, measured
from the streamed responses.

Each request is an OpenAI completions call with a token-id ``prompt`` of the trace's input
length, ``max_tokens`` = the trace's output length, ``ignore_eos`` and ``stream`` set. TTFT is
measured from the request's scheduled arrival to the first streamed token, TPOT as (last token -
first token) / (tokens - 1), as :mod:`sbsopt.sim.metrics` defines them. ``time_scale`` replays a
trace ``time_scale`` times faster and multiplies every measured duration by it, for engines run
at ``--speed`` ``time_scale`` (mock engines): the figures are then in modelled time.

Accounting: every request ends ``completed`` (the stream ended normally), ``rejected`` (an HTTP
error, an ``error`` event, a broken connection; with the reason) or ``in_flight`` (not finished
when the replay timed out), so completed + rejected + in_flight == requests.
"""

from __future__ import annotations

import asyncio
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import numpy as np

from sbsopt._stats import percentiles
from sbsopt._validate import check_number

__all__ = ["RequestRecord", "ReplayResult", "replay", "COLUMNS"]

COLUMNS = ("id", "arrival_s", "input_tokens", "output_tokens", "status", "reject_reason", "ttft_s", "tpot_s",
           "e2e_s", "tokens_received", "worker", "dp_rank")
_DECODER = msgspec.json.Decoder()


@dataclass
class RequestRecord:
    """One replayed request (times in modelled seconds from the request's scheduled arrival)."""

    id: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    status: str = "in_flight"
    reject_reason: str = ""
    ttft_s: float = math.nan
    tpot_s: float = math.nan
    e2e_s: float = math.nan
    tokens_received: int = 0
    worker: str = ""
    dp_rank: int = -1


@dataclass(frozen=True)
class ReplayResult:
    """The records of one replay plus what the server said about itself (``/health``)."""

    records: list[RequestRecord]
    server: dict[str, Any]
    time_scale: float
    wall_s: float

    def column(self, name: str) -> np.ndarray:
        return np.array([getattr(r, name) for r in self.records])

    def summary(self) -> dict[str, Any]:
        """JSON-able metrics with the keys of ``sbsopt simulate --json`` that a replay can measure."""
        status = self.column("status") if self.records else np.array([], dtype=object)
        done = status == "completed"
        arrival = self.column("arrival_s").astype(float) if self.records else np.zeros(0)
        ttft = self.column("ttft_s").astype(float) if self.records else np.zeros(0)
        e2e = self.column("e2e_s").astype(float) if self.records else np.zeros(0)
        end = arrival + np.where(np.isfinite(e2e), e2e, np.where(np.isfinite(ttft), ttft, np.nan))
        span = float(np.nanmax(end) - arrival[0]) if np.isfinite(end).any() else 0.0
        gpus = self.server.get("gpus")
        inp = float(self.column("input_tokens")[np.isfinite(ttft)].sum()) if self.records else 0.0
        out = float(self.column("output_tokens")[done].sum()) if self.records else 0.0
        per_gpu = {"input": inp / span / gpus, "output": out / span / gpus} if gpus and span > 0 else \
            {"input": None, "output": None}
        reasons: dict[str, int] = {}
        for r in self.records:
            if r.status == "rejected":
                reasons[r.reject_reason] = reasons.get(r.reject_reason, 0) + 1
        offered = float(arrival[-1] - arrival[0]) if len(arrival) > 1 else 0.0
        return {
            "mode": "replay", "requests": len(self.records), "completed": int(done.sum()),
            "rejected": int((status == "rejected").sum()), "in_flight": int((status == "in_flight").sum()),
            "rejected_reasons": reasons, "router": self.server.get("policy"),
            "interval": self.server.get("interval") if self.server.get("policy") == "sbs" else None,
            "gpus": gpus, "offered_rate_req_s": (len(arrival) - 1) / offered if offered > 0 else 0.0,
            "ttft_ms": percentiles(ttft), "tpot_ms": percentiles(self.column("tpot_s").astype(float)
                                                                 if self.records else np.zeros(0)),
            "e2e_ms": percentiles(e2e), "throughput_tok_s_per_gpu": per_gpu, "span_s": span,
            "time_scale": self.time_scale, "wall_s": self.wall_s,
        }

    def write_csv(self, path: str | Path) -> None:
        """The per-request table as CSV (one row per request, :data:`COLUMNS`)."""
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for r in self.records:
                writer.writerow([getattr(r, c) for c in COLUMNS])


async def _one(session: aiohttp.ClientSession, url: str, rec: RequestRecord, sched: float, scale: float,
               model: str, text_prompts: bool) -> None:
    loop = asyncio.get_running_loop()
    # a text prompt of 4 characters per token, for servers that take no token ids (the SGLang router)
    prompt: str | list[int] = "abcd" * rec.input_tokens if text_prompts else [1] * rec.input_tokens
    body = {"model": model, "prompt": prompt, "max_tokens": rec.output_tokens, "ignore_eos": True, "stream": True}
    first = last = math.nan
    count = 0
    try:
        async with session.post(url + "/v1/completions", json=body) as resp:
            rec.worker = resp.headers.get("X-Sbsopt-Worker", "")
            rec.dp_rank = int(resp.headers.get("X-Data-Parallel-Rank", "-1") or -1)
            if resp.status != 200:
                raw = await resp.read()
                try:
                    err = _DECODER.decode(raw).get("error", {})
                    code = err.get("code") or err.get("field")
                except (msgspec.DecodeError, AttributeError):
                    code = None
                rec.status, rec.reject_reason = "rejected", f"http_{resp.status}" + (f":{code}" if code else "")
                return
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue  # read to the end of the body, so the connection is reused
                event = _DECODER.decode(data)
                if "error" in event:
                    rec.status, rec.reject_reason = "rejected", str(event["error"].get("code", "stream_error"))
                    return
                choice = (event.get("choices") or [{}])[0]
                piece = choice.get("text") or (choice.get("delta") or {}).get("content")
                if piece:
                    now = loop.time()
                    first = now if count == 0 else first
                    last = now
                    count += 1
    except (aiohttp.ClientError, ConnectionError, msgspec.DecodeError) as exc:
        rec.status, rec.reject_reason = "rejected", type(exc).__name__
        return
    finally:
        rec.tokens_received = count
    if count == 0:
        rec.status, rec.reject_reason = "rejected", "no_tokens"
        return
    rec.status = "completed"
    rec.ttft_s = (first - sched) * scale
    rec.e2e_s = (last - sched) * scale
    if count > 1:
        rec.tpot_s = (last - first) * scale / (count - 1)


async def replay(workload: Any, url: str, *, time_scale: float = 1.0, timeout_s: float = 3600.0,
                 model: str = "sbsopt-replay", text_prompts: bool = False) -> ReplayResult:
    """Replay ``workload`` against the OpenAI-compatible server at ``url``.

    Parameters
    ----------
    workload : Workload
        Arrivals (seconds, from 0) and token lengths (:func:`sbsopt.workload.load_trace`).
    url : str
        Base URL (``sbsopt serve`` front, a mock engine, or any OpenAI-compatible server).
    time_scale : float
        Send ``time_scale`` times faster; durations are multiplied back (modelled time).
    timeout_s : float
        Wall-clock bound of the whole replay; unfinished requests are reported ``in_flight``.
    text_prompts : bool
        Send text prompts of 4 characters per token instead of token ids (servers that accept
        only strings, such as the SGLang router; the mock engine counts 4 characters a token).

    Returns
    -------
    ReplayResult
    """
    scale = check_number("time_scale", time_scale, strict_min=True)
    arrival = np.asarray(workload.arrival_s, dtype=float)
    records = [RequestRecord(i, float(arrival[i]), int(workload.input_tokens[i]), int(max(workload.output_tokens[i], 1)))
               for i in range(len(arrival))]
    server: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        try:
            async with session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                server = await resp.json(content_type=None) if resp.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            server = {}
        loop = asyncio.get_running_loop()
        wall0 = time.perf_counter()
        start = loop.time() + 0.01
        tasks = []

        async def dispatch() -> None:
            for rec in records:
                sched = start + (rec.arrival_s - arrival[0]) / scale
                delay = sched - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(_one(session, url, rec, sched, scale, model, text_prompts)))
            await asyncio.gather(*tasks)

        runner = asyncio.create_task(dispatch())
        try:
            await asyncio.wait_for(asyncio.shield(runner), timeout_s)
        except TimeoutError:
            runner.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(runner, *tasks, return_exceptions=True)
            for rec in records:
                if rec.status == "completed":
                    continue
                if rec.status != "rejected":
                    rec.status = "in_flight"
        wall = time.perf_counter() - wall0
    return ReplayResult(records, server, scale, wall)
