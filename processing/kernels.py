"""Compiled kernels: one pass over a batch where NumPy needed dozens.

Each function here is a plain loop compiled by numba (cached on disk after the first run); the
Python-facing modules (validate, alerts, rollups) own the semantics and call these. With
``NUMBA_DISABLE_JIT=1`` they run as ordinary Python, which is how to debug them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

NONE = np.iinfo(np.int64).min  # "no time": no run in progress, or nothing seen yet
THRESHOLD, RATE, FLATLINE = 0, 1, 2  # how a rule turns a reading into its measure

# validation codes (processing.validate names them)
OK, NOT_FINITE, OUT_OF_RANGE, FUTURE, TOO_OLD = 0, 1, 2, 3, 4

Array = Any  # numba kernels take and return NumPy arrays; their dtypes are in the docstrings


@njit(cache=True, nogil=True)
def validate(
    quantity: Array, value: Array, ts_us: Array, lo: Array, hi: Array, oldest: int, newest: int
) -> Array:
    """uint8 reason per reading; quantity -1 (unknown) is not range-checked. When several
    reasons apply, the first of not finite, future, too old, out of range wins."""
    n = len(value)
    code = np.zeros(n, dtype=np.uint8)
    for i in range(n):
        v = value[i]
        t = ts_us[i]
        q = quantity[i]
        if not np.isfinite(v):
            code[i] = NOT_FINITE
        elif t > newest:
            code[i] = FUTURE
        elif t < oldest:
            code[i] = TOO_OLD
        elif q >= 0 and (v < lo[q] or v > hi[q]):
            code[i] = OUT_OF_RANGE
    return code


# -- the alert engine -------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def evaluate(
    series: Array,  # int32, arrival order
    ts_us: Array,  # int64
    value: Array,  # float64
    watermark: Array,  # int64 per series: newest event time evaluated
    sensor_of: Array,  # int32 per series
    sensor_last: Array,  # int64 per sensor: newest event time seen
    stale_rule: Array,  # int32 per sensor (-1: none)
    stale_active: Array,  # bool per sensor
    ptr: Array,  # CSR of the rules of each series: flat[ptr[s]:ptr[s + 1]]
    flat: Array,
    slot: Array,  # beside flat: the slot of each (rule, series) pair in the state arrays
    kind: Array,  # per rule: THRESHOLD, RATE or FLATLINE
    above: Array,  # bool: the condition is "above" (else "below"; flatline: within tolerance)
    limit: Array,
    clear: Array,
    for_us: Array,
    per: Array,
    max_gap: Array,
    active: Array,  # per pair slot: bool
    run_start: Array,  # int64
    last_ts: Array,  # int64
    last_value: Array,  # float64
    stamp: Array,  # int64 per pair slot: the last batch that touched the pair
    batch_no: int,
) -> tuple[Array, Array, Array, Array, Array, Array, Array, Array, Array]:
    """Run a batch through every rule, reading by reading in arrival order (the reference's
    semantics exactly). Returns the transitions (rule, series, sensor, ts, value, raised; series
    -1 for a stale alert cleared by fresh data) and the (rule, series) pairs touched with their
    slots, whose state is then in the state arrays."""
    n = len(series)
    pairs = 0
    for i in range(n):
        s = series[i]
        pairs += ptr[s + 1] - ptr[s]
    cap = pairs + n
    tr_rule = np.empty(cap, dtype=np.int32)
    tr_series = np.empty(cap, dtype=np.int32)
    tr_sensor = np.empty(cap, dtype=np.int32)
    tr_ts = np.empty(cap, dtype=np.int64)
    tr_value = np.empty(cap, dtype=np.float64)
    tr_up = np.empty(cap, dtype=np.bool_)
    touched_rule = np.empty(pairs, dtype=np.int32)
    touched_series = np.empty(pairs, dtype=np.int32)
    touched_slot = np.empty(pairs, dtype=np.intp)
    m = 0  # transitions
    u = 0  # touched pairs
    for i in range(n):
        s = series[i]
        t = ts_us[i]
        v = value[i]
        if t <= watermark[s]:
            continue  # late: history and rollups only
        watermark[s] = t
        k = sensor_of[s]
        if k >= 0:
            if t > sensor_last[k]:
                sensor_last[k] = t
            if stale_active[k]:  # a stale sensor spoke again
                stale_active[k] = False
                tr_rule[m] = stale_rule[k]
                tr_series[m] = -1
                tr_sensor[m] = k
                tr_ts[m] = t
                tr_value[m] = v
                tr_up[m] = False
                m += 1
        for j in range(ptr[s], ptr[s + 1]):
            r = flat[j]
            q = slot[j]
            if stamp[q] != batch_no:
                stamp[q] = batch_no
                touched_rule[u] = r
                touched_series[u] = s
                touched_slot[u] = q
                u += 1
            lt = last_ts[q]
            kr = kind[r]
            if kr == THRESHOLD:
                valid = True
                x = v
            else:
                valid = lt != NONE and not (max_gap[r] != 0 and t - lt > max_gap[r])
                x = 0.0
                if valid:
                    if kr == RATE:
                        x = (v - last_value[q]) * per[r] / (t - lt)
                    else:
                        x = abs(v - last_value[q])
            if kr == FLATLINE:
                sets = valid and x <= limit[r]
                clears = valid and x > limit[r]
            elif above[r]:
                sets = valid and x > limit[r]
                clears = valid and x < clear[r]
            else:
                sets = valid and x < limit[r]
                clears = valid and x > clear[r]
            if sets:
                if run_start[q] == NONE:
                    run_start[q] = lt if kr == FLATLINE else t
            else:
                run_start[q] = NONE
            raise_ = sets and not active[q] and t - run_start[q] >= for_us[r]
            if raise_ or (clears and active[q]):
                active[q] = raise_
                tr_rule[m] = r
                tr_series[m] = s
                tr_sensor[m] = k
                tr_ts[m] = t
                tr_value[m] = v
                tr_up[m] = raise_
                m += 1
            last_ts[q] = t
            last_value[q] = v
    return (
        tr_rule[:m],
        tr_series[:m],
        tr_sensor[:m],
        tr_ts[:m],
        tr_value[:m],
        tr_up[:m],
        touched_rule[:u],
        touched_series[:u],
        touched_slot[:u],
    )


# -- rollups ----------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _sort_run_by(order: Array, key: Array, a: int, b: int) -> None:
    """Stably sort order[a:b] by key[order] (insertion sort: runs are short and nearly sorted;
    long unsorted runs take a merge sort)."""
    if b - a > 64:
        sub = order[a:b].copy()
        idx = np.argsort(key[sub], kind="mergesort")
        order[a:b] = sub[idx]
        return
    for i in range(a + 1, b):
        o = order[i]
        kv = key[o]
        j = i - 1
        while j >= a and key[order[j]] > kv:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = o


@njit(cache=True, nogil=True)
def group_order(series: Array, time: Array) -> Array:
    """Positions sorted by (series, time), stably: a counting sort on series (a merge sort
    when the ids are too spread out for it), then each series' run by time."""
    n = len(series)
    order = np.empty(n, dtype=np.intp)
    if n == 0:
        return order
    lo = series.min()
    span = series.max() - lo + 1
    if span <= 8 * n + 4096:
        count = np.zeros(span + 1, dtype=np.intp)
        for i in range(n):
            count[series[i] - lo + 1] += 1
        for c in range(span):
            count[c + 1] += count[c]
        for i in range(n):
            c = series[i] - lo
            order[count[c]] = i
            count[c] += 1
    else:
        order[:] = np.argsort(series, kind="mergesort")
    a = 0
    while a < n:
        s = series[order[a]]
        b = a + 1
        ordered = True
        while b < n and series[order[b]] == s:
            if time[order[b]] < time[order[b - 1]]:
                ordered = False
            b += 1
        if not ordered:
            _sort_run_by(order, time, a, b)
        a = b
    return order


