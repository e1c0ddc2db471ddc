"""Chunk kernels: where a request's first chunk goes, the chunk fill of the deferred requests,
and the trim of the chunks on the instances' step units.

A chunk is the first ``k < n`` tokens of a request, at most one per unit and per request,
with KV blocks pro rata (``sbsopt.kvblocks``). Its remainder needs at least one more forward,
so it is priced as a deferral of its own (:func:`remainder_price`): its cost after the chunk's
tokens, at the request's deferral weight, plus its share of the fixed deferral price. A chunk
and its remainder then cost more than the whole request (a second ``gamma`` and that share,
at least), so a request that fits whole is split only where the room it frees pays for it.
``spec = (cached, alpha, beta, gamma, min_chunk, carry)``, ``carry`` the weight on a
remainder's cost (age weight times ``defer_factor``).
"""

from __future__ import annotations

import math

import numpy as np

from sbsopt._jit import njit
from sbsopt.window._kernels.steps import top_three
from sbsopt.window.kv_blocks import chunk_kv_blocks_nb, chunk_tokens_within_nb

__all__ = ["chunk_cost", "remainder_price", "chunkable_units", "chunk_now", "chunk_fill",
           "trim_step_chunks"]


@njit(nogil=True)
def chunk_cost(k, cached, alpha, beta, gamma):  # pragma: no cover - compiled
    """Time of a chunk of ``k > 0`` tokens after ``cached`` prefix tokens, microseconds
    (``sbsopt.window.problem.prefill_chunk_cost_us``)."""
    return alpha * k + beta * k * (cached + k / 2.0) + gamma


@njit(nogil=True, inline="always")
def remainder_price(k, n, penalty, carry, beta, gamma):  # pragma: no cover - compiled
    """Deferral price of a request's tokens after its first ``k`` (``k = 0``: its penalty,
    ``k = n``: 0), ``sbsopt.window.objective.remainder_price_us``.

    For ``0 < k < n`` it is ``carry * cost(n - k after cached + k) + w * D * (n - k) / n``
    (``penalty = w * (defer_factor * c + D)``), written as the penalty's token share plus
    what the share misses: the remainder's tokens attend to the chunk's, and it pays its own
    ``gamma`` in the next forward."""
    if k >= n:
        return 0.0
    left = n - k
    return penalty * left / n + carry * (beta * k * left / 2.0 + gamma * k / n)


@njit(nogil=True)
def _best_chunk(i, tokens, blocks, penalty, room, free, unit_time, inst, inst_max, used,
                spec):  # pragma: no cover - compiled
    """Where the first chunk of request ``i`` lowers the objective most: ``(unit, tokens,
    unit time after)``, unit -1 if nowhere (``spec``: module docstring).

    A unit takes at most one chunk (``used``), of at most ``tokens - 1`` tokens and its room,
    KV blocks pro rata (rounded up); the change is the step raise minus the deferral price
    removed (the penalty less :func:`remainder_price`), and it must be negative. A larger
    chunk removes more than it adds to the step when ``carry >= 1``, so each unit offers its
    largest."""
    cached, alpha, beta, gamma, min_chunk, carry = spec
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
            k = min(k, chunk_tokens_within_nb(free[j], blocks[i], tokens[i]))
        if k < min_chunk or k <= 0:
            continue
        t = unit_time[j] + chunk_cost(k, cached[i], alpha, beta, gamma)
        removed = penalty[i] - remainder_price(k, tokens[i], penalty[i], carry[i], beta, gamma)
        delta = max(0.0, t - inst_max[inst[j]]) - removed
        if delta < best_delta:
            best, best_delta, best_k, best_time = j, delta, k, t
    return best, best_k, best_time


@njit(nogil=True)
def chunkable_units(room, used, min_chunk):  # pragma: no cover - compiled
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
    free[j] -= chunk_kv_blocks_nb(k, blocks[i], tokens[i])
    unit_time[j] = t
    if t > inst_max[inst[j]]:
        inst_max[inst[j]] = t


