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

from collections.abc import Sequence
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
    """State lives per (rule, series) *pair* that a rule applies to (or that was restored), in
    flat arrays indexed by the pair's slot: a city's rules each apply to a few quantities, so a
    dense rules x series layout was mostly empty (24 rules x 524,288 series: 541 MB, of which
    about 370,000 pairs were used). Slots are handed out once and never move."""

    def __init__(self, rules: list[Rule], capacity: int = 1024) -> None:
        self.rules = rules
        self._params = _Params.of(rules)
        self.named = {r.scope_value for r in rules if r.scope_kind == "sensor"}  # scoped to
        self._csr: tuple[npt.NDArray[np.intp], ...] | None = None
        n = len(rules)
        self._cap = capacity
        self.watermark = np.full(capacity, NONE, dtype=np.int64)
        self.sensor_of = np.full(capacity, -1, dtype=np.int32)
        self.applies = np.zeros((n, capacity), dtype=bool)
        # (rule, series) -> slot: keys ``series * len(rules) + rule``, sorted, with their slots
        self._keys = np.empty(0, dtype=np.int64)
        self._key_slot = np.empty(0, dtype=np.int32)
        self.pairs = 0  # slots in use
        # per slot
        self.active = np.zeros(0, dtype=bool)
        self.run_start = np.empty(0, dtype=np.int64)
        self.last_ts = np.empty(0, dtype=np.int64)
        self.last_value = np.empty(0, dtype=np.float64)
        self._stamp = np.empty(0, dtype=np.int64)  # batch that last touched a pair
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
        """Room for series ids up to ``needed``."""
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
        self._cap = cap

    def _grow_slots(self, needed: int) -> None:
        """Room for ``needed`` slots; new slots hold the idle state."""
        have = len(self.active)
        if needed <= have:
            return
        size = max(needed, 2 * have, 1024)
        extra = size - have
        self.active = np.concatenate([self.active, np.zeros(extra, dtype=bool)])
        self.run_start = np.concatenate([self.run_start, np.full(extra, NONE, dtype=np.int64)])
        self.last_ts = np.concatenate([self.last_ts, np.full(extra, NONE, dtype=np.int64)])
        self.last_value = np.concatenate([self.last_value, np.full(extra, np.nan)])
        self._stamp = np.concatenate([self._stamp, np.zeros(extra, dtype=np.int64)])

    def slots(
        self, rule: npt.NDArray[np.integer], series: npt.NDArray[np.integer], create: bool = False
    ) -> npt.NDArray[np.intp]:
        """The slot of each (rule, series) pair; -1 for a pair that has none, unless ``create``
        (then new pairs get new slots, in the order given)."""
        rule, series = np.asarray(rule), np.asarray(series)
        key = series.astype(np.int64) * len(self.rules) + rule.astype(np.int64)
        pos = np.searchsorted(self._keys, key)
        inside = pos < len(self._keys)
        found = np.zeros(len(key), dtype=bool)
        found[inside] = self._keys[pos[inside]] == key[inside]
        out = np.full(len(key), -1, dtype=np.intp)
        out[found] = self._key_slot[pos[found]]
        if create and not found.all():
            new, first = np.unique(key[~found], return_index=True)
            new = new[np.argsort(first)]  # slots in the order the pairs came
            slot = np.arange(self.pairs, self.pairs + len(new), dtype=np.int32)
            self.pairs += len(new)
            self._grow_slots(self.pairs)
            keys = np.concatenate([self._keys, new])
            order = np.argsort(keys, kind="stable")
            self._keys = keys[order]
            self._key_slot = np.concatenate([self._key_slot, slot])[order]
            self._csr = None
            out[~found] = self.slots(rule[~found], series[~found])
        return out

    def register(self, series: int, info: SeriesInfo, period_s: float) -> None:
        """Tell the engine about a series (again, when its sensor's district or domain changed)."""
        self.register_many([series], [info], [period_s])

    def register_many(
        self, series: list[int], infos: list[SeriesInfo], periods_s: list[float]
    ) -> None:
        """``register`` for many series at once (see ``register_columns``)."""
        self.register_columns(
            series,
            [i.sensor for i in infos],
            [i.quantity for i in infos],
            [i.district for i in infos],
            [i.domain for i in infos],
            periods_s,
        )

    def register_columns(
        self,
        series: Sequence[int],
        sensors: Sequence[str],
        quantities: Sequence[str],
        districts: Sequence[str | None],
        domains: Sequence[str | None],
        periods_s: Sequence[float] | npt.NDArray[np.float64],
    ) -> None:
        """``register`` for many series at once, given as columns (see ``register_coded``)."""
        n = len(series)
        if not n:
            return
        named = self.named
        scoped: Sequence[str] = [x if x in named else "" for x in sensors] if named else [""] * n
        names = {k: c for c, k in enumerate(dict.fromkeys(sensors))}
        where = list(zip(scoped, districts, domains, strict=True))
        places = {k: c for c, k in enumerate(dict.fromkeys(where))}
        kinds = {k: c for c, k in enumerate(dict.fromkeys(quantities))}
        self.register_coded(
            np.asarray(series, dtype=np.intp),
            np.fromiter(map(names.__getitem__, sensors), dtype=np.intp, count=n),
            list(names),
            np.fromiter(map(places.__getitem__, where), dtype=np.intp, count=n),
            list(places),
            np.fromiter(map(kinds.__getitem__, quantities), dtype=np.intp, count=n),
            list(kinds),
            np.asarray(periods_s, dtype=np.float64),
        )

    def register_coded(
        self,
        series: npt.NDArray[np.intp],
        sensor: npt.NDArray[np.intp],
        sensor_names: Sequence[str],
        place: npt.NDArray[np.intp],
        places: Sequence[tuple[str, str | None, str | None]],
        quantity: npt.NDArray[np.intp],
        quantity_names: Sequence[str],
        periods_s: npt.NDArray[np.float64],
    ) -> None:
        """``register`` for many series at once (a worker's start loads every known series),
        each described by codes: its sensor ``sensor_names[sensor]``, its quantity
        ``quantity_names[quantity]`` and its place ``places[place]``: (the sensor if a rule is
        scoped to it, else "", district, domain).

        Which rules apply depends on the quantity and the place: worked out once per distinct
        combination, then set for all its series with array indexing. No Python object per
        series.
        """
        n = len(series)
        if not n:
            return
        s_arr = np.asarray(series, dtype=np.intp)
        self._grow(int(s_arr.max()))
        self._csr = None
        self.applies[:, s_arr] = False
        nq = max(1, len(quantity_names))
        combos, combo = np.unique(place.astype(np.int64) * nq + quantity, return_inverse=True)
        by_combo = np.argsort(combo, kind="stable")
        ends = np.cumsum(np.bincount(combo, minlength=len(combos)))
        for c, k in enumerate(combos.tolist()):
            (sensor_key, district, domain), q = places[k // nq], quantity_names[k % nq]
            which = applicable(self.rules, SeriesInfo(sensor_key, q, district, domain))
            if which:
                positions = by_combo[ends[c - 1] if c else 0 : ends[c]]
                self.applies[np.ix_(np.asarray(which, dtype=np.intp), s_arr[positions])] = True
        # Sensors, in the order they first come: new ones appended at once; each keeps its
        # shortest period and the stale rule of its last registration.
        codes, first = np.unique(sensor, return_index=True)
        codes = codes[np.argsort(first)]
        last = np.empty(len(sensor_names), dtype=np.intp)
        last[sensor[::-1]] = np.arange(n - 1, -1, -1)  # the first write of each code wins
        last = last[codes]  # each sensor's last position
        names = [sensor_names[c] for c in codes.tolist()]
        index = self._sensor_index
        added = [name for name in names if name not in index]
        start = len(self.sensors)
        index.update(zip(added, range(start, start + len(added)), strict=True))
        self.sensors.extend(added)
        engine_index = np.full(len(sensor_names), -1, dtype=np.int32)
        engine_index[codes] = np.fromiter(map(index.__getitem__, names), np.int32, len(names))
        ks = engine_index[sensor]
        if added:
            m = len(added)
            self.sensor_last = np.concatenate([self.sensor_last, np.full(m, NONE, np.int64)])
            self.sensor_period_us = np.concatenate(
                [self.sensor_period_us, np.full(m, np.iinfo(np.int64).max, np.int64)]
            )
            self.sensor_stale_active = np.concatenate([self.sensor_stale_active, np.zeros(m, bool)])
            self.sensor_stale_rule = np.concatenate(
                [self.sensor_stale_rule, np.full(m, -1, np.int32)]
            )
        periods = (np.asarray(periods_s, dtype=np.float64) * 1e6).astype(np.int64)
        np.minimum.at(self.sensor_period_us, ks, periods)
        stale = np.full(len(places), -2, dtype=np.int32)  # -2: not worked out
        their = place[last]
        for p in np.unique(their).tolist():
            sensor_key, district, domain = places[p]
            rule = stale_rule(self.rules, SeriesInfo(sensor_key, "", district, domain))
            stale[p] = -1 if rule is None else rule
        self.sensor_stale_rule[ks[last]] = stale[their]
        self.sensor_of[s_arr] = ks
        rr, cols = np.nonzero(self.applies[:, s_arr])
        self.slots(rr, s_arr[cols], create=True)

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
        self.restore_many(
            np.array([rule]),
            np.array([series]),
            np.array([active]),
            np.array([run_start]),
            np.array([last_ts]),
            np.array([last_value]),
        )

    def restore_many(
        self,
        rule: npt.NDArray[np.integer],
        series: npt.NDArray[np.integer],
        active: B,
        run_start: I64,
        last_ts: I64,
        last_value: F64,
    ) -> None:
        """Saved state of (rule, series) pairs, each pair once (as `alert_state` holds them)."""
        if len(series) == 0:
            return
        self._grow(int(series.max()))
        q = self.slots(rule, series, create=True)
        self.active[q] = active
        self.run_start[q] = run_start
        self.last_ts[q] = last_ts
        self.last_value[q] = last_value

    def restore_watermark(self, series: int, ts_us: int) -> None:
        self.restore_watermarks(np.array([series]), np.array([ts_us], dtype=np.int64))

    def restore_watermarks(self, series: npt.NDArray[np.integer], ts_us: I64) -> None:
        """Newest event times known elsewhere (the database): watermarks only move forward."""
        if len(series) == 0:
            return
        self._grow(int(series.max()))
        np.maximum.at(self.watermark, series, ts_us)
        ks = self.sensor_of[series]
        known = ks >= 0
        np.maximum.at(self.sensor_last, ks[known], ts_us[known])

    def restore_stale(self, sensor: str) -> None:
        k = self._sensor_index.get(sensor)
        if k is not None:
            self.sensor_stale_active[k] = True

    # -- evaluation ---------------------------------------------------------------------------

    def _pairs(self) -> tuple[npt.NDArray[np.intp], ...]:
        """Which rules apply to each series, as CSR: the rules of series s are
        flat[ptr[s]:ptr[s+1]], their pairs' slots slot[ptr[s]:ptr[s+1]]."""
        if self._csr is None or self._csr[0].shape[0] != self._cap + 1:
            ss, rr = np.nonzero(self.applies.T)  # sorted by series, then rule
            ptr = np.searchsorted(ss, np.arange(self._cap + 1))
            slot = self.slots(rr, ss)
            # one compiled signature
            self._csr = (ptr, np.ascontiguousarray(rr), slot.astype(np.intp, copy=False))
        return self._csr

    def evaluate(self, series: I32, ts_us: I64, value: F64) -> tuple[Transitions, StateRows]:
        """Transitions raised and cleared by a batch of new readings (every series registered),
        and the state of the (rule, series) pairs it touched. One compiled pass in arrival
        order: each fresh reading runs through every rule of its series."""
        ptr, flat, slot = self._pairs()
        p = self._params
        self._batches += 1
        rule, s, sensor, t, v, up, st_rule, st_series, st_slot = kernels.evaluate(
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
            slot,
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
            self.active[st_slot],
            self.run_start[st_slot],
            self.last_ts[st_slot],
            self.last_value[st_slot],
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
