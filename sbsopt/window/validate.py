"""One checker for every backend: the answer keeps every hard constraint of its problem."""

from __future__ import annotations

import numpy as np

from sbsopt.errors import SolverError
from sbsopt.kvblocks import chunk_kv_blocks
from sbsopt.window.objective import objective
from sbsopt.window.problem import DecodeWindow, PrefillWindow
from sbsopt.window.result import SOLUTION_PRESENT, SolveResult

__all__ = ["assignment_violations", "validate_assignment"]


def assignment_violations(problem: PrefillWindow | DecodeWindow, result: SolveResult) -> list[str]:
    """Every violated invariant of ``result`` for ``problem`` (empty when valid)."""
    out: list[str] = []
    n, units = problem.n_requests, problem.n_units
    a = np.asarray(result.assignment)
    if a.shape != (n,) or a.dtype != np.int64:
        return [f"assignment has shape {a.shape} and dtype {a.dtype}, expected ({n},) int64"]
    if ((a < -1) | (a >= units)).any():
        out.append(f"assignment outside [-1, {units}): {a[(a < -1) | (a >= units)].tolist()}")
        return out
    if not np.array_equal(np.sort(np.asarray(result.deferred)), np.flatnonzero(a < 0)):
        out.append("deferred differs from the requests with assignment -1")
    chunks = dict(result.chunks)
    placed_units = a[a >= 0]
    if isinstance(problem, PrefillWindow):
        tokens = problem.new_tokens.copy()
        blocks = problem.kv_blocks.copy()
        for i, k in chunks.items():
            if a[i] < 0 or not 0 < k < problem.new_tokens[i]:
                out.append(f"chunk {k} of request {i} (assigned {a[i]}) is not a proper chunk")
                continue
            tokens[i] = k
            blocks[i] = chunk_kv_blocks(k, problem.kv_blocks[i], problem.new_tokens[i])
        if len(set(a[list(chunks)].tolist())) != len(chunks):
            out.append("more than one chunk on a unit")
        load = np.bincount(placed_units, weights=tokens[a >= 0], minlength=units)
        if (load > problem.room_tokens).any():
            out.append(f"token room exceeded on units {np.flatnonzero(load > problem.room_tokens)}")
        if result.success and (problem.guarded & (a < 0)).any():
            out.append(f"guarded requests deferred: {np.flatnonzero(problem.guarded & (a < 0))}")
    else:
        if chunks:
            out.append("decode answers never chunk")
        blocks = problem.kv_blocks
        batch = problem.batch_size + np.bincount(placed_units, minlength=units)
        if (batch > problem.max_batch_size).any():
            out.append(f"batch size exceeded on units {np.flatnonzero(batch > problem.max_batch_size)}")
    kv = np.bincount(placed_units, weights=blocks[a >= 0], minlength=units)
    if (kv > problem.free_kv_blocks).any():
        out.append(f"KV blocks exceeded on units {np.flatnonzero(kv > problem.free_kv_blocks)}")
    if result.status in SOLUTION_PRESENT:
        value = objective(problem, a, chunks)
        tol = 1e-6 * max(1.0, abs(value))
        if abs(value - result.objective) > tol:
            out.append(f"objective {result.objective} differs from the recomputed {value}")
        if result.objective < result.bound - tol:
            out.append(f"objective {result.objective} below the bound {result.bound}")
    return out


def validate_assignment(problem: PrefillWindow | DecodeWindow, result: SolveResult) -> None:
    """Raise :class:`~sbsopt.errors.SolverError` listing every violated invariant.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> from sbsopt.window import solve
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([30, 20], [0, 0], [0.0, 0.0], capacity_tokens=[64, 64],
    ...                               coefficients=c)
    >>> validate_assignment(w, solve(w, method="greedy"))
    """
    problems = assignment_violations(problem, result)
    if problems:
        raise SolverError(f"{result.method}: invalid answer: " + "; ".join(problems))
