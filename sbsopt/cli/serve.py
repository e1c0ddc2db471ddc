"""``sbsopt serve``, ``sbsopt mock-engine`` and ``sbsopt replay``: scheduling over HTTP.

aiohttp is imported only when one of these commands runs; without it they fail naming
``pip install 'sbsopt[serve]'``.
"""

from __future__ import annotations

import asyncio
import json

import click

from sbsopt.errors import InvalidInputError
from sbsopt.serve.config import POLICIES, check_url

__all__ = ["serve", "mock_engine", "replay"]


def _aiohttp(feature: str) -> None:
    from sbsopt.serve import require_aiohttp

    require_aiohttp(feature)


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise InvalidInputError("--port", value, "a TCP port in [0, 65535]")
    return value


def _listening(what: str):  # noqa: ANN202 - a callback
    def report(port: int) -> None:
        click.echo(f"sbsopt {what} listening on port {port}", err=True)

    return report


@click.command("serve")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--workers", default=None, help="comma-separated worker base URLs (DP+EP engine instances)")
@click.option("--ep", type=int, default=None, help="DP ranks per worker [default: 16]")
@click.option("--policy", type=click.Choice(POLICIES), default=None, help="[default: sbs]")
@click.option("--interval", default=None, help="SBS release rule: engine_paced or fixed:MS [default: engine_paced]")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="JSON or TOML file of ServeConfig fields (flags override it)")
def serve(port, host, workers, ep, policy, interval, config_path):
    """The SBS sidecar and OpenAI-compatible front in front of DP+EP workers (until SIGTERM)."""
    from sbsopt.serve.config import ServeConfig, load_config

    _port(port)
    urls = tuple(u.strip() for u in workers.split(",") if u.strip()) if workers else None
    overrides = {"workers": urls, "ep": ep, "policy": policy, "interval": interval}
    if config_path is not None:
        config = load_config(config_path, **overrides)
    else:
        if not urls:
            raise InvalidInputError("--workers", workers, "comma-separated worker URLs (or --config FILE)")
        config = ServeConfig(**{k: v for k, v in overrides.items() if v is not None})
    _aiohttp("sbsopt serve")
    from sbsopt.serve.app import build_app, check_reachable, serve_forever

    async def main() -> None:
        await check_reachable(list(config.workers), "/health", field="--workers")
        await serve_forever(build_app(config), host, port, on_ready=_listening("serve"))

    asyncio.run(main())


@click.command("mock-engine")
@click.option("--port", type=int, default=8001, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--ep", type=int, default=16, show_default=True, help="DP ranks of the instance")
@click.option("--model", default="deepseek-v3", show_default=True, help="cost-model card")
@click.option("--hardware", default="h800", show_default=True, help="cost-model hardware card")
@click.option("--speed", type=float, default=1.0, show_default=True, help="run this many times faster than modelled")
@click.option("--role", type=click.Choice(["colocated", "prefill"]), default="colocated", show_default=True,
              help="colocated: mixed prefill/decode iterations; prefill: a disaggregated prefill instance "
                   "(non-preemptive lock-step forwards, the response ends at the first token)")
@click.option("--batching", type=click.Choice(["sarathi", "fairbatching"]), default="sarathi", show_default=True)
@click.option("--token-budget", type=int, default=None,
              help="per-rank tokens per iteration [default: 512]; --role prefill: per-rank chunk capacity of "
                   "a forward [default: the simulator's chunk_tokens, 8192]")
@click.option("--gather-ms", type=float, default=2.0, show_default=True,
              help="--role prefill: real milliseconds an idle engine gathers arrivals before a forward")
def mock_engine(port, host, ep, model, hardware, speed, role, batching, token_budget, gather_ms):
    """A mock OpenAI-compatible DP+EP engine timed by the cost model (until SIGTERM)."""
    _port(port)
    if not speed > 0:
        raise InvalidInputError("--speed", speed, "a factor > 0")
    if token_budget is not None and token_budget < 1:
        raise InvalidInputError("--token-budget", token_budget, "at least 1 token")
    if not 0 <= gather_ms < 1000:
        raise InvalidInputError("--gather-ms", gather_ms, "milliseconds in [0, 1000)")
    from sbsopt.serve.mock.engine import MockEngine  # noqa: F401 - fail early on a broken install

    _aiohttp("sbsopt mock-engine")
    from sbsopt.serve.app import serve_forever
    from sbsopt.serve.mock.server import build_mock_app, create_engine

    engine = create_engine(ep=ep, model=model, hardware=hardware, speed=speed, batching=batching,
                           token_budget=token_budget, role=role, gather_s=gather_ms / 1000.0)
    asyncio.run(serve_forever(build_mock_app(engine, model_name=model), host, port,
                              on_ready=_listening("mock-engine")))


@click.command("replay")
@click.option("--trace", required=True, help="azure-conv, azure-code, mooncake-conv, sharegpt, arxiv or a PATH")
@click.option("--url", required=True, help="base URL of an OpenAI-compatible server (sbsopt serve, an engine)")
@click.option("--rate", type=float, default=None, help="scale arrivals to this many requests/s")
@click.option("--limit", type=int, default=None, help="first N requests")
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="replay this many times faster and scale measured times back (mock engines at --speed)")
@click.option("--timeout", "timeout_s", type=float, default=3600.0, show_default=True,
              help="wall-clock bound; unfinished requests count as in flight")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="write the per-request table (.csv)")
