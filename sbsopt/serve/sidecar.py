"""The sidecar's HTTP endpoints: the oracle over HTTP, SBS routing, worker reports, health, metrics.

``POST /v1/window``
    One oracle problem (the JSON-lines schema of :mod:`sbsopt.oracle`, unchanged) in, its answer
    out; a rejected problem is HTTP 400 with the oracle's error object.
``POST /v1/route``
    ``{id, prompt_tokens, cached_tokens?, deadline_ms?}``; answered when the window holding the
    request is released: ``{id, status: "assigned", worker, worker_index, dp_rank, chunk,
    window, wait_ms, overhead_ms}`` or ``{id, status: "rejected", reason}`` (both HTTP 200).
    Immediate policies answer at once. ``wait_ms`` is the time in the buffer, ``overhead_ms``
    the sidecar's own time on the request (see :func:`_answer`).
``POST /v1/route/decode``
    ``{id, context_tokens, kv_blocks?}``; decode placement by IQR-lex on decode windows.
``POST /v1/report``
    ``{worker, ranks: [...], token_budget?}``: a pushed load report (``worker`` = URL or index).
``GET /health``, ``GET /metrics``
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import msgspec
from aiohttp import web

from sbsopt.errors import InvalidInputError
from sbsopt.serve.http import BadRequest, error_response, json_response, read_body, read_json
from sbsopt.serve.state import parse_report
from sbsopt.serve.windows import PrefillItem

if TYPE_CHECKING:
    from sbsopt.serve.service import Service

__all__ = ["RouteRequest", "DecodeRouteRequest", "add_routes"]

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
_Tokens = Annotated[int, msgspec.Meta(ge=1, le=2**40)]


class RouteRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Body of ``POST /v1/route``."""

    id: _Id
    prompt_tokens: _Tokens
    cached_tokens: Annotated[int, msgspec.Meta(ge=0, le=2**40)] = 0
    deadline_ms: Annotated[float, msgspec.Meta(ge=0.0, le=3.6e6)] | None = None


class DecodeRouteRequest(msgspec.Struct, frozen=True):
    """Body of ``POST /v1/route/decode``."""

    id: _Id
    context_tokens: _Tokens
    kv_blocks: Annotated[int, msgspec.Meta(ge=1, le=2**40)] | None = None


def _service(request: web.Request) -> Service:
    return request.app[_service_key()]


async def _answer(service: Service, request: web.Request, item: PrefillItem, entered_s: float) -> web.StreamResponse:
    """Wait for the item's answer and write it, with the sidecar's own time on it.

    ``overhead_ms`` in an assigned answer is the time the sidecar spent on the request outside
    the buffer: reading and parsing it (from the handler's start to the submit), then from the
    window's cut to this answer being encoded (the solve, resolving the future, resuming this
    handler). ``sbsopt_route_overhead_seconds`` observes the same span up to the answer's last
    byte handed to the socket.
    """
    # shield: a client that goes away must not cancel the future the window will resolve
    body = await asyncio.shield(item.future)
    scheduler = service.scheduler
    parse_s = item.arrival_s - entered_s
    if body.get("status") == "assigned":
        body = {**body, "overhead_ms": round((parse_s + scheduler.now() - item.cut_s) * 1e3, 3)}
    response = json_response(body)
    await response.prepare(request)
    await response.write_eof()
    if body.get("status") == "assigned":
        service.metrics.route_overhead_s.observe(parse_s + scheduler.now() - item.cut_s)
    return response


async def route(request: web.Request) -> web.StreamResponse:
    service = _service(request)
    entered = service.scheduler.now()
    try:
        body = await read_json(request, RouteRequest)
        if body.cached_tokens >= body.prompt_tokens:
            raise BadRequest("cached_tokens", f"cached_tokens = {body.cached_tokens}: expected fewer than "
                             f"prompt_tokens ({body.prompt_tokens})", rid=body.id)
    except BadRequest as exc:
        service.metrics.error("bad_request")
        return error_response(exc)
    item = service.scheduler.submit(body.id, body.prompt_tokens, cached_tokens=body.cached_tokens,
                                    deadline_ms=body.deadline_ms)
    return await _answer(service, request, item, entered)


async def route_decode(request: web.Request) -> web.StreamResponse:
    service = _service(request)
    entered = service.scheduler.now()
    try:
        body = await read_json(request, DecodeRouteRequest)
    except BadRequest as exc:
        service.metrics.error("bad_request")
        return error_response(exc)
    item = service.scheduler.submit_decode(body.id, body.context_tokens, body.kv_blocks)
    return await _answer(service, request, item, entered)


async def window(request: web.Request) -> web.Response:
    """The oracle over HTTP: parse as the oracle does, solve in the thread pool."""
    from sbsopt.oracle.server import OracleError, answer_problem, parse_line

    service = _service(request)
    try:
        raw = await read_body(request)
        problem = parse_line(raw)
    except BadRequest as exc:
        service.metrics.error("bad_request")
        return error_response(exc)
    except OracleError as exc:
        service.metrics.error("bad_request")
        return error_response(BadRequest(exc.field, exc.message, rid=exc.wid))
    loop = asyncio.get_running_loop()
    try:
        answer = await loop.run_in_executor(service.executor, lambda: answer_problem(
            problem, coefficients=service.coefficients))
    except OracleError as exc:
        service.metrics.error("bad_request")
        return error_response(BadRequest(exc.field, exc.message, rid=exc.wid))
    except Exception as exc:  # noqa: BLE001 - every request is answered
        service.metrics.error("internal")
        return error_response(BadRequest(None, f"internal error: {type(exc).__name__}: {exc}"[:500], status=500,
                                         rid=problem.id))
    service.metrics.window("oracle", len(problem.requests), answer["solve_us"] / 1e6)
    return json_response(answer)


async def report(request: web.Request) -> web.Response:
    service = _service(request)
    try:
        obj = await read_json(request)
        worker = service.worker_index(obj.get("worker"))
        rep = parse_report(obj, service.config.ep)
    except BadRequest as exc:
        service.metrics.error("bad_request")
        return error_response(exc)
    except InvalidInputError as exc:
        service.metrics.error("bad_request")
        return error_response(BadRequest(exc.field, str(exc)))
    now = service.clock()
    service.state.apply_report(worker, rep, requested_at=now, now=now)
    service.scheduler.poke()
    return json_response({"status": "ok"})


async def health(request: web.Request) -> web.Response:
    service = _service(request)
    alive = service.state.alive_workers(service.clock())
    return json_response({"status": "draining" if service.draining else "ok", "policy": service.config.policy,
                          "interval": service.config.interval, "workers": list(service.config.workers),
                          "alive": alive.tolist(), "ep": service.config.ep,
                          "gpus": len(service.config.workers) * service.config.ep,
                          "buffered": service.scheduler.buffered, "windows": service.scheduler.windows})


async def metrics(request: web.Request) -> web.Response:
    service = _service(request)
    return web.Response(text=service.metrics.render(buffered=service.scheduler.buffered),
                        content_type="text/plain", charset="utf-8", headers={"X-Content-Version": "0.0.4"})


def add_routes(app: web.Application) -> None:
    """Register the sidecar endpoints on ``app``."""
    app.router.add_post("/v1/window", window)
    app.router.add_post("/v1/route", route)
    app.router.add_post("/v1/route/decode", route_decode)
    app.router.add_post("/v1/report", report)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)


def _service_key():  # noqa: ANN202 - imported late: app imports this module
    from sbsopt.serve.service import SERVICE

    return SERVICE
