"""Local searches over whole requests: move/swap descent with exchanges against the
deferred requests, and ruin and recreate."""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit
from sbsopt.window._kernels.steps import instance_step, max_without, top_three

__all__ = ["prefill_local_search", "prefill_ruin_recreate"]


@njit(nogil=True)
def prefill_local_search(assignment, cost, tokens, blocks, penalty, guarded, room, free,
                         unit_time, inst, inst_max, chunk_tokens,
                         max_rounds):  # pragma: no cover - compiled
    """Move/swap descent on the critical unit of each instance, then exchanges with the
    deferred requests (chunked requests stay put).

    Repeatedly takes the unit that sets an instance's step time and tries (1) moving one of
    its requests to another unit of the same instance, (2) swapping one of its requests with
    a cheaper one on another unit, accepting the first change that lowers that unit below the
    step time without raising any unit to it. When neither helps anywhere, it takes the best
    :func:`_exchange_deferred` change (a deferred request placed, alone or in place of a
    placed one), which lowers the objective. Stops after ``max_rounds`` accepted changes or
    when no change helps. Arrays are updated in place; returns the number of changes."""
    n = cost.shape[0]
    units = room.shape[0]
    changes = 0
    while changes < max_rounds:
        improved = False
        for g in range(inst_max.shape[0]):
            crit = -1
            for j in range(units):
                if inst[j] == g and (crit < 0 or unit_time[j] > unit_time[crit]):
                    crit = j
            if crit < 0:
                continue
            top = unit_time[crit]
            for a in range(n):
                if assignment[a] != crit or chunk_tokens[a] > 0 or improved:
                    continue
                for j in range(units):
                    if j == crit or inst[j] != g:
                        continue
                    if tokens[a] <= room[j] and blocks[a] <= free[j] and unit_time[j] + cost[a] < top:
                        assignment[a] = j
                        room[j] -= tokens[a]
                        free[j] -= blocks[a]
                        unit_time[j] += cost[a]
                        room[crit] += tokens[a]
                        free[crit] += blocks[a]
                        unit_time[crit] -= cost[a]
                        improved = True
                        break
                    if improved:
                        break
                if improved:
                    break
                for b in range(n):
                    j = assignment[b]
                    if (j < 0 or j == crit or inst[j] != g or cost[b] >= cost[a]
                            or chunk_tokens[b] > 0):
                        continue
                    diff = cost[a] - cost[b]
                    dt = tokens[a] - tokens[b]
                    db = blocks[a] - blocks[b]
                    if (unit_time[j] + diff < top and dt <= room[j] and db <= free[j]
                            and -dt <= room[crit] and -db <= free[crit]):
                        assignment[a], assignment[b] = j, crit
                        room[j] -= dt
                        free[j] -= db
                        unit_time[j] += diff
                        room[crit] += dt
                        free[crit] += db
                        unit_time[crit] -= diff
                        improved = True
                        break
                if improved:
                    break
            if improved:
                inst_max[g] = instance_step(unit_time, inst, g)
                break
        if not improved and not _exchange_deferred(assignment, cost, tokens, blocks, penalty,
                                                   guarded, room, free, unit_time, inst,
                                                   inst_max, chunk_tokens):
            break
        changes += 1
    return changes


