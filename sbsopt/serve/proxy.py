"""The SBS front: an OpenAI-compatible proxy that routes through the sidecar.

``POST /v1/completions`` and ``POST /v1/chat/completions`` (streaming SSE or not): the request
is routed by the service's policy (an SBS window, or at once), then forwarded to the chosen
worker with the DP rank pinned twice, as SGLang and vLLM accept it: the body field
``data_parallel_rank`` and the header ``X-Data-Parallel-Rank``. The response streams back
chunk by chunk.

Failure handling (no client ever hangs):

- connect failure, no first chunk within ``first_byte_timeout_s``, or HTTP 5xx, before any byte
  reached the client: the worker is marked down and the request is retried on another worker
  (least tokens), at most ``max_retries`` times; then HTTP 502;
- the worker disappears or stalls (``stall_timeout_s``) mid-stream: the client's stream ends
  with an ``error`` event (``data: {"error": {...}}``) and no ``[DONE]``;
- the client disconnects: the handler is cancelled, which closes the upstream connection, so
  the worker drops the request.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from sbsopt.serve.http import ENCODER, BadRequest, error_response, json_response, read_json

if TYPE_CHECKING:
    from sbsopt.serve.service import Service

__all__ = ["estimate_prompt_tokens", "add_routes"]

_IDS = "sbsopt-proxy"


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of an OpenAI request: exact for token-id prompts, ~4 characters/token for text.

    Raises
    ------
    BadRequest
        Neither a ``prompt`` nor ``messages`` of a usable type.

    Examples
    --------
    >>> estimate_prompt_tokens({"prompt": [1, 2, 3]})
    3
    >>> estimate_prompt_tokens({"messages": [{"role": "user", "content": "x" * 40}]})
    14
    """
    prompt = body.get("prompt")
    if prompt is not None:
        if isinstance(prompt, str):
            return max(1, len(prompt) // 4)
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
            return sum(estimate_prompt_tokens({"prompt": p}) for p in prompt)
        raise BadRequest("prompt", "prompt: expected a string, a list of token ids, or a list of those")
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        total = 0
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):  # content parts
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                raise BadRequest(f"messages[{i}].content", f"messages[{i}].content: expected a string")
            total += len(content) // 4 + 4  # role and separators
        return max(1, total)
    raise BadRequest("prompt", "expected a non-empty 'prompt' (completions) or 'messages' (chat)")


def _openai_error(status: int, message: str, code: str) -> web.Response:
    return json_response({"error": {"message": message, "type": "sbsopt_error", "code": code}}, status=status)


def _sse_error(message: str, code: str) -> bytes:
    return b"data: " + ENCODER.encode({"error": {"message": message, "type": "upstream_error", "code": code}}) + b"\n\n"


class _Upstream(Exception):
    """An attempt failed before any byte reached the client: retry elsewhere."""


