"""Compiled forms of the KV-block rules of :mod:`sbsopt.kvblocks`, for the kernels.

A compiled function called from plain Python compiles a variant for its argument types,
inside a timed solve on first use, so Python code calls the plain forms there; a test checks
that the two agree.
"""

from __future__ import annotations

from sbsopt._jit import njit

__all__ = ["chunk_kv_blocks_nb", "chunk_tokens_within_nb"]


@njit(nogil=True, inline="always")
def chunk_kv_blocks_nb(k, blocks, tokens):  # pragma: no cover - compiled
    """Compiled :func:`sbsopt.kvblocks.chunk_kv_blocks` (integer arguments)."""
    return (k * blocks + tokens - 1) // tokens


@njit(nogil=True, inline="always")
def chunk_tokens_within_nb(free, blocks, tokens):  # pragma: no cover - compiled
    """Compiled :func:`sbsopt.kvblocks.chunk_tokens_within` (integer arguments)."""
    return (free * tokens) // blocks
