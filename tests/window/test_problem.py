"""Window construction: validation names the field and the value; inputs are copied."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.window import DecodeWindow, PrefillWindow


def test_prefill_rejects_bad_fields(cat) -> None:
    ok = {"capacity_tokens": [4096, 4096], "coefficients": cat.PREFILL}
    with pytest.raises(InvalidInputError, match=r"new_tokens\[1\] = -5"):
        PrefillWindow.from_arrays([1, -5], [0, 0], [0.0, 0.0], **ok)
    with pytest.raises(InvalidInputError, match=r"len\(cached_tokens\)"):
        PrefillWindow.from_arrays([1, 5], [0], [0.0, 0.0], **ok)
    with pytest.raises(InvalidInputError, match=r"arrival_s\[0\] = nan"):
        PrefillWindow.from_arrays([1], [0], [np.nan], **ok)
    with pytest.raises(InvalidInputError, match="len\\(load_tokens\\)"):
        PrefillWindow.from_arrays([1], [0], [0.0], load_tokens=[1, 2, 3], **ok)
    with pytest.raises(InvalidInputError, match="len\\(capacity_tokens\\) = 0"):
        PrefillWindow.from_arrays([1], [0], [0.0], capacity_tokens=[], coefficients=cat.PREFILL)
    with pytest.raises(InvalidInputError, match="coefficients.base_us"):
        PrefillWindow.from_arrays([1], [0], [0.0], capacity_tokens=[9], coefficients=object())
    with pytest.raises(InvalidInputError, match="instance"):
        PrefillWindow.from_arrays([1], [0], [0.0], instance=[0, 2], **ok)
    with pytest.raises(InvalidInputError, match="deadline_s"):
        PrefillWindow.from_arrays([1], [0], [0.0], deadline_s=[np.nan], **ok)


def test_decode_rejects_bad_fields(cat) -> None:
    ok = {"max_batch_size": [4], "kv_blocks_used": [0], "free_kv_blocks": [10],
          "coefficients": cat.DECODE}
    with pytest.raises(InvalidInputError, match=r"batch_size\[0\] = 5"):
        DecodeWindow.from_arrays([10], [1], batch_size=[5], **ok)
    with pytest.raises(InvalidInputError, match=r"kv_blocks\[0\] = -1"):
        DecodeWindow.from_arrays([10], [-1], batch_size=[0], **ok)
    with pytest.raises(InvalidInputError, match="iqr_k"):
        DecodeWindow.from_arrays([10], [1], batch_size=[0], iqr_k=-1.0, **ok)


def test_inputs_are_copied_and_frozen(cat) -> None:
    new = np.array([100, 200])
    w = PrefillWindow.from_arrays(new, [0, 0], [0.0, 0.0], capacity_tokens=[512],
                                  coefficients=cat.PREFILL)
    new[0] = 7
    assert w.new_tokens.tolist() == [100, 200]
    with pytest.raises(ValueError, match="read-only"):
        w.new_tokens[0] = 1


def test_default_coefficients_come_from_the_cost_model() -> None:
    from sbsopt.costmodel import load_cost_model

    w = PrefillWindow.from_arrays([100], [0], [0.0], capacity_tokens=[512])
    assert w.coefficients == load_cost_model().prefill_coefficients()
    d = DecodeWindow.from_arrays([100], [2], batch_size=[0], max_batch_size=[4],
                                 kv_blocks_used=[0], free_kv_blocks=[8])
    assert d.coefficients == load_cost_model().decode_coefficients()


def test_age_weights_and_guards(cat) -> None:
    w = PrefillWindow.from_arrays([100, 100], [0, 0], [0.0, 0.5], capacity_tokens=[512],
                                  deadline_s=[0.9, np.inf], now_s=1.0, age_scale_s=0.5,
                                  coefficients=cat.PREFILL)
    assert w.weight.tolist() == [3.0, 2.0]
    assert w.guarded.tolist() == [True, False]
    assert w.penalty_us[0] > w.penalty_us[1]


@pytest.mark.parametrize("copy_", [lambda w: pickle.loads(pickle.dumps(w)), copy.deepcopy])
def test_copies_keep_arrays_read_only(cat, copy_) -> None:
    """An unpickled or deep-copied window solves with the kernels already compiled for windows
    built by ``from_arrays`` (a writeable array would make Numba compile another variant)."""
    from sbsopt.window import _kernels, solve, warm_up

    warm_up()
    prefill = PrefillWindow.from_arrays([100, 300, 700], [0, 50, 0], [0.0, 0.1, 0.2],
                                        capacity_tokens=[512, 512], coefficients=cat.PREFILL)
    decode = DecodeWindow.from_arrays([900, 100], [15, 2], batch_size=[0, 1], max_batch_size=[4, 4],
                                      kv_blocks_used=[0, 0], free_kv_blocks=[100, 100],
                                      coefficients=cat.DECODE)
    for window, kernel in ((prefill, _kernels.prefill_solve), (decode, _kernels.decode_solve)):
        solve(window, method="greedy")
        variants = len(kernel.signatures)
        copied = copy_(window)
        arrays = [v for v in vars(copied).values() if isinstance(v, np.ndarray)]
        assert arrays and not any(a.flags.writeable for a in arrays)
        assert solve(copied, method="greedy").objective == solve(window, method="greedy").objective
        assert len(kernel.signatures) == variants
