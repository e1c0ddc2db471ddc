"""The event kinds of the disaggregated simulator's heap, and the pools each kind touches.

A kind is also the event's priority at equal times. No ``REPORT`` event is pushed: report
boundaries are passed lazily where that priority puts them (:mod:`sbsopt.sim.reports`).
"""

from __future__ import annotations

from sbsopt.sim.reports import DECODE_POOL, PREFILL_POOL

__all__ = ["STEP_END", "EPOCH_END", "KV_ARRIVE", "REPORT", "ARRIVAL", "WINDOW", "DECODE_WINDOW", "START", "PFAIL",
           "DFAIL", "PRECOVER", "DRECOVER", "POOLS"]

STEP_END, EPOCH_END, KV_ARRIVE, REPORT, ARRIVAL, WINDOW, DECODE_WINDOW, START = range(8)
PFAIL, DFAIL, PRECOVER, DRECOVER = range(8, 12)
# the pools whose router view and engine state each kind of event reads or changes (bits); a
# fault or recovery moves requests between the pools
_BOTH = PREFILL_POOL | DECODE_POOL
POOLS = (PREFILL_POOL, DECODE_POOL, DECODE_POOL, 0, PREFILL_POOL, PREFILL_POOL, DECODE_POOL, PREFILL_POOL,
         _BOTH, _BOTH, _BOTH, _BOTH)
