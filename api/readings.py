"""GET /api/v1/readings: time series at any resolution, in JSON, CSV, JSON lines or Parquet."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api import export
from api import series as ts
from api.auth import Viewer
from api.errors import bad_request, responses
from api.params import DURATION_PATTERN, csv_list, duration_s, window
from api.state import ApiState, get_state
from api.tables import Format, Table, openapi_content, respond

router = APIRouter(prefix="/api/v1", tags=["readings"])

EXAMPLE = {
    "query": {
        "start": "2026-11-27T00:00:00+00:00",
        "end": "2026-11-27T01:00:00+00:00",
        "step": "30m",
        "step_s": 1800,
        "resolution": "1m",
        "table": "rollup_1m",
        "database_tier": "postgresql",
        "aggs": ["mean", "max"],
        "fill": "null",
        "max_gap_s": None,
        "buckets": 2,
        "group": "sensor",
        "series": [{"sensor_id": "AQ-P8-01", "quantity": "pm25", "unit": "ug/m3"}],
    },
    "before": [
        {
            "sensor_id": "AQ-P8-01",
            "quantity": "pm25",
            "ts": "2026-11-26T23:59:00+00:00",
            "value": 11.8,
        }
    ],
    "schema": {
        "fields": [
            {"name": "ts", "type": "datetime", "tz": "UTC"},
            {"name": "sensor_id", "type": "string"},
            {"name": "quantity", "type": "string"},
            {"name": "unit", "type": "string"},
            {"name": "mean", "type": "number"},
            {"name": "max", "type": "number"},
            {"name": "filled", "type": "boolean"},
        ]
    },
    "data": [
        {
            "ts": "2026-11-27T00:00:00.000000Z",
            "sensor_id": "AQ-P8-01",
            "quantity": "pm25",
            "unit": "ug/m3",
            "mean": 12.4,
            "max": 15.1,
            "filled": False,
        },
        {
            "ts": "2026-11-27T00:30:00.000000Z",
            "sensor_id": "AQ-P8-01",
            "quantity": "pm25",
            "unit": "ug/m3",
            "mean": None,
            "max": None,
            "filled": False,
        },
    ],
}


@router.get(
    "/readings",
    summary="Time series of one or many series, at any resolution",
    response_class=Response,
    responses={**openapi_content(EXAMPLE), **responses(400, 401, 403, 404, 503)},
)
async def readings(
    principal: Viewer,
    state: Annotated[ApiState, Depends(get_state)],
    sensor: Annotated[
        list[str] | None,
        Query(description="sensor ids (repeat, or comma-separated)", examples=["AQ-P08"]),
    ] = None,
    quantity: Annotated[
        list[str] | None,
        Query(
            description="quantities (repeat, or comma-separated); all when omitted",
            examples=["pm25"],
        ),
    ] = None,
    district: Annotated[str | None, Query(description="every sensor of this district")] = None,
    domain: Annotated[
        str | None, Query(description="every sensor of this domain (traffic, air, water)")
    ] = None,
    start: Annotated[
        datetime | None,
        # No example: /docs would fill a fixed date into "Try it out", a window long past.
        Query(
            description="window start, RFC 3339 with an offset, e.g. 2026-11-27T00:00:00+08:00"
            " (default: end - 24h)"
        ),
    ] = None,
    end: Annotated[
        datetime | None, Query(description="window end (exclusive), RFC 3339 (default: now)")
    ] = None,
    step: Annotated[
        str | None,
        Query(
            pattern=DURATION_PATTERN, description="bucket width: 90s, 5m, 1h, 1d", examples=["5m"]
        ),
    ] = None,
    points: Annotated[
        int, Query(ge=1, description="points per series wanted when no step is given")
    ] = 1000,
    resolution: Annotated[
        ts.Resolution,
        Query(description="the table to read: auto (from range and points), raw, 1m or 1h"),
    ] = ts.Resolution.auto,
    agg: Annotated[
        list[ts.Agg] | None,
        Query(description="aggregates per bucket (repeat for several); default mean"),
    ] = None,
    fill: Annotated[
        ts.Fill, Query(description="empty buckets: null, none (left out) or previous")
    ] = ts.Fill.null,
    max_gap: Annotated[
        str | None,
        Query(
            pattern=DURATION_PATTERN,
            description="fill=previous carries a value this long at most (default 5 steps)",
        ),
    ] = None,
    before: Annotated[
        bool, Query(description="also give each series' last reading before the window")
    ] = True,
    group: Annotated[
        ts.Group,
        Query(
            description="sensor: a series per sensor and quantity; district or domain: each"
            " quantity merged over the selected sensors of each district or domain (the mean"
            " weighted by readings; needs buckets)"
        ),
    ] = ts.Group.sensor,
    format: Annotated[
        Format,
        Query(
            description="json, csv, jsonl (JSON lines) or parquet; raw readings as stored"
            " (resolution=raw, no step) stream in csv, jsonl and parquet, of any size"
        ),
    ] = Format.json,
) -> Response:
    """Readings of the selected series in [start, end).

    The resolution is chosen from the range and the points asked for (raw readings, 1-minute or
    1-hour rollups) unless `resolution` or `step` say otherwise; the answer reports the step,
    the table read and the window covered (widened to whole buckets, aligned to the Unix epoch).
    `resolution=raw` without a step gives the readings as stored. Read it with pandas:
    `pd.read_json(url, orient="table")`, `pd.read_csv(url)` or `pd.read_parquet(url)`
    (add `&token=...` to the URL, or send the token as a header).

    Exports: raw readings as stored (`resolution=raw` without a step) in `csv`, `jsonl` or
    `parquet` are streamed from a server-side cursor, so any window of any selection (a
    sensor, a district, a domain) can be exported, with no `PUSAT_API_MAX_POINTS` limit and in
    constant memory; JSON (one document) and bucketed answers keep the limit.
    `pd.read_json(url, lines=True)` reads JSON lines.

    District and city panels: `group=district` (or `domain`) merges each quantity over the
    selected sensors of each district, one series per district and quantity, in a column named
    after the group instead of `sensor_id`: the mean is weighted by readings, min and max are
    over all, counts and sums add. The answer stays as small as one sensor's. A whole district
    (no `sensor` or `domain` with it) at minute or hour steps comes from the district rollups
    (`query.table`), where a reading counts in the district its sensor was in when stored.
    """
    s, e = window(start, end, timedelta(hours=24))
    ask = ts.Ask(
        start=s,
        end=e,
        step_s=duration_s(step, "step") if step is not None else None,
        points=points,
        resolution=resolution,
        aggs=tuple(dict.fromkeys(agg)) if agg else ("mean",),
        fill=fill,
        max_gap_s=duration_s(max_gap, "max_gap") if max_gap is not None else None,
        before=before,
    )
    sel = ts.Selection(csv_list(sensor), csv_list(quantity), district, domain)
    tier = await state.tier()
    async with state.read_pool.connection() as conn:
        if ts.from_district_rollups(sel, group):
            groups = await state.district_groups.groups(conn, sel)
            plan = ts.make_plan(ask, groups, state.catalogue, state.settings.api_max_points)
            if plan.step_s is not None and plan.resolution in ts.DISTRICT_TABLE:
                assert sel.district is not None
                result = await ts.fetch_district(
                    conn, plan, sel.district, groups, tier.bucket_function
                )
                return await _answer(result, tier.name, format)
        found = await ts.resolve(conn, sel)
        grouping = None if group is ts.Group.sensor else ts.group_series(found, group)
        answered = found if grouping is None else grouping.groups
        plan = ts.make_plan(ask, answered, state.catalogue, state.settings.api_max_points)
        if grouping is not None and plan.step_s is None:
            raise bad_request(f"group={group.value} merges buckets: give a step or points")
        if plan.step_s is None and format is not Format.json:
            # Raw readings as stored, streamed: only the empty head is made here.
            prior = await ts.before_window(conn, plan, found) if before else []
            result = ts.Result(plan, found, ts.raw_table([], plan, found), prior)
        else:
            result = await ts.fetch(
                conn,
                plan,
                found,
                tier.bucket_function,
                state.settings.api_max_points,
                before,
                grouping,
            )
    if plan.step_s is None and format is not Format.json:
        rows = state.settings.api_export_chunk_rows
        # In a thread, as the answers below: describing a district's 25,000 series took the
        # event loop ~0.1 s per export in a city run, and every other request waited.
        table = await asyncio.to_thread(_described, result, tier.name)
        return export.streamed(state.read_pool, plan, found, table, format, rows, "readings")
    return await _answer(result, tier.name, format)


def _described(result: ts.Result, tier: str) -> Table:
    """The result's table with the query described beside it and in the headers."""
    query = ts.describe(result, tier)
    table = result.table
    table.extra = {"query": query, "before": result.before}
    table.headers = {
        "X-Pusat-Resolution": result.plan.resolution.value,
        "X-Pusat-Step": query["step"] or "raw",
        "X-Pusat-Start": query["start"],
        "X-Pusat-End": query["end"],
    }
    return table


async def _answer(result: ts.Result, tier: str, format: Format) -> Response:
    return await asyncio.to_thread(lambda: respond(_described(result, tier), format, "readings"))
