"""The mock engine's OpenAI-compatible HTTP server (``sbsopt mock-engine``).

``POST /v1/completions``, ``POST /v1/chat/completions`` (``stream`` true: SSE, one event per token
at its modelled time; false: one JSON answer at the end), ``GET /v1/load`` (per-rank waiting,
running, queued prefill tokens, KV blocks, the per-rank token budget; a prefill engine adds the
running forward's tokens and end), ``GET /health``, ``GET /v1/models``, and SGLang's
``GET /get_server_info`` and ``GET /get_model_info`` for routers. The prompt length is
the length of a token-id ``prompt`` (OpenAI completions accept token arrays), else estimated
from the text (~4 characters per token). A colocated engine generates ``max_tokens`` tokens
(EOS is ignored); a prefill engine streams the first token when the prefill completes and ends
the response there (finish reason ``length``). A client that disconnects is dropped from the
engine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from sbsopt.errors import InvalidInputError
from sbsopt.serve.http import ENCODER, BadRequest, error_response, json_response, read_json
from sbsopt.serve.mock.engine import MockEngine, MockRequest
from sbsopt.serve.mock.prefill import PrefillEngine
from sbsopt.serve.proxy import estimate_prompt_tokens

__all__ = ["create_engine", "build_mock_app", "ENGINE", "MODEL", "ROLES", "Engine"]

#: ``colocated``: prefill and decode in mixed iterations; ``prefill``: a disaggregated prefill instance.
ROLES = ("colocated", "prefill")
Engine = MockEngine | PrefillEngine

_DEFAULT_MAX_TOKENS = 16
ENGINE: web.AppKey[Engine] = web.AppKey("engine")
MODEL = web.AppKey("model", str)
_TASK = web.AppKey("engine_task", asyncio.Task)


def create_engine(*, ep: int, model: str = "deepseek-v3", hardware: str = "h800", speed: float = 1.0,
                  batching: str = "sarathi", token_budget: int | None = None,
                  kv_capacity_tokens: int | None = None, role: str = "colocated",
                  gather_s: float = 0.002) -> Engine:
    """A mock engine priced by ``load_cost_model(model, hardware, ep=ep)``.

    Parameters
    ----------
    role : str
        ``"colocated"``: :class:`MockEngine` (the simulator's colocated engine; ``batching`` and
        ``token_budget`` are its iteration policy and per-rank budget, default 512).
        ``"prefill"``: :class:`PrefillEngine` (the simulator's disaggregated prefill instance;
        ``token_budget`` is its per-rank chunk capacity, default the simulator's
        ``ClusterConfig.chunk_tokens``; ``batching`` must be ``sarathi``, the simulator's
        prefill chunking).
    gather_s : float
        Prefill role: real seconds an idle engine gathers arrivals before a forward.

    Raises
    ------
    InvalidInputError
        Unknown cards, role or batching, or an ``ep`` on which the model leaves no KV room.
    """
    from sbsopt.costmodel import load_cost_model
    from sbsopt.sim.batching import IterationCostModel, make_iteration_policy

    if role not in ROLES:
        raise InvalidInputError("--role", role, f"one of {', '.join(ROLES)}")
    cm = load_cost_model(model=model, hardware=hardware, ep=ep)
    if role == "prefill":
        from sbsopt.sim.config import ClusterConfig

        if batching not in ("sarathi", "default"):
            raise InvalidInputError("--batching", batching, "sarathi with --role prefill (the simulator's "
                                    "disaggregated prefill chunking)")
        chunk = ClusterConfig().chunk_tokens if token_budget is None else token_budget
        return PrefillEngine(ep=ep, cost_model=cm, chunk_tokens=chunk, speed=speed, gather_s=gather_s)
    kv = int(cm.kv_capacity_tokens_per_rank) if kv_capacity_tokens is None else kv_capacity_tokens
    if kv < 1:
        raise InvalidInputError("--ep", ep, f"enough ranks for {model} to fit on {hardware} with KV room left "
                                "(try --ep 16)")
    return MockEngine(ep=ep, cost=IterationCostModel.from_cost_model(cm),
                      policy=make_iteration_policy(batching, token_budget=token_budget),
                      kv_capacity_tokens=kv, speed=speed)


def _rank(request: web.Request, body: dict[str, Any]) -> int | None:
    value = body.get("data_parallel_rank")
    if value is None:
        header = request.headers.get("X-Data-Parallel-Rank")
        if header is None:
            return None
        try:
            value = int(header)
        except ValueError:
            raise BadRequest("X-Data-Parallel-Rank", f"X-Data-Parallel-Rank = {header!r}: expected an integer") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest("data_parallel_rank", f"data_parallel_rank = {value!r}: expected an integer")
    return value


def _max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_tokens", body.get("max_completion_tokens", _DEFAULT_MAX_TOKENS))
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest("max_tokens", f"max_tokens = {value!r}: expected an integer >= 1")
    return value


class _Chunks:
    """Pre-encoded SSE events of one request (the JSON around the token text is fixed)."""

    def __init__(self, rid: str, model: str, chat: bool) -> None:
        created = int(time.time())
        if chat:
            head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
            self.prefix = b"data: " + ENCODER.encode(head)[:-1] + b',"choices":[{"index":0,"delta":{"content":"'
            self.suffix = b'"},"finish_reason":null}]}\n\n'
            self.last = b"data: " + ENCODER.encode({**head, "choices": [{"index": 0, "delta": {},
                                                                         "finish_reason": "length"}]}) + b"\n\n"
        else:
            head = {"id": rid, "object": "text_completion", "created": created, "model": model}
            self.prefix = b"data: " + ENCODER.encode(head)[:-1] + b',"choices":[{"index":0,"text":"'
            self.suffix = b'","logprobs":null,"finish_reason":null}]}\n\n'
            self.last = b"data: " + ENCODER.encode({**head, "choices": [{"index": 0, "text": "",
                                                                         "finish_reason": "length"}]}) + b"\n\n"

    def token(self, index: int) -> bytes:
        return self.prefix + b" t%d" % index + self.suffix


async def _generate(request: web.Request, chat: bool) -> web.StreamResponse:
    engine = request.app[ENGINE]
    model = request.app[MODEL]
    try:
        body = await read_json(request)
        prompt = estimate_prompt_tokens(body)
        max_tokens = _max_tokens(body)
        rank = _rank(request, body)
        req = engine.submit(prompt, max_tokens, rank)
    except BadRequest as exc:
        return error_response(exc)
    except InvalidInputError as exc:
        return error_response(BadRequest(exc.field, str(exc)))
    rid = f"mock-{req.rid}"
    try:
        if body.get("stream"):
            return await _stream(request, req, _Chunks(rid, model, chat))
        texts = []
        while (event := await req.tokens.get()) is not None:
            texts.append(f" t{event[0]}")
        usage = {"prompt_tokens": prompt, "completion_tokens": len(texts), "total_tokens": prompt + len(texts)}
        choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": "".join(texts)},
                                   "finish_reason": "length"} if chat else
                                  {"index": 0, "text": "".join(texts), "logprobs": None, "finish_reason": "length"})
        return json_response({"id": rid, "object": "chat.completion" if chat else "text_completion",
                              "created": int(time.time()), "model": model, "choices": [choice], "usage": usage,
                              "data_parallel_rank": req.rank})
    finally:
        engine.cancel(req)  # no-op once done; frees the rank when the client went away


async def _stream(request: web.Request, req: MockRequest, chunks: _Chunks) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Data-Parallel-Rank": str(req.rank)})
    await resp.prepare(request)
    try:
        await _write_tokens(resp, req, chunks)
    except ConnectionResetError:
        pass  # the client went away; the caller drops the request from the engine
    return resp


async def _write_tokens(resp: web.StreamResponse, req: MockRequest, chunks: _Chunks) -> None:
    finished = False
    while not finished:
        event = await req.tokens.get()
        parts = []
        # coalesce the tokens already due into one write (one SSE event each)
        while True:
            if event is None:
                parts.append(chunks.last + b"data: [DONE]\n\n")
                finished = True
                break
            parts.append(chunks.token(event[0]))
            try:
                event = req.tokens.get_nowait()
            except asyncio.QueueEmpty:
                break
        await resp.write(b"".join(parts))
    await resp.write_eof()


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def load(request: web.Request) -> web.Response:
    return json_response(request.app[ENGINE].load())


async def health(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    return json_response({"status": "ok", "mock": True, "role": engine.role, "ep": engine.ep, "gpus": engine.ep,
                          "speed": engine.speed,
                          "completed": engine.completed, "cancelled": engine.cancelled})


async def server_info(request: web.Request) -> web.Response:
    """SGLang's ``GET /get_server_info``, the fields routers read: ``dp_size`` (the SGLang
    router's ``--dp-aware`` mode registers one worker per DP rank, ``URL@rank``, and pins the rank
    in the body), the model and the per-rank chunk size."""
    engine = request.app[ENGINE]
    model = request.app[MODEL]
    return json_response({"model_path": model, "served_model_name": model, "tokenizer_path": model,
                          "dp_size": engine.ep, "tp_size": engine.ep, "ep_size": engine.ep,
                          "enable_dp_attention": True, "chunked_prefill_size": engine.token_budget,
                          "disaggregation_mode": "prefill" if engine.role == "prefill" else "null",
                          "version": "sbsopt-mock"})


async def model_info(request: web.Request) -> web.Response:
    """SGLang's ``GET /get_model_info``."""
    model = request.app[MODEL]
    return json_response({"model_path": model, "tokenizer_path": model, "is_generation": True})


async def models(request: web.Request) -> web.Response:
    return json_response({"object": "list", "data": [{"id": request.app[MODEL], "object": "model",
                                                      "owned_by": "sbsopt-mock"}]})


def build_mock_app(engine: Engine, *, model_name: str = "deepseek-v3",
                   max_body_bytes: int = 16 * 2**20) -> web.Application:
    """The aiohttp application serving ``engine`` (its loop starts and stops with the app)."""
    app = web.Application(client_max_size=max_body_bytes)
    app[ENGINE] = engine
    app[MODEL] = model_name

    async def start(app: web.Application) -> None:
        app[_TASK] = asyncio.create_task(engine.run(), name="mock-engine")

    async def stop(app: web.Application) -> None:
        app[_TASK].cancel()
        await asyncio.gather(app[_TASK], return_exceptions=True)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/load", load)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/get_server_info", server_info)
    app.router.add_get("/get_model_info", model_info)
    return app
