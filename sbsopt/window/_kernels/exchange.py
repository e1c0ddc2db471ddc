"""Exchange search: up to two whole requests of a unit trade places with up to two of another
unit or of the deferred ones."""

from __future__ import annotations

import time

import numba
import numpy as np

from sbsopt._jit import njit
from sbsopt.window._kernels.steps import instance_step, max_without, top_three

__all__ = ["EXCHANGE_MEMBERS", "prefill_exchange_search"]


#: Requests of one side (a unit, or the deferred ones) that :func:`prefill_exchange_search`
#: combines: a unit's costliest, the deferred ones with the highest penalty per token. Pairs of
#: them make ``1 + m*(m+1)/2`` subsets a side (529 at 32); units hold 8-16 requests at
#: 128 x 16 to 1024 x 64.
EXCHANGE_MEMBERS = 32
#: Columns of the exchange subsets' values: tokens, KV blocks, cost, penalty.
_SUB_TOKENS, _SUB_BLOCKS, _SUB_COST, _SUB_PENALTY = range(4)
#: Work counted per subset built (sorted and summed) against one visited, and how much work
#: passes between two readings of the clock (about 0.05 ms; a reading costs 0.5 us).
_BUILD_WORK = 16
_CLOCK_WORK = 10_000


@njit(nogil=True)
def _exchange_side(side, assignment, movable, cost, tokens, blocks, penalty, guarded,
                   sub_item, sub_value, sub_guarded, sub_count, candidates, key,
                   tmp_item):  # pragma: no cover - compiled
    """Every subset of at most two movable requests of ``side`` (a unit; ``side`` equal to the
    unit count: the deferred requests), the empty one included, into row ``side`` of the
    ``sub_*`` arrays, by tokens ascending (at most ``EXCHANGE_MEMBERS`` requests, module
    constant)."""
    n = assignment.shape[0]
    units = sub_count.shape[0] - 1
    target = -1 if side == units else side
    m = 0
    for i in range(n):
        if movable[i] and assignment[i] == target:
            candidates[m] = i
            m += 1
    if m > EXCHANGE_MEMBERS:
        for x in range(m):
            i = candidates[x]
            key[x] = -penalty[i] / max(tokens[i], 1) if target < 0 else -cost[i]
        order = np.argsort(key[:m], kind="mergesort")
        kept = candidates[order[:EXCHANGE_MEMBERS]].copy()
        m = EXCHANGE_MEMBERS
        candidates[:m] = kept
    c = 0
    tmp_item[c, 0] = -1
    tmp_item[c, 1] = -1
    key[c] = 0.0
    c += 1
    for x in range(m):
        i = candidates[x]
        tmp_item[c, 0] = i
        tmp_item[c, 1] = -1
        key[c] = tokens[i]
        c += 1
        for y in range(x + 1, m):
            k = candidates[y]
            tmp_item[c, 0] = i
            tmp_item[c, 1] = k
            key[c] = tokens[i] + tokens[k]
            c += 1
    order = np.argsort(key[:c], kind="mergesort")
    for s in range(c):
        sub_value[side, s, :] = 0.0
        sub_guarded[side, s] = False
        for z in range(2):
            i = tmp_item[order[s], z]
            sub_item[side, s, z] = i
            if i >= 0:
                sub_value[side, s, _SUB_TOKENS] += tokens[i]
                sub_value[side, s, _SUB_BLOCKS] += blocks[i]
                sub_value[side, s, _SUB_COST] += cost[i]
                sub_value[side, s, _SUB_PENALTY] += penalty[i]
                sub_guarded[side, s] = sub_guarded[side, s] or guarded[i]
    sub_count[side] = c
    return c + m