@njit(nogil=True)
def _exchange_deferred(assignment, cost, tokens, blocks, penalty, guarded, room, free,
                       unit_time, inst, inst_max, chunk_tokens):  # pragma: no cover - compiled
    """The best change that places one deferred request ``d`` (whole): on a unit with room;
    in place of a whole, unguarded request ``a``, then deferred; or in place of a whole request
    ``a`` moved to the least-loaded other unit it fits (when ``d`` does not fit beside it).
    Its value is the step change of the instances plus the penalties deferred less ``P_d``.
    In a window with more tokens than room the passes fill units in one order; these pack the
    room with the requests whose deferral costs most and gather scattered spare room for them.
    Applied (state updated in place) when it lowers the objective; returns whether it did."""
    n = cost.shape[0]
    units = room.shape[0]
    groups = inst_max.shape[0]
    top = top_three(unit_time, inst, groups)
    # where each placed whole request would move: the least-loaded other unit it fits
    move_to = np.full(n, -1, np.int64)
    for a in range(n):
        j = assignment[a]
        if j < 0 or chunk_tokens[a] > 0:
            continue
        for q in range(units):
            if (q != j and tokens[a] <= room[q] and blocks[a] <= free[q]
                    and (move_to[a] < 0 or unit_time[q] < unit_time[move_to[a]])):
                move_to[a] = q
    best = 0.0
    best_d = -1
    best_a = -1
    best_j = -1
    best_to = -1
    for d in range(n):
        if assignment[d] >= 0 or chunk_tokens[d] > 0:
            continue
        for j in range(units):  # placed alone
            if tokens[d] <= room[j] and blocks[d] <= free[j]:
                g = inst[j]
                delta = max(inst_max[g], unit_time[j] + cost[d]) - inst_max[g] - penalty[d]
                if delta < best:
                    best, best_d, best_a, best_j, best_to = delta, d, -1, j, -1
        for a in range(n):  # in place of a
            j = assignment[a]
            if (j < 0 or chunk_tokens[a] > 0 or tokens[d] > room[j] + tokens[a]
                    or blocks[d] > free[j] + blocks[a]):
                continue
            g = inst[j]
            t = unit_time[j] - cost[a] + cost[d]
            if not guarded[a] and penalty[a] < penalty[d]:  # a deferred
                delta = (max(max_without(top, unit_time, g, j, -1), t) - inst_max[g]
                         + penalty[a] - penalty[d])
                if delta < best:
                    best, best_d, best_a, best_j, best_to = delta, d, a, j, -1
            q = move_to[a]
            if q < 0 or (tokens[d] <= room[j] and blocks[d] <= free[j]):
                continue
            h = inst[q]  # a moves to q
            if h == g:
                delta = max(max_without(top, unit_time, g, j, q), t,
                            unit_time[q] + cost[a]) - inst_max[g] - penalty[d]
            else:
                delta = (max(max_without(top, unit_time, g, j, -1), t) - inst_max[g]
                         + max(inst_max[h], unit_time[q] + cost[a]) - inst_max[h] - penalty[d])
            if delta < best:
                best, best_d, best_a, best_j, best_to = delta, d, a, j, q
    if best_d < 0 or not best < -1e-9 * max(inst_max.max(), 1.0):
        return False
    j = best_j
    assignment[best_d] = j
    room[j] -= tokens[best_d]
    free[j] -= blocks[best_d]
    unit_time[j] += cost[best_d]
    if best_a >= 0:
        assignment[best_a] = best_to
        room[j] += tokens[best_a]
        free[j] += blocks[best_a]
        unit_time[j] -= cost[best_a]
        if best_to >= 0:
            room[best_to] -= tokens[best_a]
            free[best_to] -= blocks[best_a]
            unit_time[best_to] += cost[best_a]
    inst_max[inst[j]] = instance_step(unit_time, inst, inst[j])
    if best_to >= 0:
        inst_max[inst[best_to]] = instance_step(unit_time, inst, inst[best_to])
    return True