@click.option("--text-prompts", is_flag=True,
              help="send text prompts (4 characters per token) instead of token ids, e.g. to the SGLang router")
def replay(trace, url, rate, limit, time_scale, timeout_s, seed, as_json, out, text_prompts):
    """Replay a trace over HTTP at its timestamps and print the simulator's summary."""
    from sbsopt.workload import load_trace

    url = check_url("--url", url)
    if rate is not None and not rate > 0:
        raise InvalidInputError("--rate", rate, "a rate > 0 requests/s")
    if limit is not None and limit < 1:
        raise InvalidInputError("--limit", limit, "at least 1 request")
    if not time_scale > 0:
        raise InvalidInputError("--time-scale", time_scale, "a factor > 0")
    if out is not None and not out.endswith(".csv"):
        raise InvalidInputError("--out", out, "a path ending in .csv")
    workload = load_trace(trace, limit=limit, seed=seed)
    if rate is not None:
        workload = workload.with_rate(rate)
    _aiohttp("sbsopt replay")
    from sbsopt.serve.app import check_reachable
    from sbsopt.serve.replay import replay as run_replay

    async def main():
        await check_reachable([url], "/health", field="--url")
        return await run_replay(workload, url, time_scale=time_scale, timeout_s=timeout_s,
                                text_prompts=text_prompts)

    result = asyncio.run(main())
    summary = result.summary()
    if out is not None:
        result.write_csv(out)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        _print_table(summary)


def _fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def _print_table(s: dict) -> None:
    """The columns of ``sbsopt simulate``'s table (what a replay cannot see is ``-``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("router", "done/rej/inflight", "TTFT mean", "p50", "p99", "buffer/engine/exec ms",
                "TPOT mean", "in tok/s/GPU", "out tok/s/GPU", "bubble", "chunk util", "vs best immediate"):
        table.add_column(col)
    thr = s["throughput_tok_s_per_gpu"]
    table.add_row(
        (s["router"] or "replay") + (f" ({s['interval']})" if s.get("interval") else ""),
        f"{s['completed']}/{s['rejected']}/{s['in_flight']}",
        _fmt(s["ttft_ms"]["mean"]), _fmt(s["ttft_ms"]["p50"]), _fmt(s["ttft_ms"]["p99"]), "-/-/-",
        _fmt(s["tpot_ms"]["mean"], ".2f"), _fmt(thr["input"], ".0f"), _fmt(thr["output"], ".0f"), "-", "-", "-")
    Console(width=200).print(table)
