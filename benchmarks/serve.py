"""``sbsopt serve`` measured over real sockets on 127.0.0.1, each server in its own process (not a test).

1. ``sidecar``: the sidecar's own time per ``POST /v1/route`` beyond the window wait, sent open
   loop at ``--rate`` req/s (default 1,000) by this process to an ``sbsopt serve`` process (SBS,
   engine-paced) in front of two prefill mock-engine processes; like a router, the client then
   sends each assigned request (20-240 prompt tokens) to its worker and rank, so that the
   engines' reports see the assignments. Each assigned answer carries
   ``overhead_ms``: parse and submit, then window cut to answer encoded (solve included); the
   ``sbsopt_route_overhead_seconds`` mean from ``/metrics`` adds the socket write. The client's
   latency minus the answer's ``wait_ms`` is printed too (it adds the client's own loop and
   the network).
2. ``proxy``: the front's added latency to the first streamed token: the same streamed
   completion sent alternately straight to a colocated mock engine and through an ``sbsopt
   serve`` process (immediate ``least_tokens``, so no window wait), sequentially; added = TTFT
   via the front - TTFT direct, per pair.
3. ``stack`` (``--stack``): SBS against immediate dispatch through the whole stack, ``sbsopt
   replay`` -> ``sbsopt serve`` -> two ``sbsopt mock-engine --role prefill`` processes at
   ``--speed``, next to ``sbsopt simulate`` (disaggregated, two prefill instances of the same
   ``--ep``) on the same trace prefix. The default prefix is 1,000 requests: on 300, the
   simulator's own SBS-vs-least_tokens gap moved from -12% to 0% when the arrivals were
   jittered by up to 20 ms (a handful of forwards decide it), on 1,000 it stayed within -7% to
   -14%.

Usage: ``python benchmarks/serve.py [--requests 5000] [--rate 1000] [--pairs 200] [--stack]
[--trace azure-code --limit 1000 --trace-rate 20 --speed 2] [--markdown PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import _report  # benchmarks/_report.py
import aiohttp
import numpy as np

_CLI = "import sys; from sbsopt.cli import main; sys.exit(main(sys.argv[1:]))"
_LISTENING = re.compile(rb"listening on port (\d+)")
EP = 16  # DeepSeek-V3 needs two 8xH800 nodes per instance to leave KV room
STACK_POLICIES = ("round_robin", "least_tokens", "sbs")


@contextlib.contextmanager
def server(*args: str, log: Path) -> Iterator[str]:
    """Run ``sbsopt ARGS --port 0`` in its own process (stderr to ``log``); yields its base URL;
    SIGTERM on exit."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-c", _CLI, *args, "--port", "0"], stderr=sink,
                                stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + 120
            while (match := _LISTENING.search(log.read_bytes())) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sbsopt {' '.join(args)} did not start: "
                                       f"{log.read_bytes().decode(errors='replace')[-500:]}")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{int(match.group(1))}"
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _fresh(tmp: Path, stem: str, suffix: str) -> Path:
    return tmp / f"{stem}-{len(list(tmp.iterdir()))}{suffix}"


def engine(role: str, speed: float, tmp: Path, *extra: str) -> contextlib.AbstractContextManager[str]:
    return server("mock-engine", "--ep", str(EP), "--role", role, "--speed", str(speed), *extra,
                  log=_fresh(tmp, "engine", ".log"))


def serve(workers: list[str], tmp: Path, **fields: object) -> contextlib.AbstractContextManager[str]:
    config = _fresh(tmp, "serve", ".json")
    config.write_text(json.dumps({"workers": workers, "ep": EP, **fields}))
    return server("serve", "--config", str(config), log=_fresh(tmp, "serve", ".log"))


def _pct(values: list[float] | np.ndarray) -> tuple[str, str, str]:
    a = np.asarray(values, dtype=float)
    return f"{np.percentile(a, 50):.3f}", f"{np.percentile(a, 99):.3f}", f"{a.mean():.3f}"


