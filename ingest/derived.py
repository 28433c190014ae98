"""Derived readings: the indices, computed for each completed hour from the hourly rollups.

US AQI (NowCast for PM2.5 and PM10, 8-hour O3 and CO, 1-hour NO2 and SO2) and the Malaysian API
(24-hour PM and SO2, 8-hour CO, 1-hour O3 and NO2) per air station; DOE-WQI and its class per
wetland station; HCM urban-street level of service per traffic loop (hourly mean speed against
the loop's free-flow speed: declared in its meta as `free_flow_speed`, else learned from its own
off-peak hours, else 50 km/h; the derived row says which). Each is
stamped at the start of its hour, written once through the normal commit (so it has rollups,
`latest` and index alarms), and names its table in `derived_info`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from ingest import topics
from processing import indices
from processing.catalogue import Catalogue
from store.writer import Batch, DerivedInfo, Readings

log = logging.getLogger(__name__)

HOUR_US = 3_600_000_000
WINDOW_H = 24  # hours of history an index needs at most (24-hour averages)
LOOKBACK_H = 6  # completed hours revisited (data arriving late still makes its hour)
GRACE_US = 5 * 60_000_000  # an hour is complete this long after it ends
DEFAULT_FREE_FLOW_KMH = 50.0
# A loop without a declared free-flow speed learns it: the 85th percentile of its hourly mean
# speeds in the off-peak hours (city time) of the last week, once it has enough of them. Hourly
# means, not single vehicles: the rollups are what every tier keeps for a week.
LEARN_DAYS = 7
LEARN_OFF_PEAK = (22, 5)  # from 22:00 to 05:00 city time
LEARN_MIN_HOURS = 12
LEARN_PERCENTILE = 0.85
LEARN_EVERY_US = HOUR_US  # the learned speeds move slowly: worked out again once an hour

AIR = ("pm25", "pm10", "o3", "co", "no2", "so2")
WATER = ("do", "do_saturation", "water_temperature", "bod", "cod", "an", "tss", "ph")
TRAFFIC = ("speed",)
DERIVED = ("aqi_us", "api_my", "wqi_my", "wqi_class", "los")


@dataclass
class Hours:
    """Hourly means per (sensor, quantity), for hours [first, first + n)."""

    first_us: int
    n: int
    means: dict[tuple[str, str], npt.NDArray[np.float64]]

    def of(self, sensor: str, quantity: str) -> npt.NDArray[np.float64]:
        return self.means.get((sensor, quantity), np.full(self.n, np.nan))


def _mean(x: npt.NDArray[np.float64], at_least: int) -> float:
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.sum() >= at_least else float("nan")


@dataclass(frozen=True)
class FreeFlow:
    """A loop's free-flow speed (km/h) and where it came from."""

    speed: float
    source: str  # declared | learned | default
    hours: int = 0  # off-peak hours it was learned from


