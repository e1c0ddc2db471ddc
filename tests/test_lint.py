"""House style is checked, not hoped for: ruff over the package, tests, benchmarks and notebooks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    pytest.importorskip("ruff", reason="ruff comes with the test extra")
    # The interpreter's own ruff: the venv's bin/ is not on PATH when pytest runs as `.venv/bin/python -m pytest`.
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--quiet", "sbsopt", "tests", "benchmarks", "notebooks"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
