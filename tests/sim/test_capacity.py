"""Honest load: ``load`` is a fraction of the saturation throughput measured on the trace's mix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbsopt.cli import main
from sbsopt.sim import ClusterConfig, offered_load, saturation_capacity, scale_to_load, simulate
from sbsopt.sim import capacity as capacity_module
from sbsopt.workload import BUNDLED_TRACES, Workload, load_trace

from .conftest import FakeModel


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SBSOPT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(capacity_module, "_MEMO", {})
    return tmp_path / "capacity"


def _workload(inp, out=None):
    inp = np.asarray(inp)
    out = np.full(len(inp), 2) if out is None else np.asarray(out)
    return Workload.from_arrays(np.arange(len(inp), dtype=float), inp, out)


def test_long_prompts_saturate_at_a_lower_rate_than_their_mean_suggests(cache_dir):
    # same mean prompt (2048), one mix uniform, one mostly short with a long tail: the
    # quadratic attention and the lock-step max make the second one slower per token
    cluster = ClusterConfig(prefill_instances=1)
    flat = saturation_capacity(_workload([2048] * 400), cluster)
    skew = saturation_capacity(_workload([512] * 360 + [15872] * 40), cluster)
    assert skew.tok_s < flat.tok_s and skew.req_s < flat.req_s
    assert flat.method == "saturated-queue" and flat.req_s == min(flat.prefill_req_s, flat.decode_req_s)


def test_capacity_is_cached_on_disk_under_the_user_cache_folder(cache_dir):
    wl = load_trace("azure-code", limit=100)
    first = saturation_capacity(wl, ClusterConfig())
    assert (cache_dir / f"{first.key}.json").is_file()
    capacity_module._MEMO.clear()
    assert saturation_capacity(wl, ClusterConfig()) == first  # read back from disk
    assert json.loads((cache_dir / f"{first.key}.json").read_text())["req_s"] == first.req_s


def test_cache_key_follows_lengths_cluster_and_coefficients(cache_dir):
    wl = _workload([1000] * 50)
    models = (FakeModel(per_token_us=10.0), FakeModel(per_token_us=10.0))
    base = saturation_capacity(wl, ClusterConfig(), prefill_model=models[0], decode_model=models[1])
    other_lengths = saturation_capacity(_workload([1000] * 49 + [1001]), ClusterConfig(),
                                        prefill_model=models[0], decode_model=models[1])
    other_cluster = saturation_capacity(wl, ClusterConfig(prefill_instances=2), prefill_model=models[0],
                                        decode_model=models[1])
    refit = saturation_capacity(wl, ClusterConfig(), prefill_model=FakeModel(per_token_us=20.0),
                                decode_model=models[1])
    assert len({base.key, other_lengths.key, other_cluster.key, refit.key}) == 4
    assert other_cluster.prefill_req_s == pytest.approx(base.prefill_req_s / 2)  # 2 of the 4 instances
    assert refit.prefill_req_s < base.prefill_req_s


def test_load_scales_to_the_measured_saturation_rate(cache_dir):
    wl = load_trace("mooncake-conv", limit=300)
    c = ClusterConfig()
    scaled = scale_to_load(wl, c, 0.5)
    assert scaled.rate_req_s == pytest.approx(0.5 * saturation_capacity(wl, c).req_s)
    assert offered_load(scaled, c) == pytest.approx(0.5)


def test_simulate_json_reports_the_capacity_it_used(capsys):
    assert main(["simulate", "--trace", "azure-conv", "--limit", "200", "--load", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["capacity_method"] == "saturated-queue" and out["capacity_req_s"] > 0
    assert out["offered_load"] == pytest.approx(0.5)


# long enough prefixes that one request's own prefill (up to ~80 s for Mooncake's 126k-token
# prompts on one DP rank) is small beside the arrival span at load 0.5
_PREFIX = {"azure-conv": 10000, "azure-code": 6000, "mooncake-conv": None, "sharegpt": 8000, "arxiv": 8000}


@pytest.mark.parametrize("trace", list(BUNDLED_TRACES))
def test_load_half_drains_promptly_on_every_bundled_trace(trace):
    res = simulate(load_trace(trace, limit=_PREFIX[trace]), cluster=ClusterConfig(), load=0.5)
    t = res.requests
    arrival = t["arrival_s"].to_numpy()
    drain = np.nanmax(arrival + t["ttft_s"].to_numpy()) - arrival[-1]
    assert drain < 0.1 * (arrival[-1] - arrival[0])
