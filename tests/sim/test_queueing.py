"""Queueing sanity of the SBS argument: deterministic batch time T, N instances, Poisson arrivals
at low load. Immediate dispatch waits for the chosen instance's current forward to end (gated
M/D/1: mean T/2); a central buffer released to whichever instance finishes next, with the
instances' forwards staggered by T/N, waits T/(2N) on average. Tolerance: 10% of the theory
(about 8 standard errors with 2,000 requests)."""

import numpy as np
import pytest

from sbsopt.sim import ClusterConfig, SchedulerConfig, simulate
from sbsopt.workload import Workload, synthetic_arrivals

T_S = 0.1


def _run(router, n_instances, fake_model, interval="engine_paced"):
    n = 2000
    rate = 0.2 * n_instances / T_S  # low load: 0.2 requests per instance per forward
    wl = Workload.from_arrays(synthetic_arrivals(n, rate=rate, seed=5), np.full(n, 64), np.full(n, 2))
    cluster = ClusterConfig(prefill_instances=n_instances, decode_instances=1, prefill_ep=1,
                            decode_ep=4, chunk_tokens=4096, idle_stepping=True, stagger_start=True)
    res = simulate(wl, cluster=cluster, scheduler=SchedulerConfig(report_period_s=0.0),
                   router=router, interval=interval,
                   cost_models=fake_model(base_us=T_S * 1e6, dbase_us=1000.0))
    t = res.requests
    wait = (t["sched_wait_s"] + t["engine_wait_s"]).to_numpy()
    assert res.summary()["completed"] == n
    return wait, t


@pytest.mark.parametrize("n_instances", [1, 4])
@pytest.mark.parametrize("router", ["round_robin", "least_tokens"])
def test_immediate_dispatch_waits_half_a_batch(router, n_instances, fake_model):
    wait, t = _run(router, n_instances, fake_model)
    assert wait.mean() == pytest.approx(T_S / 2, rel=0.1)
    assert (t["sched_wait_s"] == 0).all()  # all of it is engine-queue wait


@pytest.mark.parametrize("n_instances", [2, 4])
def test_staggered_release_waits_half_a_stagger(n_instances, fake_model):
    wait, t = _run("sbs", n_instances, fake_model)
    assert wait.mean() == pytest.approx(T_S / (2 * n_instances), rel=0.1)
    assert t["engine_wait_s"].abs().max() < 1e-9  # the wait moved to the scheduler buffer
    # execution is exactly one forward
    np.testing.assert_allclose(t["exec_s"], T_S)
