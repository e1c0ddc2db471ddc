"""Summary statistics shared by the simulator's and the replayer's reports."""

from __future__ import annotations

import numpy as np

__all__ = ["percentiles"]


def percentiles(values: np.ndarray, scale: float = 1000.0) -> dict[str, float | None]:
    """``p50``, ``p90``, ``p99`` and ``mean`` of the finite values, times ``scale`` (None if none).

    Examples
    --------
    >>> round(percentiles(np.array([0.1, 0.2, np.nan]))["mean"], 6)
    150.0
    >>> percentiles(np.array([np.nan]))["p99"] is None
    True
    """
    values = values[np.isfinite(values)]
    if not len(values):
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99]) * scale
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(values.mean() * scale)}
