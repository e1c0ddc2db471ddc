"""One place where seeds become generators (never the global ``random`` or ``np.random``)."""

from __future__ import annotations

import numpy as np

from sbsopt.errors import InvalidInputError

__all__ = ["SeedLike", "as_generator", "as_int_seed"]

SeedLike = int | np.random.Generator | None


def as_generator(seed: SeedLike) -> np.random.Generator:
    """Normalise ``seed`` to a :class:`numpy.random.Generator`.

    Examples
    --------
    >>> float(as_generator(7).random()) == float(as_generator(7).random())
    True
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidInputError("seed", seed, "a non-negative integer, a numpy Generator or None")
    return np.random.default_rng(int(seed))


def as_int_seed(seed: SeedLike) -> int:
    """An integer seed for libraries that want one (CP-SAT ``random_seed``, worker pools).

    Examples
    --------
    >>> as_int_seed(3)
    3
    """
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**31 - 1))
    if seed is None:
        return 0
    as_generator(seed)  # validates
    return int(seed) % (2**31 - 1)
