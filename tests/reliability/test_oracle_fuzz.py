"""``sbsopt oracle`` under attack: malformed lines, huge lines, long runs.

Every malformed line must get exactly one JSON error object on one output line, and the very
next valid line must still be answered correctly (the answer is checked against the request:
every request assigned or deferred exactly once, capacities and KV limits respected).  Memory
of the child process (``VmRSS`` from ``/proc/<pid>/status``) must not grow across a long mixed
stream; the 100,000-line run is marked ``slow``, a shorter one runs by default.
"""

from __future__ import annotations

import copy
import json
import math
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

# The console script, run by this interpreter (``python -m sbsopt.cli`` has no __main__).
_ENTRY = "import sys; from sbsopt.cli import main; sys.exit(main())"
_REPLY_TIMEOUT_S = 60.0
_ANSWER_STATUSES = {"optimal", "feasible", "timeout", "infeasible"}
_REQUIRED_ANSWER_KEYS = {
    "id", "status", "assignment", "deferred", "chunks", "objective", "bound", "gap", "method",
    "solve_us",
}


# --------------------------------------------------------------------------- valid problems
def _prefill(wid: str = "w1", *, method: str = "greedy") -> dict:
    return {
        "id": wid, "phase": "prefill", "method": method, "time_limit_ms": 50,
        "requests": [
            {"id": "r1", "new_tokens": 1200, "cached_tokens": 0, "arrival_s": 0.0},
            {"id": "r2", "new_tokens": 3000, "cached_tokens": 512, "arrival_s": 0.01},
            {"id": "r3", "new_tokens": 9000, "cached_tokens": 0, "arrival_s": 0.02},
            {"id": "r4", "new_tokens": 20000, "cached_tokens": 0, "arrival_s": 0.03},
        ],
        "units": [
            {"id": "u0", "load_tokens": 0, "capacity_tokens": 16384, "free_kv_blocks": 1000},
            {"id": "u1", "load_tokens": 4096, "capacity_tokens": 16384, "free_kv_blocks": 1000},
        ],
    }


def _decode(wid: str = "d1", *, method: str = "greedy") -> dict:
    return {
        "id": wid, "phase": "decode", "method": method, "time_limit_ms": 50,
        "requests": [
            {"id": "a", "context_tokens": 4000, "kv_blocks": 63},
            {"id": "b", "context_tokens": 900, "kv_blocks": 15},
            {"id": "c", "context_tokens": 12000, "kv_blocks": 188},
        ],
        "units": [
            {"id": "x", "batch_size": 10, "max_batch_size": 64, "kv_blocks_used": 500,
             "free_kv_blocks": 200},
            {"id": "y", "batch_size": 63, "max_batch_size": 64, "kv_blocks_used": 900,
             "free_kv_blocks": 5000},
        ],
    }


def check_answer(problem: dict, answer: dict) -> None:
    """Assert that ``answer`` is a correct oracle answer to the valid ``problem``."""
    assert answer.get("status") in _ANSWER_STATUSES, answer
    assert _REQUIRED_ANSWER_KEYS <= set(answer), sorted(_REQUIRED_ANSWER_KEYS - set(answer))
    assert answer["id"] == problem["id"]
    # "auto" may report which backend won, e.g. "auto:cpsat".
    assert str(answer["method"]).split(":")[0] == problem.get("method", "auto")
    request_ids = [r["id"] for r in problem["requests"]]
    unit_ids = {u["id"] for u in problem["units"]}
    assignment, deferred = answer["assignment"], answer["deferred"]
    assert set(assignment) | set(deferred) == set(request_ids), "a request was lost"
    assert not set(assignment) & set(deferred), "a request is both assigned and deferred"
    assert len(deferred) == len(set(deferred))
    assert set(assignment.values()) <= unit_ids
    chunks = answer["chunks"]
    assert set(chunks) <= set(assignment), "a chunk for a request that is not assigned"
    if answer["objective"] is not None and answer["bound"] is not None:
        objective, bound = float(answer["objective"]), float(answer["bound"])
        assert objective >= bound - 1e-6 * max(1.0, abs(bound))
    if answer["status"] == "infeasible":
        return
    by_id = {r["id"]: r for r in problem["requests"]}
    for unit in problem["units"]:
        mine = [rid for rid, uid in assignment.items() if uid == unit["id"]]
        if problem["phase"] == "prefill":
            tokens = sum(int(chunks.get(rid, by_id[rid]["new_tokens"])) for rid in mine)
            room = unit["capacity_tokens"] - unit["load_tokens"]
            assert tokens <= max(room, 0), (unit, mine, chunks)
            for rid in mine:
                if rid in chunks:
                    assert 0 < int(chunks[rid]) < by_id[rid]["new_tokens"]
        else:
            assert unit["batch_size"] + len(mine) <= unit["max_batch_size"], (unit, mine)
            blocks = sum(by_id[rid]["kv_blocks"] for rid in mine)
            assert blocks <= unit["free_kv_blocks"], (unit, mine)


