"""Helpers of the serve tests: apps on 127.0.0.1 ephemeral ports, inside one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from sbsopt.serve.app import build_app, start_app
from sbsopt.serve.config import ServeConfig
from sbsopt.serve.mock.server import build_mock_app, create_engine

EP = 16  # DeepSeek-V3 needs two 8xH800 nodes to leave KV room


@contextlib.asynccontextmanager
async def running(app: web.Application, *, shutdown_timeout: float = 5.0) -> AsyncIterator[str]:
    """Serve ``app`` on an ephemeral port; yields its base URL; shuts it down gracefully."""
    runner, port = await start_app(app, "127.0.0.1", 0, shutdown_timeout=shutdown_timeout)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def mock_engines(n: int, *, speed: float = 10.0, **options: Any) -> AsyncIterator[list[str]]:
    """``n`` mock engines of :data:`EP` ranks."""
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(running(build_mock_app(create_engine(ep=EP, speed=speed, **options))))
                for _ in range(n)]
        yield urls


@contextlib.asynccontextmanager
async def serve_front(workers: list[str], **options: Any) -> AsyncIterator[tuple[str, web.Application]]:
    """``sbsopt serve`` in front of ``workers``; yields (URL, app)."""
    config = ServeConfig(workers=tuple(workers), ep=options.pop("ep", EP), **options)
    app = build_app(config)
    async with running(app) as url:
        yield url, app


def run(coro_fn: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """Run one async test body with a hard time bound."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(bounded())


def free_port() -> int:
    """A loopback TCP port nobody listens on (for a server in another process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def router_process(argv: list[str], port: int, workers: int) -> AsyncIterator[str]:
    """Run a Rust router (``argv``, listening on ``port``); yields its URL once ``workers``
    workers are registered and healthy on its ``/workers``; terminates it on exit."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(300):
                if proc.poll() is not None:
                    raise RuntimeError(f"the router exited with {proc.returncode}")
                try:
                    async with s.get(url + "/workers") as resp:
                        listed = (await resp.json()).get("workers", [])
                    if sum(w.get("is_healthy", False) for w in listed) == workers:
                        break
                except (aiohttp.ClientError, ValueError):
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the router did not register {workers} workers within 30 s")
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
