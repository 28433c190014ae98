"""The alert engine: rules evaluated over a batch at once, with per-series state between batches.

Semantics (the per-reading reference in tests/alert_reference.py is the executable spec):
- Readings are taken in arrival order; a reading not newer (in event time) than the newest one
  already evaluated for its series is late: it goes to history and rollups but not to alerts.
- For each rule a reading may set the condition (S) or clear it (C) or neither (the hysteresis
  band). A run of consecutive S readings raises once it has lasted `for` in event time; the alert
  stays active until a C reading. Threshold: S above `above` (below `below`), C past `clear`.
  Rate: the change per `per` between consecutive readings (not over `max_gap`). Flatline: the
  value unchanged within `tolerance` (the run starts when the stuck value first appeared).
- Stale rules watch sensors: a periodic tick raises when a sensor's newest event time is older
  than `factor` x its expected period; a fresh reading of the sensor clears it.
Everything is NumPy over the batch; only the (rare) transitions are listed one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processing.rules import Rule, SeriesInfo, applicable, stale_rule
from processing.sorting import stable_order

NONE = np.iinfo(np.int64).min  # "no time": no run in progress, or nothing seen yet
THRESHOLD, RATE, FLATLINE = 0, 1, 2  # how a rule turns a reading into its measure

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Transitions:
    """Raised (True) or cleared (False) alerts. ``series`` is -1 for sensor-level (stale) rules."""

    rule: I32
    series: I32
    sensor: I32
    ts_us: I64
    value: F64
    raised: B

    def __len__(self) -> int:
        return len(self.rule)

    def rows(self) -> list[tuple[int, int, int, int, float, bool]]:
        return list(
            zip(
                self.rule.tolist(),
                self.series.tolist(),
                self.sensor.tolist(),
                self.ts_us.tolist(),
                self.value.tolist(),
                self.raised.tolist(),
                strict=True,
            )
        )


def _transitions(parts: list[Transitions]) -> Transitions:
    if not parts:
        e = np.empty(0)
        return Transitions(
            e.astype(np.int32),
            e.astype(np.int32),
            e.astype(np.int32),
            e.astype(np.int64),
            e,
            e.astype(bool),
        )
    return Transitions(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in Transitions.__dataclass_fields__)
    )


@dataclass(frozen=True)
class StateRows:
    """Engine state of the (rule, series) pairs a batch touched, for saving."""

    rule: I32
    series: I32
    active: B
    run_start: I64
    last_ts: I64
    last_value: F64


def _no_state() -> StateRows:
    e = np.empty(0)
    return StateRows(
        e.astype(np.int32),
        e.astype(np.int32),
        e.astype(bool),
        e.astype(np.int64),
        e.astype(np.int64),
        e,
    )


@dataclass(frozen=True)
class _Params:
    """The rules' parameters as arrays, gathered per (reading, rule) pair."""

    kind: npt.NDArray[np.int8]
    above: B  # the condition is "above" (else "below"; flatline: within tolerance)
    limit: F64
    clear: F64
    for_us: I64
    per: F64
    max_gap: I64

    @classmethod
    def of(cls, rules: list[Rule]) -> _Params:
        kind = [
            RATE if r.kind == "rate" else FLATLINE if r.kind == "flatline" else THRESHOLD
            for r in rules
        ]
        above = [r.above is not None for r in rules]
        limit = [
            r.tolerance
            if r.kind == "flatline"
            else (r.above if r.above is not None else r.below if r.below is not None else np.nan)
            for r in rules
        ]
        clear = [lim if r.clear is None else r.clear for r, lim in zip(rules, limit, strict=True)]
        return cls(
            np.array(kind, dtype=np.int8),
            np.array(above, dtype=bool),
            np.array(limit, dtype=np.float64),
            np.array(clear, dtype=np.float64),
            np.array([r.for_us for r in rules], dtype=np.int64),
            np.array([float(r.per_us) for r in rules], dtype=np.float64),
            np.array([r.max_gap_us for r in rules], dtype=np.int64),
        )


def _group_starts(s: I32) -> B:
    g = np.ones(len(s), dtype=bool)
    g[1:] = s[1:] != s[:-1]
    return g


