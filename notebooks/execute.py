"""Execute the report notebooks at full size and save them with their outputs and plots.

The docs site renders the saved outputs (it does not execute notebooks), and each notebook's
first cell states what these outputs show, so re-run this after a change that moves a figure::

    python notebooks/execute.py                 # every notebook
    python notebooks/execute.py cost_model      # one, by name

The test suite re-executes every notebook at smoke size (``SBSOPT_NOTEBOOK_SMOKE=1``) on a copy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def execute(path: Path, *, timeout_s: int = 1800) -> float:
    """Execute ``path`` in place at full size; return the wall time in seconds."""
    notebook = nbformat.read(path, as_version=4)
    # Full size, and Jupyter's inline backend so that the figures are saved as images.
    saved = {name: os.environ.pop(name, None) for name in ("SBSOPT_NOTEBOOK_SMOKE", "MPLBACKEND")}
    started = time.perf_counter()
    try:
        client = nbclient.NotebookClient(
            notebook, timeout=timeout_s, kernel_name="python3",
            resources={"metadata": {"path": str(HERE)}},
        )
        client.execute()
    finally:
        os.environ.update({name: value for name, value in saved.items() if value is not None})
    for cell in notebook.cells:  # execution counts and timings only add noise to diffs
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(notebook, path)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names without .ipynb (default: all)")
    args = parser.parse_args(argv)
    paths = sorted(HERE.glob("*.ipynb"))
    if args.names:
        known = {p.stem: p for p in paths}
        unknown = [n for n in args.names if n not in known]
        if unknown:
            parser.error(f"unknown notebook(s) {unknown}; choose from {sorted(known)}")
        paths = [known[n] for n in args.names]
    for path in paths:
        print(f"{path.name}: {execute(path):.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