async def _first_chunk(resp: aiohttp.ClientResponse, timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(resp.content.readany(), timeout)
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
        raise _Upstream(f"no first chunk: {type(exc).__name__}") from None


async def _attempt(service: Service, request: web.Request, path: str, body: dict[str, Any], worker: int,
                   rank: int, window: int | None) -> web.StreamResponse:
    """One forward; raises :class:`_Upstream` if nothing was sent to the client yet.

    A streamed request of an SBS ``window`` has landed on the engine when its response headers
    arrive (an engine answers them when it takes the request in): the scheduler learns from it
    how long a window takes to land (:meth:`Scheduler.landed <sbsopt.serve.windows.Scheduler.landed>`).
    """
    cfg = service.config
    headers = {"Content-Type": "application/json"}
    if cfg.pin_rank:
        payload = ENCODER.encode({**body, "data_parallel_rank": rank})
        headers["X-Data-Parallel-Rank"] = str(rank)
    else:
        payload = ENCODER.encode(body)
    timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout_s, sock_connect=cfg.connect_timeout_s)
    session = service.session
    if session is None:  # the application has not started (or has shut down)
        raise _Upstream("no client session")
    try:
        resp = await asyncio.wait_for(session.post(cfg.workers[worker] + path, data=payload,
                                                           headers=headers, timeout=timeout),
                                      cfg.first_byte_timeout_s)
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
        raise _Upstream(f"{type(exc).__name__}: {exc}") from None
    async with resp:
        if resp.status >= 500:
            raise _Upstream(f"HTTP {resp.status}")
        if not body.get("stream"):
            try:
                data = await asyncio.wait_for(resp.read(), cfg.first_byte_timeout_s)
            except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                raise _Upstream(f"{type(exc).__name__}: {exc}") from None
            return web.Response(body=data, status=resp.status, content_type=resp.content_type)
        if resp.status != 200:
            return web.Response(body=await resp.read(), status=resp.status, content_type=resp.content_type)
        service.scheduler.landed(window)
        first = await _first_chunk(resp, cfg.first_byte_timeout_s)
        if not first:
            raise _Upstream("empty stream")
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                          "X-Sbsopt-Worker": cfg.workers[worker],
                                          "X-Data-Parallel-Rank": resp.headers.get("X-Data-Parallel-Rank", str(rank))})
        await out.prepare(request)
        try:
            await out.write(first)
            while True:
                try:
                    chunk = await asyncio.wait_for(resp.content.readany(), cfg.stall_timeout_s)
                except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                    service.metrics.error("upstream_mid_stream")
                    service.state.mark_down(worker, service.clock())
                    await out.write(_sse_error(f"worker {cfg.workers[worker]} failed mid-stream: "
                                               f"{type(exc).__name__}", "upstream_disconnected"))
                    break
                if not chunk:
                    break
                await out.write(chunk)
            await out.write_eof()
        except ConnectionResetError:
            # The client went away (a client may close as soon as it has read [DONE]): leaving
            # the ``async with`` closes the upstream connection, so the engine drops the request.
            service.metrics.error("client_disconnected")
        return out


async def _proxy(request: web.Request, path: str) -> web.StreamResponse:
    service: Service = request.app[_service_key()]
    try:
        body = await read_json(request)
        tokens = estimate_prompt_tokens(body)
        if "stream" in body and not isinstance(body["stream"], bool):
            raise BadRequest("stream", "stream: expected true or false")
    except BadRequest as exc:
        service.metrics.error("bad_request")
        return error_response(exc)
    rid = f"{_IDS}-{next(service.ids)}"
    # a streamed request's landing is seen: its response headers come when the engine takes it in
    item = service.scheduler.submit(rid, tokens, landing_seen=bool(body.get("stream")))
    answer = await asyncio.shield(item.future)
    if answer["status"] != "assigned":
        return _openai_error(503, f"request rejected by the scheduler: {answer['reason']}", answer["reason"])
    worker, rank = answer["worker_index"], answer["dp_rank"]
    window = answer["window"]
    tried: set[int] = set()
    for attempt in itertools.count():
        tried.add(worker)
        try:
            response = await _attempt(service, request, path, body, worker, rank, window if attempt == 0 else None)
            service.metrics.proxied += 1
            return response
        except _Upstream as exc:
            service.metrics.error("upstream")
            service.state.mark_down(worker, service.clock())
            if attempt >= service.config.max_retries:
                return _openai_error(502, f"no worker answered after {attempt + 1} attempts (last: {exc})",
                                     "upstream_unavailable")
            unit = service.scheduler.reroute(float(tokens), frozenset(tried))
            if unit is None:
                return _openai_error(502, f"no other live worker to retry on (last: {exc})", "upstream_unavailable")
            service.metrics.retries += 1
            worker, rank = divmod(unit, service.config.ep)
    raise AssertionError("unreachable")  # pragma: no cover


async def completions(request: web.Request) -> web.StreamResponse:
    return await _proxy(request, "/v1/completions")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _proxy(request, "/v1/chat/completions")


def add_routes(app: web.Application) -> None:
    """Register the OpenAI-compatible front on ``app``."""
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)


def _service_key():  # noqa: ANN202 - imported late: app imports this module
    from sbsopt.serve.service import SERVICE

    return SERVICE
