"""GET /api/v1/latest: the newest value of every series, filtered, with its freshness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api import freshness
from api.auth import Viewer
from api.errors import responses
from api.params import csv_list
from api.sensors import filters
from api.state import ApiState, get_state
from api.tables import Column, Format, Table, respond

router = APIRouter(prefix="/api/v1", tags=["latest"])


class LatestValue(BaseModel):
    sensor_id: str = Field(examples=["AQ-P8-01"])
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


_SQL = (
    "SELECT se.sensor_id, se.quantity, se.unit, l.ts, l.value, l.received_at, s.domain,"
    " s.district, s.lat, s.lon FROM latest_data l JOIN series se USING (series_id)"
    " JOIN sensors s USING (sensor_id)"
)


async def latest_rows(state: ApiState, where: list[str], params: list[Any]) -> list[dict[str, Any]]:
    sql = _SQL + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY se.sensor_id, se.quantity"
    async with state.pool.connection() as conn:
        cur = await conn.execute(sql, params)
        rows = await cur.fetchall()
    now = datetime.now(UTC)
    out = []
    for sensor, quantity, unit, ts, value, received, domain, district, lat, lon in rows:
        age = (now - ts).total_seconds()
        period = freshness.period_s(state.catalogue, quantity)
        out.append(
            {
                "sensor_id": sensor,
                "quantity": quantity,
                "unit": unit,
                "ts": ts,
                "value": value,
                "received_at": received,
                "age_s": round(age, 3),
                "lag_s": round((received - ts).total_seconds(), 3),
                "stale": age > freshness.STALE_FACTOR * period,
                "period_s": period,
                "domain": domain,
                "district": district,
                "lat": lat,
                "lon": lon,
            }
        )
    return out


def _table(rows: list[dict[str, Any]]) -> Table:
    def us(key: str) -> np.ndarray[Any, np.dtype[np.int64]]:
        return np.array([int(r[key].timestamp() * 1e6) for r in rows], dtype=np.int64)

    def floats(key: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=np.float64)

    return Table(
        [
            Column("sensor_id", "text", [r["sensor_id"] for r in rows]),
            Column("quantity", "text", [r["quantity"] for r in rows]),
            Column("unit", "text", [r["unit"] for r in rows]),
            Column("ts", "time", us("ts")),
            Column("value", "float", floats("value")),
            Column("received_at", "time", us("received_at")),
            Column("age_s", "float", floats("age_s")),
            Column("lag_s", "float", floats("lag_s")),
            Column("stale", "bool", [r["stale"] for r in rows]),
            Column("period_s", "float", floats("period_s")),
            Column("domain", "text", [r["domain"] for r in rows]),
            Column("district", "text", [r["district"] for r in rows]),
            Column("lat", "float", floats("lat")),
            Column("lon", "float", floats("lon")),
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
    `age_s` is how old the value is; `stale` flags a series silent for five periods."""
    quantities = csv_list(quantity)
    where, params = filters(domain, district, [], bbox, provisioned, None, csv_list(sensor))
    if quantities:
        where.append("se.quantity = ANY(%s)")
        params.append(quantities)
    rows = await latest_rows(state, where, params)
    if format is Format.json:
        return rows
    return respond(_table(rows), format, "latest")
