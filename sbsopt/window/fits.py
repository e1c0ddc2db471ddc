"""Which request fits which unit alone: the pairs every backend and bound starts from."""

from __future__ import annotations

import numpy as np

from sbsopt.window.problem import DecodeWindow, PrefillWindow

__all__ = ["fits_alone", "fits_any_unit"]


def fits_alone(problem: PrefillWindow | DecodeWindow) -> np.ndarray:
    """``[i, j]``: request ``i`` alone fits unit ``j``: its tokens in the unit's room and
    its KV blocks in the free ones (prefill), or a free batch slot and its KV blocks in the
    free ones (decode).

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([100, 50], [0, 0], [0.0, 0.0], capacity_tokens=[128, 64],
    ...                               coefficients=c)
    >>> fits_alone(w).tolist()
    [[True, False], [True, True]]
    """
    blocks, free = problem.kv_blocks, problem.free_kv_blocks
    if isinstance(problem, PrefillWindow):
        tokens, room = problem.new_tokens, problem.room_tokens
        return (tokens[:, None] <= room[None, :]) & (blocks[:, None] <= free[None, :])
    slots = problem.max_batch_size - problem.batch_size
    return (blocks[:, None] <= free[None, :]) & (slots[None, :] > 0)


def fits_any_unit(problem: PrefillWindow | DecodeWindow) -> np.ndarray:
    """``[i]``: request ``i`` alone fits at least one unit (a row of :func:`fits_alone`).

    Examples
    --------
    >>> from sbsopt.costmodel import PrefillCoefficients
    >>> c = PrefillCoefficients(base_us=0.0, alpha_us_per_token=1.0, beta_us_per_pair=0.0,
    ...                         gamma_us_per_request=0.0)
    >>> w = PrefillWindow.from_arrays([200, 50], [0, 0], [0.0, 0.0], capacity_tokens=[128, 64],
    ...                               coefficients=c)
    >>> fits_any_unit(w).tolist()
    [False, True]
    """
    return np.any(fits_alone(problem), axis=1)
