"""Overlap algebra and the all-to-all kernels' scaling."""

from __future__ import annotations

import numpy as np
import pytest

from sbsopt.costmodel import load_cost_model
from sbsopt.costmodel.alltoall import low_latency_alltoall_us, normal_alltoall_us
from sbsopt.costmodel.coefficients import load_coefficients
from sbsopt.costmodel.overlap import overlapped_layer_us, pipeline_fill_us


def test_overlap_hides_the_smaller_of_compute_and_comm() -> None:
    compute, comm = np.array([10.0, 3.0]), np.array([4.0, 9.0])
    two = overlapped_layer_us(compute, comm, micro_batches=2)
    np.testing.assert_allclose(two, [20.0, 18.0])
    np.testing.assert_allclose(pipeline_fill_us(compute, comm, micro_batches=2), [4.0, 3.0])
    np.testing.assert_allclose(overlapped_layer_us(compute, comm, micro_batches=1), compute + comm)
    assert np.all(pipeline_fill_us(compute, comm, micro_batches=1) == 0)


def test_comm_scales_linearly_with_tokens_above_a_latency_floor() -> None:
    cm = load_cost_model(ep=32)
    coef = load_coefficients()
    t = normal_alltoall_us(np.array([0.0, 4096.0, 8192.0]), model=cm.model, path=cm.normal_path, coef=coef,
                           overlapped=True)
    assert t["dispatch"][0] == 0 and t["dispatch"][2] == pytest.approx(2 * t["dispatch"][1])
    # BF16 combine carries ~2x the FP8 dispatch bytes
    assert t["combine"][1] / t["dispatch"][1] == pytest.approx(14336 / 7392 * 0.88 / 0.94, rel=1e-6)
    ll = low_latency_alltoall_us(np.array([0.0, 128.0]), model=cm.model, path=cm.ll_path, coef=coef)
    assert ll["dispatch"][0] == pytest.approx(coef.ll_call_latency_us)


def test_prefill_at_profile_load_is_balanced_between_compute_and_comm() -> None:
    # DeepSeek sized the prefill micro-batch so that comm hides behind compute (profile: ~15 ms each)
    b = load_cost_model(ep=32).breakdown(phase="prefill", tokens_per_rank=16384, context=4096)
    assert b.comm_us == pytest.approx(15511, rel=0.10)
    assert 0.8 < b.compute_us / b.comm_us < 1.25


def test_spreading_an_ep_group_over_more_nodes_slows_dispatch() -> None:
    packed = load_cost_model(ep=32).breakdown(phase="prefill", tokens_per_rank=8192, context=4096)
    spread = load_cost_model(ep=32, nodes=8).breakdown(phase="prefill", tokens_per_rank=8192, context=4096)
    assert spread.terms_us["dispatch"] > packed.terms_us["dispatch"]
