"""Plain-Python references of the greedy passes, for the tests.

Each ``*_py`` function is an independent, simpler (and much slower) statement of the rule of
the kernel it names; tests compare them on random instances. Inputs are left untouched.
"""

from __future__ import annotations

import numpy as np

from sbsopt.kvblocks import chunk_kv_blocks, chunk_tokens_within

__all__ = ["prefill_greedy_py", "chunk_fill_py", "decode_iqr_lex_py", "decode_min_step_py"]


def _remainder_price_py(k, n, penalty, carry, cached, alpha, beta, gamma):
    """Reference of ``chunks.remainder_price``, from its definition: the remainder's cost
    after the chunk at ``carry``, plus the token share of the fixed price
    ``penalty - carry * cost``."""
    if k >= n:
        return 0.0

    def cost(m, p):
        return alpha * m + beta * m * (p + m / 2.0) + gamma

    fixed = penalty - carry * cost(n, cached)
    return carry * cost(n - k, cached + k) + fixed * (n - k) / n


def _best_chunk_py(i, tokens, cached, blocks, penalty, room, free, unit_time, inst, step, used,
                   alpha, beta, gamma, min_chunk, carry):
    """Reference of ``chunks._best_chunk`` on lists: ``(delta, unit, tokens, time)`` or None."""
    if tokens[i] < 2:
        return None
    best = None
    for j in range(len(room)):
        if j in used:
            continue
        k = min(room[j], tokens[i] - 1)
        if blocks[i] > free[j]:
            k = min(k, chunk_tokens_within(free[j], blocks[i], tokens[i]))
        if k < max(min_chunk, 1):
            continue
        t = unit_time[j] + alpha * k + beta * k * (cached[i] + k / 2.0) + gamma
        removed = penalty[i] - _remainder_price_py(k, tokens[i], penalty[i], carry[i], cached[i],
                                                   alpha, beta, gamma)
        delta = max(0.0, t - step[inst[j]]) - removed
        if delta < 0 and (best is None or delta < best[0]):
            best = (delta, j, k, t)
    return best


def _steps_py(unit_time, inst):
    """Step time per instance (the references' dict form of ``inst_max``)."""
    step: dict[int, float] = {}
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
    free[j] -= chunk_kv_blocks(k, blocks[i], tokens[i])
    unit_time[j] = t
    step[inst[j]] = max(step[inst[j]], t)


def prefill_greedy_py(order, cost, tokens, blocks, penalty, guarded, room, free, unit_time, inst,
                      chunking=False, cached=None, alpha=0.0, beta=0.0, gamma=0.0, min_chunk=1,
                      carry=None):
    """Reference of ``prefill.prefill_greedy``: ``(assignment, chunk_tokens)``, inputs untouched
    (``carry``: the weight on a chunk remainder's cost per request, default 1)."""
    carry = np.ones(len(cost)) if carry is None else carry
    room, free, unit_time = list(room), list(free), list(unit_time)
    step = _steps_py(unit_time, inst)
    placed: dict[int, tuple[int, int]] = {}
    used: set[int] = set()
    for i in order:
        options = []
        for j in range(len(room)):
            if tokens[i] <= room[j] and blocks[i] <= free[j]:
                t = unit_time[j] + cost[i]
                options.append((max(0.0, t - step[inst[j]]), t, j))
        if not options:
            best = chunking and _best_chunk_py(i, tokens, cached, blocks, penalty, room, free,
                                               unit_time, inst, step, used, alpha, beta, gamma,
                                               min_chunk, carry)
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


def chunk_fill_py(order, tokens, cached, blocks, penalty, room, free, unit_time, inst,
                  alpha, beta, gamma, min_chunk, used=(), carry=None):
    """Reference of ``chunks.chunk_fill`` (inputs untouched; ``used``: units already chunked;
    ``carry`` as in :func:`prefill_greedy_py`)."""
    carry = np.ones(len(tokens)) if carry is None else carry
    room, free, unit_time, used = list(room), list(free), list(unit_time), set(used)
    step = _steps_py(unit_time, inst)
    placed: dict[int, tuple[int, int]] = {}
    for i in order:
        best = _best_chunk_py(i, tokens, cached, blocks, penalty, room, free, unit_time, inst,
                              step, used, alpha, beta, gamma, min_chunk, carry)
        if best is not None:
            _take_chunk_py(best, i, tokens, blocks, room, free, unit_time, inst, step, used,
                           placed)
    return _placed_arrays_py(placed, len(tokens))


def decode_iqr_lex_py(order, context, blocks, batch, max_batch, kv, free, iqr_k):
    """Reference of ``decode.decode_iqr_lex`` (inputs untouched)."""
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


def decode_min_step_py(order, context, blocks, batch, max_batch, kv, free, inst, a, b):
    """Reference of ``decode.decode_min_step`` (inputs untouched)."""
    batch, kv, free = list(batch), list(kv), list(free)
    max_b: dict[int, int] = {}
    max_k: dict[int, int] = {}
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