@njit(nogil=True)
def _first_trade(a_unit, b_unit, to_pool, room, free, unit_time, a_step, b_step, same_instance,
                 a_rest, b_rest, pair_rest, sub_value, sub_guarded,
                 sub_count, tol):  # pragma: no cover - compiled
    """The first trade of :func:`prefill_exchange_search` between unit ``a_unit`` and side
    ``b_unit`` (``to_pool``: the deferred requests) it accepts: ``(subset of A, subset of B,
    A's new time, B's new time, subsets visited)``, the subsets -1 when there is none.
    ``a_step``/``b_step``: the two units' instance steps; ``a_rest``/``b_rest``: those steps
    without the unit, ``pair_rest``: without both (one instance)."""
    visited = sub_count[a_unit]
    for sa in range(sub_count[a_unit]):
        if to_pool and sub_guarded[a_unit, sa]:
            continue
        ta = sub_value[a_unit, sa, _SUB_TOKENS]
        low = -np.inf if to_pool else ta - room[b_unit]
        high = ta + room[a_unit]
        lo, hi = 0, sub_count[b_unit]  # first subset of B with tokens >= low
        while lo < hi:
            mid = (lo + hi) // 2
            if sub_value[b_unit, mid, _SUB_TOKENS] < low:
                lo = mid + 1
            else:
                hi = mid
        for sb in range(lo, sub_count[b_unit]):
            if sub_value[b_unit, sb, _SUB_TOKENS] > high:
                break
            visited += 1
            if sa == 0 and sb == 0:
                continue
            db = sub_value[b_unit, sb, _SUB_BLOCKS] - sub_value[a_unit, sa, _SUB_BLOCKS]
            if db > free[a_unit]:
                continue
            dc = sub_value[b_unit, sb, _SUB_COST] - sub_value[a_unit, sa, _SUB_COST]
            new_a = unit_time[a_unit] + dc
            if to_pool:
                delta = (max(a_rest, new_a) - a_step + sub_value[a_unit, sa, _SUB_PENALTY]
                         - sub_value[b_unit, sb, _SUB_PENALTY])
                if delta < -tol:
                    return sa, sb, new_a, 0.0, visited
                continue
            if -db > free[b_unit]:
                continue
            new_b = unit_time[b_unit] - dc
            if same_instance:
                delta = max(pair_rest, new_a, new_b) - a_step
            else:
                delta = max(a_rest, new_a) - a_step + max(b_rest, new_b) - b_step
            if delta < -tol or (delta <= tol and max(new_a, new_b)
                                < max(unit_time[a_unit], unit_time[b_unit]) - tol):
                return sa, sb, new_a, new_b, visited
    return -1, -1, 0.0, 0.0, visited


