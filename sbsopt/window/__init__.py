"""One staggered window as an optimization problem: prefill and decode batch formation and
DP-unit assignment, solved exactly (CP-SAT) or fast (Numba greedy), with lower bounds.

Examples
--------
>>> from sbsopt.costmodel import PrefillCoefficients
>>> from sbsopt.window import PrefillWindow, solve
>>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
...                         gamma_us_per_request=0.0)
>>> w = PrefillWindow.from_arrays([30, 20], [0, 0], [0.0, 0.0], capacity_tokens=[64, 64],
...                               coefficients=c)
>>> solve(w, method="greedy").assignment.tolist()
[0, 1]
"""

from sbsopt.window.bounds import analytic_bound, lower_bound, lp_bound, split_bound
from sbsopt.window.greedy import warm_up
from sbsopt.window.host_bound import host_bound
from sbsopt.window.objective import objective
from sbsopt.window.options import SolveOptions
from sbsopt.window.problem import DecodeWindow, PrefillWindow, WindowProblem
from sbsopt.window.result import SOLUTION_PRESENT, SolveResult, SolveStatus
from sbsopt.window.solve import BACKENDS, Backend, available_methods, register, solve
from sbsopt.window.validate import assignment_violations, validate_assignment

__all__ = [
    "PrefillWindow",
    "DecodeWindow",
    "WindowProblem",
    "solve",
    "SolveOptions",
    "SolveResult",
    "SolveStatus",
    "SOLUTION_PRESENT",
    "Backend",
    "BACKENDS",
    "register",
    "available_methods",
    "analytic_bound",
    "split_bound",
    "lp_bound",
    "host_bound",
    "lower_bound",
    "objective",
    "validate_assignment",
    "assignment_violations",
    "warm_up",
]
