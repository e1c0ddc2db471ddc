"""Cluster and scheduler parameters of one simulation (frozen, validated).

Defaults mirror DeepSeek's public P/D deployment of V3 on H800: a prefill instance is EP32/DP32
over 4 nodes, a decode instance EP144/DP144 over 18 nodes (8 GPUs per node). Every choice the
SBS paper leaves open (interval constants, report period, IQR factor, chunk size, KV policy) is
a field here, with the value we chose.
"""

from __future__ import annotations

from dataclasses import dataclass

from sbsopt._validate import check_int, check_number
from sbsopt.costmodel.step import DEFAULT_MTP_ACCEPTANCE
from sbsopt.errors import InvalidInputError
from sbsopt.kvblocks import KV_BLOCK_TOKENS

__all__ = ["ClusterConfig", "SchedulerConfig", "MODES", "ROUTER_MODES", "ROUTERS", "IMMEDIATE_ROUTERS",
           "DEFAULT_ROUTER", "INTERVALS", "parse_interval", "DEFAULT_INTERVAL", "DEFAULT_SOLVER", "DEFAULT_TTFT_SLO_MS", "DEFAULT_TPOT_SLO_MS", "check_mode",
           "check_router", "routers_for", "DP_PINNINGS"]

MODES = ("disaggregated", "colocated")
# Every cluster router and the modes it runs in (implementations: sbsopt.sim.router).
ROUTER_MODES: dict[str, tuple[str, ...]] = {
    "sbs": ("disaggregated",),
    "round_robin": ("disaggregated", "colocated"),
    "least_requests": ("disaggregated",),
    "least_tokens": ("disaggregated", "colocated"),
    "vllm_score": ("disaggregated",),
    "shortest_queue": ("disaggregated",),
    "fair_load": ("colocated",),
}
ROUTERS = tuple(ROUTER_MODES)
# The immediate-dispatch routers SBS is compared with (disaggregated mode).
IMMEDIATE_ROUTERS = tuple(r for r, modes in ROUTER_MODES.items() if r != "sbs" and "disaggregated" in modes)
DEFAULT_ROUTER = {"disaggregated": "sbs", "colocated": "round_robin"}
INTERVALS = ("engine_paced", "adaptive", "fixed")
# SBS window interval policy and window solver (disaggregated mode)
DEFAULT_INTERVAL = "engine_paced"
DEFAULT_SOLVER = "greedy"
# [ours] SLOs for DeepSeek-V3 on H800 DP+EP engines, whose lock-step decode step alone is
# 40-100 ms: neither the SBS nor the FairBatching paper states SLOs for this deployment.
DEFAULT_TTFT_SLO_MS = 2000.0
DEFAULT_TPOT_SLO_MS = 100.0
# Who picks the DP rank of an immediate router's request (SchedulerConfig.dp_pinning).
DP_PINNINGS = ("router", "engine", "bootstrap_room")