# --------------------------------------------------------------------------- the corpus
def _with(problem: dict, path: tuple, value: object) -> dict:
    out = copy.deepcopy(problem)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _without(problem: dict, path: tuple) -> dict:
    out = copy.deepcopy(problem)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def _dumps(obj: object) -> str:
    # allow_nan: JSON lines that carry NaN / Infinity literals, as a sloppy client would send.
    return json.dumps(obj, allow_nan=True, ensure_ascii=False)


def malformed_corpus() -> list[tuple[str, str, object, str | None]]:
    """(name, line, expected answer id, a substring the error field must contain or None).

    The expected id is the request's ``id`` when it could be read, ``None`` otherwise; the
    special value ``...`` means "either".
    """
    p, d = _prefill("bad"), _decode("badd")
    cases: list[tuple[str, str, object, str | None]] = [
        ("not json", "this is not json", None, None),
        ("truncated json", _dumps(p)[:-7], None, None),
        ("json array", "[1, 2, 3]", None, None),
        ("json number", "42", None, None),
        ("json string", '"prefill"', None, None),
        ("json null", "null", None, None),
        ("empty object", "{}", ..., None),
        ("nested 100k deep", "[" * 100_000 + "]" * 100_000, None, None),
        ("NUL bytes", '{"id": "z\u0000", "phase": "prefill"' + "\u0000}", ..., None),
        ("missing phase", _dumps(_without(p, ("phase",))), "bad", "phase"),
        ("missing requests", _dumps(_without(p, ("requests",))), "bad", "requests"),
        ("missing units", _dumps(_without(p, ("units",))), "bad", "units"),
        ("missing new_tokens", _dumps(_without(p, ("requests", 0, "new_tokens"))), "bad",
         "new_tokens"),
        ("missing unit capacity", _dumps(_without(p, ("units", 1, "capacity_tokens"))), "bad",
         "capacity_tokens"),
        ("missing decode kv_blocks", _dumps(_without(d, ("requests", 2, "kv_blocks"))), "badd",
         "kv_blocks"),
        ("missing max_batch_size", _dumps(_without(d, ("units", 0, "max_batch_size"))), "badd",
         "max_batch_size"),
        ("unknown phase", _dumps(_with(p, ("phase",), "verify")), "bad", "phase"),
        ("unknown method", _dumps(_with(p, ("method",), "simplex")), "bad", "method"),
        ("phase wrong type", _dumps(_with(p, ("phase",), 1)), "bad", "phase"),
        ("requests not a list", _dumps(_with(p, ("requests",), {"r1": 1})), "bad", "requests"),
        ("units is a string", _dumps(_with(p, ("units",), "u0,u1")), "bad", "units"),
        ("request is a list", _dumps(_with(p, ("requests", 0), [1200, 0, 0.0])), "bad",
         "requests"),
        ("new_tokens string", _dumps(_with(p, ("requests", 0, "new_tokens"), "1200")), "bad",
         "new_tokens"),
        ("new_tokens with a unit", _dumps(_with(p, ("requests", 0, "new_tokens"), "1.2k")),
         "bad", "new_tokens"),
        ("time limit with a unit", _dumps(_with(p, ("time_limit_ms",), "50ms")), "bad",
         "time_limit_ms"),
        ("new_tokens bool", _dumps(_with(p, ("requests", 1, "new_tokens"), True)), "bad",
         "new_tokens"),
        ("new_tokens null", _dumps(_with(p, ("requests", 1, "new_tokens"), None)), "bad",
         "new_tokens"),
        ("new_tokens fractional", _dumps(_with(p, ("requests", 1, "new_tokens"), 12.5)), "bad",
         "new_tokens"),
        ("new_tokens negative", _dumps(_with(p, ("requests", 2, "new_tokens"), -1)), "bad",
         "new_tokens"),
        ("cached negative", _dumps(_with(p, ("requests", 2, "cached_tokens"), -512)), "bad",
         "cached_tokens"),
        ("arrival NaN", _dumps(_with(p, ("requests", 0, "arrival_s"), math.nan)), "bad",
         "arrival_s"),
        ("arrival Infinity", _dumps(_with(p, ("requests", 0, "arrival_s"), math.inf)), "bad",
         "arrival_s"),
        ("arrival -Infinity", _dumps(_with(p, ("requests", 0, "arrival_s"), -math.inf)), "bad",
         "arrival_s"),
        ("capacity NaN", _dumps(_with(p, ("units", 0, "capacity_tokens"), math.nan)), "bad",
         "capacity_tokens"),
        ("load negative", _dumps(_with(p, ("units", 0, "load_tokens"), -10)), "bad",
         "load_tokens"),
        ("free kv negative", _dumps(_with(p, ("units", 0, "free_kv_blocks"), -1)), "bad",
         "free_kv_blocks"),
        ("time limit negative", _dumps(_with(p, ("time_limit_ms",), -5)), "bad",
         "time_limit_ms"),
        ("time limit NaN", _dumps(_with(p, ("time_limit_ms",), math.nan)), "bad",
         "time_limit_ms"),
        ("time limit Infinity", _dumps(_with(p, ("time_limit_ms",), math.inf)), "bad",
         "time_limit_ms"),
        ("seed negative", _dumps(_with(p, ("seed",), -3)), "bad", "seed"),
        ("seed string", _dumps(_with(p, ("seed",), "abc")), "bad", "seed"),
        ("now NaN", _dumps(_with(p, ("now_s",), math.nan)), "bad", "now_s"),
        ("deadline Infinity", _dumps(_with(p, ("requests", 0, "deadline_s"), math.inf)), "bad",
         "deadline_s"),
        ("new_tokens 10**400", _dumps(p).replace('"new_tokens": 1200', '"new_tokens": 1' + "0" * 400),
         "bad", "new_tokens"),
        ("capacity 1e400", _dumps(p).replace('"capacity_tokens": 16384', '"capacity_tokens": 1e400', 1),
         "bad", "capacity_tokens"),
        ("new_tokens 2**64", _dumps(_with(p, ("requests", 0, "new_tokens"), 2**64)), "bad",
         "new_tokens"),
        ("duplicate request ids", _dumps(_with(p, ("requests", 1, "id"), "r1")), "bad",
         "requests"),
        ("duplicate unit ids", _dumps(_with(p, ("units", 1, "id"), "u0")), "bad", "units"),
        ("duplicate decode ids", _dumps(_with(d, ("requests", 2, "id"), "a")), "badd",
         "requests"),
        ("request id missing", _dumps(_without(p, ("requests", 0, "id"))), "bad", "id"),
        ("request id object", _dumps(_with(p, ("requests", 0, "id"), {"x": 1})), "bad", "id"),
        ("unit id null", _dumps(_with(p, ("units", 0, "id"), None)), "bad", "id"),
        ("decode fields in prefill", _dumps(_with(d, ("phase",), "prefill")), "badd", None),
        ("prefill fields in decode", _dumps(_with(p, ("phase",), "decode")), "bad", None),
        ("decode batch over max", _dumps(_with(d, ("units", 0, "batch_size"), -2)), "badd",
         "batch_size"),
        ("decode max batch NaN", _dumps(_with(d, ("units", 1, "max_batch_size"), math.nan)),
         "badd", "max_batch_size"),
    ]
    return cases