@njit(cache=True, nogil=True)
def partials(
    series: Array, ts_us: Array, value: Array, width_us: int
) -> tuple[Array, Array, Array, Array, Array, Array, Array, Array, Array, Array]:
    """Rollup partials of raw readings in buckets of width_us aligned to the epoch, one row per
    (series, bucket) in that order: series, bucket, count, sum, min, max, first_ts, first,
    last_ts, last. Readings are unique per (series, ts): each is a partial of its own, and in
    (series, time) order they merge as coarsen merges partials."""
    order = group_order(series, ts_us)
    s, t, v = series[order], ts_us[order], value[order]
    return coarsen(s, t, np.ones(len(s), dtype=np.int64), v, v, v, t, v, t, v, width_us)


@njit(cache=True, nogil=True)
def coarsen(
    series: Array,
    bucket: Array,
    count: Array,
    sum_: Array,
    min_: Array,
    max_: Array,
    first_ts: Array,
    first: Array,
    last_ts: Array,
    last: Array,
    width_us: int,
) -> tuple[Array, Array, Array, Array, Array, Array, Array, Array, Array, Array]:
    """Partials sorted by (series, bucket) merged into buckets of width_us (a multiple of
    theirs): the rows of one wider bucket are adjacent, and in time order (so the first row
    holds the bucket's first reading and the last row its last)."""
    n = len(series)
    o_series = np.empty(n, dtype=np.int32)
    o_bucket = np.empty(n, dtype=np.int64)
    o_count = np.empty(n, dtype=np.int64)
    o_sum = np.empty(n, dtype=np.float64)
    o_min = np.empty(n, dtype=np.float64)
    o_max = np.empty(n, dtype=np.float64)
    o_first_ts = np.empty(n, dtype=np.int64)
    o_first = np.empty(n, dtype=np.float64)
    o_last_ts = np.empty(n, dtype=np.int64)
    o_last = np.empty(n, dtype=np.float64)
    g = -1
    for i in range(n):
        s = series[i]
        b = (bucket[i] // width_us) * width_us
        if g < 0 or s != o_series[g] or b != o_bucket[g]:
            g += 1
            o_series[g], o_bucket[g], o_count[g], o_sum[g] = s, b, count[i], sum_[i]
            o_min[g], o_max[g] = min_[i], max_[i]
            o_first_ts[g], o_first[g] = first_ts[i], first[i]
            o_last_ts[g], o_last[g] = last_ts[i], last[i]
            continue
        o_count[g] += count[i]
        o_sum[g] += sum_[i]
        o_min[g] = min(o_min[g], min_[i])
        o_max[g] = max(o_max[g], max_[i])
        o_last_ts[g], o_last[g] = last_ts[i], last[i]
    g += 1
    return (
        o_series[:g],
        o_bucket[:g],
        o_count[:g],
        o_sum[:g],
        o_min[:g],
        o_max[:g],
        o_first_ts[:g],
        o_first[:g],
        o_last_ts[:g],
        o_last[:g],
    )


def warm() -> None:
    """Compile (or load from the on-disk cache) every kernel now, on tiny inputs, so that a
    worker's first batch is not held up by the compiler."""
    i32 = np.zeros(1, dtype=np.int32)
    i64 = np.zeros(1, dtype=np.int64)
    f64 = np.zeros(1, dtype=np.float64)
    validate(i32, f64, i64, f64, f64, 0, 1)
    ptr = np.zeros(2, dtype=np.intp)
    flat = np.zeros(0, dtype=np.intp)
    evaluate(
        i32, i64, f64, i64.copy(), i32.copy(), i64.copy(), i32.copy(), np.zeros(1, np.bool_),
        ptr, flat, flat.copy(), np.zeros(1, np.int8), np.zeros(1, np.bool_), f64, f64, i64, f64,
        i64, np.zeros(1, np.bool_), i64.copy(), i64.copy(), f64.copy(), i64.copy(), 1,
    )  # fmt: skip
    p = partials(i32, i64, f64, 60)
    coarsen(*p, 3600)
