"""GET /api/v1/districts: the city by district, worked out in the database for a city's wall.

Each sensor has one state, as the wall colours it: ``critical`` or ``warning`` (its worst open,
unshelved alarm), ``silent`` (no value, or every value older than five periods), ``info`` (an
open info alarm) or ``normal``. A district gives how many sensors are in each state and its
worst sensors first (alarmed, then silent), so a wall of 100,000 sensors draws districts and
the sensors that need someone, not 100,000 dots. The answer is a shared snapshot, like latest.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api import freshness, snapshot
from api.auth import Viewer
from api.errors import responses
from api.state import ApiState, get_state
from store import alerts as lifecycle

router = APIRouter(prefix="/api/v1", tags=["latest"])

STATES = ("critical", "warning", "silent", "info", "normal")  # worst first


class WorstSensor(BaseModel):
    sensor_id: str = Field(examples=["WQ-WET-01"])
    domain: str | None = Field(None, examples=["water"])
    state: str = Field(examples=["critical"], description=" | ".join(STATES))
    alarms: int = Field(description="its open, unshelved alarms")
    lat: float | None = None
    lon: float | None = None
    newest: datetime | None = Field(None, description="event time of its newest value")


class District(BaseModel):
    district: str | None = Field(examples=["Presint 8"], description="null: sensors without one")
    sensors: int
    states: dict[str, int] = Field(description="sensors in each state", examples=[{"normal": 3}])
    domains: dict[str, int] = Field(description="sensors per domain", examples=[{"air": 3}])
    lat: float | None = Field(None, description="mean position of its sensors")
    lon: float | None = None
    worst: list[WorstSensor] = Field(description="its worst sensors first, `worst` of them")
    not_shown: int = Field(description="its sensors not in `worst`")


class Districts(BaseModel):
    as_of: datetime
    received: datetime | None = Field(None, description="when the newest value reached Pusat")
    sensors: int
    states: dict[str, int]
    districts: list[District]


# Alarm severity as a rank; an open alarm that is shelved does not colour its sensor.
_SQL = """
WITH periods AS (
  SELECT * FROM unnest(%(quantities)s::text[], %(periods)s::float8[]) AS p(quantity, period_s)
), alarm AS (
  SELECT sensor_id, count(*) AS n,
         max(CASE severity WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END) AS rank
  FROM alerts WHERE state = ANY(%(open)s) GROUP BY sensor_id
), fresh AS (
  SELECT se.sensor_id, max(l.ts) AS newest, max(l.received_at) AS received,
         bool_or(l.ts >= %(now)s - make_interval(secs => %(factor)s * coalesce(p.period_s,
                 %(default_period)s))) AS fresh
  FROM latest_data l JOIN series se USING (series_id) LEFT JOIN periods p USING (quantity)
  GROUP BY se.sensor_id
), state AS (
  SELECT s.sensor_id, s.district, s.domain, s.lat, s.lon, f.newest, f.received,
         coalesce(a.n, 0) AS alarms,
         CASE WHEN a.rank = 3 THEN 0 WHEN a.rank = 2 THEN 1
              WHEN NOT coalesce(f.fresh, false) THEN 2 WHEN a.rank = 1 THEN 3 ELSE 4 END AS k
  FROM sensors s LEFT JOIN alarm a USING (sensor_id) LEFT JOIN fresh f USING (sensor_id)
  WHERE %(domain)s::text IS NULL OR s.domain = %(domain)s
), ranked AS (
  SELECT *, row_number() OVER (PARTITION BY district ORDER BY k, alarms DESC, sensor_id) AS r
  FROM state
)
SELECT district, k, domain, count(*), avg(lat), avg(lon), max(received),
       coalesce(jsonb_agg(jsonb_build_array(sensor_id, k, alarms, lat, lon, newest)
                          ORDER BY r) FILTER (WHERE r <= %(worst)s), '[]')
FROM ranked GROUP BY district, k, domain
"""


def summary(rows: list[tuple[Any, ...]], now: datetime, worst: int) -> dict[str, Any]:
    """The answer, from (district, state rank, domain, count, lat, lon, received, worst)
    groups."""
    by: dict[str | None, dict[str, Any]] = {}
    weights: dict[str | None, list[float]] = {}
    received: datetime | None = None
    for district, k, domain, n, lat, lon, newest_received, picked in rows:
        if newest_received is not None and (received is None or newest_received > received):
            received = newest_received
        d = by.setdefault(
            district,
            {"district": district, "sensors": 0, "states": dict.fromkeys(STATES, 0), "domains": {},
             "worst": []},
        )  # fmt: skip
        d["sensors"] += n
        d["states"][STATES[k]] += n
        key = domain or "unknown"
        d["domains"][key] = d["domains"].get(key, 0) + n
        w = weights.setdefault(district, [0.0, 0.0, 0.0])
        if lat is not None and lon is not None:
            w[0] += n
            w[1] += lat * n
            w[2] += lon * n
        d["worst"] += [
            {"sensor_id": s, "domain": domain, "state": STATES[sk], "alarms": a, "lat": la,
             "lon": lo, "newest": t, "_k": sk}
            for s, sk, a, la, lo, t in picked
        ]  # fmt: skip
    out = []
    for district, d in by.items():
        w = weights[district]
        d["lat"], d["lon"] = (w[1] / w[0], w[2] / w[0]) if w[0] else (None, None)
        d["worst"].sort(key=lambda x: (x["_k"], -x["alarms"], x["sensor_id"]))
        d["worst"] = d["worst"][:worst]
        for x in d["worst"]:
            del x["_k"]
        d["not_shown"] = d["sensors"] - len(d["worst"])
        out.append(d)
    out.sort(key=lambda d: (*(-d["states"][s] for s in STATES[:3]), d["district"] or ""))
    totals = dict.fromkeys(STATES, 0)
    for d in out:
        for s in STATES:
            totals[s] += d["states"][s]
    return {
        "as_of": now,
        "received": received,
        "sensors": sum(totals.values()),
        "states": totals,
        "districts": out,
    }


@router.get(
    "/districts",
    response_model=Districts,
    summary="The city by district: sensors per state and the worst sensors first",
    responses=responses(401, 403, 503),
)
async def districts(
    principal: Viewer,
    state: Annotated[ApiState, Depends(get_state)],
    domain: Annotated[str | None, Query(examples=["air"])] = None,
    worst: Annotated[int, Query(ge=0, le=100, description="worst sensors per district")] = 5,
) -> Response:
    """Districts with the most critical, then warning, then silent sensors come first; within
    one, sensors with alarms first (most alarms first), then silent ones. A shared snapshot
    (`PUSAT_API_LATEST_SNAPSHOT_S`): its `Age` header says how old."""

    async def build() -> tuple[bytes, str, dict[str, str]]:
        now = datetime.now(UTC)
        names = [q.name for q in state.catalogue.quantities]
        params = {
            "quantities": names,
            "periods": [freshness.period_s(state.catalogue, q) for q in names],
            "open": [s for s in lifecycle.OPEN if s != "shelved"],
            "now": now,
            "factor": freshness.STALE_FACTOR,
            "default_period": freshness.DEFAULT_PERIOD_S,
            "domain": domain,
            "worst": worst,
        }
        async with state.pool.connection() as conn:
            cur = await conn.execute(_SQL, params)
            rows = await cur.fetchall()
        answer = await asyncio.to_thread(summary, rows, now, worst)  # the loop serves others
        return orjson.dumps(answer, option=orjson.OPT_UTC_Z), "application/json", {}

    return await snapshot.answer(state.snapshots, ("districts", domain, worst), build)
