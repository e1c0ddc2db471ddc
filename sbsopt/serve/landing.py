"""How long a released window takes to land on the engines, learnt from the windows sent so far.

A window's requests leave the sidecar together but reach an engine one HTTP call at a time:
each is written, read, parsed and queued in turn, so the last one lands later the more the
window holds. On an engine with non-preemptive forwards, a request that lands after the engine
formed its next forward waits a whole forward, so a window must be released at least its
landing time before the running forward ends (:meth:`ClusterState.ready_workers
<sbsopt.serve.state.ClusterState.ready_workers>`). Releasing earlier costs less: only the
requests that arrive during the lead miss the window.

:class:`LandingTime` predicts the landing time of a window of ``n`` requests as
``base + per_request * n`` fitted by least squares to the last ``history`` windows (real
seconds from the window's cut until its last request reached an engine), plus the
``quantile`` of the fit's residuals, so that most windows land in time. Until
``min_windows`` windows have landed it answers with the prior (``pace_lead_s +
pace_lead_per_request_s * n`` of :class:`~sbsopt.serve.config.ServeConfig`).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from sbsopt._validate import check_int, check_number

__all__ = ["LandingTime"]


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
        Quantile of the fit's residuals added to the fit, in [0, 1].

    Examples
    --------
    >>> lt = LandingTime(0.005, 0.0005, history=16, min_windows=4, quantile=1.0)
    >>> round(lt.lead_s(20), 4)  # the prior
    0.015
    >>> for n in (1, 10, 20, 40):
    ...     lt.observe(n, 0.001 + 0.001 * n)  # 1 ms a request on a busy host
    >>> round(lt.lead_s(20), 4), round(lt.lead_s(60), 4)
    (0.021, 0.061)
    """

    def __init__(self, base_s: float, per_request_s: float, *, history: int = 64, min_windows: int = 8,
                 quantile: float = 0.9) -> None:
        self.base_s = check_number("pace_lead_s", base_s)
        self.per_request_s = check_number("pace_lead_per_request_s", per_request_s)
        self.history = check_int("pace_history", history)
        self.min_windows = check_int("pace_min_windows", min_windows, minimum=1)
        self.quantile = check_number("pace_quantile", quantile, maximum=1.0)
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

    def lead_s(self, n: int) -> float:
        """Seconds a window of ``n`` requests needs to land on an engine."""
        if self.history == 0 or len(self._samples) < self.min_windows:
            return self.base_s + self.per_request_s * n
        if self._fit is None:
            self._fit = self._refit()
        base, per_request = self._fit
        return base + per_request * n

    def _refit(self) -> tuple[float, float]:
        data = np.array(self._samples, dtype=np.float64)
        n, seconds = data[:, 0], data[:, 1]
        if np.ptp(n) > 0:
            per_request, base = np.polyfit(n, seconds, 1)
            per_request = max(float(per_request), 0.0)
        else:  # one window size only: its landing time is all there is to fit
            per_request = 0.0
        base = float(np.mean(seconds - per_request * n))
        residual = seconds - (base + per_request * n)
        return max(base + float(np.quantile(residual, self.quantile)), 0.0), per_request