@njit(nogil=True, inline="always")
def _uniform(state):  # pragma: no cover - compiled
    """SplitMix64: ``(next state, a float in [0, 1))``. A local generator keeps the kernels
    deterministic whatever else draws from NumPy's or Numba's global one."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return state, float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(nogil=True)
def prefill_ruin_recreate(current, best, cost, tokens, blocks, penalty, guarded, room0, free0,
                          residual, inst, n_inst, iterations, ruin_units, ruin_share, noise,
                          largest_first, seed):  # pragma: no cover - compiled
    """Ruin and recreate over whole requests (unit per request, -1 deferred), from
    ``current``; the best answer seen is kept in ``best`` (both updated in place).

    Each iteration takes the step unit of a random instance and ``ruin_units - 1`` random
    units, defers each unguarded request on them with probability ``ruin_share``, then offers
    every deferred request, guarded first, then by deferral penalty per token (or, with
    probability ``largest_first``, by tokens) scaled by a random factor in ``[1, 1 + noise)``,
    to the unit that least raises its instance's step
    (ties: the least token room left, so gaps are filled), placing it when the raise is below
    its penalty (guarded: whenever it fits). The new answer replaces ``current`` when its
    objective is not higher (moves along plateaus). Returns ``(objective of current, objective
    of best)`` without the base costs. Random draws come from :func:`_uniform` started at
    ``seed``."""
    rand = np.uint64(seed)
    n = cost.shape[0]
    units = room0.shape[0]
    room = room0.copy()
    free = free0.copy()
    unit_time = residual.copy()
    for i in range(n):
        j = current[i]
        if j >= 0:
            room[j] -= tokens[i]
            free[j] -= blocks[i]
            unit_time[j] += cost[i]
    inst_max = np.full(n_inst, -np.inf)
    for j in range(units):
        inst_max[inst[j]] = max(inst_max[inst[j]], unit_time[j])
    value = inst_max.sum()
    for i in range(n):
        if current[i] < 0:
            value += penalty[i]
    best_value = value
    for i in range(n):
        best[i] = current[i]
    trial = current.copy()
    t_room = room.copy()
    t_free = free.copy()
    t_time = unit_time.copy()
    t_max = inst_max.copy()
    waiting = np.empty(n, np.int64)
    key = np.empty(n, np.float64)
    for _ in range(iterations):
        trial[:] = current
        t_room[:] = room
        t_free[:] = free
        t_time[:] = unit_time
        rand, u = _uniform(rand)
        g = min(int(u * n_inst), n_inst - 1)
        step_unit = -1
        for j in range(units):
            if inst[j] == g and (step_unit < 0 or t_time[j] > t_time[step_unit]):
                step_unit = j
        for r in range(ruin_units):
            j = step_unit
            if r > 0:
                rand, u = _uniform(rand)
                j = min(int(u * units), units - 1)
            for i in range(n):
                if trial[i] != j or guarded[i]:
                    continue
                rand, u = _uniform(rand)
                if u < ruin_share:
                    trial[i] = -1
                    t_room[j] += tokens[i]
                    t_free[j] += blocks[i]
                    t_time[j] -= cost[i]
        t_max[:] = -np.inf
        for j in range(units):
            t_max[inst[j]] = max(t_max[inst[j]], t_time[j])
        rand, u = _uniform(rand)
        by_size = u < largest_first
        m = 0
        for i in range(n):
            if trial[i] < 0:
                waiting[m] = i
                rand, u = _uniform(rand)
                size = tokens[i] if by_size else penalty[i] / max(tokens[i], 1)
                key[m] = -np.inf if guarded[i] else -size * (1.0 + noise * u)
                m += 1
        order = np.argsort(key[:m])
        for q in range(m):
            i = waiting[order[q]]
            pick = -1
            pick_raise = np.inf
            pick_left = 0
            for j in range(units):
                if tokens[i] <= t_room[j] and blocks[i] <= t_free[j]:
                    rise = max(0.0, t_time[j] + cost[i] - t_max[inst[j]])
                    left = t_room[j] - tokens[i]
                    if rise < pick_raise or (rise == pick_raise and left < pick_left):
                        pick, pick_raise, pick_left = j, rise, left
            if pick >= 0 and (guarded[i] or pick_raise < penalty[i]):
                trial[i] = pick
                t_room[pick] -= tokens[i]
                t_free[pick] -= blocks[i]
                t_time[pick] += cost[i]
                t_max[inst[pick]] = max(t_max[inst[pick]], t_time[pick])
        trial_value = t_max.sum()
        for i in range(n):
            if trial[i] < 0:
                trial_value += penalty[i]
        if trial_value <= value:
            current[:] = trial
            room[:] = t_room
            free[:] = t_free
            unit_time[:] = t_time
            value = trial_value
            if value < best_value:
                best_value = value
                best[:] = current
    return value, best_value