def parse_interval(interval: str) -> tuple[str, float | None]:
    """The interval policy's name and, for ``fixed:MS``, its length in seconds.

    Raises
    ------
    InvalidInputError
        Not one of :data:`INTERVALS` nor ``fixed:MS`` with MS > 0.

    Examples
    --------
    >>> parse_interval("fixed:20"), parse_interval("adaptive")
    (('fixed', 0.02), ('adaptive', None))
    """
    if interval.startswith("fixed:"):
        try:
            fixed_s = float(interval.split(":", 1)[1]) / 1000.0
        except ValueError:
            raise InvalidInputError("interval", interval, "fixed:MS with MS a number of milliseconds") from None
        if not fixed_s > 0:
            raise InvalidInputError("interval", interval, "fixed:MS with MS > 0")
        return "fixed", fixed_s
    if interval not in INTERVALS:
        raise InvalidInputError("interval", interval, f"one of {', '.join(INTERVALS)} or fixed:MS")
    return interval, None


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`.

    Raises
    ------
    InvalidInputError
        Unknown mode.
    """
    if mode not in MODES:
        raise InvalidInputError("mode", mode, f"one of {', '.join(MODES)}")
    return mode


def routers_for(mode: str) -> tuple[str, ...]:
    """Routers that run in ``mode``.

    Examples
    --------
    >>> routers_for("colocated")
    ('round_robin', 'least_tokens', 'fair_load')
    """
    check_mode(mode)
    return tuple(r for r, modes in ROUTER_MODES.items() if mode in modes)


def check_router(router: str, mode: str) -> str:
    """``router`` if it runs in ``mode``.

    Raises
    ------
    InvalidInputError
        Unknown router, or one of the other mode.

    Examples
    --------
    >>> check_router("sbs", "colocated")
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: router = 'sbs': expected one of round_robin, least_tokens, fair_load in colocated mode
    """
    choices = routers_for(mode)
    if router not in choices:
        raise InvalidInputError("router", router, f"one of {', '.join(choices)} in {mode} mode")
    return router


@dataclass(frozen=True)
class ClusterConfig:
    """The cluster: P/D-disaggregated, or colocated engines (``mode="colocated"``).

    A colocated cluster is ``prefill_instances`` engines of ``prefill_ep`` ranks serving both
    phases (see :func:`sbsopt.sim.colocated.colocated_cluster`); it reads ``kv_capacity_tokens``,
    ``max_prompt_tokens``, ``gpus_per_node``, ``model`` and ``hardware`` too, and no other field.

    Parameters
    ----------
    prefill_instances, decode_instances : int
        Number of DP+EP instances of each kind.
    prefill_ep, decode_ep : int
        DP units (= EP size, DP attention) per instance.
    gpus_per_node : int
        For per-node throughput.
    chunk_tokens : int
        Per-unit chunk capacity of one prefill forward (new tokens); longer prompts are
        chunk-prefilled over several forwards on the same unit.
    max_decode_batch : int
        Running decode requests per decode unit.
    kv_block_tokens : int
        Tokens per KV block on decode units.
    kv_capacity_tokens : int or None
        KV tokens per decode unit; ``None`` = the cost model's ``kv_capacity_tokens_per_rank``.
    prefix_cache_blocks : int
        LRU prefix-cache capacity (512-token blocks) per prefill instance; used only for
        traces with block hashes (Mooncake). 0 disables it.
    idle_stepping : bool
        ``True``: an idle prefill instance keeps running dummy forwards (each as long as an
        empty lock-step forward), so work arriving at an idle instance waits for the current
        dummy forward to end (the gated-queue model of the SBS queueing argument). ``False``:
        an idle instance starts a forward the moment work reaches it.
    stagger_start : bool
        Offset the dummy-forward phase of prefill instance k by k/N of a dummy forward.
    max_prompt_tokens : int
        Longer prompts are rejected (reason ``prompt_too_long``).
    model, hardware : str
        Cost-model card names (``hardware``: ``h800``, ``h100``, ``h200`` or a card path).
    mtp_acceptance : float
        Acceptance rate of DeepSeek's multi-token prediction in decode (0 = no MTP): a decode
        step runs 2 query tokens and the MTP module and yields ``1 + mtp_acceptance`` tokens
        per request (default :data:`~sbsopt.costmodel.step.DEFAULT_MTP_ACCEPTANCE`).
    """

    prefill_instances: int = 4
    decode_instances: int = 1
    prefill_ep: int = 32
    decode_ep: int = 144
    gpus_per_node: int = 8
    chunk_tokens: int = 8192
    max_decode_batch: int = 128
    kv_block_tokens: int = KV_BLOCK_TOKENS
    kv_capacity_tokens: int | None = None
    prefix_cache_blocks: int = 200_000
    idle_stepping: bool = False
    stagger_start: bool = True
    max_prompt_tokens: int = 131_072
    model: str = "deepseek-v3"
    hardware: str = "h800"
    mtp_acceptance: float = DEFAULT_MTP_ACCEPTANCE

    def __post_init__(self) -> None:
        check_number("mtp_acceptance", self.mtp_acceptance, maximum=1.0)
        for name in ("prefill_instances", "decode_instances", "prefill_ep", "decode_ep",
                     "gpus_per_node", "chunk_tokens", "max_decode_batch", "kv_block_tokens",
                     "max_prompt_tokens"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("prefix_cache_blocks", self.prefix_cache_blocks)
        if self.kv_capacity_tokens is not None:
            check_int("kv_capacity_tokens", self.kv_capacity_tokens, minimum=1)

    @property
    def prefill_gpus(self) -> int:
        return self.prefill_instances * self.prefill_ep

    @property
    def decode_gpus(self) -> int:
        return self.decode_instances * self.decode_ep


@dataclass(frozen=True)
class SchedulerConfig:
    """Cluster-scheduler parameters (SBS and the immediate routers).

    Parameters
    ----------
    report_period_s : float
        Engines report their state (queued tokens, requests, KV blocks) to the router every
        this many seconds; between reports the router uses the last report plus its own virtual
        updates (multi-tier state). 0 = the router reads the true state at every decision.
    fixed_interval_s : float
        Window length of ``interval="fixed"``.
    adaptive_min_s, adaptive_max_s : float
        Bounds of the throughput-adaptive interval.
    adaptive_ewma : float
        Weight of the newest sample in the EWMA of arriving tokens/s.
    adaptive_target_fill : float
        Fraction of one instance forward's capacity (ep x chunk) a window aims to collect;
        the window is released early once the buffer holds that many tokens.
    ttft_guard_s : float
        A buffered prefill request older than this is guarded: every window places it ahead of
        the requests that are not, and defers it only when the units have no room left for it
        (whole or its first chunk); it is never queued past the room
        (:func:`sbsopt.sim.router.allocate_prefill`).
    window_forwards : float
        An SBS prefill window fills each DP unit up to this many forwards of tokens
        (``chunk_tokens * window_forwards``, less what the unit already holds). 1 = the next
        batch only (no engine queue); more lets long prompts start earlier at the cost of an
        engine queue (measured over seven prefixes of the Mooncake trace, 2 forwards did not
        raise throughput consistently, and on Azure it raised mean TTFT by 9% to 14%; see
        ``docs/decisions/sbs-defaults.md``).
    decode_interval_s : float
        SBS decode windows: arrivals at the decode router are buffered and assigned together
        (IQR-lex) every this many seconds.
    iqr_k : float
        IQR outlier factor of the decode assignment.
    dispatch_latency_s : float
        Router-to-engine hop added to every dispatch (all routers).
    fault_max_retries : int
        Fault injection: a request whose prefill or decode instance died is re-dispatched at
        most this many times; the next loss rejects it (``fault_retry_limit``).
    lookahead_release : bool
        SBS, ``interval="engine_paced"``: a window released to the instance about to start may
        hold back what another instance, freeing soon, serves sooner
        (:func:`sbsopt.sim.lookahead.lean_release`). The window objective
        (sum of step times plus deferral prices with ``defer_factor`` 1) fills the freeing
        instance up to the units' room: once one unit holds two prompts, more stacked prompts
        cost nothing until the step rises again, so a window that gathered the arrivals of a
        busy spell stacks them on one instance while the next instance frees milliseconds
        later with nothing left. Every request of a stacked forward waits for the whole
        stack; the instances' phases bunch and the stagger is lost (on the arXiv mix at load
        0.5: 59 prompts on one instance in a 0.59 s forward, the next instance 9 ms later ran
        one prompt; SBS's p99 TTFT was 23% above round robin's). With this set, the window
        also solves a lean forward (every unit's room cut to the longest request placed) and
        runs it, leaving the rest buffered for the instance that frees next, when that gives
        the smaller sum of predicted first-token times and lean forwards on every live
        instance keep up with the recent token arrival rate (at saturation stacked forwards
        amortise the step's base and are kept). ``False``: the window's answer as solved.
        Immediate routers ignore this field.
    router_replicas : int
        Immediate routers run as this many replicas behind a load balancer that sends each
        request to a uniformly random replica (seeded), which routes both its prefill and its
        decode, as Kubernetes' kube-proxy in iptables mode picks a Service backend at random
        (kubernetes.io, "Virtual IPs and Service Proxies"). Every replica
        receives every engine report but keeps only its own virtual updates, so between reports
        it does not see what the others dispatched. Production deployments run several:
        the vLLM production-stack Helm chart sets the router Deployment's ``replicas`` from
        ``routerSpec.replicaCount`` and can autoscale it (``routerSpec.autoscaling``,
        ``helm/values.yaml``, ``helm/templates/deployment-router.yaml``, ``hpa-router.yaml``),
        each replica scraping engine stats on its own (``--engine-stats-interval``). SBS is one
        central scheduler process (the paper's design) and ignores this field, as does colocated
        mode (its router reads the engines at every decision).
    dp_pinning : str
        Who picks the DP rank (attention-DP unit) of an immediate router's request:

        - ``"router"``: the router picks the unit from per-unit state, as SGLang's router does
          with ``dp_aware`` set (``sgl-router``) and NVIDIA Dynamo's DP-rank routing does
          (docs.nvidia.com/dynamo, "DP Rank Routing");
        - ``"engine"``: the router sees whole instances (per-instance sums of the report) and
          picks one; the instance's DP controller sends the request to its ranks in turn. This
          is SGLang's ``--load-balance-method round_robin``, the default of a non-PD server and
          of a PD decode server (``python/sglang/srt/server_args.py``,
          ``_handle_load_balance_method``; ``round_robin_scheduler`` in
          ``python/sglang/srt/managers/data_parallel_controller.py``);
        - ``"bootstrap_room"``: SGLang's PD defaults: the prefill instance sends the request to
          rank ``bootstrap_room % dp_size`` (``follow_bootstrap_room``, the default of a PD
          prefill server), the room a uniform random 63-bit number drawn by the router per
          request (``generate_room_id`` in ``sgl-router/src/routers/http/pd_types.rs``), here
          from the simulation's seed; decode instances round-robin as under ``"engine"``.

        SBS windows pin ranks themselves and ignore this field, as does colocated mode.
    """

    report_period_s: float = 0.05
    fixed_interval_s: float = 0.02
    adaptive_min_s: float = 0.002
    adaptive_max_s: float = 0.1
    adaptive_ewma: float = 0.2
    adaptive_target_fill: float = 0.8
    ttft_guard_s: float = 1.0
    window_forwards: float = 1.0
    decode_interval_s: float = 0.005
    iqr_k: float = 1.5
    dispatch_latency_s: float = 0.0
    fault_max_retries: int = 3
    lookahead_release: bool = True
    router_replicas: int = 1
    dp_pinning: str = "router"

    def __post_init__(self) -> None:
        check_int("fault_max_retries", self.fault_max_retries)
        check_int("router_replicas", self.router_replicas, minimum=1)
        if self.dp_pinning not in DP_PINNINGS:
            raise InvalidInputError("dp_pinning", self.dp_pinning, f"one of {', '.join(DP_PINNINGS)}")
        for name in ("report_period_s", "ttft_guard_s", "dispatch_latency_s", "iqr_k"):
            check_number(name, getattr(self, name))
        for name in ("fixed_interval_s", "adaptive_min_s", "adaptive_max_s", "decode_interval_s"):
            check_number(name, getattr(self, name), strict_min=True)
        check_number("window_forwards", self.window_forwards, strict_min=True)
        check_number("adaptive_ewma", self.adaptive_ewma, strict_min=True, maximum=1.0)
        check_number("adaptive_target_fill", self.adaptive_target_fill, strict_min=True, maximum=1.0)
        if self.adaptive_min_s > self.adaptive_max_s:
            raise InvalidInputError("adaptive_min_s", self.adaptive_min_s, f"<= adaptive_max_s ({self.adaptive_max_s})")
