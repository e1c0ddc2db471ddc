"""Results fragments written by the benchmarks (``--markdown PATH``).

A fragment is the stamp line (UTC date, commit, the command that regenerates it, the machine)
followed by the benchmark's tables, each cell the string the benchmark prints. The results pages
include fragments with ``--8<-- "docs/results/generated/NAME.md"``; nobody types a figure.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["Table", "add_option", "line", "stamp", "write"]

ROOT = Path(__file__).resolve().parents[1]
# the run's start: the benchmarks import this module first thing
_STARTED = datetime.datetime.now(datetime.UTC)
_LOAD = os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _git(*args: str) -> str:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: no index refresh written
    done = subprocess.run(["git", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def commit() -> str:
    """``git rev-parse --short HEAD``, plus ``-dirty`` when the tree has changes (other than the
    generated fragments themselves, which a run of several benchmarks writes one by one)."""
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    changed = _git("status", "--porcelain", "--", ".", ":!docs/results/generated", ":!README.md")
    return head + ("-dirty" if changed else "")


def command(argv: Sequence[str] | None = None) -> str:
    """The command line that regenerates the run: ``python benchmarks/NAME.py ARGS``."""
    script = Path(sys.argv[0]).name
    args = sys.argv[1:] if argv is None else list(argv)
    return "python " + shlex.join([f"benchmarks/{script}", *args])


def stamp(argv: Sequence[str] | None = None) -> str:
    """One line: start date, commit, command and machine of this run."""
    date = _STARTED.strftime("%Y-%m-%d %H:%M UTC")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = "" if _LOAD is None else f", load average {_LOAD:.1f} at start"
    return (f"*Generated {date} at `{commit()}` by `{command(argv)}`; "
            f"machine: {cores} cores{load}.*")


def line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """A fixed-width printed line: ``width`` > 0 right-aligns a cell, < 0 left-aligns it."""
    return "".join(f"{c:<{-w}}" if w < 0 else f"{c:>{w}}"
                   for c, w in zip(cells, widths, strict=True))


class Table:
    """A Markdown table built row by row; each row is also returned as its printed line."""

    def __init__(self, columns: Sequence[str], align: str | None = None,
                 rows: Iterable[Sequence[object]] = ()) -> None:
        """``align``: one character per column, ``l`` or ``r`` (default: all left); ``rows``:
        cells already formatted as printed."""
        self.columns = list(columns)
        self.align = align or "l" * len(self.columns)
        if len(self.align) != len(self.columns):
            raise ValueError("one alignment character per column")
        self.rows: list[list[str]] = []
        for row in rows:
            self.add(*row)

    @property
    def head(self) -> str:
        """The header and separator lines."""
        rule = "|".join("---:" if a == "r" else "---" for a in self.align)
        return f"| {' | '.join(self.columns)} |\n|{rule}|"

    def add(self, *cells: object) -> str:
        """Append a row (cells as printed) and return its Markdown line."""
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        row = [str(c) for c in cells]
        self.rows.append(row)
        return f"| {' | '.join(row)} |"

    def markdown(self) -> str:
        return "\n".join([self.head, *(f"| {' | '.join(r)} |" for r in self.rows)])


def add_option(parser: argparse.ArgumentParser) -> None:
    """``--markdown PATH``: also write the tables as a results fragment."""
    parser.add_argument("--markdown", metavar="PATH", default=None,
                        help="also write the table(s) as a Markdown fragment with a stamp")


def write(path: str | os.PathLike | None, blocks: Sequence[str | Table],
          argv: Sequence[str] | None = None) -> None:
    """Write the stamp and ``blocks`` (text lines or tables) to ``path``; nothing if None."""
    if path is None:
        return
    parts = [stamp(argv)] + [b.markdown() if isinstance(b, Table) else b for b in blocks]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
