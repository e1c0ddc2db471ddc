from __future__ import annotations

import math

import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.plan import cluster_gpus, plan_cost


def test_cost_scales_with_price_and_gpus():
    a = plan_cost(gpus=176, tokens=1e6, duration_s=10.0, gpu_hour_price=2.0)
    b = plan_cost(gpus=176, tokens=1e6, duration_s=10.0, gpu_hour_price=4.0)
    c = plan_cost(gpus=352, tokens=1e6, duration_s=10.0, gpu_hour_price=2.0)
    assert b.cost_per_million_tokens == pytest.approx(2 * a.cost_per_million_tokens)
    assert c.cost_per_million_tokens == pytest.approx(2 * a.cost_per_million_tokens)
    assert a.tokens_per_gpu_s == pytest.approx(1e6 / 176 / 10)
    assert a.gpu_hours == pytest.approx(176 * 10 / 3600)
    # $/Mtok = price / (tokens per GPU-hour) * 1e6
    assert a.cost_per_million_tokens == pytest.approx(2.0 / (a.tokens_per_gpu_s * 3600) * 1e6)


def test_no_tokens_costs_infinity():
    assert math.isinf(plan_cost(gpus=1, tokens=0, duration_s=1.0).cost_per_million_tokens)


@pytest.mark.parametrize("kwargs, field", [({"gpus": 0}, "gpus"), ({"duration_s": 0.0}, "duration_s"),
                                           ({"gpu_hour_price": -1.0}, "gpu_hour_price"), ({"tokens": -5}, "tokens")])
def test_bad_cost_input(kwargs, field):
    with pytest.raises(InvalidInputError, match=field):
        plan_cost(**{"gpus": 8, "tokens": 10.0, "duration_s": 1.0, **kwargs})


def test_cluster_gpus():
    assert cluster_gpus(prefill_instances=2, decode_instances=3, prefill_ep=32, decode_ep=144) == 64 + 432
    with pytest.raises(InvalidInputError, match="decode_ep"):
        cluster_gpus(prefill_instances=2, decode_instances=3, prefill_ep=32, decode_ep=0)


def test_plan_cost_is_counted_over_the_arrivals_not_the_drain() -> None:
    from sbsopt.plan.planner import _cost_of

    # the same 2e6 tokens served for 20 s of arrivals, drained after 25 s or after 60 s
    short = {"gpus": 176, "tokens_per_s": 2e6 / 45.0, "span_s": 45.0, "arrival_span_s": 20.0}
    long = {"gpus": 176, "tokens_per_s": 2e6 / 80.0, "span_s": 80.0, "arrival_span_s": 20.0}
    a, b = _cost_of(short, 2.0), _cost_of(long, 2.0)
    assert a is not None and b is not None
    assert a.cost_per_million_tokens == pytest.approx(b.cost_per_million_tokens)
    assert a.tokens_per_gpu_s == pytest.approx(2e6 / 20.0 / 176)
