"""The planning CLI on the real simulator: --json shapes, --out tables, typed errors, the main job."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sbsopt.cli import main

COMMON = ["--trace", "azure-conv", "--limit", "600", "--duration-s", "1.5", "--router", "least_tokens",
          "--prefill-instances", "1",
          "--backend", "serial"]


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_capacity_json_and_out(capsys, tmp_path):
    out = tmp_path / "runs.csv"
    # 1 s TTFT and 2.5 s of arrivals: a steady window (a 1.5 s one is refused as a burst)
    d = _json(capsys, ["plan", "capacity", *COMMON, "--duration-s", "2.5", "--ttft-slo-ms", "1000", "--tolerance",
                       "10", "--rate-min", "2",
                       "--rate-max", "200", "--json", "--out", str(out)])
    assert {"max_rate_req_s", "tolerance_req_s", "confirm", "gpus"} <= set(d)
    assert d["tolerance_req_s"] == 10 and d["gpus"] == 176
    assert d["fail_rate_req_s"] - d["max_rate_req_s"] <= 10
    assert d["confirm"]["slo_attainment"] >= 0.9
    table = pd.read_csv(out)
    assert len(table) == d["evaluations"] and table["meets_slo"].any() and not table["meets_slo"].all()


def test_plan_instances_json_and_parquet(capsys, tmp_path):
    out = tmp_path / "runs.parquet"
    # 1 s TTFT and 2.5 s of arrivals: a steady window (the 1.5 s one is refused as a burst)
    d = _json(capsys, ["plan", "instances", *COMMON, "--duration-s", "2.5", "--ttft-slo-ms", "1000", "--rate", "60",
                       "--max-prefill", "3", "--max-decode", "2",
                       "--json", "--out", str(out)])
    assert {"prefill_instances", "decode_instances", "gpus", "cost_per_million_tokens"} <= set(d)
    assert d["gpus"] == d["prefill_instances"] * 32 + d["decode_instances"] * 144
    assert len(pd.read_parquet(out)) == d["evaluations"]


def test_plan_capacity_table_output(capsys):
    assert main(["plan", "capacity", *COMMON, "--duration-s", "2.5", "--ttft-slo-ms", "1000", "--tolerance", "20",
                 "--rate-min", "2", "--rate-max", "200"]) == 0
    text = capsys.readouterr().out
    assert "max rate req/s" in text and "tolerance" in text


def test_sweep_cli_writes_table_and_plot(capsys, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('[base]\nlimit = 40\nrate = 20.0\n[grid]\ninterval = ["fixed:5", "fixed:20"]\nseed = [0, 1]\n')
    out, plot = tmp_path / "sweep.csv", tmp_path / "sweep.png"
    assert main(["sweep", "--grid", str(grid), "--backend", "serial", "--ttft-slo-ms", "800", "--out", str(out),
                 "--plot", str(plot)]) == 0
    table = pd.read_csv(out)
    assert len(table) == 4 and list(table["seed"]) == [0, 1, 0, 1] and table["slo_attainment"].between(0, 1).all()
    assert plot.stat().st_size > 0 and "sweep: 4 runs" in capsys.readouterr().out


@pytest.mark.parametrize("argv, text", [
    (["plan", "capacity", "--ttft-slo-ms", "0"], "ttft_slo_ms"),
    (["plan", "capacity", "--attainment", "2"], "attainment"),
    (["plan", "capacity", "--out", "x.txt"], "--out"),
    (["plan", "instances", "--rate", "-1"], "rate"),
    (["run", "--routers", "sbs"], "--routers"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, text):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1


def test_sweep_unknown_parameter_and_empty_grid_exit_2(capsys, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nwindow = [1]\n')
    assert main(["sweep", "--grid", str(grid)]) == 2
    assert "window" in capsys.readouterr().err
    grid.write_text('[grid]\n')
    assert main(["sweep", "--grid", str(grid)]) == 2
    assert "grid" in capsys.readouterr().err


def test_plan_capacity_infeasible_is_an_answer(capsys):
    d = _json(capsys, ["plan", "capacity", *COMMON, "--ttft-slo-ms", "1", "--rate-min", "2", "--json"])
    assert d["feasible"] is False and d["max_rate_req_s"] is None and "infeasible" in d["message"]


def test_run_main_job_small(capsys):
    d = _json(capsys, ["run", "--duration-s", "1", "--routers", "round_robin,least_tokens", "--backend", "serial",
                       "--tolerance-frac", "0.1", "--json"])
    assert set(d["plans"]) == {"sbs", "round_robin", "least_tokens"}
    assert d["best_immediate"] in ("round_robin", "least_tokens")
    best = d["plans"][d["best_immediate"]]["max_rate_req_s"]
    assert d["sbs_gain"] == pytest.approx(d["plans"]["sbs"]["max_rate_req_s"] / best - 1)
    assert len(d["rows"]) == 3 and d["trace"] == "azure-conv"
    # the trace's own P:D shape, the decode side's load at the answers
    assert d["shape"]["picked"] and d["cluster"]["prefill_instances"] == d["shape"]["prefill_instances"] > 1
    assert all(p["decode_load"] > 0 and "decode_batch_imbalance" in p["confirm"] for p in d["plans"].values())
    # production-shaped immediate routing searched too, SBS's answer shared (it ignores the routing)
    prod = d["production"]
    assert prod["scheduler"] == {"router_replicas": 3, "dp_pinning": "bootstrap_room"}
    assert set(prod["plans"]) == set(d["plans"]) and prod["plans"]["sbs"] == d["plans"]["sbs"]
    assert prod["best_immediate"] in ("round_robin", "least_tokens") and len(prod["rows"]) == 3
    for name, answer in (("ideal", d), ("production", prod)):
        m = d["mechanism"][name]
        assert {m["passing_router"], m["failing_router"]} == {"sbs", answer["best_immediate"]}
        assert m["side"] in ("ttft", "tpot") and m["mechanism"] in ("queue wait", "execution", "decode balance")
        assert {"sched_wait_ms", "engine_wait_ms", "exec_ms", "bubble_fraction", "tpot_p99_ms"} <= set(m["passing"])


def test_run_prefill_instances_override_the_traces_shape(capsys):
    d = _json(capsys, ["run", "--duration-s", "1", "--routers", "least_tokens", "--backend", "serial",
                       "--tolerance-frac", "0.2", "--prefill-instances", "1", "--json"])
    assert d["cluster"]["prefill_instances"] == 1 and not d["shape"]["picked"]
    assert d["shape"]["prefill_instances"] > 1 and d["plans"]["sbs"]["gpus"] == 32 + 144


def test_run_prints_the_shape_the_production_table_and_the_mechanism(capsys):
    assert main(["run", "--duration-s", "1", "--routers", "least_tokens", "--backend", "serial",
                 "--tolerance-frac", "0.2"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the trace's P:D shape" in text and "Decode at SBS's answer" in text
    assert "production-shaped" in text.lower() and "buffer/queue/exec" in text
