"""The greedy's decode passes (IQR-lex, least step raise) and the decode objective."""

from __future__ import annotations

import math

import numpy as np

from sbsopt._jit import njit

__all__ = ["decode_iqr_lex", "decode_min_step", "decode_value"]


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