def tolerated_corpus() -> list[tuple[str, dict | str]]:
    """Lines that may be answered either way (error or a correct answer), never a crash.

    A dict line must, when answered, be answered correctly (``check_answer``).
    """
    p, d = _prefill("tol"), _decode("told")
    huge_request = {"id": "huge", "new_tokens": 10**15, "cached_tokens": 10**15, "arrival_s": 1e9}
    return [
        ("unicode ids", _unicode(p)),
        ("unicode decode ids", _unicode(d)),
        ("enormous but finite numbers", _with(p, ("requests",), p["requests"] + [huge_request])),
        ("enormous capacity", _with(p, ("units", 0, "capacity_tokens"), 10**15)),
        ("enormous time limit", _with(p, ("time_limit_ms",), 1e300)),
        ("zero requests", _with(p, ("requests",), [])),
        ("zero units", _with(p, ("units",), [])),
        ("unknown extra field", _with(p, ("priority",), "high")),
        ("unknown unit field", _with(p, ("units", 0, "gpu"), "H800")),
        ("no id", _without(p, ("id",))),
        ("numeric id", _with(p, ("id",), 17)),
        ("lone surrogate id", _dumps(p).replace('"tol"', '"\\ud800"', 1)),
        ("duplicate json key", _dumps(p).replace('"phase": "prefill"',
                                                 '"phase": "decode", "phase": "prefill"')),
        ("integral floats", _with(p, ("requests", 0, "new_tokens"), 1200.0)),
        ("trailing garbage", _dumps(p) + " xyz"),
        ("leading whitespace", "   " + _dumps(p)),
        ("CRLF ending", _dumps(p) + "\r"),
    ]


