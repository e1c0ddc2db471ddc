"""Which request fits which unit alone, for both phases."""

from __future__ import annotations

import numpy as np
import pytest

from sbsopt.window.fits import fits_alone


@pytest.mark.parametrize("seed", range(4))
def test_prefill_pairs_have_the_tokens_and_the_blocks(cat, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = cat.random_prefill(rng, 30, 6, free_kv_blocks=rng.integers(0, 120, 6))
    expected = [[bool(w.new_tokens[i] <= w.room_tokens[j] and w.kv_blocks[i] <= w.free_kv_blocks[j])
                 for j in range(w.n_units)] for i in range(w.n_requests)]
    found = fits_alone(w)
    assert found.tolist() == expected
    assert found.any() and not found.all()


@pytest.mark.parametrize("seed", range(4))
def test_decode_pairs_have_a_batch_slot_and_the_blocks(cat, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = cat.random_decode(rng, 30, 6)
    expected = [[bool(w.batch_size[j] < w.max_batch_size[j] and w.kv_blocks[i] <= w.free_kv_blocks[j])
                 for j in range(w.n_units)] for i in range(w.n_requests)]
    found = fits_alone(w)
    assert found.tolist() == expected
    assert found.any() and not found.all()
