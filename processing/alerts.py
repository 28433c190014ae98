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
A batch is one compiled pass (processing.kernels) over state arrays kept between batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processing import kernels
from processing.rules import Rule, SeriesInfo, applicable, stale_rule

NONE = kernels.NONE
THRESHOLD, RATE, FLATLINE = kernels.THRESHOLD, kernels.RATE, kernels.FLATLINE

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


def _no_transitions() -> Transitions:
    e = np.empty(0)
    i32 = e.astype(np.int32)
    return Transitions(i32, i32, i32, e.astype(np.int64), e, e.astype(bool))


@dataclass(frozen=True)
class StateRows:
    """Engine state of the (rule, series) pairs a batch touched, for saving."""

    rule: I32
    series: I32
    active: B
    run_start: I64
    last_ts: I64
    last_value: F64


@dataclass(frozen=True)
class _Params:
    """The rules' parameters as arrays, one entry per rule (what the kernel reads)."""

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
        self._stamp = np.zeros((n, capacity), dtype=np.int64)  # batch that last touched a pair
        self._batches = 0
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
        self._stamp = grow(self._stamp, 0)  # type: ignore[assignment]
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

    def knows(self, series: npt.NDArray[np.int32]) -> bool:
        """Whether every one of ``series`` is registered (one vectorised look)."""
        if len(series) == 0:
            return True
        return int(series.max()) < self._cap and bool((self.sensor_of[series] >= 0).all())

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

    def _pairs(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Which rules apply to each series, as CSR: rules of series s are flat[ptr[s]:ptr[s+1]]."""
        if self._csr is None or self._csr[0].shape[0] != self._cap + 1:
            ss, rr = np.nonzero(self.applies.T)  # sorted by series, then rule
            ptr = np.searchsorted(ss, np.arange(self._cap + 1))
            self._csr = (ptr, np.ascontiguousarray(rr))  # one compiled signature
        return self._csr

    def evaluate(self, series: I32, ts_us: I64, value: F64) -> tuple[Transitions, StateRows]:
        """Transitions raised and cleared by a batch of new readings (every series registered),
        and the state of the (rule, series) pairs it touched. One compiled pass in arrival
        order: each fresh reading runs through every rule of its series."""
        ptr, flat = self._pairs()
        p = self._params
        self._batches += 1
        rule, s, sensor, t, v, up, st_rule, st_series = kernels.evaluate(
            np.ascontiguousarray(series, dtype=np.int32),
            np.ascontiguousarray(ts_us, dtype=np.int64),
            np.ascontiguousarray(value, dtype=np.float64),
            self.watermark,
            self.sensor_of,
            self.sensor_last,
            self.sensor_stale_rule,
            self.sensor_stale_active,
            ptr,
            flat,
            p.kind,
            p.above,
            p.limit,
            p.clear,
            p.for_us,
            p.per,
            p.max_gap,
            self.active,
            self.run_start,
            self.last_ts,
            self.last_value,
            self._stamp,
            self._batches,
        )
        tr = Transitions(rule, s, sensor, t, v, up)
        state = StateRows(
            st_rule,
            st_series,
            self.active[st_rule, st_series],
            self.run_start[st_rule, st_series],
            self.last_ts[st_rule, st_series],
            self.last_value[st_rule, st_series],
        )
        return tr, state

    def stale_due(self, now_us: int) -> npt.NDArray[np.intp]:
        """The sensors (indices into ``sensors``) that ``tick(now_us)`` would call stale."""
        rule = self.sensor_stale_rule
        if len(rule) == 0:
            return np.empty(0, dtype=np.intp)
        factor = np.array([r.factor for r in self.rules] + [0.0])[rule]  # -1 -> the 0.0 pad
        silence = now_us - self.sensor_last
        stale = (
            (rule >= 0)
            & (self.sensor_last != NONE)
            & ~self.sensor_stale_active
            & (silence > factor * self.sensor_period_us)
        )
        return np.flatnonzero(stale)

    def tick(self, now_us: int) -> Transitions:
        """Stale checks: sensors silent for longer than their rule allows (judged on event time)."""
        ks = self.stale_due(now_us)
        if len(ks) == 0:
            return _no_transitions()
        rule = self.sensor_stale_rule
        silence = now_us - self.sensor_last
        self.sensor_stale_active[ks] = True
        return Transitions(
            rule[ks],
            np.full(len(ks), -1, dtype=np.int32),
            ks.astype(np.int32),
            np.full(len(ks), now_us, dtype=np.int64),
            silence[ks] / 1e6,
            np.ones(len(ks), dtype=bool),
        )
