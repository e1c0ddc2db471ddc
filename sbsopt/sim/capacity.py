"""The cluster's saturation throughput on a trace's own length mix, measured once and cached.

``load=L`` means L times this throughput. It is measured by the cost model, not assumed from the
mean prompt, because a forward's time is the lock-step maximum over its DP ranks and attention
is quadratic in context: a long-prompt trace saturates the cluster at a far lower request rate
than its mean length suggests.

**Prefill: a saturated queue.** Every request of the trace (those the simulator would not
reject for length) is queued at t = 0 on one prefill instance, each on the unit with the
fewest queued tokens, with the prefix-cache hits the cluster's caches would give them (the
requests dealt over the instances in arrival order). The instance then runs the engine's own
chunked forwards (:class:`~sbsopt.sim.engine.PrefillInstance`, Sarathi chunking) timed by
``prefill_step_us``, the whole-instance lock-step step time. Throughput is measured over the
forwards in which every rank formed a full chunk, so the drain tail of the queue does not count;
a trace too short to fill :data:`STEADY_FORWARDS` such forwards is queued again until it does.
Tokens/s times the instances, over the mean uncached prompt, is the prefill request rate. A
simulation (rather than a closed formula) is used because packing, chunk splitting and the
per-forward max over ranks depend on the order and mix of lengths, which the engine code
already models.

**Decode: Little's law at the KV/batch limit.** Each decode rank holds ``min(max_decode_batch,
KV blocks / mean blocks reserved per request)`` requests; a request stays for its output tokens
over ``1 + mtp_acceptance`` tokens per step, each step timed by ``decode_step_us`` at that batch
and the mean decode context. Rate = ranks x concurrency / (steps per request x step time).

The capacity is the smaller of the two. Colocated engines (``mode="colocated"``) run decodes
inside their prefill iterations, where a decode token costs little beside a prefill chunk, so
there the capacity is the prefill side's alone: an upper bound, which is what a cap on planner
answers needs (the decode rate is still reported). It is memoised in the process and cached on disk under
the user cache folder (``$SBSOPT_CACHE_DIR/capacity``, else ``$XDG_CACHE_HOME/sbsopt/capacity``
or ``~/.cache/sbsopt/capacity``, else a temporary folder), keyed by a hash of the trace's
lengths (and prefix hashes), the cluster and the cost models' coefficients and probe step times.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbsopt.errors import InvalidInputError

__all__ = ["Capacity", "CAPACITY_METHOD", "STEADY_FORWARDS", "saturation_capacity", "capacity_cache_dir"]

#: Names the measurement in results (``capacity_method``); part of the cache key.
CAPACITY_METHOD = "saturated-queue"
#: Full forwards the prefill measurement averages over, at least.
STEADY_FORWARDS = 16
_VERSION = "2"  # bump when the measurement changes: old cache entries are then never read

_MEMO: dict[str, Capacity] = {}


@dataclass(frozen=True)
class Capacity:
    """Saturation throughput of a cluster on one trace.

    Attributes
    ----------
    req_s : float
        Requests/s the cluster sustains (the smaller of ``prefill_req_s`` and ``decode_req_s``).
    tok_s : float
        Prompt tokens/s at ``req_s`` (``req_s`` x the trace's mean prompt).
    prefill_req_s, decode_req_s : float
        Each side's saturation rate (``inf`` for a side with no work).
    bottleneck : {"prefill", "decode"}
    method : str
        :data:`CAPACITY_METHOD`.
    key : str
        The cache key (hex).
    """

    req_s: float
    tok_s: float
    prefill_req_s: float
    decode_req_s: float
    bottleneck: str
    method: str
    key: str

    def as_dict(self) -> dict:
        """``capacity_req_s``, ``capacity_tok_s``, ``capacity_method`` and the per-side rates."""
        return {"capacity_req_s": self.req_s, "capacity_tok_s": self.tok_s, "capacity_method": self.method,
                "capacity_bottleneck": self.bottleneck, "capacity_prefill_req_s": self.prefill_req_s,
                "capacity_decode_req_s": self.decode_req_s}


def capacity_cache_dir() -> Path | None:
    """The folder capacities are cached in; ``None`` when no candidate can be written.

    Examples
    --------
    >>> d = capacity_cache_dir()
    >>> d is None or d.is_absolute()
    True
    """
    candidates = []
    if os.environ.get("SBSOPT_CACHE_DIR"):
        candidates.append(Path(os.environ["SBSOPT_CACHE_DIR"]) / "capacity")
    xdg = os.environ.get("XDG_CACHE_HOME")
    candidates.append((Path(xdg) if xdg else Path.home() / ".cache") / "sbsopt" / "capacity")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary uid in a container
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    candidates.append(Path(tempfile.gettempdir()) / f"sbsopt-capacity-{user}")
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError:
            continue
        return path.resolve()
    return None


def _model_fingerprint(model) -> str:
    """Coefficients plus probe step times: any refit or card change alters it."""
    parts = [repr(getattr(model, "coefficients", None)), repr(getattr(model, "ep", None))]
    ep = int(getattr(model, "ep", 1) or 1)
    for scale in (1.0, 512.0, 8192.0):
        ones = np.full(ep, scale)
        if hasattr(model, "prefill_step_us"):
            parts.append(repr(float(model.prefill_step_us(ones, ones * scale, np.ones(ep)))))
        if hasattr(model, "decode_step_us"):
            for q in (1, 2):
                parts.append(repr(float(model.decode_step_us(np.full(ep, min(scale, 128.0)), ones * 4, q))))
    return "|".join(parts)


def _key(workload, cluster, prefill_model, decode_model) -> str:
    digest = hashlib.sha256()
    for part in (CAPACITY_METHOD, _VERSION, repr(dataclasses.asdict(cluster)),
                 _model_fingerprint(prefill_model), _model_fingerprint(decode_model)):
        digest.update(part.encode() + b"\0")
    digest.update(np.ascontiguousarray(workload.input_tokens, dtype=np.int64).tobytes() + b"\0")
    digest.update(np.ascontiguousarray(workload.output_tokens, dtype=np.int64).tobytes() + b"\0")
    if workload.block_hashes is not None and cluster.prefix_cache_blocks > 0:
        digest.update(str(workload.block_tokens).encode())
        for hashes in workload.block_hashes:
            digest.update(np.ascontiguousarray(hashes, dtype=np.int64).tobytes() + b";")
    return digest.hexdigest()[:32]


def saturation_capacity(workload, cluster, *, prefill_model=None, decode_model=None,
                        mode: str = "disaggregated", cache: bool = True) -> Capacity:
    """The cluster's saturation throughput on ``workload``'s length mix (module docstring).

    Parameters
    ----------
    workload : Workload
        Its lengths (and prefix hashes) are used; arrival times are not.
    cluster : ClusterConfig
    prefill_model, decode_model : CostModel, optional
        Default: ``load_cost_model`` for the cluster's cards and EP sizes.
    mode : {"disaggregated", "colocated"}
        Colocated: ``cluster``'s prefill instances serve both phases (``decode_model`` unused).
    cache : bool
        Read and write the in-process memo and the on-disk cache.

    Returns
    -------
    Capacity

    Raises
    ------
    InvalidInputError
        An empty workload, or one whose every prompt exceeds ``max_prompt_tokens``.

    Examples
    --------
    >>> from sbsopt.workload import load_trace
    >>> from sbsopt.sim import ClusterConfig
    >>> c = saturation_capacity(load_trace("azure-conv", limit=200), ClusterConfig())
    >>> c.method, c.bottleneck, c.req_s > 0, c.req_s == min(c.prefill_req_s, c.decode_req_s)
    ('saturated-queue', 'prefill', True, True)
    """
    from sbsopt.sim.config import check_mode

    colocated = check_mode(mode) == "colocated"
    if len(workload) == 0:
        raise InvalidInputError("workload", getattr(workload, "name", "workload"), "at least one request")
    if prefill_model is None or decode_model is None:
        from sbsopt.costmodel import load_cost_model

        prefill_model = prefill_model or load_cost_model(cluster.model, cluster.hardware, ep=cluster.prefill_ep)
        decode_model = decode_model or load_cost_model(cluster.model, cluster.hardware, ep=cluster.decode_ep)
    if colocated:
        decode_model = prefill_model  # the engines' own decode steps
        engines = dataclasses.replace(cluster, decode_instances=cluster.prefill_instances,
                                      decode_ep=cluster.prefill_ep)
    key = _key(workload, cluster, prefill_model, decode_model) + ("c" if colocated else "")
    if cache:
        found = _MEMO.get(key) or _read(key)
        if found is not None:
            _MEMO[key] = found
            return found
    prefill = _prefill_req_s(workload, cluster, prefill_model)
    decode = _decode_req_s(workload, engines if colocated else cluster, decode_model)
    req_s = prefill if colocated else min(prefill, decode)
    result = Capacity(req_s=req_s, tok_s=req_s * float(workload.input_tokens.mean()), prefill_req_s=prefill,
                      decode_req_s=decode, bottleneck="prefill" if req_s == prefill else "decode",
                      method=CAPACITY_METHOD, key=key)
    if cache:
        _MEMO[key] = result
        _write(result)
    return result


def _prefix_hits(workload, cluster) -> np.ndarray:
    """Cached prompt tokens per request, the requests dealt over the instances' caches in order."""
    cached = np.zeros(len(workload), dtype=np.int64)
    if workload.block_hashes is None or cluster.prefix_cache_blocks <= 0:
        return cached
    from sbsopt.workload.prefix_cache import PrefixCache

    caches = [PrefixCache(capacity_blocks=cluster.prefix_cache_blocks, block_tokens=workload.block_tokens)
              for _ in range(cluster.prefill_instances)]
    for i, hashes in enumerate(workload.block_hashes):
        cache = caches[i % len(caches)]
        cached[i] = cache.lookup(hashes, input_tokens=int(workload.input_tokens[i]))
        cache.insert(hashes)
    return cached


def _prefill_req_s(workload, cluster, model) -> float:
    import heapq

    from sbsopt.sim.chunking import PrefillTask, get_chunking
    from sbsopt.sim.engine import PrefillInstance

    keep = workload.input_tokens <= cluster.max_prompt_tokens
    if not keep.any():
        raise InvalidInputError("workload", getattr(workload, "name", "workload"),
                                f"a prompt of at most max_prompt_tokens = {cluster.max_prompt_tokens}")
    cached = _prefix_hits(workload, cluster)[keep]
    new = workload.input_tokens[keep].astype(np.int64) - cached
    ep, chunk = cluster.prefill_ep, cluster.chunk_tokens
    # enough tokens for the steady forwards plus the drain tail, which is not measured
    repeats = max(1, math.ceil((STEADY_FORWARDS + 2) * ep * chunk / float(new.sum())))
    inst = PrefillInstance(0, ep, chunk, get_chunking("default"))
    units = [(0, j) for j in range(ep)]  # (queued tokens, unit): least tokens first, ties by index
    for _ in range(repeats):
        for n, p in zip(new.tolist(), cached.tolist(), strict=True):
            load, j = heapq.heappop(units)
            inst.enqueue(j, PrefillTask(0, n, p))
            heapq.heappush(units, (load + n, j))
    tokens = seconds = 0.0
    while inst.has_work():
        chunks, tok, pairs, reqs = inst.form_forward()
        if tok.min() < chunk:
            break  # a rank ran dry: the drain tail starts
        tokens += float(tok.sum())
        seconds += float(model.prefill_step_us(tok, pairs, reqs)) * 1e-6
        inst.finish_forward(chunks)
    if seconds <= 0:
        return math.inf
    return cluster.prefill_instances * tokens / seconds / float(new.mean())


def _decode_req_s(workload, cluster, model) -> float:
    out = workload.output_tokens.astype(np.float64)
    inp = workload.input_tokens.astype(np.float64)
    decoding = out > 1  # a one-token request finishes at prefill
    if not decoding.any():
        return math.inf
    tokens_per_step = 1.0 + cluster.mtp_acceptance
    query = 2 if cluster.mtp_acceptance > 0 else 1
    kv_tokens = cluster.kv_capacity_tokens or int(model.kv_capacity_tokens_per_rank)
    kv_blocks = kv_tokens // cluster.kv_block_tokens
    reserved = np.ceil((inp + out) / cluster.kv_block_tokens)[decoding]  # the reserve KV policy
    concurrency = max(min(float(cluster.max_decode_batch), kv_blocks / float(reserved.mean())), 1.0)
    context = float((inp + out / 2.0)[decoding].mean())
    ep = cluster.decode_ep
    step_s = float(model.decode_step_us(np.full(ep, concurrency), np.full(ep, concurrency * context), query)) * 1e-6
    steps = float(np.maximum(out - 1.0, 0.0).mean()) / tokens_per_step  # per request, one-token ones included
    return cluster.decode_instances * ep * concurrency / (steps * step_s)


def _read(key: str) -> Capacity | None:
    folder = capacity_cache_dir()
    if folder is None:
        return None
    try:
        data = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        fields = {f.name: data[f.name] for f in dataclasses.fields(Capacity)}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: measured again
    fields = {k: (math.inf if v is None else v) if k.endswith("_s") else v for k, v in fields.items()}
    return Capacity(**fields) if fields["key"] == key else None


def _write(capacity: Capacity) -> None:
    folder = capacity_cache_dir()
    if folder is None:
        return
    data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in dataclasses.asdict(capacity).items()}
    try:
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False, encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(handle.name, folder / f"{capacity.key}.json")
    except OSError:
        pass  # a cache that cannot be written only costs a measurement next time
