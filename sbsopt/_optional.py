"""Optional dependencies: which pip extra installs which module, and one way to import them.

The oracle, the window solvers and the cost model need only the core dependencies; anything
else is imported where it is used, through :func:`require`, so that a missing package fails
with a message that names the extra to install instead of a bare ``ModuleNotFoundError``.

Examples
--------
>>> from sbsopt._optional import require
>>> require("json", "sim").__name__
'json'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sbsopt.errors import MissingExtraError

__all__ = ["EXTRAS", "require", "missing_extra"]

# Top-level module -> the extra in pyproject.toml that installs it (keep the two in step:
# tests/test_extras.py checks every extra named here exists there).
EXTRAS: dict[str, str] = {
    "cvxpy": "calibrate",
    "matplotlib": "plot",
    "pandas": "sim",
    "pyarrow": "sim",
    "ray": "ray",
    "aiohttp": "serve",
}


def require(module: str, extra: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module``, or say which extra installs it.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"cvxpy"`` or ``"matplotlib.pyplot"``.
    extra : str
        The extra of ``sbsopt`` that installs the module's distribution, e.g. ``"calibrate"``.
    feature : str, optional
        What needs the module (a command or function), named first in the error message.

    Returns
    -------
    types.ModuleType
        The imported module.

    Raises
    ------
    sbsopt.errors.MissingExtraError
        If the module's top-level package is not installed. A package that is installed but
        fails while importing raises its own error: that is a broken install, not a missing extra.

    Examples
    --------
    >>> require("sbsopt_no_such_module", "plot", feature="plot_sweep")
    Traceback (most recent call last):
        ...
    sbsopt.errors.MissingExtraError: plot_sweep needs sbsopt_no_such_module, which is not installed; install it with: pip install 'sbsopt[plot]'
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        if exc.name is not None and exc.name.partition(".")[0] == top:
            raise MissingExtraError(top, extra, feature) from None
        raise


def missing_extra(exc: BaseException) -> MissingExtraError | None:
    """The :class:`~sbsopt.errors.MissingExtraError` a failed import stands for, if any.

    For code paths that import an optional package directly (``import pandas``) rather than
    through :func:`require`: the command line turns such a failure into the same message.

    Parameters
    ----------
    exc : BaseException
        The exception raised by an import.

    Returns
    -------
    sbsopt.errors.MissingExtraError or None
        ``exc`` itself if it already is one; a new one if ``exc`` is a ``ModuleNotFoundError``
        for a module listed in :data:`EXTRAS`; ``None`` otherwise.

    Examples
    --------
    >>> print(missing_extra(ModuleNotFoundError("No module named 'ray'", name="ray")))
    this feature needs ray, which is not installed; install it with: pip install 'sbsopt[ray]'
    >>> missing_extra(ModuleNotFoundError("No module named 'numpy'", name="numpy")) is None
    True
    """
    if isinstance(exc, MissingExtraError):
        return exc
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return None
    top = exc.name.partition(".")[0]
    extra = EXTRAS.get(top)
    return None if extra is None else MissingExtraError(top, extra)
