"""KV blocks: what a request needs by default, and what a chunk of it holds.

The one statement of the rule for every Python caller (window builders, the oracle, the
simulator), kept free of Numba so that it imports without loading :mod:`sbsopt.window`; the
kernels' compiled forms are in :mod:`sbsopt.window.kv_blocks`, and a test checks that the two
agree. Arguments are integers or numpy arrays of them.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

__all__ = ["KV_BLOCK_TOKENS", "request_kv_blocks", "chunk_kv_blocks", "chunk_tokens_within"]

#: Tokens per KV block where the caller gives none (window builders, the oracle, the simulator).
KV_BLOCK_TOKENS = 64

#: A count, or an array of counts.
_Count = int | np.integer | np.ndarray
_Tokens = TypeVar("_Tokens", int, np.integer, np.ndarray)


def request_kv_blocks(tokens: _Tokens, block_tokens: int = KV_BLOCK_TOKENS) -> _Tokens:
    """KV blocks of ``tokens`` new tokens: ``ceil(tokens / block_tokens)``.

    Examples
    --------
    >>> request_kv_blocks(1), request_kv_blocks(64), request_kv_blocks(65)
    (1, 1, 2)
    >>> request_kv_blocks(np.array([0, 128, 129]), 128).tolist()
    [0, 1, 2]
    """
    return -(-tokens // block_tokens)


def chunk_kv_blocks(k: _Count, blocks: _Count, tokens: _Count) -> _Count:
    """KV blocks of a chunk of ``k`` tokens of a request of ``tokens`` tokens needing
    ``blocks``: pro rata, rounded up.

    Examples
    --------
    >>> chunk_kv_blocks(100, 10, 300), chunk_kv_blocks(101, 10, 300)
    (4, 4)
    >>> chunk_kv_blocks(90, 10, 300), chunk_kv_blocks(0, 10, 300)
    (3, 0)
    """
    return -(-(k * blocks) // tokens)


def chunk_tokens_within(free: _Count, blocks: _Count, tokens: _Count) -> _Count:
    """Largest chunk, in tokens, whose :func:`chunk_kv_blocks` are at most ``free`` (may
    exceed ``tokens``; ``blocks`` positive).

    Examples
    --------
    >>> k = chunk_tokens_within(3, 10, 300)
    >>> k, chunk_kv_blocks(k, 10, 300), chunk_kv_blocks(k + 1, 10, 300)
    (90, 3, 4)
    """
    return (free * tokens) // blocks
