"""Synthetic arrival processes for length-only traces (and for re-timing any trace).

Every process returns sorted arrival times in seconds, starting near 0, for a target mean rate.
"""

from __future__ import annotations

import numpy as np

from sbsopt._seed import SeedLike, as_generator
from sbsopt._validate import check_int, check_number
from sbsopt.errors import InvalidInputError

__all__ = ["ARRIVAL_PROCESSES", "synthetic_arrivals"]

ARRIVAL_PROCESSES = ("poisson", "gamma", "onoff")


def synthetic_arrivals(
    n: int,
    *,
    rate: float,
    process: str = "poisson",
    cv: float = 2.0,
    on_s: float = 10.0,
    off_s: float = 10.0,
    seed: SeedLike = 0,
) -> np.ndarray:
    """Arrival times (s) of ``n`` requests at mean ``rate`` requests/s.

    Parameters
    ----------
    n : int
        Number of arrivals.
    rate : float
        Mean arrival rate in requests/s (over the whole span, including off periods).
    process : {"poisson", "gamma", "onoff"}
        ``poisson``: exponential gaps. ``gamma``: Gamma gaps with coefficient of variation
        ``cv`` (shape ``1/cv**2``). ``onoff``: Poisson bursts during ``on_s`` seconds
        separated by silent ``off_s`` seconds, the on-rate raised so the mean stays ``rate``.
    cv : float, default 2.0
        Coefficient of variation of the ``gamma`` gaps.
    on_s, off_s : float, default 10.0
        Lengths of the ``onoff`` periods.
    seed : int, Generator or None
        Seed of the gaps.

    Returns
    -------
    numpy.ndarray
        ``n`` non-decreasing arrival times (float64), the first at 0 s for ``poisson`` and
        ``gamma``.

    Raises
    ------
    InvalidInputError
        If ``process`` is unknown or a number is out of range.

    Examples
    --------
    >>> t = synthetic_arrivals(4, rate=2.0, seed=1)
    >>> bool((t[1:] >= t[:-1]).all()), len(t)
    (True, 4)
    """
    n = check_int("n", n)
    rate = check_number("rate", rate, strict_min=True)
    rng = as_generator(seed)
    if process == "poisson":
        gaps = rng.exponential(1.0 / rate, size=n)
    elif process == "gamma":
        cv = check_number("cv", cv, strict_min=True)
        shape = 1.0 / cv**2
        gaps = rng.gamma(shape, 1.0 / (rate * shape), size=n)
    elif process == "onoff":
        on_s = check_number("on_s", on_s, strict_min=True)
        off_s = check_number("off_s", off_s)
        on_rate = rate * (on_s + off_s) / on_s
        busy = np.cumsum(rng.exponential(1.0 / on_rate, size=n))
        # Busy time maps onto wall time by inserting one off period after every on period.
        return busy + np.floor(busy / on_s) * off_s
    else:
        raise InvalidInputError("arrival", process, f"one of {', '.join(ARRIVAL_PROCESSES)}")
    times = np.cumsum(gaps)
    return times - (times[0] if n else 0.0)
