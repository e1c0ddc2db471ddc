"""Where the bundled data lives: model/hardware cards and bundled traces.

A wheel install ships ``models/`` as the package ``sbsopt.models``; in a source checkout
(editable install, or running from the repository) the same files are at ``<repo>/models``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["models_dir", "calibration_dir", "traces_dir"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def models_dir() -> Path:
    """Directory holding the model and hardware cards (``*.toml``).

    Examples
    --------
    >>> (models_dir() / "calibration").is_dir()
    True
    """
    spec = importlib.util.find_spec("sbsopt.models")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return _PACKAGE_DIR.parent / "models"


def calibration_dir() -> Path:
    """Directory holding the calibration measurements and the fitted coefficients."""
    return models_dir() / "calibration"


def traces_dir() -> Path:
    """Directory holding the bundled public request traces and their README (sources, licenses)."""
    return _PACKAGE_DIR / "data" / "traces"
