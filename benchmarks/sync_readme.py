"""Copy results fragments into the README's headline section, so its tables are generated too.

Each block in README.md between ``<!-- fragment: PATH -->`` and ``<!-- /fragment -->`` is replaced
by the fragment at PATH (written by a benchmark's ``--markdown``). ``--check`` only reports
whether the README is in step (tests/test_docs.py runs the same check).

Run: ``python benchmarks/sync_readme.py [--check]``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- fragment: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /fragment -->)", re.S)


def synced(readme: str, root: Path = ROOT) -> str:
    """``readme`` with every fragment block holding its fragment's current text."""
    return BLOCK.sub(lambda m: m[1] + (root / m["path"]).read_text(encoding="utf-8") + m[4], readme)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is out of step")
    args = parser.parse_args()
    path = ROOT / "README.md"
    text = path.read_text(encoding="utf-8")
    new = synced(text)
    if args.check:
        if new != text:
            print("README.md is out of step with docs/results/generated: run benchmarks/sync_readme.py",
                  file=sys.stderr)
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
