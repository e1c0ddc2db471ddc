"""Shared input checks: each raises :class:`~sbsopt.errors.InvalidInputError` naming the field."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sbsopt.errors import InvalidInputError

__all__ = [
    "check_number",
    "check_int",
    "check_array",
    "check_positive_time_limit",
]


def check_number(
    field: str,
    value: Any,
    *,
    minimum: float | None = 0.0,
    maximum: float | None = None,
    strict_min: bool = False,
) -> float:
    """Return ``value`` as a finite float inside ``[minimum, maximum]`` or raise.

    Examples
    --------
    >>> check_number("arrival_s", 1.5)
    1.5
    >>> check_number("arrival_s", float("nan"))
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: arrival_s = nan: expected a finite number >= 0.0
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidInputError(field, value, _range_text("a finite number", minimum, maximum, strict_min))
    number = float(value)
    bad = not math.isfinite(number)
    if minimum is not None:
        bad = bad or (number <= minimum if strict_min else number < minimum)
    if maximum is not None:
        bad = bad or number > maximum
    if bad:
        raise InvalidInputError(field, value, _range_text("a finite number", minimum, maximum, strict_min))
    return number


def check_int(
    field: str, value: Any, *, minimum: int | None = 0, maximum: int | None = None
) -> int:
    """Return ``value`` as an int inside ``[minimum, maximum]`` or raise.

    Integral floats (``3.0``) are accepted; ``3.5``, ``True`` and strings are not.

    Examples
    --------
    >>> check_int("ep", 32, minimum=1)
    32
    """
    if isinstance(value, bool):
        raise InvalidInputError(field, value, _range_text("an integer", minimum, maximum, False))
    if isinstance(value, float | np.floating):
        if not math.isfinite(value) or value != int(value):
            raise InvalidInputError(field, value, _range_text("an integer", minimum, maximum, False))
        value = int(value)
    if not isinstance(value, int | np.integer):
        raise InvalidInputError(field, value, _range_text("an integer", minimum, maximum, False))
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise InvalidInputError(field, value, _range_text("an integer", minimum, maximum, False))
    return number


def check_array(
    field: str, values: Any, *, ndim: int = 1, minimum: float | None = 0.0, dtype: Any = np.float64
) -> np.ndarray:
    """Return a C-contiguous array of ``dtype``, finite and ``>= minimum``, or raise.

    The error names the first offending index, e.g. ``new_tokens[4] = -1.0``.

    Examples
    --------
    >>> check_array("new_tokens", [1, 2, 3]).tolist()
    [1.0, 2.0, 3.0]
    """
    try:
        array = np.ascontiguousarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(field, values, f"a numeric array ({exc})") from None
    if array.ndim != ndim:
        raise InvalidInputError(f"{field}.ndim", array.ndim, f"{ndim}")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidInputError(_indexed(field, index), array[index].item(), "a finite number")
    if minimum is not None and array.size and (array < minimum).any():
        index = tuple(int(i) for i in np.argwhere(array < minimum)[0])
        raise InvalidInputError(_indexed(field, index), array[index].item(), f"a number >= {minimum}")
    return array


def check_positive_time_limit(field: str, value: Any) -> float:
    """A time budget must be a finite number strictly greater than zero.

    Examples
    --------
    >>> check_positive_time_limit("time_limit_s", 0)
    Traceback (most recent call last):
    ...
    sbsopt.errors.InvalidInputError: time_limit_s = 0: expected a finite number > 0.0
    """
    return check_number(field, value, minimum=0.0, strict_min=True)


def _indexed(field: str, index: tuple[int, ...]) -> str:
    return field + "".join(f"[{i}]" for i in index)


def _range_text(kind: str, minimum: float | None, maximum: float | None, strict_min: bool) -> str:
    parts = [kind]
    if minimum is not None:
        parts.append(f"{'>' if strict_min else '>='} {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    return " ".join(parts[:1]) + ("" if len(parts) == 1 else " " + " and ".join(parts[1:]))
