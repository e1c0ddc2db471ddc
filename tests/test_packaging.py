"""Packaging: every subpackage ships, and the bundled data is reachable after install."""

from __future__ import annotations

import tomllib
from pathlib import Path

from sbsopt._resources import calibration_dir, traces_dir

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "sbsopt").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools].packages: {sorted(found - listed)}"


def test_bundled_cards_and_traces_are_reachable() -> None:
    assert (calibration_dir() / "dsv3_profile_prefill_kernels_ep32.csv").is_file()
    assert (traces_dir() / "AzureLLMInferenceTrace_conv.csv").is_file()
    assert "CC-BY 4.0" in (traces_dir() / "README.md").read_text()
