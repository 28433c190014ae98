"""Sensors: list and filter, one sensor with its quantities and freshness, provision, import."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api import freshness, paging
from api.auth import Engineer, Viewer
from api.errors import ApiError, bad_request, responses
from api.params import csv_list
from api.state import ApiState, get_state
from store.writer import CHANNEL

router = APIRouter(prefix="/api/v1", tags=["sensors"])

SensorId = Annotated[
    str,
    Path(min_length=1, max_length=128, description="the sensor's id", examples=["AQ-P08"]),
]
MAX_IMPORT_BYTES = 10 * 1024 * 1024


class Sensor(BaseModel):
    sensor_id: str = Field(examples=["AQ-P08"])
    gateway_id: str | None = Field(None, examples=["gw-p08"])
    domain: str | None = Field(None, examples=["air"])
    district: str | None = Field(None, examples=["Presint 8"])
    lat: float | None = Field(None, examples=[2.9264])
    lon: float | None = Field(None, examples=[101.6964])
    name: str | None = Field(None, examples=["Presint 8 school"])
    quantities: list[str] = Field(examples=[["pm25", "pm10"]])
    units: dict[str, str] = Field(default_factory=dict, examples=[{"pm25": "ug/m3"}])
    provisioned: bool
    attributes: dict[str, Any] = Field(default_factory=dict)
    last_ts: datetime | None = Field(None, description="newest event time of any of its series")
    last_received_at: datetime | None = None
    age_s: float | None = Field(None, description="now - last_ts, seconds")
    stale: bool | None = Field(
        None, description="no reading for 5 expected periods of its fastest quantity"
    )


class SeriesState(BaseModel):
    quantity: str = Field(examples=["pm25"])
    unit: str | None = Field(None, examples=["ug/m3"])
    ts: datetime | None = None
    value: float | None = None
    received_at: datetime | None = None
    age_s: float | None = None
    stale: bool | None = None
    period_s: float = Field(description="expected reporting period (the catalogue's)")


class SensorDetail(Sensor):
    series: list[SeriesState]


class SensorIn(BaseModel):
    """What a PUT provisions (every field replaces the stored one)."""

    model_config = ConfigDict(extra="forbid")
    gateway_id: str | None = Field(None, max_length=128)
    domain: str | None = Field(None, max_length=64, examples=["air"])
    district: str | None = Field(None, max_length=128, examples=["Presint 8"])
    lat: float | None = Field(None, ge=-90, le=90, examples=[2.9264])
    lon: float | None = Field(None, ge=-180, le=180, examples=[101.6964])
    name: str | None = Field(None, max_length=256)
    quantities: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=200, examples=[["pm25", "pm10"]]
    )
    units: dict[str, str] = Field(default_factory=dict)
    attributes: dict[str, Any] = Field(default_factory=dict)


class ImportResult(BaseModel):
    imported: int
    created: int
    updated: int


_SELECT = """
SELECT s.sensor_id, s.gateway_id, s.domain, s.district, s.lat, s.lon, s.name,
       ARRAY(SELECT DISTINCT q FROM unnest(s.quantities || coalesce(f.observed, '{}')) q
             ORDER BY q) AS quantities,
       s.units, s.provisioned, s.attributes, f.last_ts, f.last_received_at
