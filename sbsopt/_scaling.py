"""Integer scaling for CP-SAT, which accepts integer coefficients only.

All solver-facing times are integer **microseconds**, token counts are integers already.
Rounding is up (``ceil``) so that a scaled cost never understates the real one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["US_PER_S", "to_int_us"]

US_PER_S = 1_000_000


def to_int_us(values_us: np.ndarray | float) -> np.ndarray:
    """Round microsecond costs up to integers (int64), for CP-SAT models.

    Examples
    --------
    >>> to_int_us(np.array([0.2, 1.0, 2.5])).tolist()
    [1, 1, 3]
    """
    return np.ceil(np.asarray(values_us, dtype=np.float64) - 1e-9).astype(np.int64)
