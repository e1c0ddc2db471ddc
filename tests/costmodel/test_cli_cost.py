"""`sbsopt cost` and `sbsopt calibrate`: exact flags, JSON fields, one-line errors."""

from __future__ import annotations

import json

import pytest

from sbsopt.cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_prefill_json_contract(capsys) -> None:
    code, out, _ = _run(capsys, ["cost", "--phase", "prefill", "--ep", "32", "--tokens-per-rank", "16384",
                                 "--context", "4096", "--micro-batches", "2", "--json"])
    assert code == 0
    payload = json.loads(out)
    assert set(payload["terms_us"]) == {"attention", "expert_gemm", "shared_expert", "dispatch", "combine", "other"}
    assert payload["step_ms"] > payload["moe_layer_ms"] > 0 and payload["dense_layer_ms"] > 0
    assert payload["alltoall_bottleneck"] == "ib"


def test_decode_json_and_table(capsys) -> None:
    argv = ["cost", "--phase", "decode", "--ep", "128", "--batch-per-rank", "128", "--context", "4096",
            "--query-tokens", "2", "--micro-batches", "2"]
    code, out, _ = _run(capsys, [*argv, "--json"])
    assert code == 0 and json.loads(out)["step_ms"] > 0
    code, out, _ = _run(capsys, [*argv, "--model", "deepseek-v3", "--hardware", "h800", "--gpus-per-node", "8"])
    assert code == 0 and "step (all layers + head)" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["cost", "--tokens-per-rank", "-5"], "tokens_per_rank[0] = -5.0"),
        (["cost", "--ep", "7"], "ep = 7"),
        (["cost", "--hardware", "a100"], "a100"),
        (["cost", "--context", "nan"], "context[0] = nan"),
        (["cost", "--phase", "decode", "--tokens-per-rank", "5"], "--tokens-per-rank"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, argv, needle) -> None:
    code, _, err = _run(capsys, argv)
    assert code == 2
    assert needle in err and err.count("\n") == 1


def test_calibrate_command_writes_out(capsys, tmp_path) -> None:
    out = tmp_path / "fit.json"
    code, text, _ = _run(capsys, ["calibrate", "--out", str(out), "--no-held-out"])
    assert code == 0 and out.is_file()
    assert "median |rel.err|" in text
