"""Stage-level overlap, the all-to-all kernels' scaling, DeepEP's counting, MTP and imbalance."""

from __future__ import annotations

import numpy as np
import pytest

from sbsopt.costmodel import load_cost_model, load_hardware_card, load_model_card
from sbsopt.costmodel.alltoall import low_latency_alltoall_us, normal_alltoall_us
from sbsopt.costmodel.coefficients import load_coefficients
from sbsopt.costmodel.deepep import normal_test_path
from sbsopt.costmodel.layers import expected_max_rows, moe_kernels
from sbsopt.costmodel.overlap import pipeline_fill_us, stage_layer_us


def test_decode_exposes_a_transfer_longer_than_the_stage_it_runs_beside() -> None:
    # A0 + S = 15 hides a dispatch up to 15; A1 = 20 hides a combine up to 20
    hidden = stage_layer_us(10, 20, 5, 30, 15, 20, micro_batches=2, phase="decode")
    assert float(hidden) == pytest.approx(2 * (15 + 30 + 20))
    exposed = stage_layer_us(10, 20, 5, 30, 15, 50, micro_batches=2, phase="decode")
    assert float(exposed - hidden) == pytest.approx(2 * 30)
    # even though total compute (65) exceeds total comm (65 = 15 + 50): the old max(C, X) hid it all
    assert float(exposed) > 2 * max(65, 65)


def test_prefill_pairs_each_transfer_with_one_stage() -> None:
    # A = 10, S = 2, M = 10: a 12-us combine hides beside A + S but sticks out beside M alone
    layer = stage_layer_us(4, 6, 2, 10, 5, 12, micro_batches=2, phase="prefill")
    assert float(layer) == pytest.approx(12 + 10 + 10 + 12)
    assert float(stage_layer_us(4, 6, 2, 10, 5, 12, micro_batches=1, phase="prefill")) == 39
    assert float(pipeline_fill_us(12.0, micro_batches=2)) == 12.0


def test_decode_step_at_production_point_exposes_communication() -> None:
    b = load_cost_model(ep=144).breakdown(phase="decode", tokens_per_rank=90, context=4989, mtp_acceptance=0.85)
    assert b.exposed_comm_us > 0
    assert b.moe_layer_us > b.compute_us * 2  # two micro-batches, plus what sticks out


def test_comm_scales_linearly_with_tokens_above_a_latency_floor() -> None:
    cm = load_cost_model(ep=32)
    coef = load_coefficients()
    t = normal_alltoall_us(np.array([0.0, 4096.0, 8192.0]), model=cm.model, path=cm.normal_path, coef=coef)
    assert t["dispatch"][0] == 0 and t["dispatch"][2] == pytest.approx(2 * t["dispatch"][1])
    # notify kernels are synchronization: no per-token term
    assert t["notify_dispatch"][2] == t["notify_dispatch"][0] == coef.ll_call_latency_us
    ll = low_latency_alltoall_us(np.array([0.0, 128.0]), model=cm.model, path=cm.ll_path, coef=coef)
    assert ll["dispatch"][0] == pytest.approx(coef.ll_call_latency_us)


def test_deepep_counts_the_senders_own_node() -> None:
    model, hw = load_model_card(), load_hardware_card()
    path, pairs = normal_test_path(32, model=model, hardware=hw)
    # 4 nodes, 4 node-groups per token: most tokens touch every node, the own one included
    assert 3.0 < pairs <= 4.0 and path.bottleneck == "ib"
    _, pairs16 = normal_test_path(16, model=model, hardware=hw)
    assert 1.9 < pairs16 <= 2.0


def test_low_latency_send_and_receive_run_on_the_compute_stream() -> None:
    kernels = {k.name: k for k in moe_kernels(load_model_card(), 64.0, 64.0, experts_per_rank=2, phase="decode")}
    for name in ("ll_dispatch_send", "ll_dispatch_recv", "ll_combine_send", "ll_combine_recv"):
        assert name in kernels and float(kernels[name].bytes) > 0
    assert kernels["ll_combine_recv"].stage == "attn0"


def test_busiest_rank_gets_more_than_the_mean_rows() -> None:
    assert float(expected_max_rows(720.0, ranks=144)) > 720 * 1.05
    assert float(expected_max_rows(720.0, ranks=1)) == 720
    balanced = load_cost_model(ep=144).decode_step_us([90] * 144, [90 * 4989] * 144, 2)
    skewed = load_cost_model(ep=144, expert_imbalance=1.3).decode_step_us([90] * 144, [90 * 4989] * 144, 2)
    assert skewed > balanced


def test_mtp_runs_one_more_layer_and_yields_one_plus_acceptance_tokens() -> None:
    cm = load_cost_model(ep=144)
    plain = cm.breakdown(phase="decode", tokens_per_rank=90, context=4989, mtp_acceptance=0.0)
    mtp = cm.breakdown(phase="decode", tokens_per_rank=90, context=4989, mtp_acceptance=0.8)
    assert plain.tokens_per_step == 1.0 and mtp.tokens_per_step == pytest.approx(1.8)
    assert cm.decode_tokens_per_step(0.8) == pytest.approx(1.8)
    # 2 query tokens per request and the MTP module's extra MoE layer and head
    assert mtp.step_us > (cm.model.moe_layers + 1) * mtp.moe_layer_us
    with pytest.raises(ValueError, match="mtp_acceptance"):
        cm.breakdown(phase="decode", tokens_per_rank=90, context=4989, mtp_acceptance=1.5)


def test_spreading_an_ep_group_over_more_nodes_slows_dispatch() -> None:
    packed = load_cost_model(ep=32).breakdown(phase="prefill", tokens_per_rank=8192, context=4096)
    spread = load_cost_model(ep=32, nodes=8).breakdown(phase="prefill", tokens_per_rank=8192, context=4096)
    assert spread.terms_us["dispatch"] > packed.terms_us["dispatch"]
