"""A vLLM production-stack routing class backed by the SBS sidecar.

The production-stack router calls ``route_request(endpoints, engine_stats, request_stats,
request)`` and forwards the request to the URL it returns. This class asks the sidecar
(``POST /v1/route``) for ``(worker, dp_rank)``, returns the endpoint whose URL is the worker,
and records the DP rank so the caller can pin it (``request.state.data_parallel_rank`` when the
request has a ``state``, and :attr:`SbsRoutingLogic.last_rank`); the sidecar's worker list
must hold the same URLs as the router's endpoints. If the sidecar cannot answer within
``timeout_s``, or rejects the request, or names a worker the router does not know, the class falls
back to the endpoint with the fewest in-flight requests (``request_stats``), so the router keeps
serving.

Only the standard library is used (the sidecar call runs in a worker thread), so the class can
be dropped into the production-stack router process without sbsopt's serve extra.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["SbsRoutingLogic", "prompt_tokens_of"]


def prompt_tokens_of(body: dict[str, Any]) -> int:
    """Prompt tokens of an OpenAI request body (token-id prompt exact, text ~4 characters/token).

    Examples
    --------
    >>> prompt_tokens_of({"prompt": [5, 6, 7]}), prompt_tokens_of({"prompt": "abcdefgh"})
    (3, 2)
    """
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, str):
        return max(1, len(prompt) // 4)
    messages = body.get("messages") or []
    chars = sum(len(m.get("content", "")) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
    return max(1, chars // 4 + 4 * len(messages))


class SbsRoutingLogic:
    """``RoutingInterface`` implementation for the vLLM production-stack router.

    Parameters
    ----------
    sidecar_url : str
        Base URL of ``sbsopt serve``.
    timeout_s : float
        Longest wait for the sidecar (the window wait included) before falling back.
    """

    def __init__(self, sidecar_url: str, *, timeout_s: float = 2.0) -> None:
        self.sidecar_url = sidecar_url.rstrip("/")
        self.timeout_s = timeout_s
        self.last_rank: int | None = None
        self.fallbacks = 0
        self._ids = itertools.count()

    def _ask(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.sidecar_url + "/v1/route", data=data,
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - operator-given URL
            return json.loads(resp.read())

    async def route_request(self, endpoints: list[Any], engine_stats: dict[str, Any],
                            request_stats: dict[str, Any], request: Any,
                            request_json: dict[str, Any] | None = None) -> str:
        """The URL of the endpoint to send ``request`` to.

        ``endpoints`` have a ``url``; ``request_stats`` maps URL to stats with
        ``in_prefill_requests``/``in_decoding_requests`` (only read for the fallback);
        ``request`` is the incoming (FastAPI/Starlette) request, whose JSON body is read if
        ``request_json`` is not given.
        """
        if request_json is None:
            body = request.json()
            request_json = await body if inspect.isawaitable(body) else body
        urls = [e.url.rstrip("/") for e in endpoints]
        ask = {"id": f"vllm-router-{next(self._ids)}", "prompt_tokens": prompt_tokens_of(request_json or {})}
        try:
            answer = await asyncio.to_thread(self._ask, ask)
        except (OSError, urllib.error.URLError, ValueError):
            answer = {"status": "error"}
        worker = str(answer.get("worker", "")).rstrip("/")
        if answer.get("status") == "assigned" and worker in urls:
            self.last_rank = int(answer["dp_rank"])
            state = getattr(request, "state", None)
            if state is not None:
                state.data_parallel_rank = self.last_rank
            return endpoints[urls.index(worker)].url
        self.fallbacks += 1
        self.last_rank = None

        def in_flight(url: str) -> float:
            stats = request_stats.get(url) if request_stats else None
            return float(getattr(stats, "in_prefill_requests", 0) + getattr(stats, "in_decoding_requests", 0))

        return min((e.url for e in endpoints), key=in_flight)
