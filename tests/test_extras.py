"""Optional dependencies stay optional: the embedding path needs only the core install, and a
missing extra fails with a message that names it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sbsopt._optional import EXTRAS, missing_extra, require
from sbsopt.errors import BackendUnavailableError, MissingExtraError

ROOT = Path(__file__).resolve().parents[1]

# Imported by nothing on the embedding path, so blocked outright.
_ABSENT = ("cvxpy", "matplotlib", "ray", "pyarrow", "scipy")

# ortools.sat imports pandas itself (ortools requires it), so pandas cannot be absent; the guard
# instead fails any ``import pandas`` executed by an sbsopt module, even once pandas is loaded.
_EMBEDDER = """
import builtins, json, sys

for name in {absent!r}:
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError

_import = builtins.__import__

def _guarded(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {{}}).get("__name__") or ""
    if level == 0 and name.partition(".")[0] == "pandas" and importer.startswith("sbsopt"):
        raise ModuleNotFoundError(f"{{importer}} imports pandas", name="pandas")
    return _import(name, globals, locals, fromlist, level)

builtins.__import__ = _guarded
try:  # the guard itself works
    exec("import pandas", {{"__name__": "sbsopt.probe"}})
    raise SystemExit("the pandas guard let an sbsopt module import pandas")
except ModuleNotFoundError:
    pass

import numpy as np
import sbsopt.costmodel, sbsopt.oracle, sbsopt.window, sbsopt.workload
from sbsopt.oracle import answer_line
from sbsopt.window import PrefillWindow, solve

cm = sbsopt.costmodel.load_cost_model(ep=32)
problem = PrefillWindow.from_arrays(
    np.array([1200, 9000]), np.array([0, 100]), np.array([0.0, 0.1]),
    capacity_tokens=np.array([16384, 16384]), load_tokens=np.array([0, 8000]),
    free_kv_blocks=np.array([1000, 1000]), coefficients=cm.prefill_coefficients(),
)
result = solve(problem, method="cpsat", time_limit_s=5.0)
line = json.dumps({{
    "id": "w", "phase": "decode", "method": "greedy",
    "requests": [{{"id": "a", "context_tokens": 4000, "kv_blocks": 63}}],
    "units": [{{"id": "x", "batch_size": 0, "max_batch_size": 2, "kv_blocks_used": 0,
               "free_kv_blocks": 100}}],
}})
answer = json.loads(answer_line(line.encode()))
loaded = sorted(name for name in {absent!r} if sys.modules.get(name) is not None)
print(json.dumps({{"status": result.status.value, "assignment": result.assignment.tolist(),
                  "answer": answer, "loaded": loaded}}))
"""


def test_embedding_path_needs_no_extra() -> None:
    proc = subprocess.run([sys.executable, "-c", _EMBEDDER.format(absent=_ABSENT)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    # timeout: a solution without a proof of optimality within the budget
    assert out["status"] in {"optimal", "feasible", "timeout"}, out
    assert len(out["assignment"]) == 2 and set(out["assignment"]) <= {-1, 0, 1}, out
    assert max(out["assignment"]) >= 0, out
    assert out["answer"]["status"] in {"optimal", "feasible"}, out["answer"]
    assert out["answer"]["assignment"] == {"a": "x"}, out["answer"]
    assert out["loaded"] == []


def _extras() -> tuple[list[str], dict[str, list[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["dependencies"], project["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_optional_modules_are_extras_not_core_dependencies() -> None:
    core, extras = _extras()
    for module, extra in EXTRAS.items():
        assert module not in _names(core), f"{module} is a core dependency"
        assert extra in extras, f"EXTRAS names extra {extra!r}, missing from pyproject.toml"
        assert module in _names(extras[extra]), f"extra {extra!r} does not install {module}"
    (everything,) = extras["all"]
    named = set(everything.removeprefix("sbsopt[").removesuffix("]").split(","))
    assert named == set(extras) - {"all", "docs", "test"}, "extra 'all' must name every feature extra"
    assert any(r.startswith("sbsopt[all") for r in extras["test"])


def test_require_names_the_extra() -> None:
    with pytest.raises(MissingExtraError, match=r"pip install 'sbsopt\[plot\]'") as info:
        require("sbsopt_not_installed.pyplot", "plot", feature="plot_sweep")
    err = info.value
    assert isinstance(err, BackendUnavailableError) and isinstance(err, ImportError)
    assert (err.module, err.extra, err.name) == ("sbsopt_not_installed", "plot", "sbsopt_not_installed")
    assert str(err).startswith("plot_sweep needs sbsopt_not_installed")
    assert require("json.decoder", "plot").__name__ == "json.decoder"


def test_require_lets_a_broken_install_raise_its_own_error(tmp_path, monkeypatch) -> None:
    # an installed package whose own import fails is not a missing extra
    (tmp_path / "sbsopt_broken_pkg.py").write_text("import sbsopt_dependency_that_is_gone\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("sbsopt_broken_pkg", "plot")
    assert not isinstance(info.value, MissingExtraError)
    assert info.value.name == "sbsopt_dependency_that_is_gone"


def test_calibration_without_cvxpy_names_the_calibrate_extra(monkeypatch) -> None:
    from sbsopt.costmodel.calibrate import fit_coefficients, load_measurements

    monkeypatch.setitem(sys.modules, "cvxpy", None)
    with pytest.raises(MissingExtraError, match=r"cvxpy.*pip install 'sbsopt\[calibrate\]'"):
        fit_coefficients(load_measurements())


def test_cli_calibrate_without_cvxpy_exits_1_naming_the_extra(tmp_path) -> None:
    code = ("import sys; sys.modules['cvxpy'] = None\n"
            "from sbsopt.cli import main\n"
            f"sys.exit(main(['calibrate', '--out', {str(tmp_path / 'fit.json')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == ("sbsopt: error: sbsopt calibrate needs cvxpy, which is not installed; "
                                   "install it with: pip install 'sbsopt[calibrate]'")
    assert not (tmp_path / "fit.json").exists()


def test_cli_turns_a_direct_import_of_an_optional_module_into_the_extra(monkeypatch, capsys) -> None:
    import sbsopt.cli as cli

    def fails(**kwargs):
        import sbsopt_absent_module  # noqa: F401 - stands for a command's `import pandas`

    def needs_pandas(**kwargs):
        raise ModuleNotFoundError("No module named 'pandas'", name="pandas")

    monkeypatch.setattr(cli.cli, "main", needs_pandas)
    assert cli.main([]) == cli.EXIT_INTERNAL
    assert "pip install 'sbsopt[sim]'" in capsys.readouterr().err
    monkeypatch.setattr(cli.cli, "main", fails)
    assert cli.main([]) == cli.EXIT_INTERNAL
    assert "internal error: ModuleNotFoundError" in capsys.readouterr().err


def test_missing_extra_maps_only_listed_modules() -> None:
    assert missing_extra(ModuleNotFoundError("x", name="matplotlib.pyplot")).extra == "plot"
    assert missing_extra(ModuleNotFoundError("x", name="numpy")) is None
    assert missing_extra(ImportError("x", name="cvxpy")) is None
    err = MissingExtraError("ray", "ray")
    assert missing_extra(err) is err
