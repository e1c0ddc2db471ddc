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

__all__ = ["StepTimes", "decode_pair_us", "pairwise_sum", "prefill_forward_us"]


@njit()
def _block_sum(a, lo, n):  # pragma: no cover - compiled
    """numpy's sum of ``a[lo:lo + n]``, ``n <= 128``: eight running sums, then the rest."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r = a[lo:lo + 8].copy()
    i = 8
    while i < n - n % 8:
        for k in range(8):
            r[k] += a[lo + i + k]
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit()
def pairwise_sum(a, lo, n):  # pragma: no cover - compiled
    """``a[lo:lo + n].sum()`` as numpy adds a float64 array: blocks of at most 128 elements
    (:func:`_block_sum`), halved (at multiples of 8) above that and the halves' sums added;
    tests compare it with numpy. The halving runs on an explicit stack: Numba's cache does not
    reload recursive functions safely."""
    if n <= 128:
        return _block_sum(a, lo, n)
    # tasks (start, length, 1 when both halves' sums are on the value stack)
    tasks = np.empty((64, 3), np.int64)
    values = np.empty(64)
    top = 1
    tasks[0, 0], tasks[0, 1], tasks[0, 2] = lo, n, 0
    count = 0
    while top:
        top -= 1
        start, length, ready = tasks[top, 0], tasks[top, 1], tasks[top, 2]
        if length <= 128:
            values[count] = _block_sum(a, start, length)
            count += 1
        elif ready:
            values[count - 2] = values[count - 2] + values[count - 1]
            count -= 1
        else:
            half = length // 2
            half -= half % 8
            tasks[top, 0], tasks[top, 1], tasks[top, 2] = start, length, 1
            tasks[top + 1, 0], tasks[top + 1, 1], tasks[top + 1, 2] = start + half, length - half, 0
            tasks[top + 2, 0], tasks[top + 2, 1], tasks[top + 2, 2] = start, half, 0
            top += 3
    return values[0]


@njit()
def prefill_forward_us(new, pairs, requests, slow, base, alpha, beta, gamma, a0, a1, shared, routed, dense,
                       c):  # pragma: no cover - compiled
    """A prefill forward's step time (us, ``CostModel._run_prefill``'s kernel on one row), its
    ranks' idle time (us, summed as numpy sums: each rank's is the step slowed by ``slow``, less
    the rank's own linear time ``base + alpha * new + beta * pairs + gamma * requests``, at
    least 0) and its new tokens."""
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
    return us, 0.0 + pairwise_sum(idle, 0, ep), tokens


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
        # CostModel.kv_transfer_us's constants: bytes per KV token, link bytes/s, call latency (us)
        self.kv_link = (decode.kv_bytes_per_token, decode.hardware.ib_Bps * decode.coefficients.dispatch_link_eff,
                        decode.coefficients.ll_call_latency_us) if self.trusted_decode else None
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
        the idle times are summed in numpy's order, as the simulator always did."""
        c = coefficients
        if not self.trusted_prefill:
            us = self.prefill_us(new, pairs, reqs)
            rank_us = c.base_us + c.alpha_us_per_token * new + c.beta_us_per_pair * pairs + c.gamma_us_per_request * reqs
            return us, float(np.maximum(us * 1e-6 * slow * 1e6 - rank_us, 0.0).sum()), float(new.sum())
        t = self.prefill._prefill
        us, idle, tokens = prefill_forward_us(new, pairs, reqs, slow, c.base_us, c.alpha_us_per_token,
                                              c.beta_us_per_pair, c.gamma_us_per_request, t.a0, t.a1, t.shared,
                                              t.routed, t.dense, t.constants)
        return float(us), float(idle), float(tokens)

    def kv_transfer_us(self, tokens: int) -> float:
        """``decode.kv_transfer_us(tokens)``; for a :class:`CostModel` its formula on the count
        as a float, without the input check (once per request, the check's cost was the call's)."""
        if self.kv_link is None:
            return float(self.decode.kv_transfer_us(tokens))
        per_token, link_Bps, latency_us = self.kv_link
        return float(tokens) * per_token / link_Bps * 1e6 + latency_us

    def decode_us(self, batch: np.ndarray, kv_tokens: np.ndarray) -> float:
        """``decode.decode_step_us(batch, kv_tokens, q)`` for float64 arrays of ``ep`` ranks."""
        if not self.trusted_decode:
            return float(self.decode.decode_step_us(batch, kv_tokens, self.q))
        return float(self.decode._run_decode(batch[None], kv_tokens[None], self.q)[0])
