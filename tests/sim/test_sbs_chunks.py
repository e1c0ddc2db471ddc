"""SBS runs the chunks its window answers give: the chunk in this forward, the rest of the prompt
buffered for a later window on the same unit; immediate routers keep the engine's chunking."""

from __future__ import annotations

import numpy as np
import pytest

import sbsopt.sim.simulator as simulator
from sbsopt.sim import ClusterConfig, simulate
from sbsopt.sim.router import allocate_prefill
from sbsopt.workload import Workload, load_trace


def _spy(monkeypatch) -> list[tuple[float, np.ndarray, dict[int, int]]]:
    """Record every prefill window's answer: (time, assignment, chunks)."""
    answers: list[tuple[float, np.ndarray, dict[int, int]]] = []

    def spy(*args, **kwargs):
        chunks = kwargs.pop("chunks", None)
        got: dict[int, int] = {}
        assignment = allocate_prefill(*args, chunks=got, **kwargs)
        if chunks is not None:
            chunks.update(got)
        answers.append((kwargs["now_s"], assignment.copy(), dict(got)))
        return assignment

    monkeypatch.setattr(simulator, "allocate_prefill", spy)
    return answers


@pytest.mark.parametrize("interval", ["engine_paced", "fixed:20"])
def test_a_chunked_prompt_runs_the_answers_chunk_then_its_rest(monkeypatch, interval) -> None:
    """A 20,000-token prompt on units of 8,192: the window chunks it, the first forward on its
    unit runs exactly that chunk, and the rest runs on the same unit after a later window."""
    answers = _spy(monkeypatch)
    cluster = ClusterConfig(prefill_instances=1, decode_instances=1)
    res = simulate(Workload.from_arrays([0.0], [20_000], [4]), cluster=cluster, router="sbs",
                   interval=interval, record_timeline=True)
    assert res.summary()["completed"] == 1
    (_, assignment, chunks), *later = answers
    assert chunks == {0: cluster.chunk_tokens}
    unit = int(assignment[0])
    forwards = [new for _, _, _, new in res.timeline if new.any()]
    assert forwards[0][unit] == chunks[0] and forwards[0].sum() == chunks[0]
    # the rest is handed to the same unit, not to a window's solve, and finishes the prompt
    assert not later
    assert [int(new.sum()) for new in forwards] == [8192, 8192, 3616]
    assert all(new[unit] == new.sum() for new in forwards)
    # its first token comes with the rest's last forward
    start, _, step_s, _ = [f for f in res.timeline if f[3].any()][-1]
    assert res.requests["ttft_s"].iloc[0] == pytest.approx(start + step_s)


def test_windows_over_a_trace_run_every_chunk_they_answer(monkeypatch) -> None:
    """Mooncake prompts are often longer than a unit's forward, so windows chunk them: every
    request completes, and the engines prefill exactly the requests' uncached tokens (no
    remainder lost or run twice)."""
    answers = _spy(monkeypatch)
    wl = load_trace("mooncake-conv", limit=200)
    res = simulate(wl, cluster=ClusterConfig(prefill_instances=2, decode_instances=1),
                   router="sbs", load=0.7, record_timeline=True)
    summary = res.summary()
    assert summary["completed"] == 200
    assert sum(len(chunks) for _, _, chunks in answers) >= 5
    prefilled = sum(float(new.sum()) for _, _, _, new in res.timeline)
    t = res.requests
    assert prefilled == pytest.approx(float((t["input_tokens"] - t["cached_tokens"]).sum()))


def test_immediate_routers_leave_chunking_to_the_engine() -> None:
    cluster = ClusterConfig(prefill_instances=1, decode_instances=1)
    res = simulate(Workload.from_arrays([0.0], [20_000], [4]), cluster=cluster,
                   router="least_tokens", record_timeline=True)
    assert [int(new.sum()) for _, _, _, new in res.timeline if new.any()] == [8192, 8192, 3616]
