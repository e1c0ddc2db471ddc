"""Cluster-level routers, one implementation each: immediate dispatch and the SBS window allocations.

Which router runs in which mode is :data:`sbsopt.sim.config.ROUTER_MODES`. All routers see the
same two-tier state (:class:`RouterView`): the last engine report (authoritative; in
disaggregated mode stale by up to ``report_period_s``, in colocated mode read at every decision)
plus the router's own virtual updates after each assignment, overwritten when the next report
arrives. Units are flattened ``u = instance * ep + unit``; a colocated cluster routes to whole
engines (a view with ``ep=1``) and each engine pins the request to one of its ranks.

Immediate policies pick one unit per request on arrival (ties to the lowest index):

- ``round_robin``: units in the order instance-major-interleaved (consecutive requests go to
  different instances);
- ``least_requests``: fewest waiting + running requests;
- ``least_tokens``: fewest queued tokens (prefill) / KV blocks (decode);
- ``vllm_score``: smallest ``4 * waiting + running``;
- ``shortest_queue``: the instance with the fewest queued requests, then its least-tokens unit;
- ``fair_load``: the smallest predicted load ``load_us`` (colocated engines report
  :func:`sbsopt.sim.batching.load_estimate_us` plus the request's own prefill time).

In disaggregated mode immediate routers go through a :class:`RouterPool` per pool, which
models production routing (``SchedulerConfig.router_replicas`` and ``dp_pinning``): several
router replicas with views of their own, and DP ranks picked by the engine instead of the
router. The defaults (one replica, router pinning) are exactly :func:`pick_unit` on one view.

SBS allocates a whole window through :func:`sbsopt.window.solve`: PBAA for prefill, IQR-lex
for decode.
"""

from __future__ import annotations

import numpy as np

from sbsopt.errors import InvalidInputError
from sbsopt.sim.config import ROUTERS, SchedulerConfig

__all__ = ["RouterView", "RouterPool", "router_pools", "pick_unit", "allocate_prefill", "allocate_decode"]


class RouterView:
    """The router's picture of one pool of units (prefill, decode or colocated engines).

    Per unit: ``tokens`` queued, ``waiting`` and ``running`` requests (the rows of ``state``,
    so that a report can be written in one copy), and ``load_us``, the predicted load that
    ``fair_load`` compares.
    """

    def __init__(self, instances: int, ep: int) -> None:
        self.instances = instances
        self.ep = ep
        size = instances * ep
        self.state = np.zeros((3, size))
        self.tokens, self.waiting, self.running = self.state
        self.load_us = np.zeros(size)
        self.rr = 0

    def report(self, tokens: np.ndarray, waiting: np.ndarray, running: np.ndarray) -> None:
        """Overwrite the view with an engine report (the authoritative tier)."""
        self.tokens[:] = tokens
        self.waiting[:] = waiting
        self.running[:] = running

    def add(self, unit: int, tokens: float) -> None:
        """Virtual update after an assignment."""
        self.tokens[unit] += tokens
        self.waiting[unit] += 1.0


def pick_unit(view: RouterView, policy: str, tokens: float, *, alive: np.ndarray | None = None) -> int:
    """Choose a unit for one request under an immediate policy and update the view virtually.

    ``alive`` (a boolean per unit, ``None`` = all) excludes the units of dead instances.

    Examples
    --------
    >>> v = RouterView(2, 2)
    >>> [pick_unit(v, "round_robin", 10) for _ in range(4)]
    [0, 2, 1, 3]
    >>> pick_unit(v, "least_tokens", 5)
    0
    """
    if policy == "round_robin":
        size = view.instances * view.ep
        while True:
            i = view.rr % size
            view.rr += 1
            unit = (i % view.instances) * view.ep + i // view.instances
            if alive is None or alive[unit]:
                break
    elif policy == "least_requests":
        unit = _argmin(view.waiting + view.running, alive)
    elif policy == "least_tokens":
        unit = _argmin(view.tokens, alive)
    elif policy == "vllm_score":
        unit = _argmin(4.0 * view.waiting + view.running, alive)
    elif policy == "fair_load":
        unit = _argmin(view.load_us, alive)
    elif policy == "shortest_queue":
        per_instance = (view.waiting + view.running).reshape(view.instances, view.ep).sum(axis=1)
        if alive is not None:
            per_instance = np.where(alive[::view.ep], per_instance, np.inf)
        k = int(np.argmin(per_instance))
        unit = k * view.ep + int(np.argmin(view.tokens[k * view.ep:(k + 1) * view.ep]))
    else:
        raise InvalidInputError("router", policy, f"an immediate router among {', '.join(r for r in ROUTERS if r != 'sbs')}")
    view.add(unit, tokens)
    return unit