FROM sensors s
LEFT JOIN LATERAL (
  SELECT array_agg(se.quantity) AS observed, max(l.ts) AS last_ts,
         max(l.received_at) AS last_received_at
  FROM series se LEFT JOIN latest_data l USING (series_id) WHERE se.sensor_id = s.sensor_id
) f ON true
"""


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4 or not all(math.isfinite(p) for p in parts):
        raise bad_request("bbox must be min_lon,min_lat,max_lon,max_lat (four numbers)")
    min_lon, min_lat, max_lon, max_lat = parts
    if min_lon > max_lon or min_lat > max_lat:
        raise bad_request("bbox must be min_lon,min_lat,max_lon,max_lat with min <= max")
    return min_lon, min_lat, max_lon, max_lat


def filters(
    domain: str | None,
    district: str | None,
    quantity: list[str],
    bbox: str | None,
    provisioned: bool | None,
    gateway: str | None = None,
    sensors: list[str] | None = None,
) -> tuple[list[str], list[Any]]:
    """SQL conditions on ``sensors s`` shared by the sensor list and latest."""
    where: list[str] = []
    params: list[Any] = []
    if domain is not None:
        where.append("s.domain = %s")
        params.append(domain)
    if district is not None:
        where.append("s.district = %s")
        params.append(district)
    if quantity:
        where.append(
            "(s.quantities && %s OR EXISTS (SELECT 1 FROM series x"
            " WHERE x.sensor_id = s.sensor_id AND x.quantity = ANY(%s)))"
        )
        params += [quantity, quantity]
    if bbox is not None:
        min_lon, min_lat, max_lon, max_lat = _bbox(bbox)
        where.append("s.lon BETWEEN %s AND %s AND s.lat BETWEEN %s AND %s")
        params += [min_lon, max_lon, min_lat, max_lat]
    if provisioned is not None:
        where.append("s.provisioned = %s")
        params.append(provisioned)
    if gateway is not None:
        where.append("s.gateway_id = %s")
        params.append(gateway)
    if sensors:
        where.append("s.sensor_id = ANY(%s)")
        params.append(sensors)
    return where, params


def _sensor(row: dict[str, Any], state: ApiState, now: datetime) -> dict[str, Any]:
    age = freshness.age_s(now, row["last_ts"])
    row["age_s"] = age
    row["stale"] = freshness.stale(state.catalogue, row["quantities"], age)
    return row


@router.get(
    "/sensors",
    response_model=list[Sensor],
    summary="Sensors, filtered",
    responses=responses(400, 401, 403, 503),
)
async def list_sensors(
    principal: Viewer,
    state: Annotated[ApiState, Depends(get_state)],
    request: Request,
    response: Response,
    domain: Annotated[str | None, Query(examples=["air"])] = None,
    district: Annotated[str | None, Query(examples=["Presint 8"])] = None,
    quantity: Annotated[
        list[str] | None, Query(description="sensors with any of these quantities")
    ] = None,
    bbox: Annotated[
        str | None,
        Query(description="min_lon,min_lat,max_lon,max_lat", examples=["101.66,2.88,101.72,2.96"]),
    ] = None,
    provisioned: Annotated[
        bool | None, Query(description="true: described by a gateway or the API; false: seen only")
    ] = None,
    gateway: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    cursor: Annotated[str | None, Query(description=paging.CURSOR_DESCRIPTION)] = None,
    offset: Annotated[
        int, Query(ge=0, le=10_000_000, description="rows to skip (the cursor is better)")
    ] = 0,
) -> list[dict[str, Any]]:
    """Every sensor matching all the filters given, with its freshness, by id; `limit` at a
    time, the next page's cursor in the `Link` (rel=next) and `X-Pusat-Next-Cursor` headers."""
    paging.check(cursor, offset)
    where, params = filters(domain, district, csv_list(quantity), bbox, provisioned, gateway)
    if cursor is not None:
        (after,) = paging.decode("sensors", cursor, (str,))
        where.append("s.sensor_id > %s")
        params.append(after)
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY s.sensor_id LIMIT %s OFFSET %s"
    async with state.read_pool.connection() as conn:
        cur = await conn.execute(sql, [*params, limit + 1, offset])
        names = [d.name for d in cur.description or ()]
        rows = await cur.fetchall()
    now = datetime.now(UTC)
    found = [dict(zip(names, r, strict=True)) for r in rows]
    shown = paging.page(found, limit, "sensors", _by_id, request, response)
    return [_sensor(row, state, now) for row in shown]


def _by_id(row: dict[str, Any]) -> tuple[str]:
    return (row["sensor_id"],)


async def _one(
    conn: psycopg.AsyncConnection[Any], state: ApiState, sensor_id: str
) -> dict[str, Any]:
    cur = await conn.execute(_SELECT + " WHERE s.sensor_id = %s", (sensor_id,))
    names = [d.name for d in cur.description or ()]
    row = await cur.fetchone()
    if row is None:
        raise ApiError(404, f"unknown sensor: {sensor_id}")
    now = datetime.now(UTC)
    sensor = _sensor(dict(zip(names, row, strict=True)), state, now)
    cur = await conn.execute(
        "SELECT se.quantity, se.unit, l.ts, l.value, l.received_at FROM series se"
        " LEFT JOIN latest_data l USING (series_id) WHERE se.sensor_id = %s ORDER BY se.quantity",
        (sensor_id,),
    )
    series = []
    for quantity, unit, ts, value, received in await cur.fetchall():
        age = freshness.age_s(now, ts)
        series.append(
            {
                "quantity": quantity,
                "unit": unit,
                "ts": ts,
                "value": value,
                "received_at": received,
                "age_s": age,
                "stale": freshness.stale(state.catalogue, [quantity], age),
                "period_s": freshness.period_s(state.catalogue, quantity),
            }
        )
    sensor["series"] = series
    return sensor


@router.get(
    "/sensors/{sensor_id}",
    response_model=SensorDetail,
    summary="One sensor, its quantities and their freshness",
    responses=responses(401, 403, 404, 503),
)
async def get_sensor(
    sensor_id: SensorId, principal: Viewer, state: Annotated[ApiState, Depends(get_state)]
) -> dict[str, Any]:
    async with state.read_pool.connection() as conn:
        return await _one(conn, state, sensor_id)


_UPSERT = (
    "INSERT INTO sensors (sensor_id, gateway_id, domain, district, lat, lon, name, quantities,"
    " units, attributes, provisioned) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true)"
    " ON CONFLICT (sensor_id) DO UPDATE SET gateway_id = excluded.gateway_id,"
    " domain = excluded.domain, district = excluded.district, lat = excluded.lat,"
    " lon = excluded.lon, name = excluded.name, quantities = excluded.quantities,"
    " units = excluded.units, attributes = excluded.attributes, provisioned = true,"
    " updated_at = now() RETURNING (xmax = 0) AS created"
)


