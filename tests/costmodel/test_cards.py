"""Cards load, validate every field, and name the file and field on error."""

from __future__ import annotations

import pytest

from sbsopt._resources import models_dir
from sbsopt.costmodel.cards import load_hardware_card, load_model_card
from sbsopt.errors import InvalidInputError, ModelCardError


def test_bundled_cards_match_public_facts() -> None:
    model = load_model_card("deepseek-v3")
    hw = load_hardware_card("h800")
    assert (model.moe_layers, model.dense_layers, model.experts_per_token) == (58, 3, 8)
    # (kv_lora 512 + rope 64) x 2 bytes x 61 layers
    assert model.kv_bytes_per_token == (model.kv_lora_rank + model.qk_rope_head_dim) * 2 * model.num_layers
    assert model.dispatch_bytes_per_token == 7168 + 56 * 4
    assert (hw.sms, hw.gpus_per_node, hw.comm_sms) == (132, 8, 24)


def _write(tmp_path, text: str):
    path = tmp_path / "card.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("replace", "field"),
    [
        ("sms = 132", "hardware.sms"),
        ("ib_Bps = 5.0e10", "hardware.ib_Bps"),
        ("comm_sms = 24", "hardware.comm_sms"),
    ],
)
def test_bad_hardware_field_names_file_and_field(tmp_path, replace: str, field: str) -> None:
    from sbsopt._resources import models_dir

    text = (models_dir() / "h800.toml").read_text()
    bad = {"sms = 132": "sms = -1", "ib_Bps = 5.0e10": 'ib_Bps = "fast"', "comm_sms = 24": "comm_sms = 500"}[replace]
    path = _write(tmp_path, text.replace(replace, bad))
    with pytest.raises(ModelCardError, match=rf"card.toml: {field}"):
        load_hardware_card(path)


def test_missing_and_unknown_model_fields(tmp_path) -> None:
    from sbsopt._resources import models_dir

    text = (models_dir() / "deepseek-v3.toml").read_text()
    missing = _write(tmp_path, "\n".join(line for line in text.splitlines() if not line.startswith("routed_experts")))
    with pytest.raises(ModelCardError, match="model.routed_experts"):
        load_model_card(missing)
    (tmp_path / "extra.toml").write_text(text.replace("[model]", "[model]\nwarp_speed = 9"))
    with pytest.raises(ModelCardError, match="model.warp_speed"):
        load_model_card(tmp_path / "extra.toml")


def test_unknown_card_name_is_a_typed_input_error() -> None:
    with pytest.raises(InvalidInputError, match="a100"):
        load_hardware_card("a100")


def test_bad_coefficients_file_names_field(tmp_path) -> None:
    from sbsopt.costmodel.coefficients import load_coefficients

    path = tmp_path / "fit.json"
    path.write_text('{"coefficients": {"gemm_flop_scale": -1}}')
    with pytest.raises(ModelCardError, match="fit.json: coefficients.gemm_flop_scale"):
        load_coefficients(path)
    path.write_text("{not json")
    with pytest.raises(ModelCardError, match="valid JSON"):
        load_coefficients(path)


@pytest.mark.parametrize("name", ["h100", "h200"])
def test_bundled_hopper_cards_load(name: str) -> None:
    card = load_hardware_card(name)
    assert card.sms == 132 and card.nvlink_Bps > load_hardware_card("h800").nvlink_Bps


def test_card_missing_a_field_names_file_and_field(tmp_path) -> None:
    text = (models_dir() / "h200.toml").read_text()
    bad = tmp_path / "my_gpu.toml"
    bad.write_text("\n".join(line for line in text.splitlines() if not line.startswith("hbm_bw_Bps")))
    with pytest.raises(ModelCardError, match=r"my_gpu.toml.*hardware.hbm_bw_Bps"):
        load_hardware_card(bad)


def test_cli_rejects_a_bad_hardware_card(tmp_path) -> None:
    from sbsopt.cli import main

    bad = tmp_path / "broken.toml"
    bad.write_text('name = "broken"\n[hardware]\nsms = 132\n')
    assert main(["cost", "--hardware", str(bad)]) == 2
