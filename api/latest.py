"""GET /api/v1/latest: the newest value of every series, filtered, with its freshness."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import psycopg
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api import freshness, snapshot
from api.auth import Viewer
from api.builder import NICE, NICE_BULK
from api.errors import responses
from api.params import csv_list
from api.sensors import filters
from api.state import ApiState, get_state
from api.tables import MEDIA, Column, Format, Table, headers_for, json_rows, respond
from processing.catalogue import Catalogue
from store import copybin

router = APIRouter(prefix="/api/v1", tags=["latest"])


class LatestValue(BaseModel):
    sensor_id: str = Field(examples=["AQ-P08"])
    quantity: str = Field(examples=["pm25"])
    unit: str | None = Field(None, examples=["ug/m3"])
    ts: datetime = Field(description="event time of the value")
    value: float = Field(examples=[12.1])
    received_at: datetime = Field(description="when ingest received it")
    age_s: float = Field(description="now - ts, seconds")
    lag_s: float = Field(description="received_at - ts: how late it reached the platform")
    stale: bool = Field(description="older than 5 expected periods of the quantity")
    period_s: float = Field(description="the quantity's expected reporting period")
    domain: str | None = Field(None, examples=["air"])
    district: str | None = Field(None, examples=["Presint 8"])
    lat: float | None = None
    lon: float | None = None


# The numbers first (lat and lon NaN where unknown), then the texts: read as columns by
# store.copybin, not as a Python tuple of ten per row (reading 510,000 rows as tuples and
# zipping them into columns was a third of a city's build).
_SQL = (
    "SELECT l.ts, l.value, l.received_at, coalesce(s.lat, 'NaN'), coalesce(s.lon, 'NaN'),"
    " se.sensor_id, se.quantity, se.unit, s.domain, s.district FROM latest_data l"
    " JOIN series se USING (series_id) JOIN sensors s USING (sensor_id)"
)
_NUMBERS = ("timestamptz", "float8", "timestamptz", "float8", "float8")
_TEXTS = 5


@dataclass(frozen=True)
class LatestQuery:
    """What the build process needs to answer a `latest` request."""

    url: str
    timeout_ms: int
    sql: str
    params: list[Any]
    catalogue: Catalogue
    format: Format


def build_latest(q: LatestQuery) -> tuple[bytes, str, dict[str, str]]:
    """The encoded answer, worked out in the API's build process (api.builder): the latest
    values as columns, written without a Python object per value (a dict per row took 24 s for
    466,666 series)."""
    with psycopg.connect(
        q.url,
        autocommit=True,
        application_name="pusat-api-build",
        options=f"-c statement_timeout={q.timeout_ms}",
        connect_timeout=5,
    ) as conn:
        columns = _columns(conn, q.sql, q.params)
    table = _table(q.catalogue, columns)
    if q.format is Format.json:
        return json_rows(table.columns), "application/json", {}
    r = respond(table, q.format, "latest")
    return bytes(r.body), MEDIA[q.format], headers_for(table, q.format, "latest")


@dataclass
class Columns:
    sensor: list[str]
    quantity: list[str]
    unit: list[str | None]
    domain: list[str | None]
    district: list[str | None]
    ts_us: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    received_us: npt.NDArray[np.int64]
    lat: npt.NDArray[np.float64]  # NaN: unknown
    lon: npt.NDArray[np.float64]


def _columns(conn: psycopg.Connection[Any], sql: str, params: list[Any]) -> Columns:
    numbers, texts = copybin.read_with_texts(
        conn.cursor(binary=True), sql, params, _NUMBERS, _TEXTS
    )
    sensor, quantity, unit, domain, district = texts
    ts_us, value, received_us, lat, lon = numbers
    return Columns(sensor, quantity, unit, domain, district, ts_us, value, received_us, lat, lon)


def _table(catalogue: Catalogue, c: Columns) -> Table:
    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    ts_us, received_us = c.ts_us, c.received_us
    periods = {q: freshness.period_s(catalogue, q) for q in set(c.quantity)}
    period = np.array([periods[q] for q in c.quantity], dtype=np.float64)
    age = (now_us - ts_us) / 1e6
    return Table(
        [
            Column("sensor_id", "text", c.sensor),
            Column("quantity", "text", c.quantity),
            Column("unit", "text", c.unit),
            Column("ts", "time", ts_us),
            Column("value", "float", c.value),
            Column("received_at", "time", received_us),
            Column("age_s", "float", np.round(age, 3)),
            Column("lag_s", "float", np.round((received_us - ts_us) / 1e6, 3)),
            Column("stale", "bool", age > freshness.STALE_FACTOR * period),
            Column("period_s", "float", period),
            Column("domain", "text", c.domain),
            Column("district", "text", c.district),
            Column("lat", "float", c.lat),
            Column("lon", "float", c.lon),
        ]
    )


@router.get(
    "/latest",
    response_model=list[LatestValue],
    summary="The latest value of every series, filtered",
    responses={
        200: {
            "description": "JSON: a list of values; CSV and Parquet: the same columns",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        },
        **responses(400, 401, 403, 503),
    },
)
async def latest(
    principal: Viewer,
    state: Annotated[ApiState, Depends(get_state)],
    sensor: Annotated[list[str] | None, Query(description="sensor ids")] = None,
    domain: Annotated[str | None, Query(examples=["air"])] = None,
    district: Annotated[str | None, Query(examples=["Presint 8"])] = None,
    quantity: Annotated[list[str] | None, Query(examples=[["pm25"]])] = None,
    bbox: Annotated[str | None, Query(description="min_lon,min_lat,max_lon,max_lat")] = None,
    provisioned: Annotated[bool | None, Query()] = None,
    format: Annotated[Format, Query(description="json, csv or parquet")] = Format.json,
) -> Any:
    """Latest moves only forward in event time: a late reading never replaces a newer one.
    `age_s` is how old the value is; `stale` flags a series silent for five periods.

    The answer is a snapshot shared by every client asking the same (`PUSAT_API_LATEST_SNAPSHOT_S`,
    default 1 s): its `Age` header says how old it is, and `age_s` was worked out when it was
    made."""
    quantities = csv_list(quantity)
    sensors = csv_list(sensor)
    where, params = filters(domain, district, [], bbox, provisioned, None, sensors)
    if quantities:
        where.append("se.quantity = ANY(%s)")
        params.append(quantities)

    sql = _SQL + (" WHERE " + " AND ".join(where) if where else "")
    settings = state.settings
    query = LatestQuery(
        settings.read_database_url or settings.database_url or "",
        int(settings.api_query_timeout_s * 1000),
        sql + " ORDER BY se.sensor_id, se.quantity",
        params,
        state.catalogue,
        format,
    )

    # A city-wide build per format in its own process: Parquet (1.8 MB) is not held up behind
    # the 141 MB of JSON.
    lane, nice = ("filtered", NICE) if where else (f"city-{format.value}", NICE_BULK)

    async def build() -> tuple[bytes, str, dict[str, str]]:
        return await state.builder.run(build_latest, query, lane=lane, nice=nice)

    key = ("latest", format, tuple(sensors), domain, district, tuple(quantities), bbox, provisioned)
    return await snapshot.answer(state.snapshots, key, build)
