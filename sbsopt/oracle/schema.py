"""Typed oracle messages (msgspec structs), validated at parse time.

The exact wire schema is documented in ``docs/guides/oracle.md`` (Oracle protocol).
Unknown fields are ignored; every listed field is type- and range-checked, so a bad value is
named in the error answer (``$.requests[0].new_tokens``).

A prefill answer's ``chunks`` (request id -> tokens) name requests that are assigned but split:
the caller runs only the first ``chunks[id]`` new tokens on the assigned unit in this forward
and keeps the rest buffered for that same unit (its KV is there), as a request of
``new_tokens - chunks[id]`` new tokens after ``cached_tokens + chunks[id]`` cached ones. The
objective prices that rest as the extra forward it needs, so a request that fits a unit whole
is not chunked for its own sake (``sbsopt.window.objective.remainder_price_us``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "PrefillRequest",
    "PrefillUnit",
    "DecodeRequest",
    "DecodeUnit",
    "PrefillProblem",
    "DecodeProblem",
    "MAX_COUNT",
    "MAX_SECONDS",
]

#: Largest accepted token or block count (exactly representable as a float).
MAX_COUNT = 2**53
#: Largest accepted time in seconds (about 31 years).
MAX_SECONDS = 1e9

Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_SECONDS)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Method = Literal["auto", "greedy", "cpsat"]
# 1 hour: a longer budget is a client bug, not a scheduling decision
TimeLimitMs = Annotated[float, msgspec.Meta(gt=0.0, le=3_600_000.0)]
Seed = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 2)]


class PrefillRequest(msgspec.Struct, frozen=True):
    """One buffered prefill request."""

    id: Id
    new_tokens: Count
    cached_tokens: Count
    arrival_s: Seconds
    deadline_s: Seconds | None = None
    kv_blocks: Count | None = None


class PrefillUnit(msgspec.Struct, frozen=True):
    """One prefill DP unit."""

    id: Id
    load_tokens: Count
    capacity_tokens: Count
    free_kv_blocks: Count


class DecodeRequest(msgspec.Struct, frozen=True):
    """One request finishing prefill."""

    id: Id
    context_tokens: Count
    kv_blocks: Count


class DecodeUnit(msgspec.Struct, frozen=True):
    """One decode DP unit."""

    id: Id
    batch_size: Count
    max_batch_size: Count
    kv_blocks_used: Count
    free_kv_blocks: Count


class PrefillProblem(msgspec.Struct, frozen=True):
    """A prefill window line."""

    id: Id
    phase: Literal["prefill"]
    requests: list[PrefillRequest]
    units: list[PrefillUnit]
    method: Method = "auto"
    time_limit_ms: TimeLimitMs = 50.0
    now_s: Seconds | None = None
    seed: Seed = 0


class DecodeProblem(msgspec.Struct, frozen=True):
    """A decode window line."""

    id: Id
    phase: Literal["decode"]
    requests: list[DecodeRequest]
    units: list[DecodeUnit]
    method: Method = "auto"
    time_limit_ms: TimeLimitMs = 50.0
    seed: Seed = 0
