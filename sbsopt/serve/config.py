"""Configuration of ``sbsopt serve`` (a frozen dataclass) and its file loader.

Every constant the sidecar uses is a field here, with the value we chose; the SBS-specific
ones mirror :class:`sbsopt.sim.SchedulerConfig` so that the service releases windows by the
simulator's rule.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sbsopt._validate import check_int, check_number
from sbsopt.errors import InvalidInputError
from sbsopt.kvblocks import KV_BLOCK_TOKENS

__all__ = ["ServeConfig", "load_config", "POLICIES", "IMMEDIATE_POLICIES", "check_url"]

#: Immediate-dispatch policies of :func:`sbsopt.sim.router.pick_unit` served for A/B tests.
IMMEDIATE_POLICIES = ("round_robin", "least_requests", "least_tokens", "vllm_score", "shortest_queue")
POLICIES = ("sbs", *IMMEDIATE_POLICIES)


def check_url(field: str, url: str) -> str:
    """``url`` without a trailing slash if it is an ``http(s)://host:port`` URL.

    Raises
    ------
    InvalidInputError
        Not an http(s) URL with a host.

    Examples
    --------
    >>> check_url("--url", "http://127.0.0.1:8000/")
    'http://127.0.0.1:8000'
    >>> check_url("--url", "localhost:8000")
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: --url = 'localhost:8000': expected an http:// or https:// URL with a host
    """
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(field, url, "an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise InvalidInputError(field, url, "a URL with a numeric port") from None
    return url.rstrip("/")


@dataclass(frozen=True)
class ServeConfig:
    """The sidecar and front of ``sbsopt serve``.

    Parameters
    ----------
    workers : tuple of str
        Base URLs of the DP+EP workers (one engine instance each).
    ep : int
        DP ranks per worker; units are flattened ``u = worker * ep + rank``.
    policy : str
        ``"sbs"`` (staggered windows) or an immediate policy of :data:`IMMEDIATE_POLICIES`.
    interval : str
        SBS window release rule: ``"engine_paced"`` (release onto a worker predicted to run out of
        queued prefill within its next iteration, as the simulator's engine-paced rule) or
        ``"fixed:MS"`` (a window every MS milliseconds over every live worker).
    solver : str
        Window solver of :func:`sbsopt.window.solve` (``greedy``, ``cpsat``, ``auto``).
    window_forwards : float
        A window fills each unit up to ``token_budget * window_forwards`` queued prefill tokens
        (the engine reports its per-rank token budget on ``/v1/load``).
    default_token_budget : int
        Per-rank tokens of one iteration when a worker's report does not say (real engines).
    pace_lead_s, pace_lead_per_request_s : float
        A paced worker (its reports carry ``forward_ends_in_ms``: a prefill instance with
        non-preemptive forwards) gets a window its landing time before its running forward is
        predicted to end, so that the window's requests reach the engine (one HTTP call each)
        before it forms its next forward: a request that lands later waits a whole forward. The
        landing time of ``n`` requests (as many of the buffer as one forward can take) is learnt
        from the windows the front forwards (:class:`~sbsopt.serve.landing.LandingTime`); the
        prior, ``pace_lead_s + pace_lead_per_request_s * n``, holds until ``pace_min_windows``
        windows have landed, and always when the front forwards nothing (callers of
        ``/v1/route`` send the requests themselves).
    pace_history : int
        Windows the landing time is fitted to (0: never learn; the prior always holds).
    pace_min_windows : int
        Landed windows needed before the fitted landing time replaces the prior.
    pace_quantile : float
        Share of the landed windows the landing-time fit covers (the quantile of its
        residuals): a window that lands late costs its late requests a forward each, one
        released early costs only the requests that arrive during the lead, and the lead is
        at most a quarter of the running forward (:mod:`sbsopt.serve.landing`).
    ttft_guard_s : float
        A buffered request older than this is assigned on the next window even if the solver
        would defer it (to the least-loaded unit), as in the simulator.
    report_period_s : float
        How often each worker's ``/v1/load`` is pulled (0: never pull; rely on ``/v1/report``).
    settle_s : float
        A virtual update (an assignment not yet seen by the engine) is dropped when a report
        requested at least this long after the assignment arrives: by then the request has
        reached the engine, and counting it twice would starve the worker.
    decode_interval_s : float
        Decode windows (``/v1/route/decode``) are released this often.
    iqr_k : float
        IQR outlier factor of the decode assignment.
    max_decode_batch : int
        Running decode requests per unit (decode windows).
    kv_block_tokens : int
        Tokens per KV block (decode windows, when the request gives no ``kv_blocks``).
    max_prompt_tokens : int
        Longer prompts are rejected (reason ``prompt_too_long``).
    max_buffered : int
        Buffered requests beyond this are rejected (reason ``buffer_full``).
    max_body_bytes : int
        Larger request bodies get HTTP 413.
    connect_timeout_s, first_byte_timeout_s, stall_timeout_s : float
        Upstream timeouts of the front: connecting, waiting for the response headers, and the
        longest silence between two streamed chunks.
    max_retries : int
        Attempts on another worker after a failed connect/timeout/5xx before any byte was sent.
    down_s : float
        A worker that failed is skipped by the front for this long (or until a report succeeds).
    model, hardware : str
        Cost-model cards whose step-cost coefficients price the window problems.
    pin_rank : bool
        The front pins the DP rank it chose. ``False`` (immediate policies only) forwards
        without a rank, so the engine picks one (its least-loaded rank): the simulator's
        colocated routers, which see whole engines, behave this way.
    """

    workers: tuple[str, ...]
    ep: int = 16
    policy: str = "sbs"
    interval: str = "engine_paced"
    solver: str = "greedy"
    window_forwards: float = 4.0
    default_token_budget: int = 512
    pace_lead_s: float = 0.005
    pace_lead_per_request_s: float = 0.0005
    pace_history: int = 64
    pace_min_windows: int = 8
    pace_quantile: float = 0.9
    ttft_guard_s: float = 1.0
    report_period_s: float = 0.02
    settle_s: float = 0.05
    decode_interval_s: float = 0.005
    iqr_k: float = 1.5
    max_decode_batch: int = 128
    kv_block_tokens: int = KV_BLOCK_TOKENS
    max_prompt_tokens: int = 131_072
    max_buffered: int = 100_000
    max_body_bytes: int = 4 * 2**20
    connect_timeout_s: float = 2.0
    first_byte_timeout_s: float = 30.0
    stall_timeout_s: float = 30.0
    max_retries: int = 2
    down_s: float = 2.0
    model: str = "deepseek-v3"
    hardware: str = "h800"
    pin_rank: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.workers, str) or not self.workers:
            raise InvalidInputError("workers", self.workers, "a non-empty list of worker URLs")
        object.__setattr__(self, "workers", tuple(check_url(f"workers[{i}]", w) for i, w in enumerate(self.workers)))
        if len(set(self.workers)) != len(self.workers):
            raise InvalidInputError("workers", list(self.workers), "distinct worker URLs")
        for name in ("ep", "default_token_budget", "max_decode_batch", "kv_block_tokens", "max_prompt_tokens",
                     "max_buffered", "max_body_bytes", "pace_min_windows"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("max_retries", self.max_retries)
        check_int("pace_history", self.pace_history)
        check_number("pace_quantile", self.pace_quantile, maximum=1.0)
        if self.policy not in POLICIES:
            raise InvalidInputError("policy", self.policy, f"one of {', '.join(POLICIES)}")
        if self.solver not in ("greedy", "cpsat", "auto"):
            raise InvalidInputError("solver", self.solver, "one of greedy, cpsat, auto")
        self.fixed_interval_s  # noqa: B018 - validates interval
        if not self.pin_rank and self.policy == "sbs":
            raise InvalidInputError("pin_rank", False, "True with policy sbs (a window assigns ranks)")
        for name in ("window_forwards", "decode_interval_s", "connect_timeout_s", "first_byte_timeout_s",
                     "stall_timeout_s"):
            check_number(name, getattr(self, name), strict_min=True)
        for name in ("ttft_guard_s", "report_period_s", "settle_s", "iqr_k", "down_s", "pace_lead_s",
                     "pace_lead_per_request_s"):
            check_number(name, getattr(self, name))

    @property
    def units(self) -> int:
        """DP units in total (``len(workers) * ep``)."""
        return len(self.workers) * self.ep

    @property
    def fixed_interval_s(self) -> float | None:
        """The window interval of ``"fixed:MS"`` in seconds; ``None`` when engine-paced.

        Raises
        ------
        InvalidInputError
            An interval that is neither ``engine_paced`` nor ``fixed:MS`` with MS > 0.
        """
        if self.interval == "engine_paced":
            return None
        head, _, ms = self.interval.partition(":")
        try:
            value = float(ms)
        except ValueError:
            value = float("nan")
        if head != "fixed" or not value > 0 or value == float("inf"):
            raise InvalidInputError("interval", self.interval, "engine_paced or fixed:MS with MS > 0 milliseconds")
        return value / 1000.0


def load_config(path: str | Path, **overrides: Any) -> ServeConfig:
    """Read a :class:`ServeConfig` from a JSON or TOML file; ``overrides`` (not ``None``) win.

    The file holds the field names of :class:`ServeConfig` at the top level (TOML: or under a
    ``[serve]`` table).

    Raises
    ------
    InvalidInputError
        Unreadable file, unknown field, or an invalid value (named).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "serve.json"
    >>> _ = p.write_text('{"workers": ["http://127.0.0.1:9001"], "ep": 4}')
    >>> load_config(p, policy="round_robin").policy, load_config(p).ep
    ('round_robin', 4)
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise InvalidInputError("--config", str(path), f"a readable JSON or TOML file ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("serve"), dict):
        data = data["serve"]
    if not isinstance(data, dict):
        raise InvalidInputError("--config", str(path), "a JSON object / TOML table of ServeConfig fields")
    known = {f.name for f in fields(ServeConfig)}
    for key in data:
        if key not in known:
            raise InvalidInputError(f"{path}: {key}", data[key], f"one of the fields {', '.join(sorted(known))}")
    merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    if "workers" not in merged:
        raise InvalidInputError("workers", None, "worker URLs (--workers or 'workers' in the config file)")
    if isinstance(merged["workers"], list):
        merged["workers"] = tuple(merged["workers"])
    return ServeConfig(**merged)
