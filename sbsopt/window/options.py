"""The options :func:`sbsopt.window.solve` accepts, typed and checked once.

``solve(..., options=...)`` takes a :class:`SolveOptions` or a mapping of the same names (the
form a JSON caller has); :func:`as_options` turns either into a :class:`SolveOptions`. An
unknown name or a value of the wrong type or range raises
:class:`~sbsopt.errors.InvalidInputError` naming it, so a misspelt option cannot pass unseen.

Examples
--------
>>> as_options({"local_search": 50}).local_search
50
>>> as_options({"local_serach": 50})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sbsopt.errors.InvalidInputError: options.local_serach = 50: expected one of solve's options (did you mean local_search?): cpsat_parameters, ..., ruin_recreate
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np

from sbsopt._validate import check_int, check_number
from sbsopt.errors import InvalidInputError

__all__ = ["SolveOptions", "as_options"]


@dataclass(frozen=True)
class SolveOptions:
    """Options of :func:`sbsopt.window.solve`; ``None`` leaves the choice to the method.

    Searches after the greedy (``local_search``, ``ruin_recreate``, ``exchange``) run on
    prefill windows only; the CP-SAT options apply to ``cpsat`` and ``auto`` only.

    Attributes
    ----------
    local_search : int or None, default None
        Local-search changes after the greedy: ``greedy`` 0 by default; ``cpsat``/``auto``
        start CP-SAT from the greedy with this many, by default from the better of 0 and 1000
        when the budget holds them (:mod:`sbsopt.window.budget`).
    ruin_recreate : int or None, default None
        Ruin-and-recreate iterations after the greedy: ``greedy`` 0 by default;
        ``cpsat``/``auto`` by default sized from the budget on windows with more tokens or
        KV blocks than room, else 0.
    exchange : int or None, default None
        Work of the exchange search after that (subsets visited, about 3-10 ns each):
        ``greedy`` 0 by default; ``cpsat``/``auto`` by default sized from the budget on
        windows whose requests fill at least 90% of the room, and run it again on CP-SAT's
        answer.
    lp_bound : bool or None, default None
        True adds the LP relaxation to the bound whatever it costs, False never; by default
        ``cpsat``/``auto`` add it within the budget left on whole-request windows only.
    host_bound : bool or None, default None
        The same for the host bound (:mod:`sbsopt.window.host_bound`) on prefill windows; by
        default ``cpsat``/``auto`` add it within the budget left, keeping its time out of
        CP-SAT's where the plan says so. False also keeps no time for it.
    num_workers : int, default 1
        CP-SAT threads; more run its portfolio, whose workers can overrun the budget.
    deterministic_time_s : float or None, default None
        CP-SAT's deterministic time limit; by default the budget it is given. Set below
        that, CP-SAT's answer repeats (it stops before its wall-clock cap).
    presolve : bool or None, default None
        CP-SAT's presolve; by default on only when more than 0.5 s is left at its start.
    lns : bool or None, default None
        CP-SAT as neighbourhood search only; by default below 0.5 s from 1024 request-unit
        pairs.
    cpsat_parameters : Mapping[str, Any], default {}
        Extra ``SatParameters`` fields (checked against OR-Tools when CP-SAT runs).

    Examples
    --------
    >>> SolveOptions(exchange=10_000).exchange
    10000
    >>> SolveOptions(num_workers=0)
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: options.num_workers = 0: expected an integer >= 1
    """

    local_search: int | None = None
    ruin_recreate: int | None = None
    exchange: int | None = None
    lp_bound: bool | None = None
    host_bound: bool | None = None
    num_workers: int = 1
    deterministic_time_s: float | None = None
    presolve: bool | None = None
    lns: bool | None = None
    cpsat_parameters: Mapping[str, Any] = field(default_factory=lambda: _NO_PARAMETERS,
                                                hash=False)

    def __post_init__(self) -> None:
        for name, check, optional in _CHECKS:
            value = getattr(self, name)
            if value is None and optional:
                continue
            checked = check(name, value)
            if checked is not value:
                object.__setattr__(self, name, checked)


def _count(name: str, value: Any, least: int = 0) -> int:
    if type(value) is int and value >= least:  # the common case, without the general check
        return value
    return check_int(f"options.{name}", value, minimum=least)


def _flag(name: str, value: Any) -> bool:
    if type(value) is bool:
        return value
    if not isinstance(value, np.bool_):
        raise InvalidInputError(f"options.{name}", value, "True, False or None")
    return bool(value)


def _seconds(name: str, value: Any) -> float:
    return check_number(f"options.{name}", value, minimum=0.0, strict_min=True)


def _parameters(name: str, value: Any) -> Mapping[str, Any]:
    if type(value) is MappingProxyType:
        return value
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidInputError(f"options.{name}", value, "a dict of SatParameters fields")
    return MappingProxyType(dict(value))


#: Each option's check (which returns the value to keep), and whether it may be ``None``.
_CHECKS = (("local_search", _count, True), ("ruin_recreate", _count, True),
           ("exchange", _count, True), ("lp_bound", _flag, True), ("host_bound", _flag, True),
           ("num_workers", partial(_count, least=1), False),
           ("deterministic_time_s", _seconds, True), ("presolve", _flag, True),
           ("lns", _flag, True), ("cpsat_parameters", _parameters, False))


_NO_PARAMETERS: Mapping[str, Any] = MappingProxyType({})
#: Option names, in the order of the fields.
_NAMES = tuple(f.name for f in dataclasses.fields(SolveOptions))
_NAME_SET = frozenset(_NAMES)
#: The options of a call that gives none (most calls: built once).
_DEFAULT = SolveOptions()


def as_options(options: SolveOptions | Mapping[str, Any] | None) -> SolveOptions:
    """``options`` as a checked :class:`SolveOptions` (``None``: the defaults).

    Raises
    ------
    InvalidInputError
        For a name that is not an option (the message lists those there are), a value of the
        wrong type or range, or ``options`` neither a mapping nor :class:`SolveOptions`.

    Examples
    --------
    >>> as_options(None) == SolveOptions()
    True
    >>> as_options({"exchange": -1})
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: options.exchange = -1: expected an integer >= 0
    """
    if options is None:
        return _DEFAULT
    if isinstance(options, SolveOptions):
        return options
    if not isinstance(options, Mapping):
        raise InvalidInputError("options", options, "a SolveOptions or a dict of option names")
    unknown = [key for key in options if key not in _NAME_SET]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), _NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InvalidInputError(f"options.{unknown[0]}", options[unknown[0]],
                                f"one of solve's options{hint}: {', '.join(sorted(_NAMES))}")
    return SolveOptions(**options) if options else _DEFAULT
