"""Objective of an answer, in microseconds, straight from the formulation (vectorised)."""

from __future__ import annotations

import numpy as np

from sbsopt.window.problem import DecodeWindow, PrefillWindow, prefill_chunk_cost_us

__all__ = ["prefill_unit_time_us", "remainder_price_us", "prefill_objective", "decode_objective",
           "objective"]


def _per_instance_max(values: np.ndarray, instance: np.ndarray, groups: int) -> np.ndarray:
    if groups == 1:
        return np.array([values.max()])
    out = np.full(groups, -np.inf)
    np.maximum.at(out, instance, values)
    return out


def prefill_unit_time_us(
    problem: PrefillWindow, assignment: np.ndarray, chunks: dict[int, int]
) -> np.ndarray:
    """Rank-local time of every unit (residual + whole requests + chunks), microseconds."""
    whole = assignment >= 0
    if chunks:
        index = np.fromiter(chunks.keys(), np.int64, len(chunks))
        whole[index] = False
    time = problem.residual_us + np.bincount(
        assignment[whole], weights=problem.cost_us[whole], minlength=problem.n_units
    )
    if chunks:
        sizes = np.fromiter(chunks.values(), np.int64, len(chunks))
        time = time + np.bincount(
            assignment[index],
            weights=prefill_chunk_cost_us(sizes, problem.cached_tokens[index], problem.coefficients),
            minlength=problem.n_units,
        )
    return time


def remainder_price_us(problem: PrefillWindow, index: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Deferral price of what requests ``index`` leave after first chunks of ``sizes`` tokens.

    The remainder needs at least one more forward: it is priced as a deferral of its own, its
    cost (``n - k`` tokens after ``p + k`` cached) at the request's weight ``w * defer_factor``
    plus its token share of the fixed price ``w * defer_cost_us``. That is the penalty's token
    share ``P * (n - k) / n`` plus ``w * defer_factor * (beta*k*(n - k)/2 + gamma*k/n)``: the
    remainder's tokens attend to the chunk's and it pays a second ``gamma``. So a chunk and its
    remainder always cost more than the request placed whole, and never less than the share
    (which the lower bounds relax it to, ``sbsopt.window.bounds`` Notes).

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.01,
    ...                         gamma_us_per_request=5.0)
    >>> w = PrefillWindow.from_arrays([200], [0], [0.0], capacity_tokens=[256], coefficients=c)
    >>> k = np.array([50])
    >>> float(remainder_price_us(w, np.array([0]), k)[0])  # cost(150 after 50) + 1000 * 3/4
    1092.5
    >>> float(prefill_chunk_cost_us(50, 0, c) + remainder_price_us(w, np.array([0]), k)[0]
    ...       - w.cost_us[0])  # more than whole by one gamma and the deferral price's share
    755.0
    """
    n = problem.new_tokens[index].astype(np.float64)
    k = np.asarray(sizes, np.float64)
    left = n - k
    carry = problem.weight[index] * problem.defer_factor
    c = problem.coefficients
    extra = carry * (c.beta_us_per_pair * k * left / 2.0 + c.gamma_us_per_request * k / n)
    return np.where(left > 0, problem.penalty_us[index] * left / n + extra, 0.0)


def prefill_objective(
    problem: PrefillWindow, assignment: np.ndarray, chunks: dict[int, int]
) -> float:
    """Step time summed over instances plus deferral penalties, a chunked request's remainder
    at :func:`remainder_price_us`.

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=10.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([100, 50], [0, 0], [0.0, 0.0], capacity_tokens=[128, 128],
    ...                               coefficients=c)
    >>> prefill_objective(w, np.array([0, 1]), {})
    110.0
    """
    time = prefill_unit_time_us(problem, assignment, chunks)
    step = problem.n_instances * problem.base_us + _per_instance_max(
        time, problem.instance, problem.n_instances
    ).sum()
    penalty = problem.penalty_us[assignment < 0].sum()
    if chunks:
        index = np.fromiter(chunks.keys(), np.int64, len(chunks))
        sizes = np.fromiter(chunks.values(), np.int64, len(chunks))
        penalty += remainder_price_us(problem, index, sizes).sum()
    return float(step + penalty)


def decode_objective(problem: DecodeWindow, assignment: np.ndarray) -> float:
    """Decode step time summed over instances plus deferral penalties.

    Examples
    --------
    >>> from sbsopt.costmodel import DecodeCoefficients
    >>> c = DecodeCoefficients(base_us=100.0, us_per_request=5.0, us_per_kv_token=0.01)
    >>> d = DecodeWindow.from_arrays([1000], [16], batch_size=[0, 1], max_batch_size=[4, 4],
    ...                              kv_blocks_used=[0, 0], free_kv_blocks=[50, 50],
    ...                              coefficients=c, kv_tokens=[0, 2000])
    >>> decode_objective(d, np.array([0]))  # max batch 1, max KV 2000 tokens
    125.0
    """
    placed = assignment >= 0
    batch = problem.batch_size + np.bincount(assignment[placed], minlength=problem.n_units)
    kv = problem.kv_tokens + np.bincount(
        assignment[placed], weights=problem.context_tokens[placed], minlength=problem.n_units
    )
    groups, inst = problem.n_instances, problem.instance
    step = (
        groups * problem.base_us
        + problem.us_per_request * _per_instance_max(batch.astype(np.float64), inst, groups).sum()
        + problem.us_per_kv_token * _per_instance_max(kv, inst, groups).sum()
    )
    return float(step + problem.penalty_us[~placed].sum())


def objective(problem: PrefillWindow | DecodeWindow, assignment: np.ndarray,
              chunks: dict[int, int] | None = None) -> float:
    """Objective of ``assignment`` (and ``chunks``) for either problem, microseconds."""
    if isinstance(problem, PrefillWindow):
        return prefill_objective(problem, assignment, chunks or {})
    return decode_objective(problem, assignment)
