"""The public view of the city: what /city, /open/v1 and /sta/v1.1 may show without a token.

Only public stations count: sensors of the air, traffic and water domains with a district,
unless their attributes say ``"public": false``. Of them only the sensor id, name, domain,
district and position leave this module, never the gateway, its credentials or the attributes;
of alarms only the kind of hazard, its severity and when it began, never the message, the
operators' comments or who acknowledged it. Quarantine is never read here.

Per district and figure the worst value among the district's fresh stations is shown (the
highest AQI, API, WQI class, level of service and water level); when every station is stale
the newest stale value is shown, marked stale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from api import freshness
from api.state import ApiState
from processing import indices
from processing.catalogue import Catalogue

DOMAINS = ("air", "traffic", "water")
# The figures of the public page, per domain.
FIGURES = {
    "air": ("aqi_us", "api_my", "pm25"),
    "water": ("water_level", "wqi_class"),
    "traffic": ("los", "speed"),
}
# Open alarms on these quantities set a district's flood or storm status.
HAZARDS = {"flood": ("water_level", "water_flow"), "storm": ("rain", "wind_speed")}
# Derived indices are hourly (ingest/derived.py), stamped at the start of their hour and written
# after it ends, whatever the catalogue's period (los has 300 s, for loops that send it).
HOURLY = ("aqi_us", "api_my", "wqi_my", "wqi_class", "los")
OPEN_STATES = ("active", "acknowledged", "shelved", "flapping")
SEVERITY_RANK = {"info": 1, "warning": 2, "critical": 3}

PUBLIC_SENSOR = (
    "s.district IS NOT NULL AND s.domain = ANY(%(domains)s)"
    " AND coalesce(s.attributes->>'public', 'true') <> 'false'"
)


def public_quantities(catalogue: Catalogue) -> list[str]:
    """Quantities of the environment (not device health such as battery or signal)."""
    return [q.name for q in catalogue.quantities if q.domain in DOMAINS]


@dataclass(frozen=True)
class Station:
    sensor_id: str
    name: str | None
    domain: str
    district: str
    lat: float | None
    lon: float | None
    offline: bool  # its gateway said `offline` (its last will)


@dataclass(frozen=True)
class Figure:
    """One figure of a district: the shown value, its event time and how it was judged."""

    quantity: str
    value: float
    ts: datetime
    stale: bool  # no fresh station: this is the newest stale value
    stations: int  # stations reporting this quantity
    fresh: int  # of which fresh


@dataclass(frozen=True)
class Hazard:
    kind: str  # flood | storm
    severity: str  # warning | critical
    since: datetime


@dataclass
class District:
    name: str
    stations: list[Station] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    hazards: list[Hazard] = field(default_factory=list)
    # sensor id -> whether any of its figures is fresh (absent: it has reported none)
    fresh: dict[str, bool] = field(default_factory=dict)

    def quiet(self, domain: str) -> int:
        """Stations of ``domain`` without a fresh figure (stale, or never reported)."""
        return sum(1 for s in self.in_domain(domain) if not self.fresh.get(s.sensor_id, False))

    def centre(self) -> tuple[float, float] | None:
        pts = [(s.lat, s.lon) for s in self.stations if s.lat is not None and s.lon is not None]
        if not pts:
            return None
        return (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))

    def in_domain(self, domain: str) -> list[Station]:
        return [s for s in self.stations if s.domain == domain]

    def hazard(self, kind: str) -> Hazard | None:
        found = [h for h in self.hazards if h.kind == kind]
        return max(found, key=lambda h: SEVERITY_RANK.get(h.severity, 0), default=None)


@dataclass(frozen=True)
class CityStatus:
    at: datetime
    districts: list[District]

    def newest(self) -> datetime | None:
        times = [f.ts for d in self.districts for f in d.figures.values()]
        return max(times, default=None)


def is_stale(catalogue: Catalogue, quantity: str, age_s: float) -> bool:
    period = freshness.period_s(catalogue, quantity)
    if quantity in HOURLY:
        period = max(period, 3600.0)
    return age_s > freshness.STALE_FACTOR * period


# -- categories (the tables of processing/index_tables.toml) --------------------------------


def _band(value: float, upper: Any) -> int:
    """1-based band of ``value`` among upper bounds (inclusive); past the last: len + 1."""
    for k, u in enumerate(upper, start=1):
        if value <= float(u):
            return k
    return len(upper) + 1


def category(quantity: str, value: float) -> int | None:
    """The band of a figure: AQI 1..7, API 1..5, WQI class 1..5, LOS 1..6; None for others."""
    if not math.isfinite(value):
        return None
    t = indices.default_tables()
    if quantity == "aqi_us":
        return _band(round(value), t.aqi_us.category_upper)
    if quantity == "api_my":
        return _band(round(value), t.api_my.category_upper)
    if quantity == "wqi_class":
        return min(max(round(value), 1), len(t.wqi_my.class_labels))
    if quantity == "los":
        return min(max(round(value), 1), 6)
    return None


# -- reading the store -------------------------------------------------------------------------

_STATIONS = (
    "SELECT s.sensor_id, s.name, s.domain, s.district, s.lat, s.lon,"
    " coalesce(g.status = 'offline', false)"
    " FROM sensors s LEFT JOIN gateways g USING (gateway_id) WHERE "
    + PUBLIC_SENSOR
    + " ORDER BY s.district, s.sensor_id"
)
_LATEST = (
    "SELECT se.sensor_id, se.quantity, l.ts, l.value FROM latest_data l"
    " JOIN series se USING (series_id) JOIN sensors s USING (sensor_id)"
    " WHERE se.quantity = ANY(%(quantities)s) AND " + PUBLIC_SENSOR
)
_HAZARDS = (
    "SELECT s.district, a.quantity, a.severity, min(a.raised_at) FROM alerts a"
    " JOIN sensors s USING (sensor_id) WHERE a.state = ANY(%(states)s)"
    " AND a.quantity = ANY(%(quantities)s) AND a.severity IN ('warning', 'critical') AND "
    + PUBLIC_SENSOR
    + " GROUP BY s.district, a.quantity, a.severity"
)


async def stations(state: ApiState) -> list[Station]:
    async with state.pool.connection() as conn:
        cur = await conn.execute(_STATIONS, {"domains": list(DOMAINS)})
        return [Station(*r) for r in await cur.fetchall()]


async def city_status(state: ApiState, now: datetime | None = None) -> CityStatus:
    """Every district's figures and hazards, read in three queries."""
    now = now or datetime.now(UTC)
    figures = [q for qs in FIGURES.values() for q in qs]
    hazard_of = {q: kind for kind, qs in HAZARDS.items() for q in qs}
    params: dict[str, Any] = {
        "domains": list(DOMAINS),
        "quantities": figures,
        "states": list(OPEN_STATES),
    }
    async with state.pool.connection() as conn:
        cur = await conn.execute(_STATIONS, params)
        all_stations = [Station(*r) for r in await cur.fetchall()]
        cur = await conn.execute(_LATEST, params)
        latest = await cur.fetchall()
        cur = await conn.execute(_HAZARDS, {**params, "quantities": list(hazard_of)})
        alarms = await cur.fetchall()
    districts: dict[str, District] = {}
    where: dict[str, str] = {}
    for s in all_stations:
        districts.setdefault(s.district, District(s.district)).stations.append(s)
        where[s.sensor_id] = s.district
    # (district, quantity) -> [(value, ts, stale)]
    values: dict[tuple[str, str], list[tuple[float, datetime, bool]]] = {}
    for sensor_id, quantity, ts, value in latest:
        stale = is_stale(state.catalogue, quantity, (now - ts).total_seconds())
        home = districts[where[sensor_id]]
        home.fresh[sensor_id] = home.fresh.get(sensor_id, False) or not stale
        values.setdefault((where[sensor_id], quantity), []).append((float(value), ts, stale))
    for (district, quantity), vs in values.items():
        fresh = [v for v in vs if not v[2]]
        if fresh:
            value, ts, _ = max(fresh, key=lambda v: (v[0], v[1]))
        else:
            value, ts, _ = max(vs, key=lambda v: v[1])
        districts[district].figures[quantity] = Figure(
            quantity, value, ts, not fresh, len(vs), len(fresh)
        )
    for name, quantity, severity, since in alarms:
        districts[name].hazards.append(Hazard(hazard_of[quantity], severity, since))
    return CityStatus(now, sorted(districts.values(), key=lambda d: d.name))
