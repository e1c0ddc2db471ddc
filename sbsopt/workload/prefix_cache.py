"""An LRU cache of 512-token prefix blocks, one per prefill instance.

A request's cached prefix is the run of its leading block hashes already in the cache (the
Mooncake trace's ``hash_ids`` are chained prefix hashes, so matching stops at the first miss).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from sbsopt._validate import check_int

__all__ = ["PrefixCache"]


class PrefixCache:
    """LRU prefix-block cache with a capacity in blocks.

    Parameters
    ----------
    capacity_blocks : int
        Blocks kept; 0 disables caching.
    block_tokens : int
        Tokens per block (512 for Mooncake).

    Examples
    --------
    >>> cache = PrefixCache(capacity_blocks=4)
    >>> cache.lookup(np.array([1, 2, 3]), input_tokens=1500)
    0
    >>> cache.insert(np.array([1, 2, 3]))
    >>> cache.lookup(np.array([1, 2, 9]), input_tokens=1500)
    1024
    """

    def __init__(self, *, capacity_blocks: int, block_tokens: int = 512) -> None:
        self.capacity_blocks = check_int("capacity_blocks", capacity_blocks)
        self.block_tokens = check_int("block_tokens", block_tokens, minimum=1)
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def lookup(self, hashes: np.ndarray, *, input_tokens: int) -> int:
        """Cached prefix tokens for a request.

        Parameters
        ----------
        hashes : numpy.ndarray of int
            The request's KV-block hashes, in prompt order.
        input_tokens : int
            The request's prompt length.

        Returns
        -------
        int
            Tokens of the longest cached prefix of whole blocks, at most ``input_tokens - 1``
            (the last prompt token is always recomputed to produce the first output token).
        """
        matched = 0
        for h in hashes.tolist():
            if h not in self._blocks:
                break
            matched += 1
        return max(0, min(matched * self.block_tokens, input_tokens - 1))

    def insert(self, hashes: np.ndarray) -> None:
        """Insert (or refresh) a request's blocks, evicting least-recently used ones.

        Parameters
        ----------
        hashes : numpy.ndarray of int
            The request's KV-block hashes, in prompt order.
        """
        if self.capacity_blocks == 0:
            return
        blocks = self._blocks
        for h in hashes.tolist():
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)
