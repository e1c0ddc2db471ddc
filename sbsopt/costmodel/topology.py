"""The DP+EP cluster as a networkx graph, and the all-to-all bottleneck derived from it.

GPUs hang off one NVSwitch per node (NVLink, per GPU per direction) and one InfiniBand NIC
each (a CX7 per GPU) into a non-blocking fabric node.  For an EP group placed on the first
``ep`` GPUs (node-major), the expected traffic of *one token sent by every rank* is routed over
the graph and accumulated per directed edge; the bottleneck is the edge with the largest
``load / capacity``.  The time to dispatch ``T`` tokens of ``b`` bytes per rank is then
``T * b * seconds_per_byte``.  NVLink-bound inside one node, IB-bound across nodes: the switch
comes out of the graph, not from a table.

Routing follows DeepEP.  Normal kernels send a token once per destination *node* over RDMA (to
the GPU with the same local index) and fan it out over NVLink there; intra-node destinations go
directly over NVLink.  Low-latency kernels send one copy per (token, expert) pair, directly to
the destination GPU (over NVLink inside the node when ``nvlink_assisted``, else over RDMA).

Destination probabilities come from the model card's group-limited top-k routing: a token picks
``groups_per_token`` of ``expert_groups`` groups uniformly, then ``experts_per_token`` experts
uniformly among the picked groups' experts (perfectly balanced routing, as in DeepSeek's profile).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import networkx as nx
import numpy as np

from sbsopt.errors import InvalidInputError

__all__ = ["AllToAllPath", "cluster_graph", "alltoall_path", "hit_probability"]


@dataclass(frozen=True)
class AllToAllPath:
    """Bottleneck of a uniform all-to-all over one EP group.

    Attributes
    ----------
    seconds_per_byte : float
        Time per byte of token payload sent by every rank (the max over edges of load/capacity).
    bottleneck : str
        Link class of the bottleneck edge: ``"nvlink"`` or ``"ib"``.
    bottleneck_Bps : float
        Capacity of the bottleneck edge (B/s).
    link_bytes_per_byte : float
        Bytes crossing the bottleneck edge per byte of payload per rank (so that the
        DeepEP-style "bottleneck bandwidth" is ``link_bytes_per_byte / seconds_per_byte``).
    nvlink_bytes_per_byte, ib_bytes_per_byte : float
        The same on the most loaded NVLink and IB edge (achieved bandwidth per link class).
    """

    seconds_per_byte: float
    bottleneck: str
    bottleneck_Bps: float
    link_bytes_per_byte: float
    nvlink_bytes_per_byte: float = 0.0
    ib_bytes_per_byte: float = 0.0

    def achieved_Bps(self, kind: str, *, efficiency: float = 1.0) -> float:
        """Bandwidth achieved on the busiest ``kind`` edge during the all-to-all.

        Parameters
        ----------
        kind : {"nvlink", "ib"}
            Link class.
        efficiency : float, default 1.0
            Achieved fraction of the modelled transfer rate (a fitted link efficiency).

        Returns
        -------
        float
            Bytes per second on that edge (0 for an all-to-all that moves nothing).
        """
        carried = self.nvlink_bytes_per_byte if kind == "nvlink" else self.ib_bytes_per_byte
        return carried * efficiency / self.seconds_per_byte if self.seconds_per_byte else 0.0


def cluster_graph(*, nodes: int, gpus_per_node: int, nvlink_Bps: float, ib_Bps: float) -> nx.DiGraph:
    """Directed graph of the cluster; edge attribute ``capacity`` (B/s) and ``kind``.

    Parameters
    ----------
    nodes, gpus_per_node : int
        Cluster size.
    nvlink_Bps, ib_Bps : float
        Per-GPU NVLink and per-NIC InfiniBand bandwidth, each direction.

    Returns
    -------
    networkx.DiGraph
        Vertices ``("gpu", node, local)``, ``("nic", node, local)``, ``("nvswitch", node)`` and
        ``"fabric"``; edge ``kind`` is ``"nvlink"``, ``"pcie"`` (never a bottleneck) or ``"ib"``.

    Examples
    --------
    >>> g = cluster_graph(nodes=2, gpus_per_node=8, nvlink_Bps=160e9, ib_Bps=50e9)
    >>> g.number_of_nodes(), g[("gpu", 0, 0)][("nvswitch", 0)]["kind"]
    (35, 'nvlink')
    """
    graph = nx.DiGraph()
    for node in range(nodes):
        switch = ("nvswitch", node)
        for local in range(gpus_per_node):
            gpu, nic = ("gpu", node, local), ("nic", node, local)
            graph.add_edge(gpu, switch, capacity=nvlink_Bps, kind="nvlink")
            graph.add_edge(switch, gpu, capacity=nvlink_Bps, kind="nvlink")
            # GPU <-> NIC is PCIe/GPUDirect; never the bottleneck for a 400 Gb/s NIC.
            graph.add_edge(gpu, nic, capacity=math.inf, kind="pcie")
            graph.add_edge(nic, gpu, capacity=math.inf, kind="pcie")
            graph.add_edge(nic, "fabric", capacity=ib_Bps, kind="ib")
            graph.add_edge("fabric", nic, capacity=ib_Bps, kind="ib")
    return graph


def hit_probability(
    expert_ranges: tuple[tuple[float, float], ...],
    *,
    routed_experts: int,
    expert_groups: int,
    groups_per_token: int,
    experts_per_token: int,
) -> float:
    """Probability that one token routes to at least one expert in the given ranges.

    Ranges are half-open ``[start, stop)`` in expert index units (fractional ends allowed
    when EP does not divide the experts evenly).

    Parameters
    ----------
    expert_ranges : tuple of (float, float)
        Half-open expert index ranges (e.g. the experts of one node).
    routed_experts, expert_groups : int
        Routed experts and the groups they are split into (node-limited routing).
    groups_per_token, experts_per_token : int
        Groups a token may pick, and experts it picks among them (top-k).

    Returns
    -------
    float
        The probability, under uniform routing within uniformly chosen groups.

    Examples
    --------
    >>> round(hit_probability(((0, 64),), routed_experts=256, expert_groups=8,
    ...                       groups_per_token=4, experts_per_token=8), 3)
    0.732
    """
    per_group = routed_experts / expert_groups
    inside = np.zeros(expert_groups)
    for start, stop in expert_ranges:
        for group in range(expert_groups):
            low, high = group * per_group, (group + 1) * per_group
            inside[group] += max(0.0, min(stop, high) - max(start, low))
    pool = groups_per_token * per_group
    miss = 0.0
    subsets = list(itertools.combinations(range(expert_groups), groups_per_token))
    for subset in subsets:
        covered = float(inside[list(subset)].sum())
        miss += _choose_ratio(pool - covered, pool, experts_per_token)
    return 1.0 - miss / len(subsets)


def alltoall_path(
    *,
    ep: int,
    gpus_per_node: int,
    nodes: int,
    nvlink_Bps: float,
    ib_Bps: float,
    routed_experts: int,
    expert_groups: int,
    groups_per_token: int,
    experts_per_token: int,
    mode: str = "normal",
) -> AllToAllPath:
    """Bottleneck of the all-to-all of an EP group of ``ep`` GPUs spread evenly over ``nodes``.

    ``mode`` is ``"normal"`` (node-deduplicated RDMA + NVLink forward), ``"ll"`` (one copy
    per token-expert pair, direct, NVLink inside the node) or ``"ll_rdma"`` (every copy over
    RDMA, DeepEP's original low-latency kernels).

    Parameters
    ----------
    ep, gpus_per_node, nodes : int
        EP group size and its placement.
    nvlink_Bps, ib_Bps : float
        Link bandwidths (see :func:`cluster_graph`).
    routed_experts, expert_groups, groups_per_token, experts_per_token : int
        Routing of the model (see :func:`hit_probability`).
    mode : {"normal", "ll", "ll_rdma"}
        Which DeepEP kernels.

    Returns
    -------
    AllToAllPath
        The bottleneck edge and its load (cached per arguments).

    Raises
    ------
    InvalidInputError
        If ``mode`` is unknown or ``ep`` GPUs do not fit on ``nodes`` nodes.

    Examples
    --------
    >>> kw = dict(gpus_per_node=8, nvlink_Bps=160e9, ib_Bps=50e9, routed_experts=256,
    ...           expert_groups=8, groups_per_token=4, experts_per_token=8)
    >>> alltoall_path(ep=8, nodes=1, **kw).bottleneck, alltoall_path(ep=32, nodes=4, **kw).bottleneck
    ('nvlink', 'ib')
    """
    return _alltoall_path(
        ep, gpus_per_node, nodes, float(nvlink_Bps), float(ib_Bps), routed_experts,
        expert_groups, groups_per_token, experts_per_token, mode,
    )


@lru_cache(maxsize=256)
def _alltoall_path(
    ep: int, gpus_per_node: int, nodes: int, nvlink_Bps: float, ib_Bps: float,
    routed_experts: int, expert_groups: int, groups_per_token: int, experts_per_token: int, mode: str,
) -> AllToAllPath:
    if mode not in ("normal", "ll", "ll_rdma"):
        raise InvalidInputError("mode", mode, "'normal', 'll' or 'll_rdma'")
    graph = cluster_graph(nodes=nodes, gpus_per_node=gpus_per_node, nvlink_Bps=nvlink_Bps, ib_Bps=ib_Bps)
    # spread evenly over ``nodes`` nodes (node-major), at most ``gpus_per_node`` each
    used = math.ceil(ep / nodes)
    if used > gpus_per_node:
        raise InvalidInputError("ep", ep, f"at most {nodes} nodes x {gpus_per_node} GPUs")
    ranks = [("gpu", r // used, r % used) for r in range(ep)]
    width = routed_experts / ep
    route = dict(
        routed_experts=routed_experts, expert_groups=expert_groups,
        groups_per_token=groups_per_token, experts_per_token=experts_per_token,
    )
    gpu_hit = [hit_probability(((r * width, (r + 1) * width),), **route) for r in range(ep)]
    # expected copies per token-expert pair landing on each rank (low-latency kernels)
    gpu_pairs = [experts_per_token * width / routed_experts] * ep
    node_members: dict[int, list[int]] = {}
    for r, (_, node, _) in enumerate(ranks):
        node_members.setdefault(node, []).append(r)
    node_hit = {
        node: hit_probability(tuple((r * width, (r + 1) * width) for r in members), **route)
        for node, members in node_members.items()
    }
    load: dict[tuple, float] = {edge: 0.0 for edge in graph.edges}

    def send(source: tuple, target: tuple, amount: float) -> None:
        if source == target or amount <= 0:
            return
        path = nx.shortest_path(graph, source, target)
        for edge in zip(path[:-1], path[1:], strict=True):
            load[edge] += amount

    for src, (_, src_node, src_local) in enumerate(ranks):
        for dst, (_, dst_node, _) in enumerate(ranks):
            if mode == "normal":
                if dst_node == src_node:
                    send(ranks[src], ranks[dst], gpu_hit[dst])
                continue
            amount = gpu_pairs[dst]
            if mode == "ll" and dst_node == src_node:
                send(ranks[src], ranks[dst], amount)
            elif dst != src:
                _send_rdma(send, ranks[src], ranks[dst], amount)
        if mode == "normal":
            for node, members in node_members.items():
                if node == src_node:
                    continue
                landing_local = src_local if src_local < len(members) else 0
                landing = ("gpu", node, landing_local)
                _send_rdma(send, ranks[src], landing, node_hit[node])
                for dst in members:
                    # forwarded copies: P(token hits dst), given the node is hit
                    send(landing, ranks[dst], gpu_hit[dst])
    worst, worst_edge = 0.0, None
    for edge, amount in load.items():
        capacity = graph.edges[edge]["capacity"]
        if amount > 0 and math.isfinite(capacity) and amount / capacity > worst:
            worst, worst_edge = amount / capacity, edge
    if worst_edge is None:  # a single rank: nothing crosses a link
        return AllToAllPath(0.0, "none", math.inf, 0.0)
    attrs = graph.edges[worst_edge]
    busiest = {
        kind: max((v for e, v in load.items() if graph.edges[e]["kind"] == kind), default=0.0)
        for kind in ("nvlink", "ib")
    }
    return AllToAllPath(worst, attrs["kind"], attrs["capacity"], load[worst_edge], busiest["nvlink"], busiest["ib"])


def _send_rdma(send, source: tuple, target: tuple, amount: float) -> None:
    """Over the NICs: source GPU -> its NIC -> fabric -> target's NIC -> target GPU."""
    _, src_node, src_local = source
    _, dst_node, dst_local = target
    if src_node == dst_node and src_local == dst_local:
        return
    src_nic, dst_nic = ("nic", src_node, src_local), ("nic", dst_node, dst_local)
    send(source, src_nic, amount)
    send(src_nic, "fabric", amount)
    send("fabric", dst_nic, amount)
    send(dst_nic, target, amount)


def _choose_ratio(n: float, m: float, k: int) -> float:
    """C(n, k) / C(m, k) for real n <= m (0 when fewer than k items remain)."""
    if n <= k - 1:
        return 0.0
    return math.exp(_lgamma_choose(n, k) - _lgamma_choose(m, k))


def _lgamma_choose(n: float, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(n - k + 1)