def _ffill_index(flags: B) -> npt.NDArray[np.intp]:
    """For each position, the latest position <= it where flags is set (-1 if none)."""
    return np.maximum.accumulate(np.where(flags, np.arange(len(flags)), -1))


class Engine:
    def __init__(self, rules: list[Rule], capacity: int = 1024) -> None:
        self.rules = rules
        self._params = _Params.of(rules)
        self._csr: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]] | None = None
        n = len(rules)
        self._cap = capacity
        self.watermark = np.full(capacity, NONE, dtype=np.int64)
        self.sensor_of = np.full(capacity, -1, dtype=np.int32)
        self.applies = np.zeros((n, capacity), dtype=bool)
        self.active = np.zeros((n, capacity), dtype=bool)
        self.run_start = np.full((n, capacity), NONE, dtype=np.int64)
        self.last_ts = np.full((n, capacity), NONE, dtype=np.int64)
        self.last_value = np.full((n, capacity), np.nan)
        # per sensor (index into self.sensors)
        self.sensors: list[str] = []
        self._sensor_index: dict[str, int] = {}
        self.sensor_last = np.empty(0, dtype=np.int64)  # newest event time seen
        self.sensor_period_us = np.empty(0, dtype=np.int64)  # shortest expected period
        self.sensor_stale_rule = np.empty(0, dtype=np.int32)  # -1: no stale rule
        self.sensor_stale_active = np.empty(0, dtype=bool)

    # -- registration ---------------------------------------------------------------------

    def _grow(self, needed: int) -> None:
        cap = self._cap
        while cap <= needed:
            cap *= 2
        if cap == self._cap:
            return

        def grow(a: npt.NDArray[np.generic], fill: object) -> npt.NDArray[np.generic]:
            shape = (*a.shape[:-1], cap)
            out = np.full(shape, fill, dtype=a.dtype)
            out[..., : a.shape[-1]] = a
            return out

        self.watermark = grow(self.watermark, NONE)  # type: ignore[assignment]
        self.sensor_of = grow(self.sensor_of, -1)  # type: ignore[assignment]
        self.applies = grow(self.applies, False)
        self.active = grow(self.active, False)
        self.run_start = grow(self.run_start, NONE)  # type: ignore[assignment]
        self.last_ts = grow(self.last_ts, NONE)  # type: ignore[assignment]
        self.last_value = grow(self.last_value, np.nan)
        self._cap = cap

    def register(self, series: int, info: SeriesInfo, period_s: float) -> None:
        """Tell the engine about a series (again, when its sensor's district or domain changed)."""
        self._grow(series)
        self._csr = None
        self.applies[:, series] = False
        for i in applicable(self.rules, info):
            self.applies[i, series] = True
        k = self._sensor_index.get(info.sensor)
        if k is None:
            k = self._sensor_index[info.sensor] = len(self.sensors)
            self.sensors.append(info.sensor)
            self.sensor_last = np.append(self.sensor_last, NONE)
            self.sensor_period_us = np.append(self.sensor_period_us, int(period_s * 1e6))
            self.sensor_stale_active = np.append(self.sensor_stale_active, False)
            self.sensor_stale_rule = np.append(self.sensor_stale_rule, np.int32(-1))
        else:
            self.sensor_period_us[k] = min(int(self.sensor_period_us[k]), int(period_s * 1e6))
        rule = stale_rule(self.rules, info)
        self.sensor_stale_rule[k] = -1 if rule is None else rule
        self.sensor_of[series] = k

    def sensor(self, name: str) -> int | None:
        return self._sensor_index.get(name)

    # -- restoring state ----------------------------------------------------------------------

    def restore(
        self, rule: int, series: int, active: bool, run_start: int, last_ts: int, last_value: float
    ) -> None:
        self._grow(series)
        self.active[rule, series] = active
        self.run_start[rule, series] = run_start
        self.last_ts[rule, series] = last_ts
        self.last_value[rule, series] = last_value

    def restore_watermark(self, series: int, ts_us: int) -> None:
        self._grow(series)
        self.watermark[series] = max(int(self.watermark[series]), ts_us)
        k = int(self.sensor_of[series])
        if k >= 0:
            self.sensor_last[k] = max(int(self.sensor_last[k]), ts_us)

    def restore_stale(self, sensor: str) -> None:
        k = self._sensor_index.get(sensor)
        if k is not None:
            self.sensor_stale_active[k] = True

    # -- evaluation ---------------------------------------------------------------------------

    def fresh(self, series: I32, ts_us: I64) -> npt.NDArray[np.intp]:
        """Positions of the readings newer than everything before them in their series, sorted
        by series then event time (which is then also their arrival order); moves watermarks."""
        n = len(series)
        if n == 0:
            return np.empty(0, dtype=np.intp)
        order = stable_order(series)
        s, t = series[order], ts_us[order]
        gs = _group_starts(s)
        group = (np.cumsum(gs) - 1).astype(np.int64)
        # A segmented running max: offset each group above all earlier ones, then one cumulative
        # max. Times relative to the batch's oldest fit in 44 bits when the batch spans less than
        # ~200 days (validation's horizon keeps it to 90); otherwise rank the times first.
        rel = t - t.min()
        if rel.max() >= 1 << 44 or n >= 1 << 18:
            rel = np.unique(t, return_inverse=True)[1].reshape(-1).astype(np.int64)
            shift = int(n + 1).bit_length()
        else:
            shift = 44
        key = group << shift | (rel + 1)
        before = np.empty(n, dtype=np.int64)
        before[1:] = np.maximum.accumulate(key)[:-1]
        before[gs] = group[gs] << shift
        ok = (key > before) & (t > self.watermark[s])
        starts = np.flatnonzero(gs)
        heads = s[starts]
        self.watermark[heads] = np.maximum(self.watermark[heads], np.maximum.reduceat(t, starts))
        picked: npt.NDArray[np.intp] = order[ok]
        return picked

    def _pairs(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Which rules apply to each series, as CSR: rules of series s are flat[ptr[s]:ptr[s+1]]."""
        if self._csr is None or self._csr[0].shape[0] != self._cap + 1:
            ss, rr = np.nonzero(self.applies.T)  # sorted by series, then rule
            ptr = np.searchsorted(ss, np.arange(self._cap + 1))
            self._csr = (ptr, rr)
        return self._csr

    def evaluate(self, series: I32, ts_us: I64, value: F64) -> tuple[Transitions, StateRows]:
        """Transitions raised and cleared by a batch of new readings (every series registered).

        All rules at once: each fresh reading is paired with every rule of its series, the pairs
        grouped by (rule, series) in event-time order, and each group run as a state machine
        with prefix scans, carrying each group's state in and out.
        """
        pick = self.fresh(series, ts_us)
        s0, t0, v0 = series[pick], ts_us[pick], value[pick]
        alive = self._alive(s0, t0, v0)
        ptr, flat = self._pairs()
        per = ptr[s0 + 1] - ptr[s0]
        total = int(per.sum())
        if total == 0:
            return alive, _no_state()
        reading = np.repeat(np.arange(len(s0)), per)
        within = np.arange(total) - np.repeat(np.cumsum(per) - per, per)
        rule = flat[ptr[s0][reading] + within]
        key = rule.astype(np.int64) * self._cap + s0[reading]
        order = stable_order(key)  # stable: event time order within each group
        key, rule, reading = key[order], rule[order], reading[order]
        s, t, v = s0[reading], t0[reading], v0[reading]
        p = self._params
        kind, above, limit, clear = p.kind[rule], p.above[rule], p.limit[rule], p.clear[rule]
        n = total
        gs = np.ones(n, dtype=bool)
        gs[1:] = key[1:] != key[:-1]
        first = _ffill_index(gs)
        # the previous reading of the same (rule, series): inside the batch, or carried in
        active_in = self.active.reshape(-1)
        run_in = self.run_start.reshape(-1)
        last_ts_in = self.last_ts.reshape(-1)
        last_v_in = self.last_value.reshape(-1)
        pv = np.empty(n)
        pt = np.empty(n, dtype=np.int64)
        pv[1:], pt[1:] = v[:-1], t[:-1]
        pv[gs], pt[gs] = last_v_in[key[gs]], last_ts_in[key[gs]]
        has = pt != NONE
        dt = np.where(has, t - pt, 1)
        gap = p.max_gap[rule]
        valid = (kind == THRESHOLD) | (has & ((gap == 0) | (dt <= gap)))
        x = np.where(
            kind == THRESHOLD,
            v,
            np.where(kind == RATE, (v - pv) * p.per[rule] / dt, np.abs(v - pv)),
        )
        flat_kind = kind == FLATLINE
        sets = valid & np.where(flat_kind, x <= limit, np.where(above, x > limit, x < limit))
        clears = valid & np.where(flat_kind, x > limit, np.where(above, x < clear, x > clear))
        # runs of consecutive `sets`, possibly continuing a run from the previous batch
        carried = run_in[key]
        prev_set = np.empty(n, dtype=bool)
        prev_set[1:] = sets[:-1]
        prev_set[gs] = carried[gs] != NONE
        begins = sets & (gs | ~prev_set)
        own = np.where(flat_kind, pt, t)
        start_at = np.where(gs & (carried != NONE), carried, own)
        run_start = np.where(sets, start_at[np.maximum(_ffill_index(begins), 0)], NONE)
        raises = sets & (t - np.where(sets, run_start, t) >= p.for_us[rule])
        last_r = _ffill_index(raises)
        last_c = _ffill_index(clears)
        seen = (last_r >= first) | (last_c >= first)
        act = np.where(seen, last_r > last_c, active_in[key])
        prev_act = np.empty(n, dtype=bool)
        prev_act[1:] = act[:-1]
        prev_act[gs] = active_in[key[gs]]
        up = act & ~prev_act
        changed = up | (~act & prev_act)
        # carry each group's state to the next batch
        ends = np.append(np.flatnonzero(gs)[1:], n) - 1
        ke = key[ends]
        active_in[ke] = act[ends]
        run_in[ke] = run_start[ends]
        last_ts_in[ke] = t[ends]
        last_v_in[ke] = v[ends]
        sc = s[changed]
        tr = Transitions(
            rule[changed].astype(np.int32),
            sc,
            self.sensor_of[sc],
            t[changed],
            v[changed],
            up[changed],
        )
        state = StateRows(
            rule[ends].astype(np.int32), s[ends], act[ends], run_start[ends], t[ends], v[ends]
        )
        return _transitions([tr, alive]), state

    def _alive(self, s: I32, t: I64, v: F64) -> Transitions:
        """Fresh readings show their sensors alive: clear stale alerts, move sensor clocks.
        ``s`` is sorted by series, ``t`` ascending within each series."""
        if len(s) == 0:
            return _transitions([])
        k = self.sensor_of[s]
        np.maximum.at(self.sensor_last, k, t)
        back = np.flatnonzero(self.sensor_stale_active[k])
        if len(back) == 0:
            return _transitions([])
        # a stale sensor spoke again: cleared at its first fresh reading of the batch
        ks, first = np.unique(k[back], return_index=True)
        at = back[first]
        self.sensor_stale_active[ks] = False
        return Transitions(
            self.sensor_stale_rule[ks],
            np.full(len(ks), -1, dtype=np.int32),
            ks.astype(np.int32),
            t[at],
            v[at],
            np.zeros(len(ks), dtype=bool),
        )

    def tick(self, now_us: int) -> Transitions:
        """Stale checks: sensors silent for longer than their rule allows (judged on event time)."""
        rule = self.sensor_stale_rule
        if len(rule) == 0:
            return _transitions([])
        factor = np.array([r.factor for r in self.rules] + [0.0])[rule]  # -1 -> the 0.0 pad
        silence = now_us - self.sensor_last
        stale = (
            (rule >= 0)
            & (self.sensor_last != NONE)
            & ~self.sensor_stale_active
            & (silence > factor * self.sensor_period_us)
        )
        ks = np.flatnonzero(stale)
        self.sensor_stale_active[ks] = True
        return Transitions(
            rule[ks],
            np.full(len(ks), -1, dtype=np.int32),
            ks.astype(np.int32),
            np.full(len(ks), now_us, dtype=np.int64),
            silence[ks] / 1e6,
            np.ones(len(ks), dtype=bool),
        )
