"""``sbsopt serve``, ``mock-engine`` and ``replay`` on the command line: exit codes, output, signals."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from sbsopt.cli import main

_CLI = "import sys; from sbsopt.cli import main; sys.exit(main(sys.argv[1:]))"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("argv", [
    ["serve", "--port", "0"],                                          # no workers
    ["serve", "--workers", "localhost:1"],                             # not a URL
    ["serve", "--workers", "http://127.0.0.1:9", "--policy", "bogus"],
    ["serve", "--workers", "http://127.0.0.1:9", "--interval", "fixed:-1"],
    ["serve", "--workers", "http://127.0.0.1:9", "--port", "70000"],
    ["mock-engine", "--ep", "2"],                                      # DeepSeek-V3 leaves no KV room
    ["mock-engine", "--speed", "0"],
    ["replay", "--trace", "azure-code", "--url", "not-a-url"],
    ["replay", "--trace", "azure-code", "--url", "http://127.0.0.1:9", "--rate", "-1"],
    ["replay", "--trace", "azure-code", "--url", "http://127.0.0.1:9", "--out", "x.parquet"],
])
def test_bad_flags_exit_2_with_one_line(argv, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sbsopt: ")


@pytest.mark.parametrize("argv", [
    ["serve", "--workers", "http://127.0.0.1:{port}", "--port", "0"],
    ["replay", "--trace", "azure-code", "--limit", "2", "--url", "http://127.0.0.1:{port}"],
])
def test_unreachable_url_exits_2(argv, capsys) -> None:
    port = _free_port()
    assert main([a.format(port=port) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0] and "reachable" in err[0]


def test_missing_aiohttp_names_the_extra(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    assert main(["replay", "--trace", "azure-code", "--limit", "1", "--url", "http://127.0.0.1:9"]) == 1
    assert "pip install 'sbsopt[serve]'" in capsys.readouterr().err


def test_mock_engine_replay_json_and_csv_then_sigterm(tmp_path, capsys) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", _CLI, "mock-engine", "--port", str(port), "--speed", "50"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        out = tmp_path / "requests.csv"
        code = main(["replay", "--trace", "azure-code", "--limit", "20", "--rate", "50", "--time-scale", "50",
                     "--url", url, "--json", "--out", str(out)])
        assert code == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["requests"] == 20 and summary["completed"] + summary["rejected"] + summary["in_flight"] == 20
        assert summary["completed"] == 20
        for key in ("ttft_ms", "tpot_ms"):
            assert set(summary[key]) == {"p50", "p90", "p99", "mean"} and summary[key]["p50"] > 0
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 20 and {r["status"] for r in rows} == {"completed"}
        assert main(["replay", "--trace", "azure-code", "--limit", "3", "--rate", "50", "--time-scale", "50",
                     "--url", url]) == 0
        table = capsys.readouterr().out
        assert "TTFT mean" in table and "3/0/0" in table
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