def _unicode(problem: dict) -> dict:
    out = copy.deepcopy(problem)
    out["id"] = "窗口-🪟-" + problem["id"]
    names = ["r‮1", "Ωμέγα", "😀", "日本語", "é\u0301"]
    for request, name in zip(out["requests"], names, strict=False):
        request["id"] = name
    for unit, name in zip(out["units"], ["単位0", "unité\t1"], strict=False):
        unit["id"] = name
    return out


# --------------------------------------------------------------------------- the harness
class OracleProcess:
    """A running ``sbsopt oracle`` child with a line-at-a-time, time-bounded conversation."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("SBSOPT_DEBUG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, "oracle", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=Path(__file__).resolve().parent,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw)
        self._lines.put(b"")

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr.append(raw)

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def send(self, line: str | bytes) -> None:
        data = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
        assert self.proc.stdin is not None
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        try:
            raw = self._lines.get(timeout=_REPLY_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no answer within {_REPLY_TIMEOUT_S}s; stderr:\n{self.stderr}") from None
        assert raw, f"the oracle exited (code {self.proc.poll()}); stderr:\n{self.stderr}"
        assert raw.endswith(b"\n") and raw.count(b"\n") == 1
        text = raw.decode("utf-8")
        assert "Traceback" not in text
        answer = json.loads(text)
        assert isinstance(answer, dict), text
        return answer

    def ask(self, line: str | bytes) -> dict:
        self.send(line)
        return self.receive()

    def pending(self) -> int:
        return self._lines.qsize()

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as handle:
            for row in handle:
                if row.startswith("VmRSS:"):
                    return int(row.split()[1])
        raise AssertionError("no VmRSS in /proc status")

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=_REPLY_TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def oracle() -> Iterator[OracleProcess]:
    process = OracleProcess()
    yield process
    code = process.close()
    assert code == 0, process.stderr
    assert "Traceback" not in process.stderr


def _check_error(answer: dict, expected_id: object, field_part: str | None, name: str) -> None:
    assert answer.get("status") == "error", (name, answer)
    if expected_id is not ...:
        assert answer.get("id") == expected_id, (name, answer)
    error = answer.get("error")
    assert isinstance(error, dict), (name, answer)
    assert set(error) >= {"field", "message"}, (name, answer)
    assert isinstance(error["message"], str) and error["message"], (name, answer)
    assert error["field"] is None or isinstance(error["field"], str), (name, answer)
    if field_part is not None:
        assert error["field"] is not None and field_part in error["field"], (name, answer)


# --------------------------------------------------------------------------- tests
def test_valid_lines_are_answered_correctly(oracle: OracleProcess) -> None:
    for problem in (_prefill(), _decode(), _prefill("w2", method="cpsat"),
                    _decode("d2", method="auto")):
        check_answer(problem, oracle.ask(_dumps(problem)))


@pytest.mark.parametrize("case", malformed_corpus(), ids=lambda case: case[0])
def test_malformed_line_gets_one_error_then_service_continues(
    oracle: OracleProcess, case: tuple[str, str, object, str | None]
) -> None:
    name, line, expected_id, field_part = case
    _check_error(oracle.ask(line), expected_id, field_part, name)
    follow_up = _prefill(f"after-{name}")
    check_answer(follow_up, oracle.ask(_dumps(follow_up)))


@pytest.mark.parametrize("case", tolerated_corpus(), ids=lambda case: case[0])
def test_odd_but_tolerable_line(oracle: OracleProcess, case: tuple[str, dict | str]) -> None:
    name, payload = case
    answer = oracle.ask(payload if isinstance(payload, str) else _dumps(payload))
    if answer.get("status") == "error":
        _check_error(answer, ..., None, name)
    elif isinstance(payload, dict):
        check_answer(payload, answer)
    else:
        assert answer.get("status") in _ANSWER_STATUSES, (name, answer)
    follow_up = _decode(f"after-{name}")
    check_answer(follow_up, oracle.ask(_dumps(follow_up)))


def test_ten_megabyte_lines(oracle: OracleProcess) -> None:
    garbage = "x" * (10 * 2**20)
    _check_error(oracle.ask(garbage), None, None, "10 MB garbage")
    padded = _prefill("padded")
    padded["padding"] = garbage
    answer = oracle.ask(_dumps(padded))
    if answer.get("status") == "error":
        _check_error(answer, ..., None, "10 MB unknown field")
    else:
        check_answer(padded, answer)
    many = _prefill("many-ids")
    many["requests"][0]["id"] = "r" * (10 * 2**20)
    answer = oracle.ask(_dumps(many))
    if answer.get("status") == "error":
        _check_error(answer, ..., None, "10 MB id")
    else:
        check_answer(many, answer)
    follow_up = _prefill("after-10MB")
    check_answer(follow_up, oracle.ask(_dumps(follow_up)))


def test_lines_over_the_cap_are_refused_without_reading_them_whole() -> None:
    process = OracleProcess("--max-line-mb", "0.01")  # about 10 kB
    try:
        _check_error(process.ask("x" * (3 * 2**20)), None, "line", "3 MB over the cap")
        padded = _prefill("padded")
        padded["padding"] = "y" * 20_000
        _check_error(process.ask(_dumps(padded)), None, "line", "20 kB over the cap")
        follow_up = _prefill("after-cap")
        check_answer(follow_up, process.ask(_dumps(follow_up)))
    finally:
        assert process.close() == 0, process.stderr


def test_invalid_utf8_bytes(oracle: OracleProcess) -> None:
    _check_error(oracle.ask(b'{"id": "\xff\xfe", "phase": "prefill"}'), ..., None, "bad utf-8")
    follow_up = _decode("after-bad-utf8")
    check_answer(follow_up, oracle.ask(_dumps(follow_up)))


def test_eof_without_newline_is_answered_and_exits_cleanly() -> None:
    process = OracleProcess()
    problem = _prefill("last")
    assert process.proc.stdin is not None
    process.proc.stdin.write(_dumps(problem).encode())
    process.proc.stdin.close()
    assert process.proc.wait(timeout=_REPLY_TIMEOUT_S) == 0, process.stderr
    check_answer(problem, process.receive())


# --------------------------------------------------------------------------- long runs
def _mixed_stream(count: int) -> Iterator[tuple[str, dict | None]]:
    """``count`` lines cycling through valid problems and every malformed case."""
    bad = [line for _, line, _, _ in malformed_corpus() if len(line) < 10_000]
    valid = [_prefill("v-p"), _decode("v-d")]
    for k in range(count):
        if k % 3 == 2:
            yield bad[(k // 3) % len(bad)], None
        else:
            problem = valid[k % 2]
            yield _dumps(problem), problem


def _run_stream(count: int) -> tuple[int, int, int]:
    """Feed ``count`` mixed lines; return (answers, rss at 10%, rss at the end) in KiB."""
    process = OracleProcess()
    lines = list(_mixed_stream(count))
    warm = max(1, count // 10)
    rss_warm = 0
    window = 256  # bounded in-flight lines: both pipes stay far below their buffer sizes
    sent = received = 0
    try:
        while received < count:
            while sent < count and sent - received < window:
                process.send(lines[sent][0])
                sent += 1
            answer = process.receive()
            line, problem = lines[received]
            if problem is None:
                assert answer.get("status") == "error", (line[:200], answer)
            else:
                check_answer(problem, answer)
            received += 1
            if received == warm:
                rss_warm = process.rss_kib()
        rss_end = process.rss_kib()
    finally:
        code = process.close()
    assert code == 0, process.stderr
    return received, rss_warm, rss_end


def _assert_flat_memory(count: int, rss_warm: int, rss_end: int) -> None:
    # Allocator noise and lazily compiled code paths: a few MiB; a leak of even 100 bytes a
    # line would show as ~10 MiB over 100k lines.
    assert rss_end - rss_warm <= 8 * 1024, (count, rss_warm, rss_end)


def test_memory_is_flat_over_a_mixed_stream() -> None:
    count, rss_warm, rss_end = _run_stream(6_000)
    _assert_flat_memory(count, rss_warm, rss_end)


@pytest.mark.slow
def test_memory_is_flat_over_100k_lines() -> None:
    count, rss_warm, rss_end = _run_stream(100_000)
    assert count == 100_000
    _assert_flat_memory(count, rss_warm, rss_end)
