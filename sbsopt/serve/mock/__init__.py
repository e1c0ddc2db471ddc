"""Mock DP-attention + EP engines whose forwards are timed by the cost model (``sbsopt mock-engine``).

They are mocks, like NVIDIA Dynamo's mocker: no model runs and the tokens are placeholders; what
is real is the timing. One process is one lock-step DP+EP instance in one of two roles:

- ``colocated`` (:class:`MockEngine`): one engine of the simulator's colocated mode
  (:func:`sbsopt.sim.colocated.simulate_colocated`): per-rank queues, iterations formed by an
  iteration policy (Sarathi by default: decodes first, then prefill chunks up to the per-rank
  token budget), lasting the cost model's ``base + max over ranks``;
- ``prefill`` (:class:`PrefillEngine`): the simulator's disaggregated prefill instance
  (:class:`sbsopt.sim.engine.PrefillInstance`): non-preemptive lock-step forwards of up to
  ``chunk_tokens`` per rank; the response ends at the first token.

Requests are pinned to a rank (the ``data_parallel_rank`` field or the ``X-Data-Parallel-Rank``
header, else the least-loaded rank); idle ranks wait in a dummy batch; real time runs ``speed``
times faster than modelled.
"""

from sbsopt.serve.mock.engine import MockEngine, MockRequest
from sbsopt.serve.mock.prefill import PrefillEngine

__all__ = ["MockEngine", "MockRequest", "PrefillEngine"]
