import json

import pandas as pd

from sbsopt.cli import main


def test_simulate_json_has_the_contract_keys(capsys):
    code = main(["simulate", "--trace", "azure-conv", "--router", "sbs", "--limit", "150",
                 "--load", "0.5", "--prefill-instances", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("requests", "completed", "rejected", "in_flight", "ttft_ms", "tpot_ms",
                "throughput_tok_s_per_gpu", "bubble_fraction", "chunk_utilization", "sim_wall_s"):
        assert key in out
    assert out["requests"] == 150 == out["completed"] + out["rejected"] + out["in_flight"]
    assert set(out["ttft_ms"]) == {"p50", "p90", "p99", "mean"}


def test_simulate_writes_the_request_table(tmp_path, capsys):
    path = tmp_path / "r.csv"
    code = main(["simulate", "--trace", "azure-code", "--router", "least_tokens", "--limit", "80",
                 "--rate", "5", "--out", str(path)])
    assert code == 0
    table = pd.read_csv(path)
    assert len(table) == 80 and {"ttft_s", "status", "engine_wait_s"} <= set(table.columns)


def test_compare_reports_relative_change(capsys):
    code = main(["compare", "--trace", "azure-conv", "--routers", "sbs,least_tokens,round_robin",
                 "--limit", "150", "--load", "0.7", "--prefill-instances", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["router"] for r in out["routers"]] == ["sbs", "least_tokens", "round_robin"]
    best = out["best_immediate"]
    assert best in ("least_tokens", "round_robin")
    base = next(r for r in out["routers"] if r["router"] == best)
    assert base["vs_best_immediate"]["ttft_mean"] == 0.0


def test_bad_inputs_exit_2(capsys):
    assert main(["simulate", "--trace", "nope", "--limit", "5"]) == 2
    assert "trace" in capsys.readouterr().err
    assert main(["simulate", "--trace", "azure-conv", "--load", "0.5", "--rate", "2"]) == 2
    assert main(["compare", "--trace", "azure-conv", "--routers", "sbs,magic"]) == 2
    assert main(["simulate", "--trace", "azure-conv", "--interval", "sometimes", "--limit", "5"]) == 2
