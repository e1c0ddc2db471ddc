"""The notebooks are reports: saved executed, with their plots, and still running top to bottom.

`notebooks/execute.py` saves them at full size (the docs site renders those outputs); here each
runs again at smoke size (``SBSOPT_NOTEBOOK_SMOKE=1``) on a copy, so a change that breaks one
fails the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_saved_executed_with_a_plot(path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), (
        f"{path.name} was not saved executed top to bottom in one kernel: "
        f"run `python notebooks/execute.py {path.stem}`"
    )
    assert not any(
        output.get("output_type") == "error" for cell in code for output in cell.outputs
    ), f"{path.name} is saved with an error output"
    assert any(
        "image/png" in output.get("data", {}) for cell in code for output in cell.outputs
    ), f"{path.name} shows no plot"
    assert notebook.cells[0].cell_type == "markdown"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("SBSOPT_NOTEBOOK_SMOKE", "1")  # notebooks shrink their parameters
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
