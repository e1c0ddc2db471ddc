from __future__ import annotations

import pytest

from sbsopt.errors import InvalidInputError
from sbsopt.plan import expand_grid, load_grid, plot_sweep, sweep


def _write(tmp_path, text):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_load_grid_expands_the_product(tmp_path):
    runs = load_grid(_write(tmp_path, '[base]\nlimit = 50\n[grid]\nrouter = ["sbs", "round_robin"]\n'
                                      'interval = ["fixed:5", "fixed:20"]\nseed = [0, 1, 2]\n'))
    assert len(runs) == 12 and all(r["limit"] == 50 for r in runs)
    assert len({(r["router"], r["interval"], r["seed"]) for r in runs}) == 12


@pytest.mark.parametrize("text, match", [
    ('[grid]\nwindow_size = [1, 2]\n', "window_size"),
    ('[grid]\n', "grid"),
    ('[grid]\nrouter = []\n', "grid.router"),
    ('[base]\nfoo = 1\n[grid]\nseed = [0]\n', "foo"),
    ('[grids]\nseed = [0]\n', "grids"),
    ('[grid\n', "valid TOML"),
])
def test_bad_grids_raise_typed_errors_naming_the_problem(tmp_path, text, match):
    with pytest.raises(InvalidInputError, match=match):
        load_grid(_write(tmp_path, text))


def test_missing_grid_file(tmp_path):
    with pytest.raises(InvalidInputError, match="existing TOML"):
        load_grid(tmp_path / "nope.toml")


def test_sweep_rejects_unknown_parameters_before_simulating():
    with pytest.raises(InvalidInputError, match="chunk_size"):
        sweep([{"chunk_size": 4}], backend="serial")
    with pytest.raises(InvalidInputError, match="runs"):
        sweep([], backend="serial")


def test_sweep_over_cluster_and_load_parameters_and_plot():
    runs = expand_grid({"chunk_tokens": [4096, 8192], "load": [0.3, 0.9]}, {"limit": 40, "router": "least_tokens"})
    table = sweep(runs, backend="serial")
    assert list(table.columns[:5]) == ["seed", "limit", "router", "chunk_tokens", "load"]
    assert table["requests"].eq(40).all() and table["gpus"].eq(32 * 4 + 144).all()
    ax = plot_sweep(table, x="load", y="ttft_p90_ms", hue="chunk_tokens")
    assert len(ax.get_lines()) == 2
    with pytest.raises(InvalidInputError, match="nope"):
        plot_sweep(table, x="nope")
