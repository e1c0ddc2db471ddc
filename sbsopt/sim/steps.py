"""Step times the simulator asks of the cost model, without the public methods' input checks.

``CostModel.decode_step_us`` and ``prefill_step_us`` check every per-rank array (finite, not
negative, ``ep`` long): about 7 us a call, twice per decode epoch and once per prefill forward,
which at a trace's own light rate (an epoch or a forward per request) is a tenth of the
simulator's time. The simulator's arrays are well formed by construction, so for a
:class:`~sbsopt.costmodel.CostModel` it runs the model's own kernel on them directly (the same
call the public methods end with; tests check equality with them): a decode epoch's two step
times in one call (:func:`decode_pair_us`), a prefill forward's step time with its per-rank
statistics in another (:func:`prefill_forward_us`). Any other cost-model object (a test double,
a user's model) goes through its public methods.
"""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit
from sbsopt.costmodel import CostModel
from sbsopt.costmodel._kernels import step_many

__all__ = ["StepTimes", "decode_pair_us", "prefill_forward_us"]


@njit()
def prefill_forward_us(new, pairs, requests, slow, base, alpha, beta, gamma, a0, a1, shared, routed, dense,
                       c):  # pragma: no cover - compiled
    """A prefill forward's step time (us, ``CostModel._run_prefill``'s kernel on one row), each
    rank's idle time in it (us: the step slowed by ``slow``, less the rank's own linear time
    ``base + alpha * new + beta * pairs + gamma * requests``, at least 0) and its new tokens."""
    ep = new.shape[0]
    us = step_many(new.reshape((1, ep)), pairs.reshape((1, ep)), requests.reshape((1, ep)), a0, a1, shared, routed,
                   dense, c)[0]
    step_us = us * 1e-6 * slow * 1e6
    idle = np.empty(ep)
    tokens = 0.0
    for j in range(ep):
        gap = step_us - (base + alpha * new[j] + beta * pairs[j] + gamma * requests[j])
        idle[j] = gap if gap > 0.0 else 0.0
        tokens += new[j]
    return us, idle, tokens


@njit()
def decode_pair_us(batch, kv_tokens, q, raise_by, a0, a1, shared, routed, dense, c):  # pragma: no cover - compiled
    """Decode step times (us) at ``kv_tokens`` and at ``kv_tokens + raise_by * batch``: the
    two rows ``CostModel._run_decode`` would be called with, in one call of its kernel."""
    ep = batch.shape[0]
    load = np.empty((2, ep))
    pairs = np.empty((2, ep))
    requests = np.empty((2, ep))
    for j in range(ep):
        load[0, j] = load[1, j] = batch[j] * q
        pairs[0, j] = kv_tokens[j]
        pairs[1, j] = kv_tokens[j] + raise_by * batch[j]
        requests[0, j] = requests[1, j] = batch[j]
    out = step_many(load, pairs, requests, a0, a1, shared, routed, dense, c)
    return out[0], out[1]


class StepTimes:
    """Prefill forward and decode step times (us) of one simulation's two cost models.

    Parameters
    ----------
    prefill, decode : CostModel or a cost-model object
        The prefill and decode instances' models.
    query_tokens : int
        Query tokens per decode request and step (2 with multi-token prediction).
    """

    def __init__(self, prefill, decode, query_tokens: int) -> None:
        self.prefill = prefill
        self.decode = decode
        self.q = int(query_tokens)
        self.trusted_prefill = type(prefill) is CostModel
        self.trusted_decode = type(decode) is CostModel
        self.kv_us: dict[int, float] = {}
        # the decode kernel's tables, for callers that run it inside their own kernels
        self.decode_tables = decode._decode_tables(self.q) if self.trusted_decode else None

    def prefill_us(self, new: np.ndarray, pairs: np.ndarray, reqs: np.ndarray) -> float:
        """``prefill.prefill_step_us(new, pairs, reqs)`` for float64 arrays of ``ep`` ranks."""
        if not self.trusted_prefill:
            return float(self.prefill.prefill_step_us(new, pairs, reqs))
        return float(self.prefill._run_prefill(new[None], pairs[None], reqs[None])[0])

    def prefill_forward(self, new: np.ndarray, pairs: np.ndarray, reqs: np.ndarray, slow: float,
                        coefficients) -> tuple[float, float, float]:
        """A prefill forward's step time (us, before the ``slow`` factor), its ranks' idle time
        (us, summed: the slowed step less each rank's time under the linear ``coefficients``)
        and its new tokens. Token counts are whole numbers, so their sum is exact in any order;
        the idle times are summed by numpy, as the simulator always did."""
        c = coefficients
        if not self.trusted_prefill:
            us = self.prefill_us(new, pairs, reqs)
            rank_us = c.base_us + c.alpha_us_per_token * new + c.beta_us_per_pair * pairs + c.gamma_us_per_request * reqs
            return us, float(np.maximum(us * 1e-6 * slow * 1e6 - rank_us, 0.0).sum()), float(new.sum())
        t = self.prefill._prefill
        us, idle, tokens = prefill_forward_us(new, pairs, reqs, slow, c.base_us, c.alpha_us_per_token,
                                              c.beta_us_per_pair, c.gamma_us_per_request, t.a0, t.a1, t.shared,
                                              t.routed, t.dense, t.constants)
        return float(us), float(idle.sum()), float(tokens)

    def kv_transfer_us(self, tokens: int) -> float:
        """``decode.kv_transfer_us(tokens)``, remembered per token count for a :class:`CostModel`
        (a pure function of it; a trace has a few thousand distinct prompt lengths)."""
        if not self.trusted_decode:
            return float(self.decode.kv_transfer_us(tokens))
        us = self.kv_us.get(tokens)
        if us is None:
            us = self.kv_us[tokens] = float(self.decode.kv_transfer_us(tokens))
        return us

    def decode_us(self, batch: np.ndarray, kv_tokens: np.ndarray) -> float:
        """``decode.decode_step_us(batch, kv_tokens, q)`` for float64 arrays of ``ep`` ranks."""
        if not self.trusted_decode:
            return float(self.decode.decode_step_us(batch, kv_tokens, self.q))
        return float(self.decode._run_decode(batch[None], kv_tokens[None], self.q)[0])
