"""The ``sbsopt serve`` service: state, scheduler, report puller, and its aiohttp application.

:class:`Service` owns everything of one process (no globals); :func:`build_app` wires it into
an :class:`aiohttp.web.Application`; :func:`serve_forever` runs it until SIGTERM/SIGINT, then
shuts down gracefully: the listening socket closes, the buffer is drained (every buffered request
is released in a forced window and answered), in-flight responses finish, then the process
exits.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import aiohttp
from aiohttp import web

from sbsopt.errors import InvalidInputError
from sbsopt.serve import proxy, sidecar
from sbsopt.serve.config import ServeConfig
from sbsopt.serve.service import SERVICE, Service

__all__ = ["build_app", "start_app", "serve_forever", "check_reachable"]



def build_app(config: ServeConfig, *, service: Service | None = None) -> web.Application:
    """The aiohttp application of ``sbsopt serve`` (sidecar + front)."""
    service = service or Service(config)
    app = web.Application(client_max_size=config.max_body_bytes)
    app[SERVICE] = service
    sidecar.add_routes(app)
    proxy.add_routes(app)
    app.on_startup.append(service.on_startup)
    app.on_shutdown.append(service.on_shutdown)
    app.on_cleanup.append(service.on_cleanup)
    return app


async def start_app(app: web.Application, host: str, port: int, *,
                    shutdown_timeout: float = 30.0) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` (0 = an ephemeral port); returns the runner and the bound port.

    Handlers are cancelled when their client disconnects (so a proxied upstream is closed).

    Raises
    ------
    InvalidInputError
        The port cannot be bound.
    """
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise InvalidInputError("--port", port, f"a free port on {host} ({exc.strerror})") from None
    server = site._server  # noqa: SLF001 - the bound port of an ephemeral site
    sockets = getattr(server, "sockets", None)  # an asyncio.Server for a TCP site
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound


async def serve_forever(app: web.Application, host: str, port: int, *,
                        on_ready: Callable[[int], None] | None = None) -> None:
    """Run ``app`` until SIGTERM or SIGINT, then shut down gracefully."""
    runner, bound = await start_app(app, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready(bound)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def check_reachable(urls: list[str], path: str, *, field: str, timeout_s: float = 3.0) -> None:
    """Raise :class:`~sbsopt.errors.InvalidInputError` naming the first URL whose ``path`` does not answer."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for url in urls:
            try:
                # any HTTP answer counts: a real engine may not serve ``path``
                async with session.get(url + path) as resp:
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                raise InvalidInputError(field, url, f"a reachable server ({path}: {type(exc).__name__})") from None
