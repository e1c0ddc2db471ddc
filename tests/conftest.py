"""Helpers shared by several test folders live in ``tests/`` (not a package): put it on the path."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
