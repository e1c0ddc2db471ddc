"""Per-instance step helpers of the kernels: an instance's step is the largest time of its
units (without the base cost)."""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit

__all__ = ["instance_step", "top_three", "max_without"]


@njit(nogil=True, inline="always")
def instance_step(unit_time, inst, g):  # pragma: no cover - compiled
    """Largest unit time of instance ``g`` (its step time less the base)."""
    step = -np.inf
    for j in range(unit_time.shape[0]):
        if inst[j] == g and unit_time[j] > step:
            step = unit_time[j]
    return step


@njit(nogil=True)
def top_three(unit_time, inst, groups):  # pragma: no cover - compiled
    """Per instance, its three units of largest time (index -1 where it has fewer)."""
    top = np.full((groups, 3), -1, np.int64)
    for j in range(unit_time.shape[0]):
        row = top[inst[j]]
        k = 3
        while k > 0 and (row[k - 1] < 0 or unit_time[j] > unit_time[row[k - 1]]):
            k -= 1
        if k < 3:
            for q in range(2, k, -1):
                row[q] = row[q - 1]
            row[k] = j
    return top


@njit(nogil=True, inline="always")
def max_without(top, unit_time, g, ja, jb):  # pragma: no cover - compiled
    """Largest unit time of instance ``g`` over its units other than ``ja`` and ``jb``
    (``-inf`` when none is left: the instance has at most those two)."""
    for q in range(3):
        j = top[g, q]
        if j < 0:
            break
        if j != ja and j != jb:
            return unit_time[j]
    return -np.inf