def _histogram_mean(text: str, name: str) -> float:
    total = float(re.search(rf"^{name}_sum (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    count = float(re.search(rf"^{name}_count (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    return total / count if count else float("nan")


# ---------------------------------------------------------------------- 1. sidecar overhead
async def _route_load(url: str, requests: int, rate: float) -> tuple[list[float], list[float], list[float], float]:
    loop = asyncio.get_running_loop()
    overhead: list[float] = []
    client: list[float] = []
    waits: list[float] = []
    rng = np.random.default_rng(0)
    # short prompts: the engines must keep up with 1,000 req/s (about 130k prompt tokens/s)
    prompts = rng.integers(20, 240, requests)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        for i in range(50):  # warm the connections and the window kernels
            async with s.post(url + "/v1/route", json={"id": f"w{i}", "prompt_tokens": 100}) as r:
                await r.read()

        async def one(i: int) -> None:
            t0 = loop.time()
            async with s.post(url + "/v1/route", json={"id": f"r{i}", "prompt_tokens": int(prompts[i])}) as r:
                answer = await r.json()
            if answer["status"] == "assigned":
                overhead.append(answer["overhead_ms"])
                waits.append(answer["wait_ms"])
                client.append((loop.time() - t0) * 1e3 - answer["wait_ms"])
                # then send it where the sidecar said, as a router would: the engines' reports
                # (their received counters) must see the assignments
                body = {"prompt": [1] * int(prompts[i]), "max_tokens": 1, "data_parallel_rank": answer["dp_rank"]}
                async with s.post(answer["worker"] + "/v1/completions", json=body) as r:
                    await r.read()

        start = loop.time()
        tasks = []
        for i in range(requests):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        async with s.get(url + "/metrics") as r:
            metrics = await r.text()
    return overhead, client, waits, _histogram_mean(metrics, "sbsopt_route_overhead_seconds") * 1e3


def sidecar_overhead(requests: int, rate: float, tmp: Path) -> list[tuple]:
    with engine("prefill", 1.0, tmp) as e0, engine("prefill", 1.0, tmp) as e1, \
            serve([e0, e1], tmp, policy="sbs", window_forwards=1.0) as url:
        overhead, client, waits, with_write = asyncio.run(_route_load(url, requests, rate))
    return [(f"sidecar overhead per request (answer's overhead_ms) @ {rate:g} req/s", len(overhead),
             *_pct(overhead)),
            ("  same, /metrics mean incl. socket write", len(overhead), "-", "-", f"{with_write:.3f}"),
            ("  client latency - wait_ms (adds client loop + network)", len(client), *_pct(client)),
            ("  window wait (wait_ms, not overhead)", len(waits), *_pct(waits))]


# ---------------------------------------------------------------------- 2. the front's added latency
async def _pairs(engine_url: str, url: str, pairs: int) -> tuple[list[float], list[float]]:
    body = {"prompt": [1] * 200, "max_tokens": 2, "stream": True}
    direct: list[float] = []
    via: list[float] = []
    async with aiohttp.ClientSession() as s:
        async def ttft(target: str) -> float:
            t0 = time.perf_counter()
            async with s.post(target + "/v1/completions", json=body) as r:
                async for line in r.content:
                    if line.startswith(b"data:"):
                        return (time.perf_counter() - t0) * 1e3
            raise RuntimeError("no token")

        for _ in range(10):
            await ttft(engine_url)
            await ttft(url)
        for _ in range(pairs):
            direct.append(await ttft(engine_url))
            via.append(await ttft(url))
    return direct, via


def proxy_added(pairs: int, tmp: Path) -> list[tuple]:
    with engine("colocated", 1.0, tmp) as e0, serve([e0], tmp, policy="least_tokens") as url:
        direct, via = asyncio.run(_pairs(e0, url, pairs))
    added = [v - d for v, d in zip(via, direct, strict=True)]
    return [("TTFT direct to a mock engine", len(direct), *_pct(direct)),
            ("TTFT through the front (least_tokens)", len(via), *_pct(via)),
            ("front's added latency to the first token", len(added), *_pct(added))]


# ---------------------------------------------------------------------- 3. SBS vs immediate through the stack
def _replay(url: str, trace: str, limit: int, rate: float, speed: float, timeout_s: float) -> dict:
    out = subprocess.run([sys.executable, "-c", _CLI, "replay", "--trace", trace, "--limit", str(limit),
                          "--rate", str(rate), "--time-scale", str(speed), "--url", url, "--json"],
                         capture_output=True, text=True, check=True, timeout=timeout_s)
    return json.loads(out.stdout)


def stack_simulated(*, trace: str = "azure-code", limit: int = 1000, rate: float = 20.0) -> dict[str, dict]:
    """``sbsopt simulate`` (disaggregated, two prefill instances of :data:`EP` ranks) per policy
    of :data:`STACK_POLICIES` on the trace prefix of the stack runs: its summary per policy."""
    from sbsopt.sim import ClusterConfig, simulate
    from sbsopt.workload import load_trace

    workload = load_trace(trace, limit=limit).with_rate(rate)
    cluster = ClusterConfig(prefill_instances=2, prefill_ep=EP, decode_instances=1, decode_ep=EP)
    return {policy: simulate(workload, cluster=cluster, router=policy).summary() for policy in STACK_POLICIES}


def stack_replays(tmp: Path, *, trace: str = "azure-code", limit: int = 1000, rate: float = 20.0,
                  speed: float = 2.0, repeats: int = 1, lead_ms: float = 5.0, lead_per_request_ms: float = 0.5,
                  gather_ms: float = 2.0, timeout_s: float = 3600.0) -> dict[str, list[dict]]:
    """``repeats`` replays per policy of :data:`STACK_POLICIES` through the stack, fresh
    processes each; returns the replay summaries (``sbsopt replay --json``) per policy.
    ``tests/serve/test_e2e.py`` asserts the direction on the defaults."""
    fields = {"window_forwards": 1.0, "report_period_s": 0.01, "settle_s": 0.01, "pace_lead_s": lead_ms / 1e3,
              "pace_lead_per_request_s": lead_per_request_ms / 1e3,
              "ttft_guard_s": 1.0 / speed}  # the simulator's 1 s guard in model time
    gather = ("--gather-ms", str(gather_ms))
    replays: dict[str, list[dict]] = {policy: [] for policy in STACK_POLICIES}
    for _ in range(repeats):  # policies interleaved: the host's load drifts during a run
        for policy in STACK_POLICIES:
            with engine("prefill", speed, tmp, *gather) as e0, engine("prefill", speed, tmp, *gather) as e1, \
                    serve([e0, e1], tmp, policy=policy, **fields) as url:
                replayed = _replay(url, trace, limit, rate, speed, timeout_s)
            replays[policy].append(replayed)
            print(policy, replayed["completed"], replayed["rejected_reasons"], replayed["ttft_ms"], flush=True)
    return replays


def stack(args: argparse.Namespace, tmp: Path) -> _report.Table:
    simulated = stack_simulated(trace=args.trace, limit=args.limit, rate=args.trace_rate)
    replays = stack_replays(tmp, trace=args.trace, limit=args.limit, rate=args.trace_rate, speed=args.speed,
                            repeats=args.repeats, lead_ms=args.lead_ms, lead_per_request_ms=args.lead_per_request_ms,
                            gather_ms=args.gather_ms)
    table = _report.Table(["router", "done", "replay TTFT mean", "p50", "p90", "p99", "simulate TTFT mean", "p50",
                           "p90", "p99", "replay vs best immediate", "simulate vs best immediate"], "lrrrrrrrrrrr")
    immediate = [policy for policy in STACK_POLICIES if policy != "sbs"]
    best_s = min(simulated[policy]["ttft_ms"]["mean"] for policy in immediate)
    # per repeat: SBS against the best immediate policy of the same repeat
    gains = [replays["sbs"][i]["ttft_ms"]["mean"] / min(replays[p][i]["ttft_ms"]["mean"] for p in immediate) - 1
             for i in range(args.repeats)]
    for policy in STACK_POLICIES:
        runs, sim = replays[policy], simulated[policy]
        vs = ("-", "-")
        if policy == "sbs":
            spread = f" ({min(gains):+.1%} to {max(gains):+.1%})" if len(gains) > 1 else ""
            vs = (f"{np.mean(gains):+.1%}{spread}", f"{sim['ttft_ms']['mean'] / best_s - 1:+.1%}")
        table.add(policy, f"{sum(r['completed'] for r in runs)}/{sum(r['requests'] for r in runs)}",
                  *(f"{np.mean([r['ttft_ms'][k] for r in runs]):.0f}" for k in ("mean", "p50", "p90", "p99")),
                  *(f"{sim['ttft_ms'][k]:.0f}" for k in ("mean", "p50", "p90", "p99")), *vs)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="route requests of the overhead run")
    parser.add_argument("--rate", type=float, default=1000.0, help="route requests per second")
    parser.add_argument("--pairs", type=int, default=200, help="direct/front pairs of the proxy run")
    parser.add_argument("--stack", action="store_true", help="also SBS vs immediate through the stack")
    parser.add_argument("--trace", default="azure-code")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--trace-rate", type=float, default=20.0, help="requests/s of the stack replay")
    parser.add_argument("--speed", type=float, default=2.0, help="mock engines' --speed (replay --time-scale)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="stack runs per policy; replay columns are means over them")
    parser.add_argument("--lead-ms", type=float, default=5.0,
                        help="the sidecar's pace_lead_s, in ms (the landing time's prior)")
    parser.add_argument("--lead-per-request-ms", type=float, default=0.5,
                        help="the sidecar's pace_lead_per_request_s, in ms (the landing time's prior)")
    parser.add_argument("--gather-ms", type=float, default=2.0, help="the prefill engines' --gather-ms")
    _report.add_option(parser)
    args = parser.parse_args()
    widths = (-58, 7, 10, 10, 10)
    table = _report.Table(["measure", "n", "p50 ms", "p99 ms", "mean ms"], "lrrrr")
    with tempfile.TemporaryDirectory() as tmp:
        rows = sidecar_overhead(args.requests, args.rate, Path(tmp)) + proxy_added(args.pairs, Path(tmp))
        print(_report.line(table.columns, widths))
        for row in rows:
            table.add(*row)
            print(_report.line([str(c) for c in row], widths))
        blocks: list[str | _report.Table] = [table]
        if args.stack:
            comparison = stack(args, Path(tmp))
            print(comparison.markdown())
            blocks += [f"SBS vs immediate dispatch through the stack: `{args.trace}`, first {args.limit} requests "
                       f"at {args.trace_rate:g} req/s, two prefill mock engines of {EP} ranks at speed "
                       f"{args.speed:g}, {args.repeats} run(s) per policy (replay columns: means; SBS vs "
                       f"the best immediate policy of each run: mean (range)); TTFT in modelled ms.", comparison]
    _report.write(args.markdown, blocks)


if __name__ == "__main__":
    main()
