"""The CLI's failure contract: bad input -> one line on stderr and exit 2; internal failure ->
one line and exit 1; never a traceback unless ``SBSOPT_DEBUG`` is set."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import types
from pathlib import Path

import click
import pytest

from sbsopt import cli as cli_module
from sbsopt.errors import (
    InvalidInputError,
    ModelCardError,
    SimulationError,
    SolverError,
    TraceFormatError,
)

_FAKE = "sbsopt_reliability_fake_command"
# The console script, run by this interpreter (``python -m sbsopt.cli`` has no __main__).
_ENTRY = "import sys; from sbsopt.cli import main; sys.exit(main())"


def _run(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    environment.pop("SBSOPT_DEBUG", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", _ENTRY, *args], input=stdin, capture_output=True,
        text=True, timeout=300, env=environment, cwd=Path(__file__).resolve().parent,
    )


def _one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("sbsopt: "), stderr
    return lines[0]


# --------------------------------------------------------------------------- the wrapper itself
@pytest.fixture
def failing_command(monkeypatch: pytest.MonkeyPatch):
    """Register a throwaway subcommand ``boom`` that raises whatever the test sets."""
    holder: dict[str, BaseException] = {}

    @click.command("boom")
    def boom() -> None:
        raise holder["error"]

    module = types.ModuleType(_FAKE)
    module.__spec__ = importlib.machinery.ModuleSpec(_FAKE, None)
    module.boom = boom
    monkeypatch.setitem(sys.modules, _FAKE, module)
    monkeypatch.setitem(cli_module._COMMANDS, "boom", f"{_FAKE}:boom")
    monkeypatch.delenv("SBSOPT_DEBUG", raising=False)
    return holder


@pytest.mark.parametrize(
    ("error", "code", "needle"),
    [
        (InvalidInputError("requests[3].new_tokens", -5, "a non-negative integer"), 2,
         "requests[3].new_tokens = -5"),
        (ModelCardError("h800.toml", "hbm_gb", -80, "a positive number"), 2, "h800.toml"),
        (TraceFormatError("t.csv", 17, "ContextTokens", "abc", "an integer"), 2, "t.csv:17"),
        (SimulationError("completed + rejected + in_flight != requests"), 1, "in_flight"),
        (SolverError("CP-SAT returned MODEL_INVALID"), 1, "MODEL_INVALID"),
        (RuntimeError("something broke"), 1, "RuntimeError"),
        (ZeroDivisionError("division by zero"), 1, "ZeroDivisionError"),
        (KeyError("missing"), 1, "KeyError"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_errors_become_one_line_and_an_exit_code(
    failing_command: dict, capsys: pytest.CaptureFixture, error: BaseException, code: int,
    needle: str,
) -> None:
    failing_command["error"] = error
    assert cli_module.main(["boom"]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert needle in _one_line_error(captured.err)


def test_debug_env_adds_the_traceback(
    failing_command: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_command["error"] = RuntimeError("with traceback")
    monkeypatch.setenv("SBSOPT_DEBUG", "1")
    assert cli_module.main(["boom"]) == 1
    assert "Traceback" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real commands
def test_unknown_command_is_bad_input() -> None:
    result = _run("no-such-command")
    assert result.returncode == 2
    _one_line_error(result.stderr)


@pytest.mark.parametrize("name", sorted(cli_module._COMMANDS))
def test_unknown_option_is_bad_input(name: str) -> None:
    result = _run(name, "--definitely-not-an-option")
    assert result.returncode == 2, result.stderr
    _one_line_error(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize("name", sorted(cli_module._COMMANDS))
def test_help_works(name: str) -> None:
    result = _run(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def _bad_trace(tmp_path: Path) -> str:
    path = tmp_path / "broken.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,abc,12\n")
    return str(path)


_BAD_INPUT = [
    ("oracle", ["--ep", "0"]),
    ("oracle", ["--model", "no-such-model"]),
    ("oracle", ["--hardware", "no-such-gpu"]),
    ("simulate", ["--trace", "/nonexistent/trace.csv", "--limit", "10"]),
    ("simulate", ["--trace", "{bad_trace}", "--limit", "10"]),
    ("simulate", ["--trace", "no-such-trace-name", "--limit", "10"]),
    ("simulate", ["--trace", "azure-conv", "--limit", "-5"]),
    ("simulate", ["--trace", "azure-conv", "--limit", "20", "--rate", "nan"]),
    ("simulate", ["--trace", "azure-conv", "--limit", "20", "--rate", "-1"]),
    ("simulate", ["--trace", "azure-conv", "--limit", "20", "--prefill-instances", "0"]),
    ("simulate", ["--trace", "azure-conv", "--limit", "20", "--interval", "bogus"]),
    ("simulate", ["--trace", "azure-conv", "--limit", "20", "--ttft-slo-ms", "-3"]),
    ("simulate", ["--trace", "azure-conv", "--limit", "20", "--tpot-slo-ms", "nan"]),
    ("plan", ["--limit", "20", "--prefill-instances", "-1"]),
    ("plan", ["--limit", "20", "--workers", "0"]),
    ("plan", ["--limit", "20", "--router", "bogus"]),
    ("plan", ["--limit", "20", "--trace", "{bad_trace}"]),
]


@pytest.mark.parametrize(("name", "args"), _BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_input_to_a_real_command_exits_2_with_one_line(
    tmp_path: Path, name: str, args: list[str]
) -> None:
    argv = [a.replace("{bad_trace}", _bad_trace(tmp_path)) for a in args]
    result = _run(name, *argv)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    _one_line_error(result.stderr)
