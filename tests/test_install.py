"""Installing: a regular install leaves nothing behind once removed, so the README's two commands
work in either order in one clone.

The failure this guards against: Numba's default cache wrote ``__pycache__/*.nbi`` files into
``site-packages/sbsopt/``; ``pip`` does not record them, so after the editable install replaced
the regular one they made ``sbsopt`` a namespace package for any process outside the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Compiles one cost-model kernel and one window kernel from the installed copy.
_USE_KERNELS = """
import numpy as np
from sbsopt.costmodel._kernels import interp_uniform
from sbsopt.window import greedy
interp_uniform(np.arange(3.0), 1.0, 0.5)
import sbsopt.costmodel, sbsopt.window
assert sbsopt.costmodel.__file__ is not None, "sbsopt.costmodel is a namespace package"
print(sbsopt.__file__)
"""


def _recorded(target: Path) -> set[Path]:
    (record,) = target.glob("sbsopt-*.dist-info/RECORD")
    return {target / line.split(",")[0] for line in record.read_text().splitlines() if line}


def test_regular_install_writes_nothing_pip_cannot_remove(tmp_path: Path) -> None:
    target, cache, elsewhere = tmp_path / "site", tmp_path / "cache", tmp_path / "cwd"
    elsewhere.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "XDG_CACHE_HOME": str(cache)}
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("SBSOPT_CACHE_DIR", None)
    run = subprocess.run(
        [sys.executable, "-c", _USE_KERNELS], cwd=elsewhere, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()).is_relative_to(target)
    assert list((cache / "sbsopt" / "numba").rglob("*.nbi")), "kernels were not cached"

    left = {
        path for path in (target / "sbsopt").rglob("*")
        if path.is_file() and path not in _recorded(target) and path.suffix != ".pyc"
    }
    assert not left, f"files pip would not remove: {sorted(map(str, left))[:5]}"


@pytest.mark.slow
def test_readme_commands_in_either_order(tmp_path: Path) -> None:
    """Command 1 then an editable install (command 2's set-up) in one clone, then the reverse."""
    clone = tmp_path / "sbsopt"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    venv_python = clone / ".venv" / "bin" / "python"
    regular = f"{sys.executable} -m venv .venv && .venv/bin/pip install -q ."
    editable = f"{sys.executable} -m venv .venv && .venv/bin/pip install -q -e '.[test]'"
    check = [str(venv_python), "-c", _USE_KERNELS]
    for order in ((regular, editable), (editable, regular)):
        for setup in order:
            subprocess.run(setup, shell=True, cwd=clone, check=True, timeout=1500)
            run = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, f"after `{setup}`: {run.stderr}"