class Derived:
    def __init__(
        self,
        catalogue: Catalogue,
        partition: tuple[int, int] = (1, 1),
        timezone: str = "Asia/Kuala_Lumpur",
    ) -> None:
        self.catalogue = catalogue
        self.tables = indices.default_tables()
        # (K, N): a worker of partition K derives the indices of its own gateways' sensors only,
        # so that each index series, and its alarm state, stays with one worker.
        self.partition = partition
        self.timezone = timezone
        self._learned: dict[str, FreeFlow] = {}
        self._learned_at_us: int | None = None

    def due(self, cur: psycopg.Cursor[Any], now: datetime) -> Batch | None:
        """Derived readings of the completed hours not yet derived; None when nothing is due."""
        now_us = int(now.timestamp() * 1e6)
        end = (now_us - GRACE_US) // HOUR_US * HOUR_US  # end of the newest complete hour
        targets = [end - HOUR_US * (k + 1) for k in range(LOOKBACK_H)]
        first = targets[-1] - HOUR_US * (WINDOW_H - 1)
        hours = self._hours(cur, first, end)
        done = self._done(cur, targets[-1])
        attrs = self._free_flow(cur, now_us)
        rows: list[tuple[str, str, int, float, DerivedInfo]] = []
        present = {(s, int(b)) for s, b in self._present(cur, targets[-1], end)}
        for sensor, quantities in self._own(cur, self._stations(hours)).items():
            for h in targets:
                if (sensor, h) not in present:
                    continue
                i = (h - first) // HOUR_US  # index of hour h in the arrays
                if quantities & set(AIR):
                    rows += self._air(hours, sensor, h, i, done)
                if quantities & {"bod", "cod", "an", "tss"}:
                    rows += self._water(hours, sensor, h, i, done)
                if "speed" in quantities:
                    rows += self._traffic(hours, sensor, h, i, done, attrs)
        if not rows:
            return None
        unit = {q: _unit(self.catalogue, q) for q in DERIVED}
        readings = Readings(
            sensor=[r[0] for r in rows],
            quantity=[r[1] for r in rows],
            unit=[unit[r[1]] for r in rows],
            gateway=[None] * len(rows),
            ts_us=np.array([r[2] for r in rows], dtype=np.int64),
            value=np.array([r[3] for r in rows], dtype=np.float64),
            received_us=np.full(len(rows), now_us, dtype=np.int64),
        )
        return Batch(readings=readings, derived=[r[4] for r in rows])

    # -- queries ------------------------------------------------------------------------------

    def _hours(self, cur: psycopg.Cursor[Any], first_us: int, end_us: int) -> Hours:
        n = (end_us - first_us) // HOUR_US
        means: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
        for sensor, quantity, bucket, mean in cur.execute(
            "SELECT sensor_id, quantity, (extract(epoch FROM bucket) * 1000000)::bigint, mean"
            " FROM rollup_1h WHERE quantity = ANY(%s) AND bucket >= %s AND bucket < %s",
            (list(AIR + WATER + TRAFFIC), _at(first_us), _at(end_us)),
        ):
            arr = means.setdefault((sensor, quantity), np.full(n, np.nan))
            arr[(bucket - first_us) // HOUR_US] = mean
        return Hours(first_us, n, means)

    @staticmethod
    def _present(cur: psycopg.Cursor[Any], first_us: int, end_us: int) -> list[tuple[str, int]]:
        """(sensor, hour) pairs with any measured data in those hours."""
        return cur.execute(
            "SELECT DISTINCT sensor_id, (extract(epoch FROM bucket) * 1000000)::bigint"
            " FROM rollup_1h WHERE quantity = ANY(%s) AND bucket >= %s AND bucket < %s",
            (list(AIR + WATER + TRAFFIC), _at(first_us), _at(end_us)),
        ).fetchall()

    @staticmethod
    def _done(cur: psycopg.Cursor[Any], since_us: int) -> set[tuple[str, str, int]]:
        return {
            (s, q, int(t))
            for s, q, t in cur.execute(
                "SELECT sensor_id, quantity, (extract(epoch FROM ts) * 1000000)::bigint"
                " FROM readings WHERE quantity = ANY(%s) AND ts >= %s",
                (list(DERIVED), _at(since_us)),
            )
        }

    def _free_flow(self, cur: psycopg.Cursor[Any], now_us: int) -> dict[str, FreeFlow]:
        declared = {}
        for sensor, v in cur.execute(
            "SELECT sensor_id, attributes->>'free_flow_speed' FROM sensors"
            " WHERE attributes ? 'free_flow_speed'"
        ):
            try:
                declared[sensor] = FreeFlow(float(v), "declared")
            except (TypeError, ValueError):
                log.warning("sensor %s: free_flow_speed %r is not a number", sensor, v)
        if self._learned_at_us is None or now_us - self._learned_at_us >= LEARN_EVERY_US:
            self._learned = self._learn(cur, now_us)
            self._learned_at_us = now_us
        return {**self._learned, **declared}

    def _learn(self, cur: psycopg.Cursor[Any], now_us: int) -> dict[str, FreeFlow]:
        start, end = LEARN_OFF_PEAK
        rows = cur.execute(
            "SELECT sensor_id, percentile_cont(%s) WITHIN GROUP (ORDER BY mean), count(*)"
            " FROM rollup_1h WHERE quantity = 'speed' AND mean > 0"
            " AND bucket >= %s AND bucket < %s"
            " AND (extract(hour FROM bucket AT TIME ZONE %s) >= %s"
            "      OR extract(hour FROM bucket AT TIME ZONE %s) < %s)"
            " GROUP BY sensor_id HAVING count(*) >= %s",
            (
                LEARN_PERCENTILE,
                _at(now_us - LEARN_DAYS * 24 * HOUR_US),
                _at(now_us),
                self.timezone,
                start,
                self.timezone,
                end,
                LEARN_MIN_HOURS,
            ),
        ).fetchall()
        return {s: FreeFlow(float(v), "learned", int(n)) for s, v, n in rows}

    def _own(self, cur: psycopg.Cursor[Any], stations: dict[str, set[str]]) -> dict[str, set[str]]:
        k, n = self.partition
        if n == 1 or not stations:
            return stations
        gateways = cur.execute(
            "SELECT sensor_id, gateway_id FROM sensors WHERE sensor_id = ANY(%s)", (list(stations),)
        ).fetchall()
        return {s: stations[s] for s, g in gateways if topics.gateway_partition(g, n) == k}

    @staticmethod
    def _stations(hours: Hours) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for sensor, quantity in hours.means:
            out[sensor].add(quantity)
        return out

    # -- indices ------------------------------------------------------------------------------

    def _air(
        self, hours: Hours, sensor: str, h: int, i: int, done: set[tuple[str, str, int]]
    ) -> list[tuple[str, str, int, float, DerivedInfo]]:
        c = {q: hours.of(sensor, q)[: i + 1] for q in AIR}
        out = []
        if (sensor, "aqi_us", h) not in done:
            r = indices.aqi_us(
                {
                    "pm25": indices.nowcast(c["pm25"][-12:], "pm25", tables=self.tables),
                    "pm10": indices.nowcast(c["pm10"][-12:], "pm10", tables=self.tables),
                    "o3": _mean(c["o3"][-8:], 6),
                    "co": _mean(c["co"][-8:], 6),
                    "no2": c["no2"][-1],
                    "so2": c["so2"][-1],
                },
                tables=self.tables,
            )
            out += _one(sensor, "aqi_us", h, r.value, r.table, r.dominant_table)
        if (sensor, "api_my", h) not in done:
            a = indices.api_my(
                {
                    "pm25": _mean(c["pm25"][-24:], 18),
                    "pm10": _mean(c["pm10"][-24:], 18),
                    "so2": _mean(c["so2"][-24:], 18),
                    "co": _mean(c["co"][-8:], 6),
                    "o3": c["o3"][-1],
                    "no2": c["no2"][-1],
                },
                tables=self.tables,
            )
            out += _one(
                sensor,
                "api_my",
                h,
                a.value,
                a.table,
                a.dominant_table,
                {"mark": str(np.asarray(a.mark).reshape(-1)[0])},
            )
        return out

    def _water(
        self, hours: Hours, sensor: str, h: int, i: int, done: set[tuple[str, str, int]]
    ) -> list[tuple[str, str, int, float, DerivedInfo]]:
        if (sensor, "wqi_my", h) in done:
            return []
        x = {q: float(hours.of(sensor, q)[i]) for q in WATER}
        sat = x["do_saturation"]
        if not np.isfinite(sat):
            sat = float(indices.do_saturation(x["do"], x["water_temperature"], tables=self.tables))
        w = indices.wqi_my(sat, x["bod"], x["cod"], x["an"], x["tss"], x["ph"], tables=self.tables)
        out = _one(sensor, "wqi_my", h, w.value, w.table, "")
        if out:
            out += _one(sensor, "wqi_class", h, w.wqi_class, w.table, "")
        return out

    def _traffic(
        self,
        hours: Hours,
        sensor: str,
        h: int,
        i: int,
        done: set[tuple[str, str, int]],
        free_flow: dict[str, FreeFlow],
    ) -> list[tuple[str, str, int, float, DerivedInfo]]:
        if (sensor, "los", h) in done:
            return []
        speed = float(hours.of(sensor, "speed")[i])
        ffs = free_flow.get(sensor, FreeFlow(DEFAULT_FREE_FLOW_KMH, "default"))
        r = indices.los(
            "hcm-urban-street", speed=speed, free_flow_speed=ffs.speed, tables=self.tables
        )
        detail: dict[str, Any] = {
            "measure": float(np.asarray(r.measure).reshape(-1)[0]),
            "unit": r.unit,
            "free_flow_speed": ffs.speed,
            "free_flow_source": ffs.source,
        }
        if ffs.source == "learned":
            detail["free_flow_hours"] = ffs.hours
        return _one(sensor, "los", h, r.value, r.table, "", detail)


def _unit(catalogue: Catalogue, quantity: str) -> str | None:
    q = catalogue.get(quantity)
    return None if q is None else q.unit


def _at(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, UTC)


def _one(
    sensor: str,
    quantity: str,
    h: int,
    value: Any,
    table: str,
    dominant: Any,
    detail: dict[str, Any] | None = None,
) -> list[tuple[str, str, int, float, DerivedInfo]]:
    v = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    if not np.isfinite(v):
        return []
    dom = str(np.asarray(dominant).reshape(-1)[0]) if dominant != "" else ""
    info = DerivedInfo(sensor, quantity, h, table, dom, detail or {})
    return [(sensor, quantity, h, v, info)]