class RouterPool:
    """The immediate routing of one pool (prefill or decode units) of a disaggregated cluster.

    Parameters
    ----------
    instances, ep : int
        Instances of the pool and DP units per instance.
    replicas : int
        Router replicas, each with its own :class:`RouterView` (``views``). Every replica
        receives every report; a virtual update stays in the replica that made it.
    pinning : str
        ``"router"``: a replica picks the unit. ``"engine"``: a replica's view holds whole
        instances (per-instance sums of each report) and it picks an instance, whose DP
        controller sends requests to its ranks in turn. ``"bootstrap_room"``: likewise, but the
        instance sends each request to a uniform random rank (SGLang's
        ``bootstrap_room % dp_size``) drawn from ``seed``.
    seed : int
        Seed of the ``bootstrap_room`` draws.
    replica_of : numpy.ndarray, optional
        The replica of each request id (the load balancer's choice); default ``rid % replicas``.

    Examples
    --------
    >>> pool = RouterPool(2, 2, replicas=2, pinning="engine")
    >>> [pool.pick(rid, "round_robin", 10.0) for rid in range(4)]
    [0, 1, 2, 3]
    """

    def __init__(self, instances: int, ep: int, *, replicas: int = 1, pinning: str = "router",
                 seed: int = 0, replica_of: np.ndarray | None = None) -> None:
        self.ep = ep
        self.pinning = pinning
        self.replica_of = replica_of
        self.views = [RouterView(instances, ep if pinning == "router" else 1) for _ in range(int(replicas))]
        self.next_rank = np.zeros(instances, dtype=np.int64)  # each engine's round-robin counter
        self.rooms = np.random.default_rng(seed) if pinning == "bootstrap_room" else None

    def report(self, tokens: np.ndarray, waiting: np.ndarray, running: np.ndarray) -> None:
        """Give every replica the engine report (per unit; summed per instance unless router pinning)."""
        if self.pinning != "router":
            tokens, waiting, running = (x.reshape(-1, self.ep).sum(axis=1) for x in (tokens, waiting, running))
        for view in self.views:
            view.report(tokens, waiting, running)

    def pick(self, rid: int, policy: str, tokens: float, *, alive: np.ndarray | None = None) -> int:
        """The flattened unit of request ``rid`` under ``policy`` (see :func:`pick_unit`)."""
        view = self.views[rid % len(self.views) if self.replica_of is None else self.replica_of[rid]]
        if self.pinning == "router":
            return pick_unit(view, policy, tokens, alive=alive)
        k = pick_unit(view, policy, tokens, alive=None if alive is None else alive[::self.ep])
        if self.rooms is not None:
            rank = int(self.rooms.integers(self.ep))
        else:
            rank = int(self.next_rank[k])
            self.next_rank[k] = (rank + 1) % self.ep
        return k * self.ep + rank


def router_pools(instances: tuple[int, int], ep: tuple[int, int], scheduler: SchedulerConfig, router: str,
                 seed: int, requests: int) -> tuple[RouterPool, RouterPool]:
    """The prefill and decode :class:`RouterPool` of a disaggregated simulation of ``requests``.

    A request's prefill and decode go through the same replica, drawn uniformly from ``seed``
    (Kubernetes' kube-proxy, iptables mode, sends each connection to a random backend of the
    Service). SBS gets one replica with router pinning (its windows pin ranks themselves);
    under ``bootstrap_room`` decode instances round-robin (SGLang's PD decode default).
    """
    if router == "sbs":
        return RouterPool(instances[0], ep[0]), RouterPool(instances[1], ep[1])
    replicas, pinning = int(scheduler.router_replicas), scheduler.dp_pinning
    replica_of = np.random.default_rng([seed, 1]).integers(replicas, size=requests) if replicas > 1 else None
    return (RouterPool(instances[0], ep[0], replicas=replicas, pinning=pinning, seed=seed, replica_of=replica_of),
            RouterPool(instances[1], ep[1], replicas=replicas, replica_of=replica_of,
                       pinning="engine" if pinning == "bootstrap_room" else pinning))


def _argmin(values: np.ndarray, alive: np.ndarray | None) -> int:
    if alive is None:
        return int(np.argmin(values))
    return int(np.argmin(np.where(alive, values, np.inf)))


