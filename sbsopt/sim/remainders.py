"""The rest of the prompts an SBS window chunked, waiting in the scheduler's buffer.

A window answer may place only the first ``k`` tokens of a request (its ``chunks``): the
simulator runs exactly that chunk on the answer's unit, and the rest stays buffered. The rest
is no longer the next window's to place: the chunk's KV lives on that DP rank, so it is pinned
there, and once the chunk's forward is done it is handed to that unit at the next window over
its instance, ahead of the window's solve (which then sees it in the unit's load).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Remainder", "Remainders"]


@dataclass
class Remainder:
    """What is left of request ``rid``: ``tokens`` to prefill on flattened unit ``unit``, after
    ``done`` context tokens (cached prefix and chunks); ``ready`` once its chunk has run."""

    rid: int
    unit: int
    done: int
    tokens: int
    ready: bool = False


class Remainders:
    """The buffered remainders, one per chunked request.

    Examples
    --------
    >>> r = Remainders()
    >>> r.pin(7, unit=3, done=4096, tokens=1000)
    >>> r.chunk_ran(7), r.ready_count, [x.rid for x in r.take({3})]
    (True, 1, [7])
    >>> r.chunk_ran(7)  # the remainder's own forward: the request's prefill ends there
    False
    """

    def __init__(self) -> None:
        self._by_rid: dict[int, Remainder] = {}
        self.ready_count = 0

    def __contains__(self, rid: int) -> bool:
        return rid in self._by_rid

    def __bool__(self) -> bool:
        """Whether a remainder can be handed to its unit (its chunk has run)."""
        return self.ready_count > 0

    def pin(self, rid: int, *, unit: int, done: int, tokens: int) -> None:
        """Keep the last ``tokens`` of ``rid`` for ``unit`` while its chunk runs."""
        self._by_rid[rid] = Remainder(rid, unit, done, tokens)

    def chunk_ran(self, rid: int) -> bool:
        """A prefill task of ``rid`` finished: True when it was a chunk whose remainder is
        buffered (the request's prefill is not over), now ready to be handed on."""
        rest = self._by_rid.get(rid)
        if rest is None or rest.ready:
            return False
        rest.ready = True
        self.ready_count += 1
        return True

    def take(self, units: Iterable[int]) -> list[Remainder]:
        """Remove and return the ready remainders pinned to ``units``, oldest pin first."""
        wanted = set(units)
        due = [r for r in self._by_rid.values() if r.ready and r.unit in wanted]
        for rest in due:
            del self._by_rid[rest.rid]
        self.ready_count -= len(due)
        return due

    def drop(self, units: Iterable[int]) -> list[int]:
        """Forget the remainders pinned to ``units`` (their KV is lost); returns their requests,
        whose prefill starts over."""
        wanted = set(units)
        lost = [r for r in self._by_rid.values() if r.unit in wanted]
        for rest in lost:
            del self._by_rid[rest.rid]
            self.ready_count -= rest.ready
        return [rest.rid for rest in lost]
