"""The one result object every window solver returns."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sbsopt.errors import InfeasibleError, SolverError

__all__ = ["SolveStatus", "SolveResult", "SOLUTION_PRESENT", "relative_gap"]


class SolveStatus(enum.Enum):
    """Outcome of a solve.

    ``OPTIMAL``: proven optimal (within the integer scaling, see ``sbsopt.window.prefill``).
    ``FEASIBLE``: a valid answer without a proof (heuristics always report this).
    ``TIMEOUT``: the time budget ran out before a proof; the answer is the best valid one
    found (at worst the greedy's), so a timeout always carries a usable assignment.
    ``INFEASIBLE``: some request past its guard cannot be placed; the answer is a best-effort
    valid assignment in which those requests are deferred (see ``SolveResult.message``).
    ``ERROR``: only used by the oracle for a rejected input line.
    """

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    TIMEOUT = "timeout"
    INFEASIBLE = "infeasible"
    ERROR = "error"


#: Statuses whose answer satisfies every hard constraint, including the guards.
SOLUTION_PRESENT = frozenset({SolveStatus.OPTIMAL, SolveStatus.FEASIBLE, SolveStatus.TIMEOUT})


@dataclass(frozen=True)
class SolveResult:
    """Answer to one window problem; every field is always present.

    Attributes
    ----------
    assignment : numpy.ndarray
        int64[N], unit index per request, ``-1`` when deferred.
    deferred : numpy.ndarray
        int64 indices of the deferred requests (sorted).
    chunks : dict
        ``{request index: tokens placed this window}`` for a request split by chunking (the
        request is assigned to a unit; its remainder stays buffered). Empty if none.
    status : SolveStatus
    objective : float
        Objective of ``assignment`` in microseconds (see the problem's docstring).
    bound : float
        A proven lower bound on the optimal objective, microseconds.
    gap : float
        ``(objective - bound) / objective`` (0 when both are 0, ``nan`` without a solution).
    method : str
        The method asked for (``auto`` says in ``stats["stage"]`` which step's answer it
        returned: ``greedy``, ``search`` or ``cpsat``).
    wall_time_s : float
        Wall time of the whole ``solve`` call, including model building.
    message : str
    stats : dict
        Backend-specific figures (e.g. CP-SAT's status name and best bound).
    """

    assignment: np.ndarray
    deferred: np.ndarray
    chunks: dict[int, int]
    status: SolveStatus
    objective: float
    bound: float
    gap: float
    method: str
    wall_time_s: float
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """True when the answer keeps every hard constraint (guards included)."""
        return self.status in SOLUTION_PRESENT

    def raise_for_status(self) -> SolveResult:
        """Return ``self`` when a valid answer is present, raise a typed error otherwise.

        Examples
        --------
        >>> r = SolveResult(np.zeros(0, np.int64), np.zeros(0, np.int64), {},
        ...                 SolveStatus.FEASIBLE, 0.0, 0.0, 0.0, "greedy", 0.0)
        >>> r.raise_for_status() is r
        True
        """
        if self.status is SolveStatus.INFEASIBLE:
            raise InfeasibleError(self.message or "the window is infeasible")
        if self.status is SolveStatus.ERROR:
            raise SolverError(self.message or "solver error")
        return self


def relative_gap(objective: float, bound: float) -> float:
    """``(objective - bound) / objective``, 0 when both are 0, clipped at 0 from below."""
    if not math.isfinite(objective):
        return float("nan")
    if objective <= 0.0:
        return 0.0
    return max(0.0, (objective - bound) / objective)
