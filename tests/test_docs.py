"""The documentation site builds with warnings as errors (broken links, bad docstrings, missing
pages), and the README stays a user's page: short, no history."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HISTORY = re.compile(r"rounds?\s+before|this\s+round|earlier\s+rounds|previous\s+round", re.I)


def test_docs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("mkdocs_jupyter")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_is_short_and_has_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    commands = [line for line in text.splitlines() if line.startswith("python3 -m venv .venv && ")]
    assert len(commands) == 2, commands
    assert commands[1] == (
        'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" && '
        ".venv/bin/python -m pytest -q -n 2"
    )
    run_ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in run_ci, ".ci/run must run the README's second command verbatim"


def test_no_round_history_outside_the_changelog() -> None:
    paths = [ROOT / "README.md", *sorted((ROOT / "sbsopt").rglob("*.py"))]
    found = {str(p.relative_to(ROOT)): HISTORY.findall(p.read_text()) for p in paths}
    assert not {k: v for k, v in found.items() if v}, "history goes to CHANGELOG.md"


def test_changelog_exists() -> None:
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_readme_headline_tables_are_the_generated_fragments() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_readme", ROOT / "benchmarks" / "sync_readme.py")
    assert spec is not None and spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    text = (ROOT / "README.md").read_text()
    assert sync.BLOCK.search(text), "the README's headline tables come from docs/results/generated"
    assert sync.synced(text) == text, "run python benchmarks/sync_readme.py"
