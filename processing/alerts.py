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

NONE = np.iinfo(np.int64).min  # "no time": no run in progress, or nothing seen yet

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
        self.series_rules = [i for i, r in enumerate(rules) if r.kind != "stale"]
        n = len(rules)
        self._cap = capacity
        self.watermark = np.full(capacity, NONE, dtype=np.int64)
        self.registered = np.zeros(capacity, dtype=bool)
        self.sensor_of = np.full(capacity, -1, dtype=np.int32)
        self.applies = np.zeros((n, capacity), dtype=bool)
        self.active = np.zeros((n, capacity), dtype=bool)
        self.run_start = np.full((n, capacity), NONE, dtype=np.int64)
        self.last_ts = np.full((n, capacity), NONE, dtype=np.int64)
        self.last_value = np.full((n, capacity), np.nan)
        # per sensor (index into self.sensors)
        self.sensors: list[str] = []
        self._sensor_index: dict[str, int] = {}
        self.sensor_last: list[int] = []
        self.sensor_period_us: list[int] = []
        self.sensor_stale_rule: list[int] = []  # -1: no stale rule
        self.sensor_stale_active: list[bool] = []

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
        self.registered = grow(self.registered, False)
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
        self.registered[series] = True
        self.applies[:, series] = False
        for i in applicable(self.rules, info):
            self.applies[i, series] = True
        k = self._sensor_index.get(info.sensor)
        if k is None:
            k = self._sensor_index[info.sensor] = len(self.sensors)
            self.sensors.append(info.sensor)
            self.sensor_last.append(int(NONE))
            self.sensor_period_us.append(int(period_s * 1e6))
            self.sensor_stale_active.append(False)
            self.sensor_stale_rule.append(-1)
        else:
            self.sensor_period_us[k] = min(self.sensor_period_us[k], int(period_s * 1e6))
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
            self.sensor_last[k] = max(self.sensor_last[k], ts_us)

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
        order = np.argsort(series, kind="stable")
        s, t = series[order], ts_us[order]
        gs = _group_starts(s)
        group = np.cumsum(gs) - 1
        rank = np.unique(t, return_inverse=True)[1].reshape(-1).astype(np.int64) + 1
        key = group.astype(np.int64) * (n + 2) + rank  # groups never overlap: a segmented max
        before = np.empty(n, dtype=np.int64)
        before[1:] = np.maximum.accumulate(key)[:-1]
        before[gs] = group[gs].astype(np.int64) * (n + 2)
        ok = (key > before) & (t > self.watermark[s])
        np.maximum.at(self.watermark, s, t)
        return order[ok]

    def evaluate(self, series: I32, ts_us: I64, value: F64) -> tuple[Transitions, StateRows]:
        """Transitions raised and cleared by a batch of new readings (every series registered)."""
        pick = self.fresh(series, ts_us)
        s, t, v = series[pick], ts_us[pick], value[pick]
        parts: list[Transitions] = []
        saved: list[StateRows] = []
        for r in self.series_rules:
            m = self.applies[r][s]
            if not m.any():
                continue
            tr, st = self._rule(r, s[m], t[m], v[m])
            if len(tr):
                parts.append(tr)
            saved.append(st)
        parts.append(self._alive(s, t, v))
        return _transitions(parts), StateRows(
            *(
                np.concatenate([getattr(x, f) for x in saved]) if saved else np.empty(0, dtype=d)
                for f, d in (
                    ("rule", np.int32),
                    ("series", np.int32),
                    ("active", bool),
                    ("run_start", np.int64),
                    ("last_ts", np.int64),
                    ("last_value", np.float64),
                )
            )
        )

    def _conditions(self, rule: Rule, v: F64, t: I64, pv: F64, pt: I64) -> tuple[B, B]:
        """(sets, clears) per reading; pv/pt: the previous reading of the series (pt NONE: none)."""
        if rule.kind in ("threshold", "index"):
            x = v
            valid = np.ones(len(v), dtype=bool)
        else:
            has = pt != NONE
            dt = np.where(has, t - pt, 1)
            valid = has & ((dt <= rule.max_gap_us) if rule.max_gap_us else True)
            if rule.kind == "flatline":
                same = np.abs(v - pv) <= rule.tolerance
                return valid & same, valid & ~same
            x = (v - pv) * float(rule.per_us) / dt  # rate per `per`
        if rule.above is not None:
            clear = rule.above if rule.clear is None else rule.clear
            return valid & (x > rule.above), valid & (x < clear)
        assert rule.below is not None
        clear = rule.below if rule.clear is None else rule.clear
        return valid & (x < rule.below), valid & (x > clear)

    def _rule(self, r: int, s: I32, t: I64, v: F64) -> tuple[Transitions, StateRows]:
        rule = self.rules[r]
        n = len(s)
        gs = _group_starts(s)
        idx = np.arange(n)
        first = _ffill_index(gs)  # the group start of each position
        pv = np.empty(n)
        pt = np.empty(n, dtype=np.int64)
        pv[1:], pt[1:] = v[:-1], t[:-1]
        pv[gs], pt[gs] = self.last_value[r][s[gs]], self.last_ts[r][s[gs]]
        sets, clears = self._conditions(rule, v, t, pv, pt)
        # runs of consecutive `sets`, possibly continuing a run from the previous batch
        carried = self.run_start[r][s]
        prev_set = np.empty(n, dtype=bool)
        prev_set[1:] = sets[:-1]
        prev_set[gs] = carried[gs] != NONE
        begins = sets & (gs | ~prev_set)
        own = pt if rule.kind == "flatline" else t
        start_at = np.where(gs & (carried != NONE), carried, own)
        run_start = np.where(sets, start_at[np.maximum(_ffill_index(begins), 0)], NONE)
        raises = sets & (t - np.where(sets, run_start, t) >= rule.for_us)
        last_r = _ffill_index(raises)
        last_c = _ffill_index(clears)
        seen = (last_r >= first) | (last_c >= first)
        act = np.where(seen, last_r > last_c, self.active[r][s])
        prev_act = np.empty(n, dtype=bool)
        prev_act[1:] = act[:-1]
        prev_act[gs] = self.active[r][s[gs]]
        up = act & ~prev_act
        down = ~act & prev_act
        # carry the state of each series' last reading to the next batch
        ends = np.append(idx[gs][1:], n) - 1
        se = s[ends]
        self.active[r][se] = act[ends]
        self.run_start[r][se] = run_start[ends]
        self.last_ts[r][se] = t[ends]
        self.last_value[r][se] = v[ends]
        changed = up | down
        tr = Transitions(
            np.full(int(changed.sum()), r, dtype=np.int32),
            s[changed],
            self.sensor_of[s[changed]],
            t[changed],
            v[changed],
            up[changed],
        )
        st = StateRows(
            np.full(len(se), r, dtype=np.int32), se, act[ends], run_start[ends], t[ends], v[ends]
        )
        return tr, st

    def _alive(self, s: I32, t: I64, v: F64) -> Transitions:
        """Fresh readings show their sensors alive: clear stale alerts, move sensor clocks."""
        if len(s) == 0:
            return _transitions([])
        k = self.sensor_of[s]
        last = np.array(self.sensor_last, dtype=np.int64)
        np.maximum.at(last, k, t)
        self.sensor_last = last.tolist()
        rows = []
        for sensor in np.unique(k).tolist():
            if self.sensor_stale_active[sensor]:
                self.sensor_stale_active[sensor] = False
                at = int(np.flatnonzero(k == sensor)[0])
                rows.append((self.sensor_stale_rule[sensor], sensor, int(t[at]), float(v[at])))
        return self._sensor_transitions(rows, raised=False)

    def _sensor_transitions(
        self, rows: list[tuple[int, int, int, float]], raised: bool
    ) -> Transitions:
        return Transitions(
            np.array([r[0] for r in rows], dtype=np.int32),
            np.full(len(rows), -1, dtype=np.int32),
            np.array([r[1] for r in rows], dtype=np.int32),
            np.array([r[2] for r in rows], dtype=np.int64),
            np.array([r[3] for r in rows], dtype=np.float64),
            np.full(len(rows), raised, dtype=bool),
        )

    def tick(self, now_us: int) -> Transitions:
        """Stale checks: sensors silent for longer than their rule allows (judged on event time)."""
        rows = []
        for k in range(len(self.sensors)):
            rule = self.sensor_stale_rule[k]
            last = self.sensor_last[k]
            if rule < 0 or last == NONE or self.sensor_stale_active[k]:
                continue
            silence = now_us - last
            if silence > self.rules[rule].factor * self.sensor_period_us[k]:
                self.sensor_stale_active[k] = True
                rows.append((rule, k, now_us, silence / 1e6))
        return self._sensor_transitions(rows, raised=True)