@njit(nogil=True, inline="always")
def chunk_now(i, tokens, blocks, penalty, room, free, unit_time, inst, inst_max, used, spec,
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
def chunk_fill(order, tokens, blocks, penalty, room, free, unit_time, inst, inst_max, used,
               spec):  # pragma: no cover - compiled
    """Place the first chunk of deferred requests (in ``order``) where :func:`_best_chunk`
    finds it lowers the objective; at most one chunk per unit (``used``, updated in place)
    and per request. Returns ``(unit, chunk_tokens)`` per request (-1 / 0 if none)."""
    n = tokens.shape[0]
    chunk_unit = np.full(n, -1, np.int64)
    chunk_tokens = np.zeros(n, np.int64)
    chunkable = chunkable_units(room, used, spec[4])
    for q in range(order.shape[0]):
        if chunkable == 0:
            break
        if chunk_now(order[q], tokens, blocks, penalty, room, free, unit_time, inst, inst_max,
                     used, spec, chunk_unit, chunk_tokens) >= 0:
            chunkable -= 1
    return chunk_unit, chunk_tokens


@njit(nogil=True)
def _trimmed_size(k, n, t_without, target, cached, fixed, carry, alpha, beta, gamma,
                  min_chunk):  # pragma: no cover - compiled
    """Chunk size below ``k`` for a step unit of a request of ``n`` tokens (0: no chunk;
    ``min_chunk`` at least). Shrinking it by a token saves its step cost ``alpha +
    beta*(cached + k)`` and adds ``carry`` times that plus ``fixed / n`` to its remainder's
    price (:func:`remainder_price`, ``fixed = w * D``), so with ``carry >= 1`` no size below
    ``k`` pays for itself; the size tried is then the one that brings the unit's time down to
    ``target``, kept only if the room it frees refills well. With ``carry < 1`` the larger of
    that and the size where the two margins meet. Sizes are worked out as floats and clipped
    to ``[0, k]`` before they become integers."""
    room = target - t_without - gamma  # time the chunk may take, gamma included
    if room <= 0.0:
        level = 0.0
    elif beta > 0.0:
        b = alpha + beta * cached
        level = (-b + math.sqrt(b * b + 2.0 * beta * room)) / beta
    else:
        level = room / alpha if alpha > 0.0 else k
    size = level
    if carry < 1.0:
        # the step margin (1 - carry) * (alpha + beta*(cached + s)) meets fixed / n
        dens = fixed / n / (1.0 - carry)
        if beta > 0.0:
            marginal = (dens - alpha) / beta - cached
        else:
            marginal = k if dens > alpha else 0.0
        if marginal < k:
            size = max(marginal, level)
    size = int(math.floor(min(max(size, 0.0), k)))
    if 0 < size < min_chunk:
        size = min(min_chunk, k)
    return size


@njit(nogil=True)
def trim_step_chunks(order, assignment, chunk_tokens, cost, tokens, blocks, penalty, guarded,
                     room, free, unit_time, inst, inst_max, used,
                     spec):  # pragma: no cover - compiled
    """Shrink the chunk on each instance's step unit, then refill the room it frees.

    Shrinking a chunk moves its tokens to the remainder, priced at least at what they save of
    the step (:func:`_trimmed_size`), so a trim pays only through the room it frees or by
    dropping a chunk whose step time is worth more than the deferral it removes. The chunk
    shrinks to the size that brings the unit down to the next unit of the instance; deferred
    whole requests (in ``order``) then fill the freed room where their step raise is below
    their penalty. A step unit without a chunk tries the same on its costliest whole request
    that is not guarded, which then becomes its chunk. The change is kept when the objective
    drops, and repeated on the new step unit (at most once per unit); a guarded request keeps
    a chunk. State is updated in place; returns the objective change (<= 0)."""
    cached, alpha, beta, gamma, min_chunk, carry = spec
    n = tokens.shape[0]
    units = room.shape[0]
    refill = np.empty(n, np.int64)
    total = 0.0
    groups = inst_max.shape[0]
    for g in range(groups):
        for _ in range(units):
            ranked = top_three(unit_time, inst, groups)[g]
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
            t_without = step - (chunk_cost(k, cached[h], alpha, beta, gamma) if has_chunk
                                else cost[h])
            size = _trimmed_size(k, tokens[h], t_without, second, cached[h],
                                 penalty[h] - carry[h] * cost[h], carry[h], alpha, beta, gamma,
                                 max(min_chunk, 1))
            if size == 0 and guarded[h]:
                size = min(max(min_chunk, 1), k)
            if size >= k:
                break
            t = t_without + (chunk_cost(size, cached[h], alpha, beta, gamma) if size else 0.0)
            new_step = max(second, t)
            delta = (new_step - step
                     + remainder_price(size, tokens[h], penalty[h], carry[h], beta, gamma)
                     - remainder_price(k, tokens[h], penalty[h], carry[h], beta, gamma))
            room_left = room[top] + k - size
            free_left = (free[top] + chunk_kv_blocks_nb(k, blocks[h], tokens[h])
                         - chunk_kv_blocks_nb(size, blocks[h], tokens[h]))
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
