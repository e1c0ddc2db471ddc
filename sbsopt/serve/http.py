"""Shared HTTP plumbing of the serve modules: body reading with limits, JSON responses, errors.

The error object is the oracle's (:func:`sbsopt.oracle.answer_line`):
``{"id", "status": "error", "error": {"field", "message"}}``; bad input is HTTP 400, an
oversized body 413.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

__all__ = ["BadRequest", "read_json", "json_response", "error_response", "ENCODER"]

ENCODER = msgspec.json.Encoder()


class BadRequest(Exception):
    """Input rejected with HTTP ``status``; ``field`` names the offending field when known."""

    def __init__(self, field: str | None, message: str, *, status: int = 400, rid: str | None = None) -> None:
        super().__init__(message)
        self.field, self.message, self.status, self.rid = field, message, status, rid


def json_response(body: Any, *, status: int = 200) -> web.Response:
    """A JSON response encoded with msgspec."""
    return web.Response(body=ENCODER.encode(body), status=status, content_type="application/json")


def error_response(exc: BadRequest) -> web.Response:
    """The oracle's error object with the error's HTTP status."""
    return json_response({"id": exc.rid, "status": "error", "error": {"field": exc.field, "message": exc.message}},
                         status=exc.status)


async def read_body(request: web.Request) -> bytes:
    """The raw body; :class:`BadRequest` (413) over the application's ``client_max_size``."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise BadRequest("body", f"request body over {request.app._client_max_size} bytes: {exc.text}",
                         status=413) from None


async def read_json(request: web.Request, kind: type | None = None) -> Any:
    """Decode the body as JSON (into the msgspec ``kind`` if given).

    Raises
    ------
    BadRequest
        413 over the size cap; 400 for malformed JSON or a schema violation (the field named
        as msgspec's path, e.g. ``prompt_tokens``).
    """
    raw = await read_body(request)
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(None, f"malformed JSON: {exc}"[:300]) from None
    if not isinstance(obj, dict):
        raise BadRequest(None, f"expected a JSON object, got {type(obj).__name__}")
    if kind is None:
        return obj
    try:
        return msgspec.convert(obj, kind)
    except msgspec.ValidationError as exc:
        from sbsopt.oracle.server import field_of

        rid = obj.get("id") if isinstance(obj.get("id"), str) else None
        raise BadRequest(field_of(str(exc)), str(exc), rid=rid) from None