@njit()  # not nogil: it reads the clock in object mode
def prefill_exchange_search(assignment, movable, cost, tokens, blocks, penalty, guarded, room,
                            free, unit_time, inst, n_inst, max_work,
                            deadline):  # pragma: no cover - compiled
    """Exchange descent over whole requests: up to two movable requests of a unit ``A`` trade
    places with up to two of another unit ``B`` or of the deferred ones (either side may be
    empty: a move), within both sides' token room and free KV blocks.

    Units are taken by time, largest first; for each, the deferred requests first, then the
    other units by time, least first; the first change found is applied. Between units a
    change is accepted when it lowers the objective, or leaves it and lowers the larger of the
    two units' times (so the step units shed load, and the search cannot cycle); with the
    deferred requests, when it lowers the objective (steps plus penalties). A side's subsets
    are kept by tokens, so only those that fit both rooms are visited: in a window whose units
    are full, few. ``room``, ``free`` (float) and ``unit_time`` describe the answer, chunks
    included, and are updated in place with ``assignment``.

    Its work is counted in subsets visited (and ``_BUILD_WORK`` per subset built), which is
    deterministic; it stops when no change is found, when the work reaches ``max_work``, or
    (a guard, read every ``_CLOCK_WORK`` of work between two pairs of sides) when
    ``time.perf_counter()`` passes ``deadline``. Returns ``(changes made, work done)``."""
    n = cost.shape[0]
    units = room.shape[0]
    pool = units
    most = 1 + EXCHANGE_MEMBERS + EXCHANGE_MEMBERS * (EXCHANGE_MEMBERS - 1) // 2
    sub_item = np.empty((units + 1, most, 2), np.int64)
    sub_value = np.empty((units + 1, most, 4), np.float64)
    sub_guarded = np.empty((units + 1, most), np.bool_)
    sub_count = np.zeros(units + 1, np.int64)
    candidates = np.empty(n, np.int64)
    key = np.empty(max(most, n), np.float64)
    tmp_item = np.empty((most, 2), np.int64)
    work = 0
    for side in range(units + 1):
        work += _BUILD_WORK * _exchange_side(
            side, assignment, movable, cost, tokens, blocks, penalty, guarded, sub_item,
            sub_value, sub_guarded, sub_count, candidates, key, tmp_item)
    inst_max = np.full(n_inst, -np.inf)
    for j in range(units):
        inst_max[inst[j]] = max(inst_max[inst[j]], unit_time[j])
    moves = 0
    clock_at = 0
    while True:
        top = top_three(unit_time, inst, n_inst)
        by_time = np.argsort(-unit_time, kind="mergesort")
        tol = 1e-9 * max(np.abs(inst_max).max(), 1.0)
        found = False
        for p in range(units):
            a_unit = by_time[p]
            ga = inst[a_unit]
            a_rest = max_without(top, unit_time, ga, a_unit, -1)
            for q in range(units + 1):
                b_unit = pool if q == 0 else by_time[units - q]
                if b_unit == a_unit:
                    continue
                if work >= max_work:
                    return moves, work
                if work >= clock_at:
                    with numba.objmode(now="float64"):
                        now = time.perf_counter()
                    if now > deadline:
                        return moves, work
                    clock_at = work + _CLOCK_WORK
                to_pool = b_unit == pool
                gb, b_step, b_rest, pair_rest = -1, -np.inf, -np.inf, -np.inf
                if not to_pool:
                    gb = inst[b_unit]
                    b_step = inst_max[gb]
                    b_rest = max_without(top, unit_time, gb, b_unit, -1)
                    pair_rest = max_without(top, unit_time, ga, a_unit, b_unit)
                sa, sb, new_a, new_b, visited = _first_trade(
                    a_unit, b_unit, to_pool, room, free, unit_time, inst_max[ga], b_step,
                    ga == gb, a_rest, b_rest, pair_rest, sub_value, sub_guarded, sub_count, tol)
                work += visited
                if sa >= 0:
                    dt = sub_value[b_unit, sb, _SUB_TOKENS] - sub_value[a_unit, sa, _SUB_TOKENS]
                    db = sub_value[b_unit, sb, _SUB_BLOCKS] - sub_value[a_unit, sa, _SUB_BLOCKS]
                    for z in range(2):
                        i = sub_item[a_unit, sa, z]
                        if i >= 0:
                            assignment[i] = -1 if to_pool else b_unit
                        i = sub_item[b_unit, sb, z]
                        if i >= 0:
                            assignment[i] = a_unit
                    room[a_unit] -= dt
                    free[a_unit] -= db
                    unit_time[a_unit] = new_a
                    if not to_pool:
                        room[b_unit] += dt
                        free[b_unit] += db
                        unit_time[b_unit] = new_b
                        inst_max[gb] = instance_step(unit_time, inst, gb)
                    inst_max[ga] = instance_step(unit_time, inst, ga)
                    for side in (a_unit, b_unit):
                        work += _BUILD_WORK * _exchange_side(
                            side, assignment, movable, cost, tokens, blocks, penalty, guarded,
                            sub_item, sub_value, sub_guarded, sub_count, candidates, key,
                            tmp_item)
                    found = True
                    break
            if found:
                break
        if not found:
            return moves, work
        moves += 1
