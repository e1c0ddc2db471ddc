"""The greedy's prefill pass: water-filling of the requests in one order."""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit
from sbsopt.window._kernels.chunks import chunk_now, chunkable_units

__all__ = ["prefill_greedy"]


@njit(nogil=True)
def prefill_greedy(order, cost, tokens, blocks, penalty, guarded, room, free, unit_time, inst,
                   inst_max, chunk_tokens, used, chunking, spec):  # pragma: no cover - compiled
    """Water-filling in ``order``: each request goes to the feasible unit that least raises its
    instance's step time (ties: least loaded unit); deferred when that raise is not below its
    deferral penalty (guarded requests are placed whenever they fit). With ``chunking``, a
    request that fits no unit whole places its first chunk at once (``chunks._best_chunk``, the
    chunk split of PBAA), so that large requests claim the room before smaller ones fill it.
    ``room``, ``free``, ``unit_time``, ``inst_max``, ``chunk_tokens`` (tokens of a chunked
    request) and ``used`` (units holding a chunk) are updated in place."""
    n = cost.shape[0]
    units = room.shape[0]
    if inst_max.shape[0] == 1:
        return _prefill_greedy_one(order, cost, tokens, blocks, penalty, guarded, room, free,
                                   unit_time, inst, inst_max, chunk_tokens, used, chunking,
                                   spec)
    assignment = np.full(n, -1, np.int64)
    min_chunk = max(spec[4], 1)
    chunkable = chunkable_units(room, used, min_chunk) if chunking else 0
    for k in range(order.shape[0]):
        i = order[k]
        best = -1
        best_raise = np.inf
        best_time = np.inf
        for j in range(units):
            if tokens[i] <= room[j] and blocks[i] <= free[j]:
                t = unit_time[j] + cost[i]
                d = max(0.0, t - inst_max[inst[j]])
                if d < best_raise or (d == best_raise and t < best_time):
                    best, best_raise, best_time = j, d, t
        if best < 0:
            if chunkable > 0 and chunk_now(i, tokens, blocks, penalty, room, free, unit_time,
                                           inst, inst_max, used, spec, assignment,
                                           chunk_tokens) >= 0:
                chunkable -= 1
            continue
        if guarded[i] or best_raise < penalty[i]:
            assignment[i] = best
            if chunkable > 0 and not used[best] and room[best] >= min_chunk > room[best] - tokens[i]:
                chunkable -= 1
            room[best] -= tokens[i]
            free[best] -= blocks[i]
            unit_time[best] = best_time
            if best_time > inst_max[inst[best]]:
                inst_max[inst[best]] = best_time
    return assignment


@njit(nogil=True, inline="always")
def _move_up(by_time, sorted_time, p, unit, new_time):  # pragma: no cover - compiled
    """Unit ``unit`` at position ``p`` of the ``(time, index)`` order now takes ``new_time``
    (not smaller): binary search of its new position and a block shift."""
    units = by_time.shape[0]
    lo, hi = p + 1, units
    while lo < hi:
        mid = (lo + hi) // 2
        if sorted_time[mid] < new_time or (sorted_time[mid] == new_time and by_time[mid] < unit):
            lo = mid + 1
        else:
            hi = mid
    for q in range(p, lo - 1):
        by_time[q] = by_time[q + 1]
        sorted_time[q] = sorted_time[q + 1]
    by_time[lo - 1] = unit
    sorted_time[lo - 1] = new_time


@njit(nogil=True)
def _prefill_greedy_one(order, cost, tokens, blocks, penalty, guarded, room, free, unit_time,
                        inst, inst_max, chunk_tokens, used, chunking,
                        spec):  # pragma: no cover - compiled
    """:func:`prefill_greedy` for one instance. There the least step raise, then least time,
    is the feasible unit of least time, so units are kept sorted by ``(time, index)`` and the
    scan stops at the first feasible one (and the units tied with it after rounding)."""
    n = cost.shape[0]
    units = room.shape[0]
    assignment = np.full(n, -1, np.int64)
    by_time = np.argsort(unit_time, kind="mergesort")
    sorted_time = unit_time[by_time]
    # rooms only shrink: a request larger than the largest room fits nowhere whole
    room_max = room.max() if units else 0
    min_chunk = max(spec[4], 1)
    chunkable = chunkable_units(room, used, min_chunk) if chunking else 0
    for k in range(order.shape[0]):
        i = order[k]
        best = -1
        best_time = np.inf
        p_best = -1
        need = tokens[i]
        if need <= room_max:
            c = cost[i]
            need_blocks = blocks[i]
            for p in range(units):
                j = by_time[p]
                if need <= room[j] and need_blocks <= free[j]:
                    t = sorted_time[p] + c
                    if best >= 0 and t > best_time:
                        break
                    if best < 0 or t < best_time or j < best:
                        best, best_time, p_best = j, t, p
        if best < 0:
            j = -1
            if chunkable > 0:
                j = chunk_now(i, tokens, blocks, penalty, room, free, unit_time, inst, inst_max,
                              used, spec, assignment, chunk_tokens)
            if j >= 0:
                chunkable -= 1
                for p in range(units):
                    if by_time[p] == j:
                        _move_up(by_time, sorted_time, p, j, unit_time[j])
                        break
                room_max = room.max()
            continue
        if not (guarded[i] or max(0.0, best_time - inst_max[0]) < penalty[i]):
            continue
        assignment[i] = best
        shrinks_max = room[best] == room_max
        if chunkable > 0 and not used[best] and room[best] >= min_chunk > room[best] - tokens[i]:
            chunkable -= 1
        room[best] -= tokens[i]
        if shrinks_max:
            room_max = room.max()
        free[best] -= blocks[i]
        unit_time[best] = best_time
        if best_time > inst_max[0]:
            inst_max[0] = best_time
        _move_up(by_time, sorted_time, p_best, best, best_time)
    return assignment
