"""One entry point, two modes: what each mode accepts, refuses, and the one result type both return."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sbsopt.cli import main
from sbsopt.errors import InvalidInputError
from sbsopt.sim import ClusterConfig, SimResult, colocated_cluster, simulate
from sbsopt.sim.config import IMMEDIATE_ROUTERS, ROUTER_MODES, check_router, routers_for
from sbsopt.sim.metrics import REJECT_REASONS, REQUEST_COLUMNS, STATUSES
from sbsopt.workload import load_trace


@pytest.fixture(scope="module")
def wl():
    return load_trace("azure-conv", limit=40).with_rate(20.0)


@pytest.mark.parametrize("option, value", [("interval", "fixed:5"), ("solver", "cpsat"),
                                           ("record_timeline", True), ("faults", ["prefill:0@1s"]),
                                           ("slow_ranks", ["prefill:0:0:2.0"])])
def test_colocated_refuses_disaggregated_options(wl, option, value) -> None:
    with pytest.raises(InvalidInputError, match=f"{option} = .*None in colocated mode"):
        simulate(wl, mode="colocated", **{option: value})


@pytest.mark.parametrize("option, value", [("token_budget", 256), ("ttft_slo_ms", 1000.0), ("tpot_slo_ms", 50.0)])
def test_disaggregated_refuses_colocated_options(wl, option, value) -> None:
    with pytest.raises(InvalidInputError, match=f"{option} = .*None in disaggregated mode"):
        simulate(wl, **{option: value})


def test_routers_are_checked_against_the_mode(wl) -> None:
    with pytest.raises(InvalidInputError, match="router = 'fair_load'.*in disaggregated mode"):
        simulate(wl, router="fair_load")
    with pytest.raises(InvalidInputError, match="router = 'least_requests'.*in colocated mode"):
        simulate(wl, mode="colocated", router="least_requests")
    with pytest.raises(InvalidInputError, match="mode = 'hybrid'"):
        simulate(wl, mode="hybrid")


def test_router_registry_is_the_one_source_of_router_names() -> None:
    assert set(routers_for("disaggregated")) | set(routers_for("colocated")) == set(ROUTER_MODES)
    assert "sbs" not in IMMEDIATE_ROUTERS and "fair_load" not in IMMEDIATE_ROUTERS
    assert check_router("round_robin", "colocated") == "round_robin"
    with pytest.raises(InvalidInputError, match="router = 'magic'"):
        check_router("magic", "disaggregated")


def test_both_modes_return_one_result_type(wl) -> None:
    cluster = ClusterConfig(prefill_instances=1, decode_instances=1, max_prompt_tokens=2000)
    results = {"disaggregated": simulate(wl, cluster=cluster, router="round_robin"),
               "colocated": simulate(wl, cluster=colocated_cluster(2, 16, max_prompt_tokens=2000), mode="colocated")}
    for mode, res in results.items():
        assert isinstance(res, SimResult) and res.config["mode"] == mode
        assert tuple(res.requests.columns) == REQUEST_COLUMNS
        assert set(res.requests["status"]) <= set(STATUSES)
        assert set(res.requests["reject_reason"]) <= {"", *REJECT_REASONS.values()}
        # the same prompts over the same limit are rejected for the same reason
        long = res.requests["input_tokens"].to_numpy() > 2000
        assert long.any() and (res.requests.loc[long, "reject_reason"] == "prompt_too_long").all()
    keys = [set(res.summary(ttft_slo_ms=2000, tpot_slo_ms=100)) for res in results.values()]
    assert keys[0] == keys[1]
    assert len(results["colocated"].iterations) > 0 and len(results["disaggregated"].iterations) == 0


def test_colocated_engines_schedule_for_the_slo_given(wl) -> None:
    """The TPOT SLO passed to simulate() is the colocated engines' deadline, not only the judge's."""
    busy = wl.with_rate(400.0)
    cluster = colocated_cluster(1, 16)
    runs = {tpot: simulate(busy, cluster=cluster, mode="colocated", batching="fairbatching", tpot_slo_ms=tpot)
            for tpot in (40.0, 100.0)}
    assert runs[40.0].config["tpot_slo_ms"] == 40.0
    assert not np.array_equal(runs[40.0].requests["ttft_s"], runs[100.0].requests["ttft_s"], equal_nan=True)


def test_cli_refuses_flags_of_the_other_mode(capsys) -> None:
    assert main(["simulate", "--trace", "azure-conv", "--limit", "5", "--mode", "colocated",
                 "--prefill-instances", "2"]) == 2
    assert "--prefill-instances = 2: expected unset in colocated mode" in capsys.readouterr().err
    assert main(["simulate", "--trace", "azure-conv", "--limit", "5", "--ep", "8"]) == 2
    assert "--ep = 8: expected unset in disaggregated mode" in capsys.readouterr().err
    assert main(["simulate", "--trace", "azure-conv", "--limit", "5", "--batching", "fairbatching"]) == 2
    assert "batching = 'fairbatching'" in capsys.readouterr().err
    assert main(["simulate", "--trace", "azure-conv", "--limit", "5", "--router", "fair_load"]) == 2
    assert "in disaggregated mode" in capsys.readouterr().err


def test_cli_colocated_defaults_to_the_colocated_router(capsys) -> None:
    assert main(["simulate", "--trace", "azure-conv", "--limit", "20", "--rate", "20", "--mode", "colocated",
                 "--ep", "16", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["router"] == "round_robin" and summary["batching"] == "sarathi" and summary["completed"] == 20


@pytest.mark.parametrize("module, absent", [("sbsopt.sim.batching", ("sbsopt.sim.engine", "sbsopt.sim.chunking")),
                                            ("sbsopt.sim.engine", ("sbsopt.sim.batching", "sbsopt.sim.colocated")),
                                            ("sbsopt.sim.config", ("pandas", "sbsopt.sim.api"))])
def test_modules_of_one_mode_do_not_load_the_other(module, absent) -> None:
    code = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
