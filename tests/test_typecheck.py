"""Types are checked, not hoped for: mypy over the package with the settings in pyproject.toml."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cache_dir(tmp_path: Path) -> Path:
    """A persistent cache outside the repository (a cold run takes about 40 s, a warm one 2)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sbsopt" / "mypy"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        return tmp_path / "mypy"
    return base if os.access(base, os.W_OK) else tmp_path / "mypy"


def test_mypy_is_clean(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it comes with the test extra)")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(_cache_dir(tmp_path)), "--no-color-output",
         "--no-error-summary"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    errors = [line for line in result.stdout.splitlines() if re.match(r"^\S+:\d+: error:", line)]
    per_file = Counter(line.split(":", 1)[0] for line in errors)
    summary = ", ".join(f"{path} {count}" for path, count in sorted(per_file.items()))
    assert result.returncode == 0, (
        f"{len(errors)} mypy errors ({summary}):\n" + (result.stdout + result.stderr)[-8000:]
    )
