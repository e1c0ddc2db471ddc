"""The vLLM production-stack routing class against a running sidecar, with fake request objects."""

from __future__ import annotations

from types import SimpleNamespace

from _servekit import mock_engines, run, serve_front

from sbsopt.serve.adapters import SbsRoutingLogic


class FakeRequest:
    """What the production-stack router hands over: an awaitable ``json()`` and a ``state``."""

    def __init__(self, body: dict) -> None:
        self._body = body
        self.state = SimpleNamespace()

    async def json(self) -> dict:
        return self._body


def test_routes_to_the_sidecars_worker_and_records_the_rank() -> None:
    async def body() -> None:
        async with mock_engines(2) as workers, serve_front(workers, policy="round_robin") as (url, _):
            endpoints = [SimpleNamespace(url=w + "/") for w in workers]
            logic = SbsRoutingLogic(url)
            picks = []
            for _ in range(4):
                request = FakeRequest({"prompt": [1] * 100, "max_tokens": 3})
                picks.append((await logic.route_request(endpoints, {}, {}, request), request.state.data_parallel_rank))
            assert picks == [(workers[0] + "/", 0), (workers[1] + "/", 0), (workers[0] + "/", 1),
                             (workers[1] + "/", 1)]
            assert logic.fallbacks == 0

    run(body)


def test_falls_back_to_least_busy_endpoint_when_the_sidecar_is_away() -> None:
    async def body() -> None:
        logic = SbsRoutingLogic("http://127.0.0.1:9", timeout_s=0.5)
        endpoints = [SimpleNamespace(url="http://a"), SimpleNamespace(url="http://b")]
        stats = {"http://a": SimpleNamespace(in_prefill_requests=3, in_decoding_requests=1),
                 "http://b": SimpleNamespace(in_prefill_requests=0, in_decoding_requests=2)}
        url = await logic.route_request(endpoints, {}, stats, FakeRequest({"messages": [{"content": "hi"}]}))
        assert url == "http://b" and logic.fallbacks == 1 and logic.last_rank is None

    run(body)