def _upsert_params(sensor_id: str, s: SensorIn) -> tuple[Any, ...]:
    return (
        sensor_id,
        s.gateway_id,
        s.domain,
        s.district,
        s.lat,
        s.lon,
        s.name,
        list(dict.fromkeys(s.quantities)),
        json.dumps(s.units),
        json.dumps(s.attributes),
    )


async def _notify_sensors(conn: psycopg.AsyncConnection[Any], n: int) -> None:
    # The same channel the ingest writer uses: live walls learn of new or moved sensors.
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"sensors": n})))


@router.put(
    "/sensors/{sensor_id}",
    response_model=SensorDetail,
    summary="Provision or update a sensor",
    responses={
        201: {"description": "Created", "model": SensorDetail},
        **responses(400, 401, 403, 503),
    },
)
async def put_sensor(
    sensor_id: SensorId,
    body: SensorIn,
    principal: Engineer,
    response: Response,
    state: Annotated[ApiState, Depends(get_state)],
) -> dict[str, Any]:
    """Describe a sensor (as a gateway's `meta` message does): it becomes provisioned, so its
    readings are accepted in strict mode, and its district and domain scope alert rules."""
    async with state.pool.connection() as conn:
        async with conn.transaction():
            cur = await conn.execute(_UPSERT, _upsert_params(sensor_id, body))
            row = await cur.fetchone()
            await _notify_sensors(conn, 1)
        response.status_code = 201 if row and row[0] else 200
        return await _one(conn, state, sensor_id)


IMPORT_COLUMNS = (
    "sensor_id",
    "gateway_id",
    "domain",
    "district",
    "lat",
    "lon",
    "name",
    "quantities",
)


def parse_import(text: str) -> list[tuple[str, SensorIn]]:
    """CSV rows to sensors; every problem, by line, in one 400."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if "sensor_id" not in header:
        raise bad_request(
            "the CSV needs a header line with sensor_id (and any of "
            + ", ".join(IMPORT_COLUMNS[1:])
            + ")"
        )
    unknown = [h for h in header if h not in IMPORT_COLUMNS]
    if unknown:
        raise bad_request(f"unknown CSV columns: {', '.join(unknown)}")
    out: list[tuple[str, SensorIn]] = []
    problems: list[str] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if None in row:
            problems.append(f"line {line}: more cells than header columns")
            continue
        sid = (row.get("sensor_id") or "").strip()
        if not sid or len(sid) > 128:
            problems.append(f"line {line}: sensor_id must be 1 to 128 characters")
            continue
        if sid in seen:
            problems.append(f"line {line}: {sid} appears twice")
            continue
        seen.add(sid)
        fields: dict[str, Any] = {}
        for k in ("gateway_id", "domain", "district", "name"):
            v = (row.get(k) or "").strip()
            fields[k] = v or None
        for k in ("lat", "lon"):
            v = (row.get(k) or "").strip()
            if v:
                try:
                    fields[k] = float(v)
                except ValueError:
                    problems.append(f"line {line}: {k} must be a number, not {v!r}")
        q = (row.get("quantities") or "").replace(";", " ").replace(",", " ").split()
        fields["quantities"] = q
        try:
            out.append((sid, SensorIn(**fields)))
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            first = str(e).splitlines()
            problems.append(f"line {line}: {' '.join(first[1:3]).strip() or first[0]}")
        if len(problems) >= 20:
            break
    if problems:
        raise bad_request("; ".join(problems))
    if not out:
        raise bad_request("the CSV holds no sensors")
    return out


@router.post(
    "/sensors/import",
    response_model=ImportResult,
    summary="Provision many sensors from CSV",
    responses=responses(400, 401, 403, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "sensor_id,domain,district,lat,lon,quantities\n"
                    "AQ-P8-01,air,Presint 8,2.9264,101.6964,pm25;pm10\n",
                }
            },
        }
    },
)
async def import_sensors(
    request: Request, principal: Engineer, state: Annotated[ApiState, Depends(get_state)]
) -> ImportResult:
    """A CSV with a header line: `sensor_id` and any of `gateway_id, domain, district, lat,
    lon, name, quantities` (quantities separated by `;` or spaces). All rows or none: any bad
    row rejects the whole file with each problem by line."""
    body = await request.body()
    if len(body) > MAX_IMPORT_BYTES:
        raise ApiError(413, f"the CSV is larger than {MAX_IMPORT_BYTES // 1024 // 1024} MiB")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise bad_request("the CSV must be UTF-8") from e
    try:
        rows = parse_import(text)
    except csv.Error as e:
        raise bad_request(f"unreadable CSV: {e}") from e
    ids = [sid for sid, _ in rows]
    async with state.pool.connection() as conn, conn.transaction():
        cur = await conn.execute("SELECT count(*) FROM sensors WHERE sensor_id = ANY(%s)", (ids,))
        found = await cur.fetchone()
        existing = int(found[0]) if found else 0
        async with conn.cursor() as c:
            await c.executemany(_UPSERT, [_upsert_params(sid, s) for sid, s in rows])
        await _notify_sensors(conn, len(rows))
    return ImportResult(imported=len(rows), created=len(rows) - existing, updated=existing)
