import json

import numpy as np
import pytest

from sbsopt.errors import InvalidInputError, TraceFormatError
from sbsopt.workload import BUNDLED_TRACES, PrefixCache, Workload, load_trace, synthetic_arrivals


@pytest.mark.parametrize("name", sorted(BUNDLED_TRACES))
def test_bundled_traces_load_sorted_and_positive(name):
    wl = load_trace(name, limit=500)
    assert len(wl) == 500
    assert wl.arrival_s[0] == 0.0 and (np.diff(wl.arrival_s) >= 0).all()
    assert (wl.input_tokens >= 1).all() and (wl.output_tokens >= 1).all()
    assert (wl.block_hashes is not None) == (name == "mooncake-conv")


def test_azure_conv_full_matches_readme_statistics():
    wl = load_trace("azure-conv")
    assert len(wl) == 19366
    assert wl.input_tokens.mean() == pytest.approx(1155, abs=1)
    assert wl.arrival_s[-1] / 60 == pytest.approx(58.4, abs=0.1)


def test_mooncake_jitter_is_seeded_and_within_bucket():
    a = load_trace("mooncake-conv", limit=200, seed=1)
    b = load_trace("mooncake-conv", limit=200, seed=1)
    c = load_trace("mooncake-conv", limit=200, seed=2)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    # the first bucket (timestamp 0) now spreads over [0, 3) s instead of a single instant
    assert 1.0 < np.ptp(a.arrival_s[:10]) < 3.0


def test_rate_and_scaling():
    wl = load_trace("azure-conv", limit=1000)
    assert wl.with_rate(50.0).rate_req_s == pytest.approx(50.0)
    assert wl.scaled(2.0).rate_req_s == pytest.approx(2 * wl.rate_req_s)
    np.testing.assert_array_equal(wl.scaled(2.0).input_tokens, wl.input_tokens)


@pytest.mark.parametrize("process", ["poisson", "gamma", "onoff"])
def test_synthetic_arrivals_mean_rate(process):
    t = synthetic_arrivals(20000, rate=10.0, process=process, cv=3.0, seed=0)
    assert (np.diff(t) >= 0).all()
    assert len(t) / t[-1] == pytest.approx(10.0, rel=0.1)


def test_gamma_cv_is_respected():
    t = synthetic_arrivals(50000, rate=1.0, process="gamma", cv=3.0, seed=0)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.1)


def test_length_only_trace_uses_synthetic_rate():
    wl = load_trace("sharegpt", limit=2000, rate=20.0, seed=3)
    assert wl.rate_req_s == pytest.approx(20.0, rel=0.1)


def test_bad_azure_line_names_file_line_field_value(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:17:03.9799600,10,5\n2023-11-16 18:17:04.0,abc,5\n")
    with pytest.raises(TraceFormatError, match=r"bad.csv:3: ContextTokens = 'abc'") as err:
        load_trace(path)
    assert err.value.line == 3 and err.value.field.endswith("ContextTokens")


def test_bad_mooncake_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = {"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1]}
    bad = dict(good, output_length=-4)
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(TraceFormatError, match=r"bad.jsonl:2: output_length = -4"):
        load_trace(path)


def test_unknown_trace_and_bad_header(tmp_path):
    with pytest.raises(InvalidInputError, match="trace"):
        load_trace("no-such-trace")
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(TraceFormatError, match=r"x.csv:1: header"):
        load_trace(path)


def test_workload_validation():
    with pytest.raises(InvalidInputError, match=r"input_tokens\[1\] = 0"):
        Workload.from_arrays([0, 1], [5, 0], [1, 1])


def test_prefix_cache_lru_and_leading_match():
    cache = PrefixCache(capacity_blocks=3)
    cache.insert(np.array([1, 2, 3]))
    assert cache.lookup(np.array([1, 2, 3]), input_tokens=2000) == 1536
    assert cache.lookup(np.array([2, 3]), input_tokens=2000) == 1024
    assert cache.lookup(np.array([9, 1]), input_tokens=2000) == 0  # leading blocks only
    cache.insert(np.array([4]))  # evicts block 1 (least recently used)
    assert cache.lookup(np.array([1, 2]), input_tokens=2000) == 0
    # a fully cached prompt still recomputes its last token
    assert cache.lookup(np.array([2, 3]), input_tokens=1024) == 1023
