"""Fault injection for the simulator: instance failures and straggler DP ranks.

Spec forms (also the CLI flags of ``sbsopt simulate``):

- ``--fail KIND:INDEX@TIMEs[+DURATIONs]``: instance ``INDEX`` of ``KIND`` (``prefill`` or
  ``decode``) dies at ``TIME`` seconds and, with ``+DURATION``, comes back empty after it.
- ``--slow-rank KIND:INDEX:RANK:FACTOR``: DP rank ``RANK`` of that instance runs ``FACTOR``
  times slower for the whole run. Steps are lock-step, so the instance's every step takes
  ``FACTOR`` times as long (the conservative reading: the straggler is on the critical path).

What happens on a failure is described in :mod:`sbsopt.sim.simulator`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sbsopt.errors import InvalidInputError

__all__ = ["FaultSpec", "SlowRank", "parse_fault", "parse_slow_rank", "check_faults"]

_KINDS = ("prefill", "decode")
_FAIL_RE = re.compile(r"^(prefill|decode):(\d+)@([0-9.eE+-]+?)s?(?:\+([0-9.eE+-]+?)s?)?$")


@dataclass(frozen=True)
class FaultSpec:
    """Instance ``index`` of ``kind`` dies at ``at_s``; back (empty) after ``recover_after_s`` if set.

    Examples
    --------
    >>> FaultSpec("decode", 2, 600.0, 120.0).recover_at_s
    720.0
    """

    kind: str
    index: int
    at_s: float
    recover_after_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InvalidInputError("fault.kind", self.kind, "prefill or decode")
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise InvalidInputError("fault.index", self.index, "an integer >= 0")
        if not (isinstance(self.at_s, int | float) and math.isfinite(self.at_s) and self.at_s >= 0):
            raise InvalidInputError("fault.at_s", self.at_s, "a finite time >= 0 seconds")
        r = self.recover_after_s
        if r is not None and not (isinstance(r, int | float) and math.isfinite(r) and r > 0):
            raise InvalidInputError("fault.recover_after_s", r, "a finite duration > 0 seconds or None")

    @property
    def recover_at_s(self) -> float:
        """Recovery time (``inf`` when the instance never recovers)."""
        return math.inf if self.recover_after_s is None else self.at_s + self.recover_after_s

    def as_dict(self) -> dict:
        return {"kind": self.kind, "index": self.index, "at_s": self.at_s,
                "recover_after_s": self.recover_after_s}


@dataclass(frozen=True)
class SlowRank:
    """DP rank ``rank`` of instance ``index`` of ``kind`` runs ``factor`` (>= 1) times slower.

    Examples
    --------
    >>> SlowRank("prefill", 0, 3, 2.0).factor
    2.0
    """

    kind: str
    index: int
    rank: int
    factor: float

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InvalidInputError("slow_rank.kind", self.kind, "prefill or decode")
        for name in ("index", "rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidInputError(f"slow_rank.{name}", v, "an integer >= 0")
        f = self.factor
        if not (isinstance(f, int | float) and math.isfinite(f) and f >= 1.0):
            raise InvalidInputError("slow_rank.factor", f, "a finite slow-down factor >= 1")

    def as_dict(self) -> dict:
        return {"kind": self.kind, "index": self.index, "rank": self.rank, "factor": self.factor}


def parse_fault(text: str, *, flag: str = "--fail") -> FaultSpec:
    """Parse ``KIND:INDEX@TIMEs[+DURATIONs]``.

    Examples
    --------
    >>> parse_fault("decode:2@600s+120s")
    FaultSpec(kind='decode', index=2, at_s=600.0, recover_after_s=120.0)
    >>> parse_fault("prefill:0@300s").recover_after_s is None
    True
    """
    expected = "KIND:INDEX@TIMEs[+DURATIONs] with KIND prefill or decode, e.g. prefill:0@300s+60s"
    m = _FAIL_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise InvalidInputError(flag, text, expected)
    kind, index, at, rec = m.groups()
    try:
        at_s = float(at)
        rec_s = None if rec is None else float(rec)
    except ValueError:
        raise InvalidInputError(flag, text, expected) from None
    if not math.isfinite(at_s) or at_s < 0:
        raise InvalidInputError(flag, text, "a failure time >= 0 seconds")
    if rec_s is not None and (not math.isfinite(rec_s) or rec_s <= 0):
        raise InvalidInputError(flag, text, "a recovery duration > 0 seconds")
    return FaultSpec(kind, int(index), at_s, rec_s)


def parse_slow_rank(text: str, *, flag: str = "--slow-rank") -> SlowRank:
    """Parse ``KIND:INDEX:RANK:FACTOR``.

    Examples
    --------
    >>> parse_slow_rank("decode:0:5:1.5")
    SlowRank(kind='decode', index=0, rank=5, factor=1.5)
    """
    expected = "KIND:INDEX:RANK:FACTOR with KIND prefill or decode and FACTOR >= 1, e.g. prefill:0:3:2"
    parts = text.strip().split(":") if isinstance(text, str) else []
    if len(parts) != 4 or parts[0] not in _KINDS or not parts[1].isdigit() or not parts[2].isdigit():
        raise InvalidInputError(flag, text, expected)
    try:
        factor = float(parts[3])
    except ValueError:
        raise InvalidInputError(flag, text, expected) from None
    if not math.isfinite(factor) or factor < 1.0:
        raise InvalidInputError(flag, text, "a slow-down FACTOR >= 1")
    return SlowRank(parts[0], int(parts[1]), int(parts[2]), factor)


def check_faults(faults, slow_ranks, cluster) -> tuple[tuple[FaultSpec, ...], tuple[SlowRank, ...]]:
    """Validate specs against a cluster (instance and rank indices); strings are parsed.

    Examples
    --------
    >>> from sbsopt.sim.config import ClusterConfig
    >>> check_faults(["prefill:9@1s"], [], ClusterConfig(prefill_instances=2))
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: ...
    """
    out_f = tuple(parse_fault(f) if isinstance(f, str) else f for f in (faults or ()))
    out_s = tuple(parse_slow_rank(s) if isinstance(s, str) else s for s in (slow_ranks or ()))
    sizes = {"prefill": (cluster.prefill_instances, cluster.prefill_ep),
             "decode": (cluster.decode_instances, cluster.decode_ep)}
    for f in out_f:
        if not isinstance(f, FaultSpec):
            raise InvalidInputError("faults", f, "FaultSpec objects or KIND:INDEX@TIMEs[+DURATIONs] strings")
        if f.index >= sizes[f.kind][0]:
            raise InvalidInputError("faults", f"{f.kind}:{f.index}",
                                    f"an instance index < {sizes[f.kind][0]} {f.kind} instances")
    for s in out_s:
        if not isinstance(s, SlowRank):
            raise InvalidInputError("slow_ranks", s, "SlowRank objects or KIND:INDEX:RANK:FACTOR strings")
        n, ep = sizes[s.kind]
        if s.index >= n:
            raise InvalidInputError("slow_ranks", f"{s.kind}:{s.index}",
                                    f"an instance index < {n} {s.kind} instances")
        if s.rank >= ep:
            raise InvalidInputError("slow_ranks", f"{s.kind}:{s.index}:{s.rank}", f"a DP rank < ep = {ep}")
    return out_f, out_s
