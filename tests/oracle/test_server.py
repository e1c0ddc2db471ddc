"""The oracle protocol in process: schema, answers, errors naming fields."""

from __future__ import annotations

import io
import json

import pytest

from sbsopt.costmodel import DecodeCoefficients, PrefillCoefficients
from sbsopt.oracle import answer_line, parse_line, serve

# Round numbers near the H800 fit, fixed so that the answers do not move with a refit.
_COEFFS = {
    "prefill": PrefillCoefficients(base_us=50_000.0, alpha_us_per_token=80.0, beta_us_per_pair=0.01,
                                   gamma_us_per_request=600.0),
    "decode": DecodeCoefficients(base_us=43_000.0, us_per_request=45.0, us_per_kv_token=0.027),
}


def _ask(obj: dict | str) -> dict:
    line = obj if isinstance(obj, str) else json.dumps(obj)
    out = answer_line(line.encode(), coefficients=_COEFFS.__getitem__)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    return json.loads(out)


def _prefill(**extra) -> dict:
    problem = {
        "id": "w1", "phase": "prefill", "method": "greedy", "time_limit_ms": 50,
        "requests": [{"id": "r1", "new_tokens": 1200, "cached_tokens": 0, "arrival_s": 0.0},
                     {"id": "r2", "new_tokens": 9000, "cached_tokens": 100, "arrival_s": 0.1,
                      "deadline_s": 0.05}],
        "units": [{"id": "u0", "load_tokens": 0, "capacity_tokens": 16384, "free_kv_blocks": 1000},
                  {"id": "u1", "load_tokens": 8000, "capacity_tokens": 16384,
                   "free_kv_blocks": 1000}],
    }
    problem.update(extra)
    return problem


def test_prefill_answer_maps_ids() -> None:
    for method in ("greedy", "cpsat", "auto"):
        answer = _ask(_prefill(method=method, now_s=0.2))
        assert answer["id"] == "w1" and answer["method"] == method
        assert answer["status"] in {"optimal", "feasible", "timeout"}
        assert set(answer["assignment"]) | set(answer["deferred"]) == {"r1", "r2"}
        assert answer["assignment"]["r2"] == "u0"  # the guarded 9000-token request fits only u0
        assert answer["objective"] >= answer["bound"] and answer["solve_us"] > 0


def test_decode_answer() -> None:
    answer = _ask({"id": "d", "phase": "decode", "method": "cpsat", "seed": 3,
                   "requests": [{"id": "a", "context_tokens": 4000, "kv_blocks": 63}],
                   "units": [{"id": "x", "batch_size": 1, "max_batch_size": 2,
                              "kv_blocks_used": 5, "free_kv_blocks": 10},
                             {"id": "y", "batch_size": 0, "max_batch_size": 2,
                              "kv_blocks_used": 0, "free_kv_blocks": 100}]})
    assert answer["assignment"] == {"a": "y"} and answer["status"] == "optimal"


@pytest.mark.parametrize(("line", "wid", "field"), [
    ("not json", None, None),
    (json.dumps(_prefill(phase="verify")), "w1", "phase"),
    (json.dumps(_prefill(method="simplex")), "w1", "method"),
    (json.dumps(_prefill(time_limit_ms=-1)), "w1", "time_limit_ms"),
    (json.dumps(_prefill(units=[])), "w1", "capacity_tokens"),
    (json.dumps(_prefill(requests=[{"id": "r", "new_tokens": 1, "cached_tokens": 0}])), "w1",
     "requests[0].arrival_s"),
    (json.dumps(_prefill()).replace('"arrival_s": 0.0', '"arrival_s": NaN'), "w1",
     "requests[0].arrival_s"),
    (json.dumps(_prefill()).replace('"r2"', '"r1"'), "w1", "requests"),
])
def test_bad_lines_get_one_error_naming_the_field(line: str, wid, field) -> None:
    answer = _ask(line)
    assert answer["status"] == "error" and answer["id"] == wid
    assert answer["error"]["message"]
    if field is None:
        assert answer["error"]["field"] is None
    else:
        assert field in answer["error"]["field"]


def test_parse_line_gives_typed_structs() -> None:
    problem = parse_line(json.dumps(_prefill()))
    assert problem.requests[1].deadline_s == 0.05 and problem.units[1].load_tokens == 8000


def test_serve_answers_every_line_until_eof() -> None:
    lines = [json.dumps(_prefill()), "", "{]", json.dumps(_prefill(id="w2"))]
    stdin = io.BytesIO(("\n".join(lines) + "\n").encode())
    stdout = io.BytesIO()
    assert serve(stdin, stdout, coefficients=_COEFFS.__getitem__) == 3
    answers = [json.loads(x) for x in stdout.getvalue().splitlines()]
    assert [a["id"] for a in answers] == ["w1", None, "w2"]
    assert [a["status"] == "error" for a in answers] == [False, True, False]
