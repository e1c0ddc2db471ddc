"""The sbsopt exception tree.

Every error sbsopt raises on purpose derives from :class:`SbsoptError`.  Input errors also
derive from :class:`ValueError`, so generic callers that catch ``ValueError`` keep working.
Messages name the field, the offending value and what was expected.

Examples
--------
>>> from sbsopt.errors import InvalidInputError, SbsoptError
>>> err = InvalidInputError("requests[3].new_tokens", -5, "a non-negative integer")
>>> print(err)
requests[3].new_tokens = -5: expected a non-negative integer
>>> isinstance(err, SbsoptError) and isinstance(err, ValueError)
True
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SbsoptError",
    "InvalidInputError",
    "ModelCardError",
    "TraceFormatError",
    "SolverError",
    "InfeasibleError",
    "TimeBudgetError",
    "BackendUnavailableError",
    "MissingExtraError",
    "SimulationError",
]


class SbsoptError(Exception):
    """Base class of every error sbsopt raises on purpose."""


class InvalidInputError(SbsoptError, ValueError):
    """A caller-supplied value is out of its domain.

    Parameters
    ----------
    field : str
        Dotted/indexed path of the offending field, e.g. ``"units[2].capacity_tokens"``.
    value : Any
        The value that was rejected.
    expected : str
        What would have been accepted, phrased so that it tells the caller the fix.
    """

    def __init__(self, field: str, value: Any, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field} = {_short_repr(value)}: expected {expected}")


class ModelCardError(InvalidInputError):
    """A model or hardware card (or a calibration file) is missing, malformed or out of range.

    The message starts with the file so that a user editing a card knows where to look.
    """

    def __init__(self, path: str, field: str, value: Any, expected: str) -> None:
        self.path = path
        super().__init__(f"{path}: {field}", value, expected)


class TraceFormatError(InvalidInputError):
    """A request-trace line cannot be parsed; names the file, the line number and the field."""

    def __init__(self, path: str, line: int, field: str, value: Any, expected: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {field}", value, expected)


class SolverError(SbsoptError):
    """A solver backend failed in a way that is not a status (crash, model invalid)."""


class InfeasibleError(SolverError):
    """Raised by ``raise_for_status()`` when a problem was proven infeasible."""


class TimeBudgetError(SolverError):
    """Raised by ``raise_for_status()`` when no solution was found within the time budget."""


class BackendUnavailableError(SbsoptError):
    """An optional backend (e.g. Ray) was requested but is not installed or not reachable."""


class MissingExtraError(BackendUnavailableError, ImportError):
    """A feature needs a package of one of sbsopt's pip extras that is not installed.

    Also an :class:`ImportError`, so that callers probing for an optional feature with
    ``except ImportError`` keep working.

    Parameters
    ----------
    module : str
        The module that could not be imported, e.g. ``"cvxpy"``.
    extra : str
        The extra that installs it, e.g. ``"calibrate"``.
    feature : str, optional
        What needed it, e.g. ``"sbsopt calibrate"``; named first in the message.

    Examples
    --------
    >>> from sbsopt.errors import MissingExtraError
    >>> print(MissingExtraError("cvxpy", "calibrate", feature="sbsopt calibrate"))
    sbsopt calibrate needs cvxpy, which is not installed; install it with: pip install 'sbsopt[calibrate]'
    """

    def __init__(self, module: str, extra: str, feature: str | None = None) -> None:
        self.module = module
        self.extra = extra
        self.feature = feature
        who = feature or "this feature"
        super().__init__(
            f"{who} needs {module}, which is not installed; install it with: pip install 'sbsopt[{extra}]'"
        )
        # ImportError's own attribute, read by code that inspects import failures
        self.name = module


class SimulationError(SbsoptError):
    """The simulator reached an inconsistent state (an invariant was violated)."""


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
