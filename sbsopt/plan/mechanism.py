"""Which mechanism separates two routers at one rate: queue wait, execution or decode balance.

Two runs of the same window at the same rate, one meeting the SLO and one missing it, are
compared on the metrics of :func:`sbsopt.plan.run_one`: the SLO the failing run misses more of
names the side (TTFT: prefill, TPOT: decode); on the prefill side the larger of the two mean TTFT
differences names the mechanism: the wait before the first forward (the SBS buffer plus the
engine queue) or the execution (forwards slowed by bubbles, more forwards for the same tokens at a
lower chunk utilization). A heuristic over means, to read next to the figures it reports.
"""

from __future__ import annotations

import math

__all__ = ["MECHANISM_METRICS", "attribute"]

#: Row metrics the attribution reports for each run.
MECHANISM_METRICS = ("slo_attainment", "slo_attainment_ttft", "slo_attainment_tpot", "ttft_p90_ms",
                     "sched_wait_ms", "engine_wait_ms", "exec_ms", "bubble_fraction", "chunk_utilization",
                     "tpot_p99_ms", "decode_batch_mean", "decode_batch_imbalance")


def _get(row: dict, key: str) -> float:
    value = row.get(key)
    return float("nan") if value is None else float(value)


def attribute(passing: dict, failing: dict) -> dict:
    """The mechanism by which ``passing`` beats ``failing`` (two run rows at one rate).

    Returns
    -------
    dict
        ``side`` (``"ttft"`` or ``"tpot"``: the SLO ``failing`` misses more of), ``mechanism``
        (``"queue wait"``, ``"execution"`` or ``"decode balance"``), ``wait_delta_ms`` and
        ``exec_delta_ms`` (failing minus passing mean TTFT parts; the wait is the SBS buffer
        plus the engine queue), and each run's :data:`MECHANISM_METRICS`.

    Examples
    --------
    >>> a = {"slo_attainment_ttft": 0.95, "slo_attainment_tpot": 1.0, "sched_wait_ms": 200.0,
    ...      "engine_wait_ms": 0.0, "exec_ms": 900.0}
    >>> b = {"slo_attainment_ttft": 0.7, "slo_attainment_tpot": 1.0, "sched_wait_ms": 0.0,
    ...      "engine_wait_ms": 700.0, "exec_ms": 950.0}
    >>> r = attribute(a, b)
    >>> r["side"], r["mechanism"], r["wait_delta_ms"], r["exec_delta_ms"]
    ('ttft', 'queue wait', 500.0, 50.0)
    """
    def wait(row: dict) -> float:
        return _get(row, "sched_wait_ms") + _get(row, "engine_wait_ms")

    ttft_miss = 1.0 - _get(failing, "slo_attainment_ttft")
    tpot_miss = 1.0 - _get(failing, "slo_attainment_tpot")
    side = "tpot" if tpot_miss > ttft_miss else "ttft"  # NaN compares False: TTFT by default
    wait_delta = wait(failing) - wait(passing)
    exec_delta = _get(failing, "exec_ms") - _get(passing, "exec_ms")
    if side == "tpot":
        mechanism = "decode balance"
    elif math.isnan(exec_delta) or wait_delta >= exec_delta:
        mechanism = "queue wait"
    else:
        mechanism = "execution"
    return {"side": side, "mechanism": mechanism, "wait_delta_ms": wait_delta, "exec_delta_ms": exec_delta,
            "passing": {k: passing.get(k) for k in MECHANISM_METRICS},
            "failing": {k: failing.get(k) for k in MECHANISM_METRICS}}
