"""The trace's P:D shape: prefill instances matched to the decode instances' saturation rate."""

from __future__ import annotations

import numpy as np
import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.plan import pd_shape
from sbsopt.sim import ClusterConfig, saturation_capacity
from sbsopt.workload import Workload


def _trace(output_tokens: int, n: int = 200) -> Workload:
    rng = np.random.default_rng(0)
    return Workload.from_arrays(np.arange(n) * 0.01, rng.integers(500, 1500, n), np.full(n, output_tokens))


def test_a_decode_heavier_trace_gets_fewer_prefill_instances_per_decode():
    chat, essays = pd_shape(_trace(200)), pd_shape(_trace(2000))
    assert essays.prefill_instances < chat.prefill_instances
    assert essays.decode_req_s < chat.decode_req_s and essays.prefill_req_s == pytest.approx(chat.prefill_req_s)


def test_the_shape_balances_the_two_saturation_rates():
    wl = _trace(300)
    shape = pd_shape(wl)
    assert shape.prefill_instances == max(1, round(shape.ratio))
    cap = saturation_capacity(wl, ClusterConfig(prefill_instances=shape.prefill_instances, decode_instances=1))
    # rounding to whole instances leaves the two sides within half a prefill instance of each other
    assert abs(cap.prefill_req_s - cap.decode_req_s) <= 0.5 * shape.prefill_req_s * (1 + 1e-9)
    assert shape.decode_load == pytest.approx(cap.prefill_req_s / cap.decode_req_s)


def test_more_decode_instances_get_proportionally_more_prefill_instances():
    one, two = pd_shape(_trace(300)), pd_shape(_trace(300), decode_instances=2)
    assert two.decode_instances == 2 and abs(two.prefill_instances - 2 * one.ratio) <= 0.5 + 1e-9


@pytest.mark.parametrize("acceptance", [0.0, 0.85])
def test_the_decode_rate_is_the_clusters_with_its_mtp_acceptance(acceptance):
    wl = _trace(600)
    cluster = ClusterConfig(mtp_acceptance=acceptance)
    one = saturation_capacity(wl, ClusterConfig(prefill_instances=1, decode_instances=1, mtp_acceptance=acceptance))
    assert pd_shape(wl, cluster).decode_req_s == one.decode_req_s


def test_a_trace_without_decode_work_has_no_shape():
    wl = Workload.from_arrays([0.0, 1.0], [100, 200], [1, 1], name="prefill-only")
    with pytest.raises(InvalidInputError, match="prefill-only.*more than one output token"):
        pd_shape(wl)
