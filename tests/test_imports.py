"""The solver stack must import together, in either order (highspy<1.15 pin)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

# ortools bundles its own HiGHS; the highspy that cvxpy (the calibrate extra) pulls in must not
# clash with it, whichever is imported first.
STACK = ["ortools.sat.python.cp_model", "highspy", "cvxpy", "numba", "networkx"]


@pytest.mark.parametrize("order", [STACK, STACK[::-1]], ids=["ortools-first", "cvxpy-first"])
def test_solver_stack_imports_in_any_order(order: list[str]) -> None:
    pytest.importorskip("cvxpy", reason="cvxpy is not installed (pip install 'sbsopt[calibrate]')")
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in order)
    code += "import cvxpy as cp, numpy as np\n"
    code += "x = cp.Variable(2); p = cp.Problem(cp.Minimize(cp.sum(x)), [x >= 1]); p.solve()\n"
    code += "from ortools.sat.python import cp_model\n"
    code += "m = cp_model.CpModel(); v = m.new_int_var(0, 5, 'v'); m.maximize(v)\n"
    code += "s = cp_model.CpSolver(); assert s.solve(m) == cp_model.OPTIMAL and s.value(v) == 5\n"
    code += "print(round(float(p.value), 6))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2.0"


def test_highspy_is_pinned_below_1_15() -> None:
    # a core dependency (sbsopt.window.host_bound), so it is always installed
    major, minor = (int(part) for part in version("highspy").split(".")[:2])
    assert (major, minor) < (1, 15), version("highspy")