def allocate_prefill(
    new_tokens: np.ndarray,
    cached_tokens: np.ndarray,
    arrival_s: np.ndarray,
    *,
    capacity_tokens: np.ndarray,
    load_tokens: np.ndarray,
    now_s: float,
    guard_s: float,
    coefficients,
    solver: str,
    seed: int,
    instance: np.ndarray | None = None,
    chunks: dict[int, int] | None = None,
) -> np.ndarray:
    """PBAA window allocation: unit index per request, -1 if deferred.

    ``instance`` (instance of each unit, ``0..G-1``) makes a window over several idle
    instances one multi-instance problem: each instance's lock-step step counts on its own.
    A request that the solver splits is assigned to the unit of its first chunk, and
    ``chunks`` (when given) receives ``{request index: tokens of that chunk}``: the caller
    runs that chunk now and keeps the rest (its KV then stays on that DP rank).

    A request past its TTFT guard (``arrival_s + guard_s <= now_s``) is guarded: it goes
    ahead of every request that is not, and the window may defer it only for want of room
    (tokens or KV blocks), never to lower its objective. It is not queued past the units' room:
    a guarded request that does not fit stays buffered, first in line for the next window (of
    whichever instance frees first). Forcing it onto the least-loaded unit of the window's
    instance would queue it behind forwards already full while the other instances' windows
    serve younger requests: measured on the Azure conversation trace at load 0.9, such
    requests made 86% of the p99 TTFT (``docs/decisions/sbs-defaults.md``).

    With ``solver="greedy"`` the window is built by the trusted constructor and the greedy
    called directly (:mod:`sbsopt.sim.windows`), and a lone request that fits units holding
    nothing goes whole to the first unit without a solve: every unit is alike, the greedy
    breaks ties by the lowest index, and placing a request whole never costs more than
    deferring it.
    """
    load = np.minimum(load_tokens, capacity_tokens).astype(np.int64)
    if solver == "greedy":
        if (len(new_tokens) == 1 and instance is None and not load.any()
                and new_tokens[0] <= capacity_tokens.min()):
            return np.zeros(1, dtype=np.int64)
        from sbsopt.sim.windows import trusted_prefill_window
        from sbsopt.window.greedy import greedy_prefill

        window = trusted_prefill_window(
            new_tokens.astype(np.int64), cached_tokens.astype(np.int64), np.array(arrival_s, dtype=np.float64),
            capacity=capacity_tokens.astype(np.int64), load=load, deadline=arrival_s + guard_s, now_s=now_s,
            coefficients=coefficients, instance=instance)
        answer = greedy_prefill(window)
        assignment = np.array(answer.assignment, dtype=np.int64, copy=True)
        answer_chunks = answer.chunks
    else:
        from sbsopt.window import PrefillWindow, solve

        window = PrefillWindow.from_arrays(
            new_tokens.astype(np.int64), cached_tokens.astype(np.int64), arrival_s,
            capacity_tokens=capacity_tokens.astype(np.int64), load_tokens=load,
            deadline_s=arrival_s + guard_s, now_s=now_s, coefficients=coefficients,
            allow_chunking=True, instance=instance,
        )
        result = solve(window, method=solver, seed=seed)
        assignment = np.array(result.assignment, dtype=np.int64, copy=True)
        answer_chunks = result.chunks
    if chunks is not None:
        chunks.update(answer_chunks)
    return assignment


def allocate_decode(
    context_tokens: np.ndarray,
    kv_blocks: np.ndarray,
    *,
    batch_size: np.ndarray,
    max_batch_size: int,
    kv_blocks_used: np.ndarray,
    kv_capacity_blocks: int,
    kv_block_tokens: int,
    coefficients,
    iqr_k: float,
    solver: str,
    seed: int,
) -> np.ndarray:
    """IQR-lex decode window allocation: unit index per request, -1 if deferred.

    With ``solver="greedy"`` the greedy's kernel runs on the arrays without a window object
    (:func:`sbsopt.sim.windows.greedy_decode_assignment`)."""
    units = len(batch_size)
    used = np.minimum(kv_blocks_used, kv_capacity_blocks).astype(np.int64)
    batch = np.minimum(batch_size, max_batch_size).astype(np.int64)
    if solver == "greedy":
        from sbsopt.sim.windows import greedy_decode_assignment

        return greedy_decode_assignment(
            context_tokens.astype(np.int64), kv_blocks.astype(np.int64), batch=batch, max_batch=max_batch_size,
            used=used, capacity_blocks=kv_capacity_blocks, block_tokens=kv_block_tokens, coefficients=coefficients,
            iqr_k=iqr_k)
    from sbsopt.window import DecodeWindow, solve

    window = DecodeWindow.from_arrays(
        context_tokens.astype(np.int64), kv_blocks.astype(np.int64),
        batch_size=batch, max_batch_size=np.full(units, max_batch_size, dtype=np.int64),
        kv_blocks_used=used, free_kv_blocks=kv_capacity_blocks - used,
        coefficients=coefficients, iqr_k=iqr_k, kv_block_tokens=kv_block_tokens,
    )
    result = solve(window, method=solver, seed=seed)
    return np.asarray(result.assignment, dtype=np.int64)
