"""Attribution of a router's gain at one rate: queue wait, execution or decode balance."""

from __future__ import annotations

import pytest

from sbsopt.plan import MECHANISM_METRICS, attribute

SBS = {"slo_attainment": 0.94, "slo_attainment_ttft": 0.95, "slo_attainment_tpot": 1.0, "sched_wait_ms": 280.0,
       "engine_wait_ms": 0.0, "exec_ms": 950.0, "tpot_p99_ms": 23.0}


@pytest.mark.parametrize("failing, side, mechanism", [
    ({"slo_attainment_ttft": 0.6, "slo_attainment_tpot": 1.0, "sched_wait_ms": 0.0, "engine_wait_ms": 900.0,
      "exec_ms": 990.0}, "ttft", "queue wait"),
    ({"slo_attainment_ttft": 0.6, "slo_attainment_tpot": 1.0, "sched_wait_ms": 0.0, "engine_wait_ms": 300.0,
      "exec_ms": 1500.0}, "ttft", "execution"),
    ({"slo_attainment_ttft": 0.97, "slo_attainment_tpot": 0.7, "sched_wait_ms": 0.0, "engine_wait_ms": 300.0,
      "exec_ms": 990.0}, "tpot", "decode balance"),
])
def test_the_slo_missed_most_names_the_side_and_the_larger_difference_the_mechanism(failing, side, mechanism):
    r = attribute(SBS, failing)
    assert (r["side"], r["mechanism"]) == (side, mechanism)
    assert r["wait_delta_ms"] == pytest.approx(failing["engine_wait_ms"] - SBS["sched_wait_ms"])
    assert set(r["passing"]) == set(r["failing"]) == set(MECHANISM_METRICS)
