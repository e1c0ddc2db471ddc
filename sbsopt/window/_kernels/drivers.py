"""One compiled call per window: the orders, every pass, the best answer and its analytic
bound (the greedy's hot path)."""

from __future__ import annotations

import numpy as np

from sbsopt._jit import njit
from sbsopt.window._kernels.bounds import decode_analytic_bound, prefill_analytic_bound
from sbsopt.window._kernels.chunks import chunk_fill, remainder_price, trim_step_chunks
from sbsopt.window._kernels.decode import decode_iqr_lex, decode_min_step, decode_value
from sbsopt.window._kernels.orders import prefill_orders
from sbsopt.window._kernels.prefill import prefill_greedy
from sbsopt.window._kernels.searches import prefill_local_search

__all__ = ["prefill_best_of", "decode_best_of", "prefill_solve", "decode_solve"]


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
def prefill_best_of(orders, cost, tokens, cached, blocks, penalty, guarded, room, free,
                    residual, inst, n_inst, base, chunking, alpha, beta, gamma, min_chunk,
                    carry, local_search):  # pragma: no cover - compiled
    """Run :func:`prefill_greedy` (+ local search, + :func:`chunk_fill` of what is left) once
    per row of ``orders`` on fresh copies of the unit state; return the best
    ``(row, assignment, chunk_tokens, objective)`` (``chunk_tokens[i] > 0`` marks a chunk;
    ``carry``: the weight on a chunk remainder's cost, ``chunks`` module docstring)."""
    n = cost.shape[0]
    units = room.shape[0]
    spec = (cached, alpha, beta, gamma, min_chunk, carry)
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
                value += remainder_price(chunk_tokens[i], tokens[i], penalty[i], carry[i], beta,
                                         gamma)
        if value < best_value:
            best_row, best_value = r, value
            best_assignment = assignment
            best_chunks = chunk_tokens
    return best_row, best_assignment, best_chunks, best_value


@njit(nogil=True)
def prefill_solve(cost, tokens, cached, blocks, penalty, guarded, arrival, room, free, residual,
                  inst, n_inst, base, chunking, alpha, beta, gamma, min_chunk, carry,
                  local_search):  # pragma: no cover - compiled
    """:func:`prefill_orders`, :func:`prefill_best_of` and :func:`prefill_analytic_bound` in
    one call (the greedy's hot path): ``(order code, assignment, chunk_tokens, chunked
    requests, guarded requests left unplaced, objective, bound)``."""
    units_max = np.bincount(inst).max()
    orders, kinds, by_density, by_saving = prefill_orders(
        cost, tokens, blocks, penalty, guarded, arrival, room, free, units_max, chunking)
    row, assignment, chunk_tokens, value = prefill_best_of(
        orders, cost, tokens, cached, blocks, penalty, guarded, room, free, residual, inst,
        n_inst, base, chunking, alpha, beta, gamma, min_chunk, carry, local_search)
    bound = prefill_analytic_bound(residual, inst, n_inst, base, cost, penalty, tokens, cached,
                                   blocks, room, free, chunking, alpha, beta, gamma, carry,
                                   by_density, by_saving)
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
