"""Prefill chunking on the disaggregated engines: the protocol and its registry.

A disaggregated engine asks its :class:`PrefillChunking` two questions, once per lock-step
iteration:

``form_prefill(queue, budget_tokens) -> list[tuple[PrefillTask, int]]``
    Given one prefill DP unit's FIFO engine queue (a ``deque`` of :class:`PrefillTask`, never to
    be mutated) and the unit's per-forward token budget, return the chunks of this forward:
    ``(task, new_tokens)`` pairs, ``0 < new_tokens <= task.remaining``, in order, with a total of
    at most ``budget_tokens``. The engine applies them (advancing ``task.done``, popping finished
    tasks).
``admit_decode(waiting, running, max_batch, free_blocks, blocks_of) -> int``
    Given one decode unit's FIFO of waiting request ids, its running count, max batch, free KV
    blocks and a function ``rid -> blocks needed``, return how many of the head of ``waiting``
    to admit before the next decode step.

:class:`ChunkedPrefill` (Sarathi-like: FIFO, fill the budget, split the last prompt, with
continuous-batching FIFO admission) is registered as ``"default"`` and ``"sarathi"``. A prefill
unit runs no decodes, so the colocated iteration policies of :mod:`sbsopt.sim.batching`
(FairBatching trades prefill against decode deadlines) do not apply here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from sbsopt.errors import InvalidInputError

__all__ = [
    "PrefillTask",
    "PrefillChunking",
    "ChunkedPrefill",
    "PREFILL_CHUNKINGS",
    "register_chunking",
    "get_chunking",
]


class PrefillTask:
    """A request's prefill on one DP unit: ``remaining`` new tokens, ``done`` context so far.

    ``done`` starts at the cached prefix; attention pairs of a chunk of n tokens are
    ``n * (done + n / 2)``.
    """

    __slots__ = ("rid", "remaining", "done", "started")

    def __init__(self, rid: int, new_tokens: int, cached_tokens: int) -> None:
        self.rid = rid
        self.remaining = new_tokens
        self.done = cached_tokens
        self.started = False


@runtime_checkable
class PrefillChunking(Protocol):
    """Forms the prefill chunks and decode admissions of a disaggregated engine (see the module docstring)."""

    name: str

    def form_prefill(self, queue: deque, budget_tokens: int) -> list[tuple[PrefillTask, int]]: ...

    def admit_decode(
        self,
        waiting: deque,
        running: int,
        max_batch: int,
        free_blocks: int,
        blocks_of: Callable[[int], int],
    ) -> int: ...


class ChunkedPrefill:
    """Sarathi-like chunked prefill (FIFO, fill the budget, split the last prompt) + FIFO decode admission.

    Examples
    --------
    >>> q = deque([PrefillTask(0, 300, 0), PrefillTask(1, 500, 0)])
    >>> [(t.rid, n) for t, n in ChunkedPrefill().form_prefill(q, 512)]
    [(0, 300), (1, 212)]
    """

    name = "sarathi"

    def form_prefill(self, queue: deque, budget_tokens: int) -> list[tuple[PrefillTask, int]]:
        chunks = []
        left = budget_tokens
        for task in queue:
            if left <= 0:
                break
            take = task.remaining if task.remaining < left else left
            chunks.append((task, take))
            left -= take
        return chunks

    def admit_decode(self, waiting, running, max_batch, free_blocks, blocks_of) -> int:
        count = 0
        for rid in waiting:
            need = blocks_of(rid)
            if running + count >= max_batch or need > free_blocks:
                break
            free_blocks -= need
            count += 1
        return count


PREFILL_CHUNKINGS: dict[str, Callable[[], PrefillChunking]] = {
    "default": ChunkedPrefill,
    "sarathi": ChunkedPrefill,
}


def register_chunking(name: str, factory: Callable[[], PrefillChunking]) -> None:
    """Register a prefill chunking under ``name`` (duplicates are refused).

    Raises
    ------
    InvalidInputError
        ``name`` is already registered.
    """
    if name in PREFILL_CHUNKINGS:
        raise InvalidInputError("batching", name, "a name not registered yet")
    PREFILL_CHUNKINGS[name] = factory


def get_chunking(batching: str | PrefillChunking) -> PrefillChunking:
    """A chunking object from a registered name, or the object itself.

    Raises
    ------
    InvalidInputError
        An unknown name (``"fairbatching"`` included: it is a colocated iteration policy) or an
        object without ``name``, ``form_prefill`` and ``admit_decode``.

    Examples
    --------
    >>> get_chunking("default").name
    'sarathi'
    >>> get_chunking("fairbatching")
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: batching = 'fairbatching': expected one of default, sarathi in disaggregated mode
    """
    if isinstance(batching, str):
        if batching not in PREFILL_CHUNKINGS:
            raise InvalidInputError("batching", batching,
                                    f"one of {', '.join(PREFILL_CHUNKINGS)} in disaggregated mode")
        return PREFILL_CHUNKINGS[batching]()
    if not isinstance(batching, PrefillChunking):
        raise InvalidInputError("batching", type(batching).__name__, "a name or an object with name, "
                                "form_prefill and admit_decode in disaggregated mode")
    return batching
