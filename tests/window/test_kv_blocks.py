"""The KV-block rules: plain and compiled forms agree, and every user applies the one rule."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from sbsopt.kvblocks import KV_BLOCK_TOKENS, chunk_kv_blocks, chunk_tokens_within, request_kv_blocks
from sbsopt.window import PrefillWindow, SolveResult, SolveStatus, assignment_violations
from sbsopt.window.kv_blocks import chunk_kv_blocks_nb, chunk_tokens_within_nb


@pytest.mark.parametrize("seed", range(5))
def test_chunk_blocks_are_pro_rata_rounded_up_in_both_forms(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 200_000, 300)
    blocks = rng.integers(0, 4_000, 300)
    k = rng.integers(0, tokens + 1)
    plain = chunk_kv_blocks(k, blocks, tokens)
    for q in range(300):
        exact = Fraction(int(k[q]) * int(blocks[q]), int(tokens[q]))
        expected = -(-exact.numerator // exact.denominator)  # ceil
        assert chunk_kv_blocks(int(k[q]), int(blocks[q]), int(tokens[q])) == expected
        assert plain[q] == expected
        assert chunk_kv_blocks_nb(int(k[q]), int(blocks[q]), int(tokens[q])) == expected


@pytest.mark.parametrize("seed", range(5))
def test_chunk_tokens_within_is_the_largest_chunk_the_free_blocks_hold(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(300):
        tokens = int(rng.integers(1, 200_000))
        blocks = int(rng.integers(1, 4_000))
        free = int(rng.integers(0, blocks))
        k = chunk_tokens_within(free, blocks, tokens)
        assert chunk_tokens_within_nb(free, blocks, tokens) == k
        assert chunk_kv_blocks(k, blocks, tokens) <= free < chunk_kv_blocks(k + 1, blocks, tokens)


def test_request_blocks_round_up_to_whole_blocks() -> None:
    tokens = np.arange(0, 1000)
    assert KV_BLOCK_TOKENS == 64
    assert request_kv_blocks(tokens).tolist() == [-(-t // 64) for t in range(1000)]
    assert [request_kv_blocks(t, 16) for t in (0, 1, 16, 17)] == [0, 1, 1, 2]


def test_windows_default_to_the_request_rule(cat) -> None:
    new = [1, 64, 65, 4000]
    w = PrefillWindow.from_arrays(new, [0] * 4, [0.0] * 4, capacity_tokens=[8192],
                                  coefficients=cat.PREFILL)
    assert w.kv_blocks.tolist() == [1, 1, 2, 63]
    w = PrefillWindow.from_arrays(new, [0] * 4, [0.0] * 4, capacity_tokens=[8192],
                                  coefficients=cat.PREFILL, kv_block_tokens=128)
    assert w.kv_blocks.tolist() == request_kv_blocks(np.array(new), 128).tolist() == [1, 1, 1, 32]


@pytest.mark.parametrize("free, valid", [(4, True), (3, False)])
def test_checker_counts_a_chunks_blocks_rounded_up(cat, free: int, valid: bool) -> None:
    """A 301-token chunk of a 900-token, 10-block request holds ceil(3.34) = 4 blocks."""
    w = PrefillWindow.from_arrays([900], [0], [0.0], capacity_tokens=[301], free_kv_blocks=[free],
                                  kv_blocks=[10], coefficients=cat.PREFILL)
    assignment = np.array([0])
    result = SolveResult(status=SolveStatus.FEASIBLE, assignment=assignment,
                         deferred=np.zeros(0, np.int64), chunks={0: 301},
                         objective=0.0, bound=-np.inf, gap=np.inf, method="test", wall_time_s=0.0)
    found = [v for v in assignment_violations(w, result) if "KV blocks exceeded" in v]
    assert (not found) == valid


def test_the_plain_rules_import_without_numba_or_the_window_package() -> None:
    code = ("import sys, sbsopt.kvblocks\n"
            "print(sorted(m for m in ('numba', 'sbsopt.window') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"
