"""Step times the simulator asks of the cost model, without the public methods' input checks.

``CostModel.decode_step_us`` and ``prefill_step_us`` check every per-rank array (finite, not
negative, ``ep`` long): about 7 us a call, twice per decode epoch and once per prefill forward,
which at a trace's own light rate (an epoch or a forward per request) is a tenth of the
simulator's time. The simulator's arrays are well formed by construction, so for a
:class:`~sbsopt.costmodel.CostModel` it runs the model's own kernel on them directly (the same
call the public methods end with; tests check equality with them). Any other cost-model object
(a test double, a user's model) goes through its public methods.
"""

from __future__ import annotations

import numpy as np

from sbsopt.costmodel import CostModel

__all__ = ["StepTimes"]


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

    def prefill_us(self, new: np.ndarray, pairs: np.ndarray, reqs: np.ndarray) -> float:
        """``prefill.prefill_step_us(new, pairs, reqs)`` for float64 arrays of ``ep`` ranks."""
        if not self.trusted_prefill:
            return float(self.prefill.prefill_step_us(new, pairs, reqs))
        return float(self.prefill._run_prefill(new[None], pairs[None], reqs[None])[0])

    def decode_us(self, batch: np.ndarray, kv_tokens: np.ndarray) -> float:
        """``decode.decode_step_us(batch, kv_tokens, q)`` for float64 arrays of ``ep`` ranks."""
        if not self.trusted_decode:
            return float(self.decode.decode_step_us(batch, kv_tokens, self.q))
        return float(self.decode._run_decode(batch[None], kv_tokens[None], self.q)[0])
