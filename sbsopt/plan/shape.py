"""The P:D shape for a trace: as many prefill instances as one decode instance can keep up with.

A disaggregated cluster is balanced when its prefill side saturates at the same request rate as
its decode side; with fewer prefill instances the decode instances idle at any rate the prefill
side sustains, with more the prefill instances do. Both saturation rates come from
:func:`sbsopt.sim.saturation_capacity` on the trace's own length mix (input and output lengths,
prefix-cache hits, MTP acceptance of the cluster), so a decode-heavy trace (long outputs) gets
fewer prefill instances per decode instance than a prefill-heavy one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sbsopt._validate import check_int
from sbsopt.errors import InvalidInputError

__all__ = ["PDShape", "pd_shape"]


@dataclass(frozen=True)
class PDShape:
    """Answer of :func:`pd_shape`.

    Attributes
    ----------
    prefill_instances, decode_instances : int
        The shape.
    prefill_req_s, decode_req_s : float
        Saturation rate of one prefill and of one decode instance on the trace (requests/s;
        the prefill rate measured with ``prefill_instances`` prefix caches).
    """

    prefill_instances: int
    decode_instances: int
    prefill_req_s: float
    decode_req_s: float

    @property
    def ratio(self) -> float:
        """Prefill instances one decode instance keeps busy, before rounding."""
        return self.decode_req_s / self.prefill_req_s

    @property
    def decode_load(self) -> float:
        """Decode load when the prefill side saturates: prefill over decode saturation rate of the
        shape (1 = both sides at once, above 1 the decode side saturates first)."""
        return self.prefill_instances * self.prefill_req_s / (self.decode_instances * self.decode_req_s)

    def as_dict(self) -> dict:
        """JSON-able: the four fields plus ``ratio`` and ``decode_load``."""
        return {**dataclasses.asdict(self), "ratio": self.ratio, "decode_load": self.decode_load}


def pd_shape(workload, cluster=None, *, decode_instances: int = 1) -> PDShape:
    """Prefill instances that saturate at the rate ``decode_instances`` decode instances do.

    ``P = max(1, round(D * decode_req_s / prefill_req_s))`` with the per-instance saturation
    rates of ``cluster`` (its EP sizes, chunk, batch and KV limits, MTP acceptance) on
    ``workload``. Prefix-cache hits depend on how many caches the requests are dealt over, so
    the prefill rate is measured once on one instance and once more at the first answer, which
    gives the result.

    Parameters
    ----------
    workload : Workload
        Its input and output lengths (and prefix hashes) are used; arrival times are not.
    cluster : ClusterConfig, optional
        Every field but the instance counts (default ``ClusterConfig()``).
    decode_instances : int
        ``D``.

    Returns
    -------
    PDShape

    Raises
    ------
    InvalidInputError
        No request of ``workload`` decodes (every output is one token): no decode side to match.

    Examples
    --------
    >>> from sbsopt.workload import Workload
    >>> from sbsopt.sim import ClusterConfig
    >>> chat = Workload.from_arrays([0.0, 1.0], [1000, 1000], [200, 200])
    >>> essays = Workload.from_arrays([0.0, 1.0], [1000, 1000], [2000, 2000])
    >>> pd_shape(chat).prefill_instances > pd_shape(essays).prefill_instances
    True
    """
    from sbsopt.sim import ClusterConfig, saturation_capacity

    check_int("decode_instances", decode_instances, minimum=1)
    cluster = cluster or ClusterConfig()

    def per_instance(prefill: int) -> tuple[float, float]:
        shaped = dataclasses.replace(cluster, prefill_instances=prefill, decode_instances=1)
        cap = saturation_capacity(workload, shaped)
        return cap.prefill_req_s / prefill, cap.decode_req_s

    def instances(prefill_req_s: float, decode_req_s: float) -> int:
        return max(1, round(decode_instances * decode_req_s / prefill_req_s))

    prefill_req_s, decode_req_s = per_instance(1)
    if not math.isfinite(decode_req_s):
        raise InvalidInputError("workload", getattr(workload, "name", "workload"),
                                "requests with more than one output token (a decode side to match)")
    prefill = instances(prefill_req_s, decode_req_s)
    if prefill > 1:
        prefill_req_s, decode_req_s = per_instance(prefill)
        prefill = instances(prefill_req_s, decode_req_s)
    return PDShape(prefill, decode_instances, prefill_req_s, decode_req_s)
