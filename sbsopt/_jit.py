"""The one way sbsopt compiles a Numba kernel: ``njit`` with an on-disk cache outside the package.

Numba's default cache sits in a ``__pycache__`` folder beside the source file. For an installed
copy that is ``site-packages/sbsopt/...``: it fails on read-only installs, and the folders it
leaves behind survive ``pip uninstall`` and turn ``sbsopt`` into a namespace package once an
editable install replaces the regular one. So every kernel caches under one user cache folder
instead, chosen in this order:

1. ``$NUMBA_CACHE_DIR/sbsopt``, when the user set Numba's own setting;
2. ``SBSOPT_CACHE_DIR``;
3. ``$XDG_CACHE_HOME/sbsopt/numba``, else ``~/.cache/sbsopt/numba``;
4. ``<tempdir>/sbsopt-numba-<user>`` when none of those can be written.

Inside it, one sub-folder per version of the kernels' sources (see below); sub-folders of older
versions are not read again and can be deleted.

Numba picks a function's cache folder when the function is decorated, so the folder is set on
``numba.config.CACHE_DIR`` only for the decoration and restored after it: other Numba code in
the process keeps its own setting. Numba checks only the decorated function's own file to tell
whether its cache is stale, but a kernel inlines the kernels it calls from other files; so the
folder is named after a hash of every sbsopt file that compiles kernels, and changing any of
them starts a fresh cache. Numba also keys each cache by the source file's folder, so two copies
of sbsopt never read each other's machine code.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import numba
from numba.core import config as _numba_config

__all__ = ["cache_dir", "njit"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError:
        return False
    return True


_PACKAGE = Path(__file__).resolve().parent
_MARK = "from sbsopt._jit import njit"


def _kernels_digest() -> str:
    """A hash of every sbsopt source file that compiles kernels (their paths and contents)."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        text = path.read_bytes()
        if _MARK.encode() in text:
            digest.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0" + text + b"\0")
    return digest.hexdigest()[:16]


@cache
def cache_dir() -> str:
    """The folder sbsopt's compiled kernels are cached in (see the module docstring).

    Returns
    -------
    str
        An absolute path; ``""`` when even the temporary folder cannot be written, in which case
        Numba falls back to its own locations.

    Examples
    --------
    >>> import os
    >>> os.path.isabs(cache_dir()) or cache_dir() == ""
    True
    """
    candidates = []
    if _numba_config.CACHE_DIR:
        candidates.append(Path(_numba_config.CACHE_DIR) / "sbsopt")
    if os.environ.get("SBSOPT_CACHE_DIR"):
        candidates.append(Path(os.environ["SBSOPT_CACHE_DIR"]))
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    candidates.append(base / "sbsopt" / "numba")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary uid in a container
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    candidates.append(Path(tempfile.gettempdir()) / f"sbsopt-numba-{user}")
    digest = _kernels_digest()
    for path in candidates:
        if _writable(path / digest):
            return str((path / digest).resolve())
    return ""


def njit(**options: Any) -> Callable[[_F], _F]:
    """``numba.njit(cache=True, **options)`` caching into :func:`cache_dir`.

    Parameters
    ----------
    **options
        Passed to ``numba.njit`` (``nogil``, ``inline``, ``fastmath``...); ``cache`` is always on.

    Returns
    -------
    Callable
        A decorator turning a function into a cached Numba dispatcher.

    Examples
    --------
    >>> import numpy as np
    >>> from sbsopt.costmodel._kernels import interp_uniform  # compiled with ``@njit()``
    >>> float(interp_uniform(np.array([0.0, 10.0, 20.0]), 2.0, 3.0))
    15.0
    """

    def decorate(function: _F) -> _F:
        saved = _numba_config.CACHE_DIR
        _numba_config.CACHE_DIR = cache_dir()
        try:
            return numba.njit(cache=True, **options)(function)
        finally:
            _numba_config.CACHE_DIR = saved

    return decorate
