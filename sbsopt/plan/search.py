"""Search algorithms over an evaluation callable: bracketing for the highest rate, a staircase
walk of the prefill x decode grid for the fewest instances.

Both take the evaluation as a function, so they are independent of the simulator: ``evaluate``
maps a list of points to a list of ``(ok, metrics)`` pairs (a batch, so that a caller can run the
points of one round in parallel).  Both assume feasibility is monotone (feasible at a rate ->
feasible at every lower rate; feasible with (p, d) instances -> feasible with more); simulated
SLO attainment is monotone only up to noise, and the answers are verified, not assumed:
``max_rate`` returns a rate that was simulated and passed, and a rate within the tolerance above
it that was simulated and failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sbsopt._validate import check_int, check_number
from sbsopt.errors import InvalidInputError

__all__ = ["MaxRateResult", "MinInstancesResult", "search_max_rate", "search_min_instances"]

Evaluation = tuple[bool, dict]


@dataclass(frozen=True)
class MaxRateResult:
    """Answer of a highest-rate search.

    Attributes
    ----------
    feasible : bool
        ``False`` when even ``rate_min`` fails (then ``rate_req_s`` is ``None``).
    bounded : bool
        ``False`` when ``rate_max`` still passes (``rate_req_s = rate_max``, no failing rate).
    rate_req_s : float or None
        Highest rate simulated that passed.
    fail_rate_req_s : float or None
        Lowest rate simulated above it that failed; ``fail - rate <= tolerance`` when bounded.
    tolerance_req_s : float
    confirm, fail : dict or None
        Metrics of the confirming and the failing evaluation.
    evaluations : int
        Distinct rates simulated.
    message : str
    evaluated : dict
        ``{rate: (ok, metrics)}`` of every simulated rate.
    """

    feasible: bool
    bounded: bool
    rate_req_s: float | None
    fail_rate_req_s: float | None
    tolerance_req_s: float
    confirm: dict | None
    fail: dict | None
    evaluations: int
    message: str
    evaluated: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class MinInstancesResult:
    """Answer of a fewest-instances search.

    Attributes
    ----------
    feasible : bool
        ``False`` when even the largest cluster of the grid fails.
    prefill_instances, decode_instances : int or None
        The cheapest feasible point of the frontier (fewest GPUs, then fewest prefill instances).
    metrics : dict or None
        Metrics of that point's (confirming) evaluation.
    frontier : tuple of (int, int)
        Minimal feasible points: for each prefill count, the fewest decode instances that pass.
    evaluations : int
        Grid points simulated (the grid has ``max_prefill * max_decode``).
    message : str
    evaluated : dict
        ``{(p, d): (ok, metrics)}`` of every simulated point.
    """

    feasible: bool
    prefill_instances: int | None
    decode_instances: int | None
    metrics: dict | None
    frontier: tuple[tuple[int, int], ...]
    evaluations: int
    message: str
    evaluated: dict = field(default_factory=dict, repr=False)


class _Memo:
    """Evaluates each point once; later requests for it are answered from memory."""

    def __init__(self, evaluate: Callable[[list], list[Evaluation]]) -> None:
        self._evaluate = evaluate
        self.seen: dict = {}

    def __call__(self, points: Sequence) -> list[Evaluation]:
        todo = [p for p in dict.fromkeys(points) if p not in self.seen]
        if todo:
            answers = self._evaluate(todo)
            if len(answers) != len(todo):
                raise InvalidInputError("evaluate", len(answers), f"{len(todo)} answers, one per point")
            for p, (ok, metrics) in zip(todo, answers, strict=True):
                self.seen[p] = (bool(ok), metrics)
        return [self.seen[p] for p in points]


def search_max_rate(
    evaluate: Callable[[list[float]], list[Evaluation]],
    *,
    rate_min: float,
    rate_max: float,
    tolerance_req_s: float,
    initial: float | None = None,
    parallel: int = 1,
    growth: float = 2.0,
) -> MaxRateResult:
    """Highest rate in ``[rate_min, rate_max]`` that passes, to within ``tolerance_req_s``.

    Bracketing then k-section: evaluate ``rate_min`` and ``initial`` (default ``rate_min``);
    grow geometrically by ``growth`` (``parallel`` points per round) until a rate fails or
    ``rate_max`` passes; then split the bracket into ``parallel + 1`` parts per round until it
    is narrower than the tolerance. Rounds: ``O(log(range / tol) / log(parallel + 1))``.

    Parameters
    ----------
    evaluate : callable
        ``evaluate([r1, r2, ...]) -> [(ok, metrics), ...]``.
    rate_min, rate_max : float
        Search range (requests/s), ``0 < rate_min <= rate_max``.
    tolerance_req_s : float
        Width of the final bracket.
    initial : float, optional
        First guess (e.g. the rate at which offered load equals capacity).
    parallel : int
        Points evaluated per round.
    growth : float
        Bracket growth factor, > 1.

    Examples
    --------
    >>> ev = lambda rates: [(r <= 7.3, {"rate": r}) for r in rates]
    >>> r = search_max_rate(ev, rate_min=1, rate_max=100, tolerance_req_s=0.1)
    >>> r.rate_req_s <= 7.3 < r.fail_rate_req_s, r.fail_rate_req_s - r.rate_req_s <= 0.1
    (True, True)
    """
    rate_min = check_number("rate_min", rate_min, strict_min=True)
    rate_max = check_number("rate_max", rate_max, minimum=rate_min)
    tol = check_number("tolerance_req_s", tolerance_req_s, strict_min=True)
    growth = check_number("growth", growth, strict_min=True, minimum=1.0)
    check_int("parallel", parallel, minimum=1)
    initial = rate_min if initial is None else min(max(check_number("initial", initial, strict_min=True),
                                                       rate_min), rate_max)
    memo = _Memo(evaluate)
    (ok_min, m_min), (ok_init, _) = memo([rate_min, initial])
    if not ok_min:
        return MaxRateResult(False, True, None, rate_min, tol, None, m_min, len(memo.seen),
                             f"infeasible: the SLO fails even at the smallest rate {rate_min:g} req/s", dict(memo.seen))
    if ok_init:
        lo, hi = initial, None
        while hi is None and lo < rate_max:
            points = [min(lo * growth ** (i + 1), rate_max) for i in range(parallel)]
            points = list(dict.fromkeys(points))
            for p, (ok, _) in zip(points, memo(points), strict=True):
                if not ok:
                    hi = p
                    break
                lo = p
        if hi is None:
            return MaxRateResult(True, False, lo, None, tol, memo.seen[lo][1], None, len(memo.seen),
                                 f"unbounded: the SLO still holds at the largest rate {rate_max:g} req/s", dict(memo.seen))
    else:
        lo, hi = rate_min, initial
    while hi - lo > tol:
        step = (hi - lo) / (parallel + 1)
        points = [lo + step * (i + 1) for i in range(parallel)]
        for p, (ok, _) in zip(points, memo(points), strict=True):
            if not ok:
                hi = p
                break
            lo = p
    return MaxRateResult(True, True, lo, hi, tol, memo.seen[lo][1], memo.seen[hi][1], len(memo.seen),
                         f"max rate {lo:.4g} req/s (fails at {hi:.4g} req/s, tolerance {tol:g})", dict(memo.seen))


def search_min_instances(
    evaluate: Callable[[list[tuple[int, int]]], list[Evaluation]],
    *,
    max_prefill: int,
    max_decode: int,
    gpus: Callable[[int, int], float],
    parallel: int = 1,
) -> MinInstancesResult:
    """Fewest (prefill, decode) instances that pass, on the grid ``[1, max_prefill] x [1, max_decode]``.

    Staircase walk of the monotone frontier (feasible at (p, d) -> feasible at every
    (p' >= p, d' >= d)): start at ``(1, max_decode)``; while the point passes, lower ``d``; then
    raise ``p`` and continue from the current ``d``. Every point below-left of a failure is pruned,
    so at most ``max_prefill + max_decode + 1`` points are simulated instead of their product
    (the ``+ 1`` is the largest cluster, tried first to answer "infeasible" at once); the walk
    also stops once ``gpus(p, 1)`` cannot beat the best plan found. The answer minimises ``gpus``.
    With ``parallel > 1`` the walk down a column evaluates ``parallel`` decode counts per batch
    (speculatively: points below the first failure of a batch are wasted, never wrong).

    Examples
    --------
    >>> ev = lambda pts: [(p * d >= 6 and p >= 2, {}) for p, d in pts]
    >>> r = search_min_instances(ev, max_prefill=8, max_decode=8, gpus=lambda p, d: 32 * p + 144 * d)
    >>> (r.prefill_instances, r.decode_instances), r.frontier[:3]
    ((6, 1), ((2, 3), (3, 2), (6, 1)))
    """
    check_int("max_prefill", max_prefill, minimum=1)
    check_int("max_decode", max_decode, minimum=1)
    check_int("parallel", parallel, minimum=1)
    memo = _Memo(evaluate)
    frontier: list[tuple[int, int]] = []
    best: tuple[float, int, int] | None = None
    d = max_decode
    # the largest cluster first: if it fails, every point of the grid does
    largest_ok = memo([(max_prefill, max_decode)])[0][0]
    for p in range(1, (max_prefill + 1) if largest_ok else 1):
        if best is not None and gpus(p, 1) >= best[0]:
            break
        lowest, failed = None, False
        while d >= 1 and not failed:
            batch = [(p, x) for x in range(d, max(d - parallel, 0), -1)]
            for (_, x), (ok, _) in zip(batch, memo(batch), strict=True):
                if not ok:
                    failed = True
                    break
                lowest, d = x, x - 1
        if lowest is None:
            continue
        frontier.append((p, lowest))
        cost = gpus(p, lowest)
        if best is None or cost < best[0]:
            best = (cost, p, lowest)
        if d == 0:
            break
    if best is None:
        return MinInstancesResult(False, None, None, None, (), len(memo.seen),
                                  f"infeasible: the SLO fails even with {max_prefill} prefill and "
                                  f"{max_decode} decode instances", dict(memo.seen))
    _, p, d = best
    return MinInstancesResult(True, p, d, memo.seen[(p, d)][1], tuple(frontier), len(memo.seen),
                              f"{p} prefill + {d} decode instances ({len(memo.seen)} of "
                              f"{max_prefill * max_decode} grid points simulated)", dict(memo.seen))
