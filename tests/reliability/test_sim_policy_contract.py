"""A prefill chunking is user code: the simulator refuses answers outside its protocol.

``form_prefill`` must give each queued request at most one chunk of ``0 < n <= remaining``
tokens and stay within the unit's budget; ``admit_decode`` must admit at most the waiting
requests that fit the batch and the free KV blocks. A violation raises ``SimulationError``
naming the policy, the call and the values, instead of corrupting the engine state.
"""

from __future__ import annotations

import pytest

from sbsopt.errors import SimulationError
from sbsopt.sim import ClusterConfig, simulate
from sbsopt.sim.chunking import ChunkedPrefill
from sbsopt.workload import load_trace


class _OverBudget(ChunkedPrefill):
    name = "over-budget"

    def form_prefill(self, queue, budget_tokens):
        return [(task, task.remaining) for task in queue]  # whole prompts, budget ignored


class _ZeroChunk(ChunkedPrefill):
    name = "zero-chunk"

    def form_prefill(self, queue, budget_tokens):
        return [(queue[0], 0)]


class _AdmitAll(ChunkedPrefill):
    name = "admit-all"

    def admit_decode(self, waiting, running, max_batch, free_blocks, blocks_of):
        return len(waiting) + 1


def _run(policy):
    wl = load_trace("azure-code", limit=200, seed=0)
    cluster = ClusterConfig(prefill_instances=1, decode_instances=1, chunk_tokens=2048,
                            max_decode_batch=4, kv_capacity_tokens=40_000)
    return simulate(wl, cluster=cluster, router="least_tokens", batching=policy, load=2.0)


@pytest.mark.parametrize("policy, call", [(_OverBudget(), "form_prefill"),
                                          (_ZeroChunk(), "form_prefill"),
                                          (_AdmitAll(), "admit_decode")])
def test_a_policy_outside_the_protocol_is_refused_by_name(policy, call) -> None:
    with pytest.raises(SimulationError, match=f"{policy.name}.*{call}"):
        _run(policy)


def test_the_default_policy_keeps_the_protocol() -> None:
    s = _run(ChunkedPrefill()).summary()
    assert s["completed"] + s["rejected"] + s["in_flight"] == s["requests"]
