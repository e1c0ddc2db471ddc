"""How long a released window takes to land on the engines, learnt from the windows sent so far.

A window's requests leave the sidecar together but reach an engine one HTTP call at a time:
each is written, read, parsed and queued in turn, so the last one lands later the more the
window holds. On an engine with non-preemptive forwards, a request that lands after the engine
formed its next forward waits a whole forward, so a window must be released at least its
landing time before the running forward ends (:meth:`ClusterState.ready_workers
<sbsopt.serve.state.ClusterState.ready_workers>`). Releasing earlier costs less: only the
requests that arrive during the lead miss the window.

:class:`LandingTime` predicts the landing time of a window of ``n`` requests as
``base + per_request * n`` over the last ``history`` windows (real seconds from the window's
cut until its last request reached an engine). Until ``min_windows`` windows have landed it
answers with the prior (``pace_lead_s + pace_lead_per_request_s * n`` of
:class:`~sbsopt.serve.config.ServeConfig`).

Notes
-----
On a busy host landing times have a heavy tail (measured through the stack with a second
CPU-bound process on two cores: median 6-16 ms, p99 160-570 ms, max 0.94 s, against forwards
of 200-650 ms), so the fit is made of order statistics, which one slow window barely moves:

- ``per_request`` is the Theil-Sen slope, the median of the slopes between every pair of
  windows of different sizes (a least-squares slope is dragged by one slow large window, and
  the lead of every window with it, for the ``history`` windows that sample stays);
- ``base`` is the ``quantile`` of ``seconds - per_request * n``, so that that share of windows
  lands in time (a quantile regression with the slope held).

A lead costs the requests that arrive during it one forward each; a late landing costs at most
the window's requests, which arrived over about one forward, one forward each. A lead of a
fraction ``f`` of the forward thus costs for certain what a late landing costs with probability
``f``, which a tail rarely makes up for: the lead is capped at ``max_forward_fraction`` (0.25)
of the running forward's length when it is known (:meth:`LandingTime.lead_s`; the sidecar reads
it from the engine's reports, :class:`~sbsopt.serve.state.ClusterState`). The 0.25, like the
0.9 quantile and the 64 windows of history, is our choice, checked on the stack test of
``tests/serve/test_e2e.py``, not a derived optimum.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from sbsopt._validate import check_int, check_number

__all__ = ["LandingTime", "MAX_FORWARD_FRACTION"]

#: the longest lead, as a fraction of the running forward (see the module's notes)
MAX_FORWARD_FRACTION = 0.25


class LandingTime:
    """Landing time of a window of ``n`` requests, fitted online.

    Parameters
    ----------
    base_s, per_request_s : float
        The prior: ``base_s + per_request_s * n`` seconds, used until ``min_windows`` windows
        have been observed.
    history : int
        Windows kept for the fit (0: never learn; the prior always holds).
    min_windows : int
        Observed windows needed before the fit replaces the prior.
    quantile : float
        Share of the observed windows the fit covers, in [0, 1].
    max_forward_fraction : float
        The lead is at most this fraction of the running forward (:meth:`lead_s`).

    Notes
    -----
    A refit sorts the ``history * (history - 1) / 2`` pairwise slopes: about 0.1 ms for 64
    windows, once per landed window.

    Examples
    --------
    >>> lt = LandingTime(0.005, 0.0005, history=16, min_windows=4, quantile=0.5)
    >>> round(lt.lead_s(20), 4)  # the prior
    0.015
    >>> for n in (1, 10, 20, 40, 20):
    ...     lt.observe(n, 0.001 + 0.001 * n)  # 1 ms a request on a busy host
    >>> lt.observe(40, 0.9)  # one window stalled by the host
    >>> round(lt.lead_s(20), 4), round(lt.lead_s(60), 4)  # the median window's: unmoved
    (0.021, 0.061)
    >>> round(lt.lead_s(60, forward_s=0.2), 4)  # at most a quarter of a 200 ms forward
    0.05
    """

    def __init__(self, base_s: float, per_request_s: float, *, history: int = 64, min_windows: int = 8,
                 quantile: float = 0.9, max_forward_fraction: float = MAX_FORWARD_FRACTION) -> None:
        self.base_s = check_number("pace_lead_s", base_s)
        self.per_request_s = check_number("pace_lead_per_request_s", per_request_s)
        self.history = check_int("pace_history", history)
        self.min_windows = check_int("pace_min_windows", min_windows, minimum=1)
        self.quantile = check_number("pace_quantile", quantile, maximum=1.0)
        self.max_forward_fraction = check_number("max_forward_fraction", max_forward_fraction, maximum=1.0)
        self._samples: deque[tuple[int, float]] = deque(maxlen=max(self.history, 1))
        self._fit: tuple[float, float] | None = None
        self.observed = 0

    def observe(self, n: int, seconds: float) -> None:
        """A window of ``n`` requests landed ``seconds`` after its cut."""
        if self.history == 0 or n < 1 or not np.isfinite(seconds) or seconds < 0:
            return
        self._samples.append((int(n), float(seconds)))
        self.observed += 1
        self._fit = None  # refitted on the next question

    def lead_s(self, n: int, *, forward_s: float = math.inf) -> float:
        """Seconds a window of ``n`` requests needs to land on an engine, at most
        ``max_forward_fraction`` of ``forward_s`` (the running forward's length; ``inf``:
        unknown, no cap)."""
        if self.history == 0 or len(self._samples) < self.min_windows:
            lead = self.base_s + self.per_request_s * n
        else:
            if self._fit is None:
                self._fit = self._refit()
            base, per_request = self._fit
            lead = base + per_request * n
        return min(lead, self.max_forward_fraction * forward_s)

    def _refit(self) -> tuple[float, float]:
        data = np.array(self._samples, dtype=np.float64)
        n, seconds = data[:, 0], data[:, 1]
        i, j = np.triu_indices(len(n), k=1)
        apart = n[j] != n[i]
        if apart.any():  # Theil-Sen over the pairs of windows of different sizes
            slopes = (seconds[j] - seconds[i])[apart] / (n[j] - n[i])[apart]
            per_request = max(float(np.median(slopes)), 0.0)
        else:  # one window size only: its landing time is all there is to fit
            per_request = 0.0
        return max(float(np.quantile(seconds - per_request * n, self.quantile)), 0.0), per_request
