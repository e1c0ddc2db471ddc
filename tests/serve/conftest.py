"""The serve tests need aiohttp; their helpers live in ``_servekit`` next to this file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="aiohttp is not installed (pip install 'sbsopt[serve]')")

# test modules import the helpers as ``_servekit`` (tests/ is not a package)
sys.path.insert(0, str(Path(__file__).parent))
