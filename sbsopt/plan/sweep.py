"""Parameter sweeps: a grid (``grid.toml``) -> one simulation per point -> a tidy table and a plot."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path
from typing import Any

from sbsopt._optional import require
from sbsopt.errors import InvalidInputError
from sbsopt.plan.backends import run_tasks
from sbsopt.plan.runs import RUN_PARAMETERS, check_run_params, run_one

__all__ = ["expand_grid", "load_grid", "sweep", "plot_sweep"]


def expand_grid(grid: dict[str, Any], base: dict[str, Any] | None = None) -> list[dict]:
    """All combinations of ``grid`` (name -> list of values) on top of ``base`` (name -> value).

    Raises :class:`InvalidInputError` naming an unknown parameter, an empty value list or an
    empty grid. A scalar grid value is a one-value list.

    Examples
    --------
    >>> expand_grid({"router": ["sbs", "round_robin"], "seed": [0, 1]}, {"limit": 50})[1]
    {'limit': 50, 'router': 'sbs', 'seed': 1}
    """
    base = dict(base or {})
    check_run_params(base, field="base parameter")
    check_run_params(grid, field="grid parameter")
    if not grid:
        raise InvalidInputError("grid", grid, f"at least one parameter with values, among {', '.join(RUN_PARAMETERS)}")
    axes = {}
    for name, values in grid.items():
        values = list(values) if isinstance(values, list | tuple) else [values]
        if not values:
            raise InvalidInputError(f"grid.{name}", values, "a non-empty list of values")
        axes[name] = values
    return [{**base, **dict(zip(axes, combo, strict=True))} for combo in itertools.product(*axes.values())]


def load_grid(path: str | Path) -> list[dict]:
    """Read a sweep grid from TOML: a ``[grid]`` table of lists, an optional ``[base]`` table.

    ``grid.toml``::

        [base]
        trace = "azure-conv"
        limit = 200
        rate = 20.0

        [grid]
        router = ["sbs", "least_tokens"]
        interval = ["fixed:5", "fixed:20"]
        seed = [0, 1]
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError("grid", str(path), "an existing TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError("grid", str(path), f"valid TOML ({exc})") from None
    unknown = set(data) - {"grid", "base"}
    if unknown:
        raise InvalidInputError("grid table", sorted(unknown)[0], "[grid] or [base]")
    return expand_grid(data.get("grid", {}), data.get("base", {}))


def sweep(
    runs: list[dict] | dict,
    *,
    base: dict | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    runner=None,
):
    """Simulate every run and return a tidy :class:`pandas.DataFrame` (one row per run).

    Parameters
    ----------
    runs : list of dict or dict
        Run parameters (:func:`load_grid`), or a grid dict expanded with :func:`expand_grid`.
    base : dict, optional
        Parameters shared by every run (only with a grid dict).
    backend, workers, address, progress
        See :func:`sbsopt.plan.run_tasks`. The table is identical for every backend and worker
        count: each run's seed is one of its parameters (column ``seed``).
    runner : Runner, optional
        An open :class:`~sbsopt.plan.Runner` to reuse (then the four options above are ignored).
    """
    pd = require("pandas", "sim", feature="run_sweep")

    if isinstance(runs, dict):
        runs = expand_grid(runs, base)
    elif base is not None:
        raise InvalidInputError("base", base, "None when runs is a list of runs")
    if not runs:
        raise InvalidInputError("runs", runs, "at least one run")
    for run in runs:
        check_run_params(run)
    tasks = [{"seed": 0, **r} for r in runs]
    if runner is not None:
        rows = runner.map(run_one, tasks, description="sweep")
    else:
        rows = run_tasks(run_one, tasks, backend=backend, workers=workers, address=address, progress=progress,
                         description="sweep")
    return pd.DataFrame(rows)


def plot_sweep(table, *, x: str, y: str = "ttft_p90_ms", hue: str | None = None, ax=None):
    """Line plot of ``y`` against ``x`` (mean over seeds), one line per ``hue`` value; returns the axes."""
    plt = require("matplotlib.pyplot", "plot", feature="plot_sweep")

    for name in (x, y, hue):
        if name is not None and name not in table.columns:
            raise InvalidInputError("column", name, f"one of {', '.join(map(str, table.columns))}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    groups = [(None, table)] if hue is None else table.groupby(hue, sort=True)
    for key, part in groups:
        mean = part.groupby(x, sort=True)[y].mean()
        ax.plot(mean.index, mean.to_numpy(), marker="o", label=None if key is None else f"{hue}={key}")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if hue is not None:
        ax.legend(fontsize="small")
    return ax
