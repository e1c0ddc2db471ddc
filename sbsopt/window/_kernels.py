"""Numba kernels of the greedy heuristics, with plain-Python references for the tests.

Kernels take contiguous arrays only and never allocate Python objects; the typed wrappers in
``sbsopt.window.greedy`` validate and copy. Each ``*_py`` function is an independent, simpler
(and much slower) statement of the same rule; tests compare them on random instances.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np

from sbsopt._jit import njit

__all__ = [
    "prefill_greedy",
    "prefill_greedy_py",
    "chunk_fill",
    "trim_step_chunks",
    "chunk_fill_py",
    "decode_iqr_lex",
    "decode_iqr_lex_py",
    "decode_min_step",
    "decode_min_step_py",
    "prefill_local_search",
    "prefill_ruin_recreate",
    "prefill_exchange_search",
]


@njit(nogil=True)
def _chunk_cost(k, cached, alpha, beta, gamma):  # pragma: no cover - compiled
    return alpha * k + beta * k * (cached + k / 2.0) + gamma


@njit(nogil=True)
def _best_chunk(i, tokens, blocks, penalty, room, free, unit_time, inst, inst_max, used,
                spec):  # pragma: no cover - compiled
    """Where the first chunk of request ``i`` lowers the objective most: ``(unit, tokens,
    unit time after)``, unit -1 if nowhere. ``spec = (cached, alpha, beta, gamma, min_chunk)``.

    A unit takes at most one chunk (``used``), of at most ``tokens - 1`` tokens and its room,
    KV blocks pro rata (rounded up); the change is the step raise minus the share of the
    deferral penalty removed (``penalty * k / tokens``), and it must be negative."""
    cached, alpha, beta, gamma, min_chunk = spec
    best = -1
    best_delta = 0.0
    best_k = 0
    best_time = 0.0
    if tokens[i] < 2:
        return best, best_k, best_time
    for j in range(room.shape[0]):
        if used[j]:
            continue
        k = min(room[j], tokens[i] - 1)
        if blocks[i] > free[j]:
            # largest k whose pro-rata blocks ceil(k*blocks/tokens) fit in free[j]
            k = min(k, (free[j] * tokens[i]) // blocks[i])
        if k < min_chunk or k <= 0:
            continue
        t = unit_time[j] + _chunk_cost(k, cached[i], alpha, beta, gamma)
        delta = max(0.0, t - inst_max[inst[j]]) - penalty[i] * k / tokens[i]
        if delta < best_delta:
            best, best_delta, best_k, best_time = j, delta, k, t
    return best, best_k, best_time


@njit(nogil=True)
def _chunkable_units(room, used, min_chunk):  # pragma: no cover - compiled
    """Units that could still take a chunk (none used yet, room for ``min_chunk`` tokens):
    when there are none, the per-request chunk scan is skipped."""
    count = 0
    for j in range(room.shape[0]):
        if not used[j] and room[j] >= max(min_chunk, 1):
            count += 1
    return count


@njit(nogil=True, inline="always")
def _take_chunk(i, j, k, t, tokens, blocks, room, free, unit_time, inst, inst_max, used,
                assignment, chunk_tokens):  # pragma: no cover - compiled
    assignment[i] = j
    chunk_tokens[i] = k
    used[j] = True
    room[j] -= k
    free[j] -= (k * blocks[i] + tokens[i] - 1) // tokens[i]
    unit_time[j] = t
    if t > inst_max[inst[j]]:
        inst_max[inst[j]] = t


@njit(nogil=True, inline="always")
def _chunk_now(i, tokens, blocks, penalty, room, free, unit_time, inst, inst_max, used, spec,
               assignment, chunk_tokens):  # pragma: no cover - compiled
    """Place request ``i``'s first chunk where :func:`_best_chunk` finds it helps (state
    updated in place); returns the unit, or -1 when it is nowhere worth it."""
    j, size, t = _best_chunk(i, tokens, blocks, penalty, room, free, unit_time, inst, inst_max,
                             used, spec)
    if j >= 0:
        _take_chunk(i, j, size, t, tokens, blocks, room, free, unit_time, inst, inst_max, used,
                    assignment, chunk_tokens)
    return j


@njit(nogil=True)
def prefill_greedy(order, cost, tokens, blocks, penalty, guarded, room, free, unit_time, inst,
                   inst_max, chunk_tokens, used, chunking, spec):  # pragma: no cover - compiled
    """Water-filling in ``order``: each request goes to the feasible unit that least raises its
    instance's step time (ties: least loaded unit); deferred when that raise is not below its
    deferral penalty (guarded requests are placed whenever they fit). With ``chunking``, a
    request that fits no unit whole places its first chunk at once (:func:`_best_chunk`, the
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
    chunkable = _chunkable_units(room, used, min_chunk) if chunking else 0
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
            if chunkable > 0 and _chunk_now(i, tokens, blocks, penalty, room, free, unit_time,
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
    chunkable = _chunkable_units(room, used, min_chunk) if chunking else 0
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
                j = _chunk_now(i, tokens, blocks, penalty, room, free, unit_time, inst, inst_max,
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


def _best_chunk_py(i, tokens, cached, blocks, penalty, room, free, unit_time, inst, step, used,
                   alpha, beta, gamma, min_chunk):
    """Reference of :func:`_best_chunk` on lists: ``(delta, unit, tokens, time)`` or None."""
    if tokens[i] < 2:
        return None
    best = None
    for j in range(len(room)):
        if j in used:
            continue
        k = min(room[j], tokens[i] - 1)
        if blocks[i] > free[j]:
            k = min(k, (free[j] * tokens[i]) // blocks[i])
        if k < max(min_chunk, 1):
            continue
        t = unit_time[j] + alpha * k + beta * k * (cached[i] + k / 2.0) + gamma
        delta = max(0.0, t - step[inst[j]]) - penalty[i] * k / tokens[i]
        if delta < 0 and (best is None or delta < best[0]):
            best = (delta, j, k, t)
    return best


def _steps_py(unit_time, inst):
    """Step time per instance (the references' dict form of ``inst_max``)."""
    step = {}
    for j, g in enumerate(inst):
        step[g] = max(step.get(g, 0.0), unit_time[j])
    return step


def _placed_arrays_py(placed, n):
    """``{request: (unit, chunk tokens)}`` to ``(unit per request, chunk tokens per request)``."""
    unit = np.full(n, -1, np.int64)
    chunk_tokens = np.zeros(n, np.int64)
    for i, (j, k) in placed.items():
        unit[i], chunk_tokens[i] = j, k
    return unit, chunk_tokens


def _take_chunk_py(best, i, tokens, blocks, room, free, unit_time, inst, step, used, placed):
    _, j, k, t = best
    placed[i] = (j, k)
    used.add(j)
    room[j] -= k
    free[j] -= -(-(k * blocks[i]) // tokens[i])
    unit_time[j] = t
    step[inst[j]] = max(step[inst[j]], t)


def prefill_greedy_py(order, cost, tokens, blocks, penalty, guarded, room, free, unit_time, inst,
                      chunking=False, cached=None, alpha=0.0, beta=0.0, gamma=0.0, min_chunk=1):
    """Reference of :func:`prefill_greedy`: ``(assignment, chunk_tokens)``, inputs untouched."""
    room, free, unit_time = list(room), list(free), list(unit_time)
    step = _steps_py(unit_time, inst)
    placed, used = {}, set()
    for i in order:
        options = []
        for j in range(len(room)):
            if tokens[i] <= room[j] and blocks[i] <= free[j]:
                t = unit_time[j] + cost[i]
                options.append((max(0.0, t - step[inst[j]]), t, j))
        if not options:
            best = chunking and _best_chunk_py(i, tokens, cached, blocks, penalty, room, free,
                                               unit_time, inst, step, used, alpha, beta, gamma,
                                               min_chunk)
            if best:
                _take_chunk_py(best, i, tokens, blocks, room, free, unit_time, inst, step, used,
                               placed)
            continue
        raise_, t, j = min(options)
        if guarded[i] or raise_ < penalty[i]:
            placed[i] = (j, 0)
            room[j] -= tokens[i]
            free[j] -= blocks[i]
            unit_time[j] = t
            step[inst[j]] = max(step[inst[j]], t)
    return _placed_arrays_py(placed, len(cost))


@njit(nogil=True)
def chunk_fill(order, tokens, blocks, penalty, room, free, unit_time, inst, inst_max, used,
               spec):  # pragma: no cover - compiled
    """Place the first chunk of deferred requests (in ``order``) where :func:`_best_chunk`
    finds it lowers the objective; at most one chunk per unit (``used``, updated in place)
    and per request. Returns ``(unit, chunk_tokens)`` per request (-1 / 0 if none)."""
    n = tokens.shape[0]
    chunk_unit = np.full(n, -1, np.int64)
    chunk_tokens = np.zeros(n, np.int64)
    chunkable = _chunkable_units(room, used, spec[4])
    for q in range(order.shape[0]):
        if chunkable == 0:
            break
        if _chunk_now(order[q], tokens, blocks, penalty, room, free, unit_time, inst, inst_max,
                      used, spec, chunk_unit, chunk_tokens) >= 0:
            chunkable -= 1
    return chunk_unit, chunk_tokens


@njit(nogil=True, inline="always")
def _chunk_blocks(k, blocks_i, tokens_i):  # pragma: no cover - compiled
    """KV blocks of a chunk of ``k`` tokens: pro rata, rounded up (as :func:`_take_chunk`)."""
    return (k * blocks_i + tokens_i - 1) // tokens_i


@njit(nogil=True)
def _trimmed_size(k, t_without, target, cached, dens, alpha, beta, gamma,
                  min_chunk):  # pragma: no cover - compiled
    """Chunk size below ``k`` for a step unit: the larger of the size whose marginal step
    cost ``alpha + beta*(cached + k)`` equals its penalty per token ``dens`` and the size that
    brings the unit's time down to ``target`` (0: no chunk; ``min_chunk`` at least). Sizes
    are worked out as floats and clipped to ``[0, k]`` before they become integers."""
    if beta > 0.0:
        marginal = (dens - alpha) / beta - cached
    else:
        marginal = k if dens > alpha else 0.0
    room = target - t_without - gamma  # time the chunk may take, gamma included
    if room <= 0.0:
        level = 0.0
    elif beta > 0.0:
        b = alpha + beta * cached
        level = (-b + math.sqrt(b * b + 2.0 * beta * room)) / beta
    else:
        level = room / alpha if alpha > 0.0 else k
    size = int(math.floor(min(max(marginal, level, 0.0), k)))
    if 0 < size < min_chunk:
        size = min(min_chunk, k)
    return size


@njit(nogil=True)
def trim_step_chunks(order, assignment, chunk_tokens, cost, tokens, blocks, penalty, guarded,
                     room, free, unit_time, inst, inst_max, used,
                     spec):  # pragma: no cover - compiled
    """Shrink the chunk on each instance's step unit, then refill the room it frees.

    A chunk is sized by its room when it is placed, so on the unit that sets the step its last
    tokens can raise the step by more than the penalty share they remove. The chunk shrinks to
    the larger of the size where its marginal step cost meets its penalty per token and the
    size that brings the unit down to the next unit of the instance; deferred whole requests
    (in ``order``) then fill the freed room where their step raise is below their penalty.
    A step unit without a chunk tries the same on its costliest whole request that is not
    guarded, which then becomes its chunk (a 14,050-token prompt alone on the step unit of a
    256 x 32 window: 5.7% off the objective as a 9,000-token chunk). The change is kept when
    the objective drops, and repeated on the new step unit (at most once per unit); a guarded
    request keeps a chunk. State is updated in place; returns the objective change (<= 0)."""
    cached, alpha, beta, gamma, min_chunk = spec
    n = tokens.shape[0]
    units = room.shape[0]
    refill = np.empty(n, np.int64)
    total = 0.0
    groups = inst_max.shape[0]
    for g in range(groups):
        for _ in range(units):
            ranked = _top_three(unit_time, inst, groups)[g]
            top = ranked[0]
            second = unit_time[ranked[1]] if ranked[1] >= 0 else -np.inf
            if top < 0:
                break
            has_chunk = used[top]
            h = -1
            for i in range(n):
                if assignment[i] != top:
                    continue
                if has_chunk:
                    if chunk_tokens[i] > 0:
                        h = i
                        break
                elif not guarded[i] and (h < 0 or cost[i] > cost[h]):
                    h = i  # the costliest whole request: shrunk, it becomes the chunk
            if h < 0:
                break
            k = chunk_tokens[h] if has_chunk else tokens[h]
            step = unit_time[top]
            t_without = step - (_chunk_cost(k, cached[h], alpha, beta, gamma) if has_chunk
                                else cost[h])
            size = _trimmed_size(k, t_without, second, cached[h], penalty[h] / tokens[h],
                                 alpha, beta, gamma, max(min_chunk, 1))
            if size == 0 and guarded[h]:
                size = min(max(min_chunk, 1), k)
            if size >= k:
                break
            t = t_without + (_chunk_cost(size, cached[h], alpha, beta, gamma) if size else 0.0)
            new_step = max(second, t)
            delta = new_step - step + penalty[h] * (k - size) / tokens[h]
            room_left = room[top] + k - size
            free_left = free[top] + _chunk_blocks(k, blocks[h], tokens[h]) - _chunk_blocks(
                size, blocks[h], tokens[h])
            m = 0
            for q in range(order.shape[0]):
                i = order[q]
                if assignment[i] >= 0 or i == h or tokens[i] > room_left or blocks[i] > free_left:
                    continue
                raised = max(new_step, t + cost[i])
                if raised - new_step < penalty[i]:
                    delta += raised - new_step - penalty[i]
                    refill[m] = i
                    m += 1
                    t += cost[i]
                    new_step = raised
                    room_left -= tokens[i]
                    free_left -= blocks[i]
            if not delta < -1e-9 * step:
                break
            total += delta
            if size:
                chunk_tokens[h] = size
                used[top] = True
            else:
                chunk_tokens[h] = 0
                assignment[h] = -1
                used[top] = False
            for q in range(m):
                assignment[refill[q]] = top
            room[top] = room_left
            free[top] = free_left
            unit_time[top] = t
            inst_max[g] = new_step
    return total


def chunk_fill_py(order, tokens, cached, blocks, penalty, room, free, unit_time, inst,
                  alpha, beta, gamma, min_chunk, used=()):
    """Reference of :func:`chunk_fill` (inputs untouched; ``used``: units already chunked)."""
    room, free, unit_time, used = list(room), list(free), list(unit_time), set(used)
    step = _steps_py(unit_time, inst)
    placed = {}
    for i in order:
        best = _best_chunk_py(i, tokens, cached, blocks, penalty, room, free, unit_time, inst,
                              step, used, alpha, beta, gamma, min_chunk)
        if best is not None:
            _take_chunk_py(best, i, tokens, blocks, room, free, unit_time, inst, step, used,
                           placed)
    return _placed_arrays_py(placed, len(tokens))


@njit(nogil=True)
def _quantile_sorted(values, m, q):  # pragma: no cover - compiled
    pos = q * (m - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, m - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


@njit(nogil=True)
def decode_iqr_lex(order, context, blocks, batch, max_batch, kv, free, iqr_k):  # pragma: no cover
    """IQR-aware lexicographic decode placement, longest first (``order``).

    Candidates: units with a free batch slot and enough free KV blocks. With at least 4
    candidates, those whose KV tokens exceed ``Q3 + iqr_k * IQR`` (of the candidates) are
    masked. The request goes to the lexicographic minimum of ``(batch, kv tokens)``; the
    unit's batch, KV tokens and free blocks are updated virtually. ``batch``, ``kv`` and
    ``free`` are updated in place."""
    n = context.shape[0]
    units = batch.shape[0]
    assignment = np.full(n, -1, np.int64)
    # unit state kept sorted by KV tokens (one block shift per placement), so candidates come
    # out in KV order: the quantiles are read off and the fence cuts a prefix
    unit_s = np.argsort(kv, kind="mergesort")
    kv_s = kv[unit_s].astype(np.float64)
    batch_s = batch[unit_s]
    slots_s = max_batch[unit_s] - batch_s
    free_s = free[unit_s]
    cand = np.empty(units, np.int64)
    vals = np.empty(units, np.float64)
    full = 0  # units without a free slot
    min_free = free_s.min() if units else 0
    for p in range(units):
        if slots_s[p] <= 0:
            full += 1
    for q in range(order.shape[0]):
        i = order[q]
        if full == 0 and blocks[i] <= min_free:
            m = units  # every unit is a candidate: positions are the candidates
            for c in range(m):
                cand[c] = c
            values = kv_s
        else:
            m = 0
            for p in range(units):
                if slots_s[p] > 0 and blocks[i] <= free_s[p]:
                    cand[m] = p
                    vals[m] = kv_s[p]
                    m += 1
            values = vals
        if m == 0:
            continue
        fence = np.inf
        if m >= 4:
            q1 = _quantile_sorted(values, m, 0.25)
            q3 = _quantile_sorted(values, m, 0.75)
            fence = q3 + iqr_k * (q3 - q1)
        best = cand[0]
        for c in range(1, m):
            p = cand[c]
            if kv_s[p] > fence:
                break
            if (batch_s[p] < batch_s[best] or (batch_s[p] == batch_s[best] and (
                    kv_s[p] < kv_s[best] or (kv_s[p] == kv_s[best] and unit_s[p] < unit_s[best])))):
                best = p
        j = unit_s[best]
        assignment[i] = j
        batch[j] += 1
        kv[j] += context[i]
        free[j] -= blocks[i]
        new_kv = kv_s[best] + context[i]
        new_batch = batch_s[best] + 1
        new_slots = slots_s[best] - 1
        new_free = free_s[best] - blocks[i]
        if new_slots == 0:
            full += 1
        min_free = min(min_free, new_free)
        p = best
        while p + 1 < units and kv_s[p + 1] < new_kv:
            kv_s[p] = kv_s[p + 1]
            batch_s[p] = batch_s[p + 1]
            slots_s[p] = slots_s[p + 1]
            free_s[p] = free_s[p + 1]
            unit_s[p] = unit_s[p + 1]
            p += 1
        kv_s[p] = new_kv
        batch_s[p] = new_batch
        slots_s[p] = new_slots
        free_s[p] = new_free
        unit_s[p] = j
    return assignment

def decode_iqr_lex_py(order, context, blocks, batch, max_batch, kv, free, iqr_k):
    """Reference of :func:`decode_iqr_lex` (inputs untouched)."""
    batch, kv, free = list(batch), list(kv), list(free)
    assignment = np.full(len(context), -1, np.int64)
    for i in order:
        cands = [j for j in range(len(batch)) if batch[j] < max_batch[j] and blocks[i] <= free[j]]
        if not cands:
            continue
        if len(cands) >= 4:
            q1, q3 = np.quantile(np.array([kv[j] for j in cands], np.float64), [0.25, 0.75])
            cands = [j for j in cands if kv[j] <= q3 + iqr_k * (q3 - q1)]
        j = min(cands, key=lambda u: (batch[u], kv[u], u))
        assignment[i] = j
        batch[j] += 1
        kv[j] += context[i]
        free[j] -= blocks[i]
    return assignment


@njit(nogil=True)
def decode_min_step(order, context, blocks, batch, max_batch, kv, free, inst, n_inst, a,
                    b):  # pragma: no cover - compiled
    """Objective-aware decode placement, longest first: each request goes to the feasible
    unit that least raises its instance's ``a * max batch + b * max KV tokens`` (ties: the
    lexicographic minimum of ``(batch, kv tokens)``). Arrays are updated in place."""
    n = context.shape[0]
    units = batch.shape[0]
    assignment = np.full(n, -1, np.int64)
    max_b = np.zeros(n_inst, np.float64)
    max_k = np.zeros(n_inst, np.float64)
    for j in range(units):
        max_b[inst[j]] = max(max_b[inst[j]], batch[j])
        max_k[inst[j]] = max(max_k[inst[j]], kv[j])
    # per-unit copies in float so that the raise pass is branch-free (and vectorised)
    batch_f = batch.astype(np.float64)
    kv_f = kv.astype(np.float64)
    raise_ = np.empty(units, np.float64)
    for q in range(order.shape[0]):
        i = order[q]
        ctx = context[i]
        least = np.inf
        if n_inst == 1:
            top_b = max_b[0] - 1.0
            top_k = max_k[0] - ctx
            need = blocks[i]
            for j in range(units):
                r = a * max(0.0, batch_f[j] - top_b) + b * max(0.0, kv_f[j] - top_k)
                r = r if batch[j] < max_batch[j] and need <= free[j] else np.inf
                raise_[j] = r
                least = min(least, r)
        else:
            for j in range(units):
                g = inst[j]
                r = (a * max(0.0, batch_f[j] + 1.0 - max_b[g])
                     + b * max(0.0, kv_f[j] + ctx - max_k[g]))
                r = r if batch[j] < max_batch[j] and blocks[i] <= free[j] else np.inf
                raise_[j] = r
                least = min(least, r)
        if least == np.inf:
            continue
        best = -1
        for j in range(units):
            if raise_[j] == least and (best < 0 or batch[j] < batch[best] or (
                    batch[j] == batch[best] and kv[j] < kv[best])):
                best = j
        assignment[i] = best
        batch[best] += 1
        kv[best] += ctx
        free[best] -= blocks[i]
        batch_f[best] += 1.0
        kv_f[best] += ctx
        g = inst[best]
        max_b[g] = max(max_b[g], batch_f[best])
        max_k[g] = max(max_k[g], kv_f[best])
    return assignment

def decode_min_step_py(order, context, blocks, batch, max_batch, kv, free, inst, a, b):
    """Reference of :func:`decode_min_step` (inputs untouched)."""
    batch, kv, free = list(batch), list(kv), list(free)
    max_b, max_k = {}, {}
    for j, g in enumerate(inst):
        max_b[g] = max(max_b.get(g, 0), batch[j])
        max_k[g] = max(max_k.get(g, 0), kv[j])
    assignment = np.full(len(context), -1, np.int64)
    for i in order:
        options = []
        for j in range(len(batch)):
            if batch[j] < max_batch[j] and blocks[i] <= free[j]:
                g = inst[j]
                r = a * max(0, batch[j] + 1 - max_b[g]) + b * max(0, kv[j] + context[i] - max_k[g])
                options.append((r, batch[j], kv[j], j))
        if not options:
            continue
        j = min(options)[3]
        assignment[i] = j
        batch[j] += 1
        kv[j] += context[i]
        free[j] -= blocks[i]
        max_b[inst[j]] = max(max_b[inst[j]], batch[j])
        max_k[inst[j]] = max(max_k[inst[j]], kv[j])
    return assignment


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
                inst_max[g] = _instance_step(unit_time, inst, g)
                break
        if not improved and not _exchange_deferred(assignment, cost, tokens, blocks, penalty,
                                                   guarded, room, free, unit_time, inst,
                                                   inst_max, chunk_tokens):
            break
        changes += 1
    return changes


@njit(nogil=True, inline="always")
def _instance_step(unit_time, inst, g):  # pragma: no cover - compiled
    """Largest unit time of instance ``g`` (its step time less the base)."""
    step = -np.inf
    for j in range(unit_time.shape[0]):
        if inst[j] == g and unit_time[j] > step:
            step = unit_time[j]
    return step


@njit(nogil=True)
def _top_three(unit_time, inst, groups):  # pragma: no cover - compiled
    """Per instance, its three units of largest time (index -1 where it has fewer)."""
    top = np.full((groups, 3), -1, np.int64)
    for j in range(unit_time.shape[0]):
        row = top[inst[j]]
        k = 3
        while k > 0 and (row[k - 1] < 0 or unit_time[j] > unit_time[row[k - 1]]):
            k -= 1
        if k < 3:
            for q in range(2, k, -1):
                row[q] = row[q - 1]
            row[k] = j
    return top


@njit(nogil=True, inline="always")
def _max_without(top, unit_time, g, ja, jb):  # pragma: no cover - compiled
    """Largest unit time of instance ``g`` over its units other than ``ja`` and ``jb``
    (``-inf`` when none is left: the instance has at most those two)."""
    for q in range(3):
        j = top[g, q]
        if j < 0:
            break
        if j != ja and j != jb:
            return unit_time[j]
    return -np.inf


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
    top = _top_three(unit_time, inst, groups)
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
                delta = (max(_max_without(top, unit_time, g, j, -1), t) - inst_max[g]
                         + penalty[a] - penalty[d])
                if delta < best:
                    best, best_d, best_a, best_j, best_to = delta, d, a, j, -1
            q = move_to[a]
            if q < 0 or (tokens[d] <= room[j] and blocks[d] <= free[j]):
                continue
            h = inst[q]  # a moves to q
            if h == g:
                delta = max(_max_without(top, unit_time, g, j, q), t,
                            unit_time[q] + cost[a]) - inst_max[g] - penalty[d]
            else:
                delta = (max(_max_without(top, unit_time, g, j, -1), t) - inst_max[g]
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
    inst_max[inst[j]] = _instance_step(unit_time, inst, inst[j])
    if best_to >= 0:
        inst_max[inst[best_to]] = _instance_step(unit_time, inst, inst[best_to])
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
        top = _top_three(unit_time, inst, n_inst)
        by_time = np.argsort(-unit_time, kind="mergesort")
        tol = 1e-9 * max(np.abs(inst_max).max(), 1.0)
        found = False
        for p in range(units):
            a_unit = by_time[p]
            ga = inst[a_unit]
            a_rest = _max_without(top, unit_time, ga, a_unit, -1)
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
                    b_rest = _max_without(top, unit_time, gb, b_unit, -1)
                    pair_rest = _max_without(top, unit_time, ga, a_unit, b_unit)
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
                        inst_max[gb] = _instance_step(unit_time, inst, gb)
                    inst_max[ga] = _instance_step(unit_time, inst, ga)
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


@njit(nogil=True)
def _knapsack_gain_nb(gain, weight, capacity, order):  # pragma: no cover - compiled
    """max sum(gain*a) s.t. sum(weight*a) <= capacity, 0 <= a <= 1 (fractional knapsack);
    ``order``: the items by decreasing ``gain / weight`` if already known, else empty."""
    total_w = 0.0
    total_g = 0.0
    for i in range(gain.shape[0]):
        if gain[i] > 0:
            total_w += weight[i]
            total_g += gain[i]
    if total_w <= capacity:
        return total_g
    if order.shape[0] == 0:
        ratio = np.empty(gain.shape[0], np.float64)
        for i in range(gain.shape[0]):
            ratio[i] = -np.inf if weight[i] <= 0 else -gain[i] / weight[i]
        order = np.argsort(ratio)
    used = 0.0
    total = 0.0
    for q in range(order.shape[0]):
        i = order[q]
        if gain[i] <= 0:
            continue
        if used + weight[i] <= capacity:
            used += weight[i]
            total += gain[i]
        else:
            total += gain[i] * max(capacity - used, 0.0) / weight[i]
            break
    return total


@njit(nogil=True)
def _fraction_value(lin, half_inv_quad, quad, pen, weight, top,
                    lam):  # pragma: no cover - compiled
    """``(sum_i min_a q_i(a), sum_i weight_i * argmin_a, -sum of slopes)`` over ``a`` in
    ``[0, top_i]`` of ``q_i(a) = quad_i*a**2 + (lin_i - pen_i + lam*weight_i)*a``
    (``half_inv_quad = 1 / (2*quad)``, 0 where ``quad`` is 0: no division in the loop)."""
    value = 0.0
    used = 0.0
    slope = 0.0
    for i in range(lin.shape[0]):
        s = lin[i] - pen[i] + lam * weight[i]
        if quad[i] > 0.0:
            a = -s * half_inv_quad[i]
            if a <= 0.0:
                a = 0.0
            elif a >= top[i]:
                a = top[i]
            else:
                slope += weight[i] * weight[i] * half_inv_quad[i]
        else:
            a = top[i] if s < 0.0 else 0.0
        value += quad[i] * a * a + s * a
        used += weight[i] * a
    return value, used, slope


@njit(nogil=True)
def _fraction_dual(lin, quad, pen, weight, top, capacity):  # pragma: no cover - compiled
    """Lagrangian lower bound of ``min sum_i quad_i a_i**2 + (lin_i - pen_i) a_i`` over
    ``0 <= a_i <= top_i`` with ``sum_i weight_i a_i <= capacity``: the dual function at the
    multiplier where the relaxed answer just fills the capacity (safeguarded Newton steps on
    the piecewise-linear fill, from the step at 0; any multiplier gives a valid bound).
    ``capacity >= 2**61`` means unlimited."""
    n = lin.shape[0]
    half_inv_quad = np.zeros(n, np.float64)
    for i in range(n):
        if quad[i] > 0.0:
            half_inv_quad[i] = 0.5 / quad[i]
    value, used, slope = _fraction_value(lin, half_inv_quad, quad, pen, weight, top, 0.0)
    if capacity >= 2.0**61 or used <= capacity:
        return value
    lo = 0.0
    hi = 0.0
    for i in range(n):
        if weight[i] > 0:
            hi = max(hi, (pen[i] - lin[i]) / weight[i])
    lam = (used - capacity) / slope if slope > 0.0 else -1.0
    if not lo < lam < hi:
        lam = hi / 2.0
    best = value
    for _ in range(60):
        value, used, slope = _fraction_value(lin, half_inv_quad, quad, pen, weight, top, lam)
        best = max(best, value - lam * capacity)
        if abs(used - capacity) <= 1e-9 * capacity or hi - lo <= 1e-12 * hi:
            break
        if used > capacity:
            lo = lam
        else:
            hi = lam
        step = lam + (used - capacity) / slope if slope > 0.0 else -1.0
        lam = step if lo < step < hi else (lo + hi) / 2.0
    return best


@njit(nogil=True)
def decode_value(assignment, context, batch, kv, inst, n_inst, base, a, b,
                 penalty):  # pragma: no cover - compiled
    """``sbsopt.window.objective.decode_objective`` in one compiled pass (inputs untouched)."""
    bmax = np.full(n_inst, -np.inf)
    kmax = np.full(n_inst, -np.inf)
    add_b = np.zeros(batch.shape[0], np.int64)
    add_k = np.zeros(batch.shape[0], np.float64)
    value = n_inst * base
    for i in range(assignment.shape[0]):
        j = assignment[i]
        if j < 0:
            value += penalty[i]
        else:
            add_b[j] += 1
            add_k[j] += context[i]
    for j in range(batch.shape[0]):
        g = inst[j]
        bmax[g] = max(bmax[g], batch[j] + add_b[j])
        kmax[g] = max(kmax[g], kv[j] + add_k[j])
    return value + a * bmax.sum() + b * kmax.sum()


@njit(nogil=True)
def decode_best_of(context, blocks, batch, max_batch, kv, free, inst, n_inst, base, a, b,
                   penalty, iqr_k):  # pragma: no cover - compiled
    """:func:`decode_iqr_lex` and :func:`decode_min_step`, longest context first, on copies of
    the unit state; returns ``(row, assignment, objective)`` of the better (row 0: IQR-lex,
    kept on ties). One call instead of five keeps the dispatch overhead off the hot path."""
    order = np.argsort(-context, kind="mergesort")
    iqr = decode_iqr_lex(order, context, blocks, batch.copy(), max_batch, kv.copy(), free.copy(),
                         iqr_k)
    step = decode_min_step(order, context, blocks, batch.copy(), max_batch, kv.copy(),
                           free.copy(), inst, n_inst, a, b)
    iqr_value = decode_value(iqr, context, batch, kv, inst, n_inst, base, a, b, penalty)
    step_value = decode_value(step, context, batch, kv, inst, n_inst, base, a, b, penalty)
    if step_value < iqr_value:
        return 1, step, step_value
    return 0, iqr, iqr_value


@njit(nogil=True)
def decode_analytic_bound(batch, max_batch, kv, free, instance, n_inst, base, a, b, context,
                          blocks, pen):  # pragma: no cover - compiled
    """The analytic decode bound of ``sbsopt.window.bounds`` in one compiled pass."""
    units = batch.shape[0]
    n = context.shape[0]
    size = np.zeros(n_inst, np.int64)
    bmax = np.full(n_inst, -np.inf)
    kmax = np.full(n_inst, -np.inf)
    bsum = np.zeros(n_inst, np.float64)
    ksum = np.zeros(n_inst, np.float64)
    slots_total = 0.0
    free_total = 0.0
    for j in range(units):
        g = instance[j]
        size[g] += 1
        bmax[g] = max(bmax[g], batch[j])
        kmax[g] = max(kmax[g], kv[j])
        bsum[g] += batch[j]
        ksum[g] += kv[j]
        slots_total += max(max_batch[j] - batch[j], 0)
        free_total += free[j]
    batch_max = bmax.sum()
    kv_max = kmax.sum()
    batch_mean = 0.0
    kv_mean = 0.0
    for g in range(n_inst):
        batch_mean += bsum[g] / size[g]
        kv_mean += ksum[g] / size[g]
    total_base = n_inst * base
    if n == 0:
        return total_base + a * batch_max + b * kv_max
    units_max = size.max()
    gain_a = np.zeros(n, np.float64)
    gain_b = np.zeros(n, np.float64)
    ones = np.ones(n, np.float64)
    blk = blocks.astype(np.float64)
    for i in range(n):
        for j in range(units):
            if batch[j] < max_batch[j] and blocks[i] <= free[j]:
                gain_a[i] = pen[i]
                gain_b[i] = pen[i] - (a + b * context[i]) / units_max
                break
    pen_total = pen.sum()
    none = np.empty(0, np.int64)
    floor_a = pen_total - min(_knapsack_gain_nb(gain_a, ones, slots_total, none),
                              _knapsack_gain_nb(gain_a, blk, free_total, none))
    floor_b = pen_total - min(_knapsack_gain_nb(gain_b, ones, slots_total, none),
                              _knapsack_gain_nb(gain_b, blk, free_total, none))
    return max(total_base + a * batch_max + b * kv_max + floor_a,
               total_base + a * batch_mean + b * kv_mean + floor_b)


@njit(nogil=True)
def _fraction_terms(tokens, cached, room, alpha, beta, gamma):  # pragma: no cover - compiled
    """Per request, for the chunked bounds: ``lin`` and ``quad`` (a fraction ``a`` of the
    request costs at least ``lin*a + quad*a**2``) and ``top``, the largest fraction one window
    places (one chunk, on one unit: 1 when it fits the largest room whole, else that room's
    share of it, at most ``n - 1`` tokens)."""
    n = tokens.shape[0]
    room_max = 0
    for j in range(room.shape[0]):
        room_max = max(room_max, room[j])
    lin = np.empty(n, np.float64)
    quad = np.empty(n, np.float64)
    top = np.ones(n, np.float64)
    for i in range(n):
        lin[i] = gamma + alpha * tokens[i] + beta * tokens[i] * cached[i]
        quad[i] = beta * tokens[i] * tokens[i] / 2.0
        if tokens[i] > room_max:
            top[i] = max(min(tokens[i] - 1, room_max), 0) / tokens[i]
    return lin, quad, top


@njit(nogil=True)
def prefill_analytic_bound(residual, instance, n_inst, base, cost, pen, tokens, cached, blocks,
                           room, free, chunking, alpha, beta, gamma, by_density,
                           by_saving):  # pragma: no cover - compiled
    """The analytic prefill bound of ``sbsopt.window.bounds`` in one compiled pass.

    ``by_density`` / ``by_saving``: the requests by decreasing ``pen / tokens`` and
    ``(pen - cost / units_max) / tokens`` when the caller has them (the greedy's orders), else
    empty (the token knapsacks then sort for themselves)."""
    none = np.empty(0, np.int64)
    units = residual.shape[0]
    n = cost.shape[0]
    size = np.zeros(n_inst, np.int64)
    gmax = np.full(n_inst, -np.inf)
    gsum = np.zeros(n_inst, np.float64)
    room_total = 0.0
    free_total = 0.0
    for j in range(units):
        g = instance[j]
        size[g] += 1
        gmax[g] = max(gmax[g], residual[j])
        gsum[g] += residual[j]
        room_total += room[j]
        free_total += free[j]
    units_max = size.max()
    resid_max = gmax.sum()
    resid_mean = 0.0
    for g in range(n_inst):
        resid_mean += gsum[g] / size[g]
    total_base = n_inst * base
    if n == 0:
        return total_base + resid_max
    can = np.ones(n, np.bool_)
    if not chunking:
        for i in range(n):
            ok = False
            for j in range(units):
                if tokens[i] <= room[j] and blocks[i] <= free[j]:
                    ok = True
                    break
            can[i] = ok
    pen_total = pen.sum()
    gain_a = np.where(can, pen, 0.0)
    tok = tokens.astype(np.float64)
    blk = blocks.astype(np.float64)
    if chunking:
        lin, quad, top = _fraction_terms(tokens, cached, room, alpha, beta, gamma)
        if (top < 1.0).any():
            floor_a = pen_total - min(
                _knapsack_gain_nb(gain_a * top, tok * top, room_total, by_density),
                _knapsack_gain_nb(gain_a * top, blk * top, free_total, none))
        else:
            floor_a = pen_total - min(_knapsack_gain_nb(gain_a, tok, room_total, by_density),
                                      _knapsack_gain_nb(gain_a, blk, free_total, none))
        # averaging form: the fraction's cost spread over the instance's units; a capacity the
        # fractions cannot fill leaves the dual at its value at 0, which the other one reaches
        lin_u = lin / units_max
        quad_u = quad / units_max
        kv_binds = free_total < 2.0**61 and (blk * top).sum() > free_total
        dual = _fraction_dual(lin_u, quad_u, pen, tok, top, room_total)
        if kv_binds:
            dual = max(dual, _fraction_dual(lin_u, quad_u, pen, blk, top, free_total))
        floor_b = pen_total + dual
    else:
        gain_b = np.where(can, pen - cost / units_max, 0.0)
        floor_a = pen_total - min(_knapsack_gain_nb(gain_a, tok, room_total, by_density),
                                  _knapsack_gain_nb(gain_a, blk, free_total, none))
        floor_b = pen_total - min(_knapsack_gain_nb(gain_b, tok, room_total, by_saving),
                                  _knapsack_gain_nb(gain_b, blk, free_total, none))
    bound = max(total_base + resid_max + floor_a, total_base + resid_mean + floor_b)
    if n_inst == 1 and not chunking:
        forced = 0.0
        largest = -np.inf
        for i in range(n):
            if not can[i]:
                forced += pen[i]
                continue
            best = np.inf
            for j in range(units):
                if tokens[i] <= room[j] and blocks[i] <= free[j]:
                    best = min(best, residual[j] + cost[i])
            largest = max(largest, min(best, resid_max + pen[i]))
        if largest > -np.inf:
            bound = max(bound, total_base + largest + forced)
    if chunking:
        bound = max(bound, total_base + resid_max + _largest_fraction(
            residual, instance, n_inst, room, lin, quad, top, pen))
    return bound


@njit(nogil=True)
def _largest_fraction(residual, instance, n_inst, room, lin, quad, top,
                      pen):  # pragma: no cover - compiled
    """Largest-item form with chunking: the least step raise plus deferral that request ``i``
    alone forces, maximised over ``i`` (``sbsopt.window.bounds`` Notes; ``lin``, ``quad``,
    ``top`` from :func:`_fraction_terms`)."""
    units = residual.shape[0]
    gmax = np.full(n_inst, -np.inf)
    for j in range(units):
        gmax[instance[j]] = max(gmax[instance[j]], residual[j])
    slack = np.inf  # min over units with room of (residual - its instance's step floor)
    for j in range(units):
        if room[j] > 0:
            slack = min(slack, residual[j] - gmax[instance[j]])
    best = 0.0
    if slack == np.inf:
        return best
    for i in range(lin.shape[0]):
        # h(a) = max(0, slack + lin*a + quad*a**2) + (1 - a)*pen: convex, least at the larger
        # of the point where the raise starts and the stationary point of the raised part
        b, q = lin[i], quad[i]
        if q > 0.0:
            start = (-b + math.sqrt(b * b - 4.0 * q * slack)) / (2.0 * q)
            stationary = (pen[i] - b) / (2.0 * q)
        else:
            start = -slack / b if b > 0.0 else np.inf
            stationary = top[i] if pen[i] > b else 0.0
        a = min(max(max(start, stationary), 0.0), top[i])
        value = max(0.0, slack + b * a + q * a * a) + (1.0 - a) * pen[i]
        best = max(best, value)
    return best


@njit(nogil=True)
def _hosted_penalty(lin, quad, pen, tok, cap, residual, room, alpha, high, order,
                    grid):  # pragma: no cover - compiled
    """Least deferral penalty with the step at most ``high`` when the request ``h`` that takes
    longest at its cap runs as the fraction ``a`` on one unit: the others cost at least
    ``alpha`` a token, so that unit's room beyond ``h`` holds only what runs in the time left,
    and the room it cannot use is lost to every other request. On ``grid`` ranges of ``a``,
    each priced at its low end for the room and its high end for ``h``'s own deferral; the
    least over them. ``order``: the requests by decreasing ``pen / tok`` (zero tokens first);
    ``-inf`` when there is nothing to host."""
    n = lin.shape[0]
    h = 0
    longest = -1.0
    for i in range(n):
        t = lin[i] * cap[i] + quad[i] * cap[i] * cap[i]
        if t > longest:
            h, longest = i, t
    if alpha <= 0.0 or cap[h] <= 0.0 or grid < 1:
        return -np.inf
    gain = pen * cap
    gain[h] = 0.0
    weight = tok * cap
    rest = pen.sum() - pen[h]
    room_total = room.astype(np.float64).sum()
    best = np.inf
    for k in range(grid):
        a = cap[h] * k / grid
        capacity = room_total
        if k > 0:
            t = lin[h] * a + quad[h] * a * a
            lost = np.inf
            for j in range(room.shape[0]):
                if t <= high - residual[j] and a * tok[h] <= room[j]:
                    left = max(high - residual[j] - t, 0.0) / alpha
                    lost = min(lost, max(room[j] - a * tok[h] - left, 0.0))
            if lost == np.inf:
                break  # no unit runs this much of it within ``high``, nor any more
            capacity -= a * tok[h] + lost
        a_next = cap[h] * (k + 1) / grid
        value = (1.0 - a_next) * pen[h] + rest - _knapsack_gain_nb(gain, weight,
                                                                     max(capacity, 0.0), order)
        best = min(best, value)
    return best


@njit(nogil=True)
def _split_range_value(low, high, last, lowest, lin, quad, pen, tok, top, cap, room_total,
                       resid_mean, units, residual, room, alpha, order,
                       host_grid):  # pragma: no cover - compiled
    """Lower bound (without the base cost) over the steps ``S`` in ``[low, high]`` (``last``:
    ``[low, inf)``): ``max(low + least penalty, averaging form)`` with each request's placed
    fraction capped by what one unit runs within ``high``, the least penalty also as
    :func:`_hosted_penalty` gives it."""
    n = lin.shape[0]
    for i in range(n):
        if last:
            cap[i] = top[i]
        elif quad[i] > 0.0:
            free = max(high - lowest, 0.0)
            a = (-lin[i] + math.sqrt(lin[i] * lin[i] + 4.0 * quad[i] * free)) / (2.0 * quad[i])
            cap[i] = min(max(a, 0.0), top[i])
        elif lin[i] > 0.0:
            cap[i] = min(max((high - lowest) / lin[i], 0.0), top[i])
        else:
            cap[i] = top[i]
    pen_total = pen.sum()
    least_pen = pen_total - _knapsack_gain_nb(pen * cap, tok * cap, room_total, order)
    if not last:
        least_pen = max(least_pen, _hosted_penalty(lin, quad, pen, tok, cap, residual, room,
                                                   alpha, high, order, host_grid))
    spread = resid_mean + pen_total + _fraction_dual(lin / units, quad / units, pen, tok, cap,
                                                     room_total)
    return max(low + least_pen, spread)


@njit(nogil=True)
def prefill_split_bound(residual, room, tokens, cached, pen, alpha, beta, gamma, ranges,
                        splits, host_grid):  # pragma: no cover - compiled
    """Step-split bound of a one-instance prefill window without its base cost
    (``sbsopt.window.bounds`` Notes): ``ranges`` equal ranges of the step from the largest
    residual, plus the open last one; then ``splits`` times the range of least value is
    halved. The bound is the least value over the ranges."""
    n = tokens.shape[0]
    units = residual.shape[0]
    resid_max = residual.max()
    zero = False
    for i in range(n):
        zero = zero or tokens[i] == 0
    lowest = np.inf  # least residual of a unit a request can go to (zero-token ones: any)
    for j in range(units):
        if room[j] > 0 or zero:
            lowest = min(lowest, residual[j])
    if lowest == np.inf:
        return resid_max + pen.sum()
    lin, quad, top = _fraction_terms(tokens, cached, room, alpha, beta, gamma)
    widest = (lin * top + quad * top * top).max()
    tok = tokens.astype(np.float64)
    room_total = room.astype(np.float64).sum()
    resid_mean = residual.mean()
    # the knapsacks' ratio (pen * cap) / (tok * cap) is pen / tok whatever the caps: one sort
    key = np.empty(n, np.float64)
    for i in range(n):
        key[i] = -np.inf if tokens[i] == 0 else -pen[i] / tok[i]
    order = np.argsort(key)
    cap = np.empty(n, np.float64)
    stop = max(lowest + widest, resid_max)
    size = ranges + 1 + splits
    lows = np.empty(size, np.float64)
    highs = np.empty(size, np.float64)
    values = np.empty(size, np.float64)
    for k in range(ranges + 1):
        lows[k] = resid_max + (stop - resid_max) * k / ranges
        highs[k] = resid_max + (stop - resid_max) * (k + 1) / ranges
        values[k] = _split_range_value(lows[k], highs[k], k == ranges, lowest, lin, quad, pen,
                                       tok, top, cap, room_total, resid_mean, units, residual,
                                       room, alpha, order, host_grid)
    count = ranges + 1
    for _ in range(splits):
        k = -1
        for q in range(count):  # the open range (index ``ranges``) is never split
            if q != ranges and (k < 0 or values[q] < values[k]):
                k = q
        if k < 0 or values[ranges] <= values[k]:
            break  # the open range has the least value: halving others cannot raise the bound
        mid = (lows[k] + highs[k]) / 2.0
        lows[count], highs[count] = mid, highs[k]
        values[count] = _split_range_value(mid, highs[k], False, lowest, lin, quad, pen, tok,
                                           top, cap, room_total, resid_mean, units, residual,
                                           room, alpha, order, host_grid)
        highs[k] = mid
        values[k] = _split_range_value(lows[k], mid, False, lowest, lin, quad, pen, tok, top,
                                       cap, room_total, resid_mean, units, residual, room,
                                       alpha, order, host_grid)
        count += 1
    return values[:count].min()


@njit(nogil=True)
def prefill_best_of(orders, cost, tokens, cached, blocks, penalty, guarded, room, free,
                    residual, inst, n_inst, base, chunking, alpha, beta, gamma, min_chunk,
                    local_search):  # pragma: no cover - compiled
    """Run :func:`prefill_greedy` (+ local search, + :func:`chunk_fill` of what is left) once
    per row of ``orders`` on fresh copies of the unit state; return the best
    ``(row, assignment, chunk_tokens, objective)`` (``chunk_tokens[i] > 0`` marks a chunk)."""
    n = cost.shape[0]
    units = room.shape[0]
    spec = (cached, alpha, beta, gamma, min_chunk)
    best_row = -1
    best_value = np.inf
    best_assignment = np.full(n, -1, np.int64)
    best_chunks = np.zeros(n, np.int64)
    for r in range(orders.shape[0]):
        order = orders[r]
        room_r = room.copy()
        free_r = free.copy()
        time_r = residual.copy()
        inst_max = np.full(n_inst, -np.inf)
        for j in range(units):
            inst_max[inst[j]] = max(inst_max[inst[j]], time_r[j])
        chunk_tokens = np.zeros(n, np.int64)
        used = np.zeros(units, np.bool_)
        assignment = prefill_greedy(order, cost, tokens, blocks, penalty, guarded, room_r,
                                    free_r, time_r, inst, inst_max, chunk_tokens, used,
                                    chunking, spec)
        if local_search > 0:
            prefill_local_search(assignment, cost, tokens, blocks, penalty, guarded, room_r,
                                 free_r, time_r, inst, inst_max, chunk_tokens, local_search)
        if chunking:
            m = 0
            for q in range(n):
                if assignment[order[q]] < 0:
                    m += 1
            if m > 0:
                waiting = np.empty(m, np.int64)
                m = 0
                for q in range(n):
                    if assignment[order[q]] < 0:
                        waiting[m] = order[q]
                        m += 1
                chunk_unit, late = chunk_fill(waiting, tokens, blocks, penalty, room_r, free_r,
                                              time_r, inst, inst_max, used, spec)
                for i in range(n):
                    if chunk_unit[i] >= 0:
                        assignment[i] = chunk_unit[i]
                        chunk_tokens[i] = late[i]
            trim_step_chunks(order, assignment, chunk_tokens, cost, tokens, blocks, penalty,
                             guarded, room_r, free_r, time_r, inst, inst_max, used, spec)
        value = n_inst * base + inst_max.sum()
        for i in range(n):
            if assignment[i] < 0:
                value += penalty[i]
            elif chunk_tokens[i] > 0:
                value += penalty[i] * (tokens[i] - chunk_tokens[i]) / tokens[i]
        if value < best_value:
            best_row, best_value = r, value
            best_assignment = assignment
            best_chunks = chunk_tokens
    return best_row, best_assignment, best_chunks, best_value


@njit(nogil=True)
def _refine_order(order, guarded, key, tie):  # pragma: no cover - compiled
    """``order`` (indices sorted by ``key``) made ``np.lexsort((tie, key, ~guarded))``: runs
    of equal keys (rare) are insertion-sorted by ``tie`` then index, guarded requests first."""
    n = key.shape[0]
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and key[order[stop]] == key[order[start]]:
            stop += 1
        for q in range(start + 1, stop):
            i = order[q]
            p = q
            while p > start and (tie[order[p - 1]] > tie[i]
                                 or (tie[order[p - 1]] == tie[i] and order[p - 1] > i)):
                order[p] = order[p - 1]
                p -= 1
            order[p] = i
        start = stop
    if not guarded.any():
        return order
    out = np.empty_like(order)
    m = 0
    for q in range(n):
        if guarded[order[q]]:
            out[m] = order[q]
            m += 1
    for q in range(n):
        if not guarded[order[q]]:
            out[m] = order[q]
            m += 1
    return out


@njit(nogil=True)
def _priority_order(guarded, key, tie):  # pragma: no cover - compiled
    """``np.lexsort((tie, key, ~guarded))``: guarded first, then ``key``, then ``tie``, then
    index, ascending, with one sort on ``key`` (none when ``key`` is already in order, as
    arrival times of a buffer usually are)."""
    n = key.shape[0]
    for i in range(1, n):
        if key[i] < key[i - 1]:
            return _refine_order(np.argsort(key), guarded, key, tie)
    return _refine_order(np.arange(n), guarded, key, tie)


#: Codes of the greedy's request orders (``sbsopt.window.greedy`` names them).
ORDER_PBAA, ORDER_LPT, ORDER_DENSITY, ORDER_KNAPSACK = 0, 1, 2, 3


@njit(nogil=True)
def _knapsack_first(lpt, guarded, tokens, by_saving, saving,
                    room_total):  # pragma: no cover - compiled
    """``lpt`` with the requests a fractional knapsack keeps moved to the front (stable,
    guarded requests still first): value ``saving`` (``penalty - cost / units_max``, what
    assigning a request saves under the averaging bound), weight its tokens, capacity the
    total room; ``by_saving`` lists the requests by decreasing ``saving / tokens``."""
    n = tokens.shape[0]
    keep = np.zeros(n, np.bool_)
    used = 0.0
    for i in by_saving:
        if saving[i] <= 0.0 or used + tokens[i] > room_total:
            break
        used += tokens[i]
        keep[i] = True
    out = np.empty_like(lpt)
    m = 0
    for group in range(4):  # guarded and kept, guarded, kept, the rest
        for q in range(n):
            i = lpt[q]
            if (0 if guarded[i] else 2) + (0 if keep[i] else 1) == group:
                out[m] = i
                m += 1
    return out


@njit(nogil=True)
def prefill_orders(cost, tokens, blocks, penalty, guarded, arrival, room, free, units_max,
                   chunking):  # pragma: no cover - compiled
    """The greedy's request orders and their codes, guarded requests first in each, and the
    requests by decreasing ``penalty / tokens`` and ``(penalty - cost / units_max) / tokens``
    when those were sorted (for the bound's knapsacks; empty otherwise).

    Usual window: PBAA (oldest, then largest) and LPT (largest, then oldest). Capacity-bound
    window (more tokens or KV blocks than the units have room for): knapsack (LPT with the
    requests a fractional knapsack keeps first, taken by saving per token, or with chunking by
    deferral penalty per token, the sort the density order needs anyway: same gaps on the
    benchmark windows, one sort fewer) and, with chunking, density (deferral penalty per
    token, then oldest), else LPT. Measured on 204 capacity-bound windows cut from the
    Azure code and Mooncake traces (``benchmarks/window.py`` windows, with and without
    chunking), these two orders lose at most 0.01 points of median gap against the best of
    PBAA, LPT, density and knapsack together (PBAA was the best on 1 window)."""
    n = cost.shape[0]
    neg_cost = -cost
    none = np.empty(0, np.int64)
    room_total = room.astype(np.float64).sum()
    capacity_bound = tokens.sum() > room_total or (
        blocks.astype(np.float64).sum() > free.astype(np.float64).sum())
    lpt = _priority_order(guarded, neg_cost, arrival)
    orders = np.empty((2, n), np.int64)
    if not capacity_bound:
        orders[0] = _priority_order(guarded, arrival, neg_cost)
        orders[1] = lpt
        return orders, np.array([ORDER_PBAA, ORDER_LPT]), none, none
    # the knapsack sorts are shared with the bound's token knapsacks (same ratios when every
    # request has a token; a zero-token request would be keyed differently)
    positive = tokens.min() >= 1
    saving = penalty - cost / units_max
    if not chunking:
        by_saving = np.argsort(-saving / np.maximum(tokens, 1))
        orders[0] = _knapsack_first(lpt, guarded, tokens, by_saving, saving, room_total)
        orders[1] = lpt
        return orders, np.array([ORDER_KNAPSACK, ORDER_LPT]), none, by_saving if positive else none
    # with chunking the bound needs no saving sort, and the knapsack order keeps requests in
    # deferral-penalty density order (saving differs from penalty by cost / units_max): one sort
    density = -penalty / np.maximum(tokens, 1)
    by_density = np.argsort(density)
    orders[0] = _knapsack_first(lpt, guarded, tokens, by_density, saving, room_total)
    orders[1] = _refine_order(by_density.copy(), guarded, density, arrival)
    return (orders, np.array([ORDER_KNAPSACK, ORDER_DENSITY]), by_density if positive else none,
            none)


@njit(nogil=True)
def prefill_solve(cost, tokens, cached, blocks, penalty, guarded, arrival, room, free, residual,
                  inst, n_inst, base, chunking, alpha, beta, gamma, min_chunk,
                  local_search):  # pragma: no cover - compiled
    """:func:`prefill_orders`, :func:`prefill_best_of` and :func:`prefill_analytic_bound` in
    one call (the greedy's hot path): ``(order code, assignment, chunk_tokens, chunked
    requests, guarded requests left unplaced, objective, bound)``."""
    units_max = np.bincount(inst).max()
    orders, kinds, by_density, by_saving = prefill_orders(
        cost, tokens, blocks, penalty, guarded, arrival, room, free, units_max, chunking)
    row, assignment, chunk_tokens, value = prefill_best_of(
        orders, cost, tokens, cached, blocks, penalty, guarded, room, free, residual, inst,
        n_inst, base, chunking, alpha, beta, gamma, min_chunk, local_search)
    bound = prefill_analytic_bound(residual, inst, n_inst, base, cost, penalty, tokens, cached,
                                   blocks, room, free, chunking, alpha, beta, gamma, by_density,
                                   by_saving)
    chunked = 0
    unplaced_guarded = 0
    for i in range(cost.shape[0]):
        chunked += chunk_tokens[i] > 0
        unplaced_guarded += guarded[i] and assignment[i] < 0
    return kinds[row], assignment, chunk_tokens, chunked, unplaced_guarded, value, bound


@njit(nogil=True)
def decode_solve(context, blocks, batch, max_batch, kv, free, inst, n_inst, base, a, b, penalty,
                 iqr_k):  # pragma: no cover - compiled
    """:func:`decode_best_of` and :func:`decode_analytic_bound` in one call:
    ``(row, assignment, objective, bound)``."""
    row, assignment, value = decode_best_of(context, blocks, batch, max_batch, kv, free, inst,
                                            n_inst, base, a, b, penalty, iqr_k)
    bound = decode_analytic_bound(batch, max_batch, kv, free, inst, n_inst, base, a, b, context,
                                  blocks, penalty)
    return row, assignment, value, bound
