"""In-process fuzzing of ``sbsopt.oracle.answer_line`` with Hypothesis.

Valid problems are mutated at random paths (a field replaced by any JSON value, including
NaN/Infinity and numbers beyond int64, or deleted) and random bytes are thrown at it.  Every
line must come back as one newline-terminated JSON object that is either a correct answer or a
validation error; an ``internal error`` answer means a bad value slipped past validation into
the solver, and fails the test.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbsopt import oracle


def _load_fuzz_module():
    path = Path(__file__).resolve().parent / "test_oracle_fuzz.py"
    spec = importlib.util.spec_from_file_location("sbsopt_reliability_oracle_fuzz", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fuzz = _load_fuzz_module()
_SETTINGS = {"deadline": None, "derandomize": True,
             "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}

_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-3, 100_000),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["prefill", "decode", "greedy", "cpsat", "auto", "u0", "r1", ""]),
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10,
)


def _paths(problem: dict) -> list[tuple]:
    out: list[tuple] = [(key,) for key in problem]
    out += [("seed",), ("now_s",), ("time_limit_ms",)]
    for group in ("requests", "units"):
        for k, item in enumerate(problem[group]):
            out.append((group, k))
            out += [(group, k, key) for key in item]
            out.append((group, k, "deadline_s"))
            out.append((group, k, "kv_blocks"))
    return out


@st.composite
def mutated_lines(draw: st.DrawFn) -> tuple[str, dict]:
    base = _fuzz._prefill("m") if draw(st.booleans()) else _fuzz._decode("m")
    base["method"] = draw(st.sampled_from(["greedy", "auto", "cpsat"]))
    base["time_limit_ms"] = 20
    problem = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(base)))
        node = problem
        try:
            for key in path[:-1]:
                node = node[key]
            if draw(st.integers(0, 4)) == 0 and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = draw(_JSON)
        except (KeyError, IndexError, TypeError):
            continue
    return json.dumps(problem, allow_nan=True), problem


def _check_line(raw: bytes, line: str | bytes, problem: dict | None) -> None:
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw[:300]
    answer = json.loads(raw)
    assert isinstance(answer, dict)
    if answer.get("status") == "error":
        error = answer["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert "internal error" not in error["message"], (line[:500], answer)
    else:
        assert problem is not None, (line[:500], answer)
        _fuzz.check_answer(problem, answer)


@settings(max_examples=250, **_SETTINGS)
@given(case=mutated_lines())
def test_mutated_problems_get_an_answer_or_a_validation_error(case: tuple[str, dict]) -> None:
    line, problem = case
    _check_line(oracle.answer_line(line.encode()), line, problem)


@settings(max_examples=300, **_SETTINGS)
@given(data=st.one_of(st.binary(max_size=300), _JSON.map(lambda v: json.dumps(v).encode())))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    _check_line(oracle.answer_line(data), data, None)
