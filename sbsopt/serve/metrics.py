"""Service metrics, rendered by hand in the Prometheus text exposition format (``/metrics``).

Counters and fixed-bucket histograms only; no client library, no global registry: each
service owns one :class:`Metrics`.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

__all__ = ["Histogram", "Metrics"]

_WAIT_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_OVERHEAD_BUCKETS_S = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


class Histogram:
    """A cumulative-bucket histogram (``le`` upper bounds, ``+Inf`` implied).

    Examples
    --------
    >>> h = Histogram((1, 2))
    >>> h.observe(1); h.observe(5)
    >>> h.render("x")
    ['x_bucket{le="1"} 1', 'x_bucket{le="2"} 1', 'x_bucket{le="+Inf"} 2', 'x_sum 6', 'x_count 2']
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str) -> list[str]:
        lines, cumulative = [], 0
        for bound, count in zip((*self.bounds, "+Inf"), self.counts, strict=True):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        return [*lines, f"{name}_sum {self.sum:g}", f"{name}_count {self.count}"]


class Metrics:
    """The counters and histograms of one ``sbsopt serve`` process.

    Examples
    --------
    >>> m = Metrics()
    >>> m.decision("sbs", "prefill"); m.error("bad_request")
    >>> [line for line in m.render().splitlines() if line.startswith("sbsopt_decisions_total")]
    ['sbsopt_decisions_total{policy="sbs",kind="prefill"} 1']
    """

    def __init__(self) -> None:
        self.windows: dict[str, int] = defaultdict(int)
        self.window_size = Histogram(_SIZE_BUCKETS)
        self.buffer_wait_s = Histogram(_WAIT_BUCKETS_S)
        self.solve_s = Histogram(_WAIT_BUCKETS_S)
        self.route_overhead_s = Histogram(_OVERHEAD_BUCKETS_S)
        self.landing_s = Histogram(_WAIT_BUCKETS_S)
        self.decisions: dict[tuple[str, str], int] = defaultdict(int)
        self.rejections: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.retries = 0
        self.proxied = 0
        self.reports_failed = 0

    def window(self, kind: str, size: int, solve_s: float) -> None:
        self.windows[kind] += 1
        self.window_size.observe(size)
        self.solve_s.observe(solve_s)

    def decision(self, policy: str, kind: str) -> None:
        self.decisions[(policy, kind)] += 1

    def reject(self, reason: str) -> None:
        self.rejections[reason] += 1

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def render(self, *, buffered: int = 0) -> str:
        """The text exposition (version 0.0.4)."""
        out = ["# HELP sbsopt_windows_total Released scheduling windows.", "# TYPE sbsopt_windows_total counter"]
        out += [f'sbsopt_windows_total{{kind="{k}"}} {v}' for k, v in sorted(self.windows.items())]
        out += ["# HELP sbsopt_window_size Requests per released window.", "# TYPE sbsopt_window_size histogram"]
        out += self.window_size.render("sbsopt_window_size")
        out += ["# HELP sbsopt_buffer_wait_seconds Time from arrival to the window that assigned it.",
                "# TYPE sbsopt_buffer_wait_seconds histogram"]
        out += self.buffer_wait_s.render("sbsopt_buffer_wait_seconds")
        out += ["# HELP sbsopt_window_solve_seconds Wall time of one window solve.",
                "# TYPE sbsopt_window_solve_seconds histogram"]
        out += self.solve_s.render("sbsopt_window_solve_seconds")
        out += ["# HELP sbsopt_route_overhead_seconds Sidecar time per assigned route request outside the buffer "
                "(parse and submit, then window cut to answer written).",
                "# TYPE sbsopt_route_overhead_seconds histogram"]
        out += self.route_overhead_s.render("sbsopt_route_overhead_seconds")
        out += ["# HELP sbsopt_window_landing_seconds Time from a window's cut until its last request forwarded "
                "by the front reached its engine (what the paced release's lead is learnt from).",
                "# TYPE sbsopt_window_landing_seconds histogram"]
        out += self.landing_s.render("sbsopt_window_landing_seconds")
        out += ["# HELP sbsopt_decisions_total Requests assigned.", "# TYPE sbsopt_decisions_total counter"]
        out += [f'sbsopt_decisions_total{{policy="{p}",kind="{k}"}} {v}'
                for (p, k), v in sorted(self.decisions.items())]
        out += ["# HELP sbsopt_rejections_total Requests answered with a rejection.",
                "# TYPE sbsopt_rejections_total counter"]
        out += [f'sbsopt_rejections_total{{reason="{r}"}} {v}' for r, v in sorted(self.rejections.items())]
        out += ["# HELP sbsopt_errors_total Errors by kind.", "# TYPE sbsopt_errors_total counter"]
        out += [f'sbsopt_errors_total{{kind="{k}"}} {v}' for k, v in sorted(self.errors.items())]
        out += ["# TYPE sbsopt_upstream_retries_total counter", f"sbsopt_upstream_retries_total {self.retries}",
                "# TYPE sbsopt_proxied_total counter", f"sbsopt_proxied_total {self.proxied}",
                "# TYPE sbsopt_report_failures_total counter", f"sbsopt_report_failures_total {self.reports_failed}",
                "# TYPE sbsopt_buffered gauge", f"sbsopt_buffered {buffered}"]
        return "\n".join(out) + "\n"
