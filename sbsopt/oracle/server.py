"""The policy oracle: one window per JSON line in, one answer per line out.

:func:`answer_line` is the whole protocol for one line (embedding API); :func:`serve` loops
it over binary streams, flushing after every answer, until EOF. A bad line gets an error
answer and the loop goes on; nothing is ever printed but answers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec
import numpy as np

from sbsopt.errors import InvalidInputError
from sbsopt.kvblocks import request_kv_blocks
from sbsopt.oracle.schema import DecodeProblem, PrefillProblem
from sbsopt.window import DecodeWindow, PrefillWindow, SolveResult, solve

__all__ = ["OracleError", "field_of", "parse_line", "answer_problem", "answer_line", "serve"]

_ENCODER = msgspec.json.Encoder()
_PATH = re.compile(r"at `\$\.?([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


class OracleError(Exception):
    """A rejected line: carries the window id (if readable), the field and a message."""

    def __init__(self, wid: str | None, field: str | None, message: str) -> None:
        super().__init__(message)
        self.wid, self.field, self.message = wid, field, message


def _decode_json(line: bytes) -> Any:
    try:
        return msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError, ValueError):
        pass
    # sloppy clients send NaN / Infinity literals: parse them to reject them by field
    try:
        return json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise OracleError(None, None, f"not a JSON object: {type(exc).__name__}: {exc}"[:300]) from None


def field_of(message: str) -> str | None:
    """The field path a msgspec validation error names, or ``None``.

    Parameters
    ----------
    message : str
        ``str()`` of a :class:`msgspec.ValidationError`.

    Returns
    -------
    str or None
        The path without the ``$.`` root (``requests[0].new_tokens``), with a missing required
        field appended; ``None`` when the message names no field.

    Examples
    --------
    >>> field_of("Expected `int`, got `str` - at `$.requests[0].new_tokens`")
    'requests[0].new_tokens'
    >>> field_of("Object missing required field `id`")
    'id'
    """
    path = _PATH.search(message)
    missing = _MISSING.search(message)
    parts = [p for p in (path.group(1) if path else "", missing.group(1) if missing else "") if p]
    return ".".join(parts) or None


def parse_line(line: bytes | str) -> PrefillProblem | DecodeProblem:
    """Parse and validate one line into a typed problem.

    Parameters
    ----------
    line : bytes or str
        One JSON object (surrounding whitespace and the newline are ignored).

    Returns
    -------
    PrefillProblem or DecodeProblem
        The problem its ``phase`` names, every field validated.

    Raises
    ------
    OracleError
        If the line is not a JSON object, names no known phase, fails the schema (the error's
        ``field`` is the offending path, e.g. ``requests[0].arrival_s``) or repeats an id.

    Examples
    --------
    >>> p = parse_line('{"id": "d", "phase": "decode", "requests": [], "units": []}')
    >>> type(p).__name__, p.method, p.time_limit_ms
    ('DecodeProblem', 'auto', 50.0)
    """
    raw = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
    obj = _decode_json(raw.strip())
    if not isinstance(obj, dict):
        raise OracleError(None, None, f"expected a JSON object, got {type(obj).__name__}")
    wid = obj.get("id") if isinstance(obj.get("id"), str) else None
    phase = obj.get("phase")
    kind = {"prefill": PrefillProblem, "decode": DecodeProblem}.get(phase) if isinstance(
        phase, str) else None
    if kind is None:
        raise OracleError(wid, "phase", f"phase = {phase!r}: expected 'prefill' or 'decode'")
    try:
        problem = msgspec.convert(obj, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise OracleError(wid, field_of(str(exc)), str(exc)) from None
    for name in ("requests", "units"):
        ids = [item.id for item in getattr(problem, name)]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise OracleError(problem.id, name, f"duplicate {name[:-1]} id {dup!r}")
    return problem


def _window(problem: PrefillProblem | DecodeProblem, coefficients: Any) -> PrefillWindow | DecodeWindow:
    if isinstance(problem, PrefillProblem):
        req, units = problem.requests, problem.units
        arrival = np.array([r.arrival_s for r in req], np.float64)
        deadline = None
        if any(r.deadline_s is not None for r in req):
            deadline = np.array([np.inf if r.deadline_s is None else r.deadline_s for r in req])
        kv = None
        if any(r.kv_blocks is not None for r in req):
            kv = np.array([request_kv_blocks(r.new_tokens) if r.kv_blocks is None else r.kv_blocks
                           for r in req], np.int64)
        return PrefillWindow.from_arrays(
            np.array([r.new_tokens for r in req], np.int64),
            np.array([r.cached_tokens for r in req], np.int64), arrival,
            capacity_tokens=np.array([u.capacity_tokens for u in units], np.int64),
            load_tokens=np.array([u.load_tokens for u in units], np.int64),
            free_kv_blocks=np.array([u.free_kv_blocks for u in units], np.int64),
            kv_blocks=kv, deadline_s=deadline,
            now_s=problem.now_s if problem.now_s is not None else float(arrival.max(initial=0.0)),
            coefficients=coefficients("prefill"),
        )
    # unpacked per phase so that each branch sees its own request and unit types
    dreq, dunits = problem.requests, problem.units
    return DecodeWindow.from_arrays(
        np.array([r.context_tokens for r in dreq], np.int64),
        np.array([r.kv_blocks for r in dreq], np.int64),
        batch_size=np.array([u.batch_size for u in dunits], np.int64),
        max_batch_size=np.array([u.max_batch_size for u in dunits], np.int64),
        kv_blocks_used=np.array([u.kv_blocks_used for u in dunits], np.int64),
        free_kv_blocks=np.array([u.free_kv_blocks for u in dunits], np.int64),
        coefficients=coefficients("decode"),
    )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _answer(problem: PrefillProblem | DecodeProblem, result: SolveResult) -> dict[str, Any]:
    req_ids = [r.id for r in problem.requests]
    unit_ids = [u.id for u in problem.units]
    a = result.assignment.tolist()
    return {
        "id": problem.id,
        "status": result.status.value,
        "assignment": {rid: unit_ids[j] for rid, j in zip(req_ids, a, strict=True) if j >= 0},
        "deferred": [req_ids[i] for i in result.deferred.tolist()],
        "chunks": {req_ids[i]: int(k) for i, k in result.chunks.items()},
        "objective": _finite(result.objective),
        "bound": _finite(result.bound),
        "gap": _finite(result.gap),
        "method": problem.method,
        "solve_us": round(result.wall_time_s * 1e6, 1),
    }


def _default_coefficients(phase: str) -> Any:
    from sbsopt.costmodel import load_cost_model

    model = load_cost_model()
    return model.prefill_coefficients() if phase == "prefill" else model.decode_coefficients()


def answer_problem(
    problem: PrefillProblem | DecodeProblem,
    *,
    coefficients: Callable[[str], Any] = _default_coefficients,
) -> dict[str, Any]:
    """Solve a parsed problem and return the answer object.

    Parameters
    ----------
    problem : PrefillProblem or DecodeProblem
        A problem from :func:`parse_line`.
    coefficients : callable, optional
        ``coefficients(phase)`` gives the step-cost linearisation of the phase
        (:class:`~sbsopt.costmodel.PrefillCoefficients` for ``"prefill"``,
        :class:`~sbsopt.costmodel.DecodeCoefficients` for ``"decode"``); default: the bundled
        DeepSeek-V3 on H800 cost model.

    Returns
    -------
    dict
        JSON-able: ``id``, ``status``, ``assignment`` (request id -> unit id), ``deferred``,
        ``chunks``, ``objective``, ``bound``, ``gap`` (``None`` when not finite), ``method``,
        ``solve_us``.

    Raises
    ------
    OracleError
        If the window is inconsistent in a way the schema cannot see (e.g. no unit).

    Examples
    --------
    >>> from sbsopt.costmodel import DecodeCoefficients, PrefillCoefficients
    >>> fixed = {"prefill": PrefillCoefficients(50_000.0, 80.0, 0.01, 600.0),
    ...          "decode": DecodeCoefficients(43_000.0, 45.0, 0.027)}
    >>> p = parse_line('{"id": "d", "phase": "decode", "method": "greedy", '
    ...                '"requests": [{"id": "a", "context_tokens": 4000, "kv_blocks": 63}], '
    ...                '"units": [{"id": "x", "batch_size": 0, "max_batch_size": 2, '
    ...                '"kv_blocks_used": 0, "free_kv_blocks": 100}]}')
    >>> answer_problem(p, coefficients=fixed.__getitem__)["assignment"]
    {'a': 'x'}
    """
    try:
        window = _window(problem, coefficients)
    except InvalidInputError as exc:
        raise OracleError(problem.id, exc.field, str(exc)) from None
    result = solve(window, method=problem.method, time_limit_s=problem.time_limit_ms / 1000.0,
                   seed=problem.seed)
    return _answer(problem, result)


def _error(wid: str | None, field: str | None, message: str) -> dict[str, Any]:
    return {"id": wid, "status": "error", "error": {"field": field, "message": message}}


def answer_line(
    line: bytes | str, *, coefficients: Callable[[str], Any] = _default_coefficients
) -> bytes:
    """One input line to one output line; never raises.

    Parameters
    ----------
    line : bytes or str
        One JSON problem (see :func:`parse_line`).
    coefficients : callable, optional
        As for :func:`answer_problem`.

    Returns
    -------
    bytes
        One JSON object, newline-terminated: the answer of :func:`answer_problem`, or
        ``{"id", "status": "error", "error": {"field", "message"}}`` for a rejected line or a
        failed solve.

    Examples
    --------
    >>> answer_line(b'[1, 2]')
    b'{"id":null,"status":"error","error":{"field":null,"message":"expected a JSON object, got list"}}\\n'
    """
    wid = None
    try:
        problem = parse_line(line)
        wid = problem.id
        out = answer_problem(problem, coefficients=coefficients)
    except OracleError as exc:
        out = _error(exc.wid, exc.field, exc.message)
    except Exception as exc:  # noqa: BLE001 - the server must answer every line
        out = _error(wid, None, f"internal error: {type(exc).__name__}: {exc}"[:500])
    try:
        return _ENCODER.encode(out) + b"\n"
    except (msgspec.EncodeError, UnicodeEncodeError) as exc:
        return _ENCODER.encode(_error(None, None, f"cannot encode the answer: {exc}")) + b"\n"


#: Default cap on one input line; a longer line is answered with an error and skipped.
MAX_LINE_BYTES = 64 * 2**20


def _skip_rest_of_line(stdin: BinaryIO, chunk: int) -> None:
    """Read (and drop) up to the end of the current line, ``chunk`` bytes at a time."""
    while True:
        piece = stdin.readline(chunk)
        if not piece or piece.endswith(b"\n"):
            return


def serve(
    stdin: BinaryIO,
    stdout: BinaryIO,
    *,
    coefficients: Callable[[str], Any] = _default_coefficients,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> int:
    """Answer every line of ``stdin`` on ``stdout`` (flushed per line) until EOF.

    Blank lines are skipped. A line longer than ``max_line_bytes`` is never held in memory
    whole: it gets an error answer (field ``"line"``) and the server goes on with the next
    line.

    Parameters
    ----------
    stdin, stdout : binary file-like
        Where problems are read and answers written.
    coefficients : callable, optional
        As for :func:`answer_problem`.
    max_line_bytes : int, default MAX_LINE_BYTES
        Longest line read whole.

    Returns
    -------
    int
        The number of lines answered.

    Examples
    --------
    >>> import io
    >>> out = io.BytesIO()
    >>> serve(io.BytesIO(b'{"id": "w1"}' + b" " * 100 + b"\\n[]\\n"), out, max_line_bytes=64)
    2
    >>> out.getvalue().splitlines()[0][:60]
    b'{"id":null,"status":"error","error":{"field":"line","message'
    """
    count = 0
    while True:
        line = stdin.readline(max_line_bytes + 1)
        if not line:
            return count
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            _skip_rest_of_line(stdin, max_line_bytes + 1)
            answer = _ENCODER.encode(_error(None, "line", f"input line longer than "
                                            f"{max_line_bytes} bytes (skipped)")) + b"\n"
        elif not line.strip():
            continue
        else:
            answer = answer_line(line, coefficients=coefficients)
        stdout.write(answer)
        stdout.flush()
        count += 1
