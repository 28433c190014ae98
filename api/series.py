"""Time-series range queries at any resolution: the planning, the SQL and the gap handling.

Planning. A request names series (sensors, a district or a domain, and quantities), a window
[start, end), and either a ``step`` or a number of ``points`` per series. Without a step the
step is the window over the points, rounded up to a round duration and never finer than the
quantities' reporting period (finer buckets would be mostly empty). The data then comes from
the coarsest table whose buckets nest in the step: ``rollup_1h`` when the step is whole hours,
``rollup_1m`` when it is whole minutes, raw readings otherwise, or the table that ``resolution``
names. ``resolution=raw`` without a step returns the readings as stored.

Buckets are aligned to multiples of the step from 1970-01-01T00:00Z (as the rollups are), so
the window is widened to whole buckets; the answer says which window it covers.

Merging rollup rows into a coarser step keeps the aggregates exact: count and sum add, the
mean is sum/count over the merged rows (count-weighted), min and max of mins and maxes, and
first/last follow first_ts/last_ts.

Gaps: ``fill=null`` gives every bucket, empty ones as nulls; ``fill=none`` only buckets with
data; ``fill=previous`` carries the last known value (also from the reading just before the
window) forward over empty buckets up to ``max_gap``, flagging those rows ``filled``. Counts
and sums are never carried: an empty bucket has none.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.numeric import Int8BinaryLoader

from api.errors import ApiError, bad_request
from api.params import format_duration
from api.tables import Column, Table
from processing.catalogue import Catalogue

LEVEL_AGGS = frozenset({"mean", "min", "max", "first", "last"})  # carried forward by fill
NICE_STEPS_S = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400, 2 * 86400, 7 * 86400,
)  # fmt: skip
DEFAULT_PERIOD_S = 60
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1_000_000


Agg = Literal["mean", "min", "max", "first", "last", "count", "sum"]


class Resolution(StrEnum):
    auto = "auto"
    raw = "raw"
    minute = "1m"
    hour = "1h"


class Group(StrEnum):
    """What one answered series is: a sensor's quantity, or one quantity merged over the
    selected sensors of each district or domain."""

    sensor = "sensor"
    district = "district"
    domain = "domain"


class Fill(StrEnum):
    null = "null"
    none = "none"
    previous = "previous"


TIER_WIDTH_S = {Resolution.raw: 0, Resolution.minute: 60, Resolution.hour: 3600}
TABLE = {
    Resolution.raw: "reading_data",
    Resolution.minute: "rollup_1m_data",
    Resolution.hour: "rollup_1h_data",
}
# Rollups merged per district and quantity by the worker (store/migrations/0009).
DISTRICT_TABLE = {
    Resolution.minute: "district_rollup_1m_data",
    Resolution.hour: "district_rollup_1h_data",
}
PUBLIC_NAME = {
    Resolution.raw: "readings",
    Resolution.minute: "rollup_1m",
    Resolution.hour: "rollup_1h",
}


class SeriesRef(NamedTuple):
    """One series of a selection. A tuple: a district's 25,000 series are made per request, and
    a frozen dataclass took 5 us each (a fifth of the API's loop under a city's panels)."""

    series_id: int
    sensor_id: str
    quantity: str
    unit: str | None
    district: str | None = None
    domain: str | None = None
    sensors: int = 1  # how many sensors' series it stands for (more when grouped)


@dataclass(frozen=True)
class Grouping:
    """Series merged per (district or domain, quantity): ``members[i]`` is the group of the
    selection's series ``i``; ``groups`` are the answered series (their ``sensor_id`` holds the
    district or domain)."""

    by: Group
    groups: list[SeriesRef]
    members: list[int]


def group_series(series: Sequence[SeriesRef], by: Group) -> Grouping:
    keys: dict[tuple[str | None, str], int] = {}
    members: list[int] = []
    counts: list[int] = []
    units: list[str | None] = []
    for s in series:
        key = (s.district if by is Group.district else s.domain, s.quantity)
        if key not in keys:
            keys[key] = len(keys)
            counts.append(0)
            units.append(s.unit)
        members.append(keys[key])
        counts[keys[key]] += 1
    groups = [
        SeriesRef(k, label or "", q, units[k], sensors=counts[k]) for (label, q), k in keys.items()
    ]
    return Grouping(by, groups, members)


@dataclass(frozen=True)
class Selection:
    sensors: Sequence[str] = ()
    quantities: Sequence[str] = ()
    district: str | None = None
    domain: str | None = None


@dataclass(frozen=True)
class Ask:
    """What was asked, already checked for form (times aware, durations parsed)."""

    start: datetime
    end: datetime
    step_s: int | None = None
    points: int = 1000
    resolution: Resolution = Resolution.auto
    aggs: tuple[Agg, ...] = ("mean",)
    fill: Fill = Fill.null
    max_gap_s: int | None = None
    before: bool = True


@dataclass(frozen=True)
class Plan:
    start: datetime  # the window actually covered (widened to whole buckets)
    end: datetime
    step_s: int | None  # None: raw readings as stored
    resolution: Resolution  # the table read: raw, 1m or 1h
    aggs: tuple[Agg, ...]
    fill: Fill
    max_gap_s: int | None
    buckets: int  # per series; 0 for raw readings as stored
    series: int  # how many series the plan reads

    @property
    def table(self) -> str:
        return TABLE[self.resolution]


@dataclass
class Result:
    plan: Plan
    series: list[SeriesRef]
    table: Table
    before: list[dict[str, Any]] = field(default_factory=list)
    group: Group = Group.sensor
    read: str | None = None  # the table read, when not the plan's own (district rollups)


# -- choosing the series -----------------------------------------------------------------------


async def resolve(conn: psycopg.AsyncConnection[Any], sel: Selection) -> list[SeriesRef]:
    """The series a selection names; 404 for a named sensor that does not exist."""
    if not (sel.sensors or sel.district or sel.domain):
        raise bad_request("name at least one sensor, a district or a domain")
    where: list[str] = ["true"]
    params: list[Any] = []
    if sel.sensors:
        where.append("se.sensor_id = ANY(%s)")
        params.append(list(sel.sensors))
    if sel.quantities:
        where.append("se.quantity = ANY(%s)")
        params.append(list(sel.quantities))
    if sel.district:
        where.append("s.district = %s")
        params.append(sel.district)
    if sel.domain:
        where.append("s.domain = %s")
        params.append(sel.domain)
    cur = await conn.execute(
        "SELECT se.series_id, se.sensor_id, se.quantity, se.unit, s.district, s.domain"
        " FROM series se"
        f" JOIN sensors s USING (sensor_id) WHERE {' AND '.join(where)}"
        " ORDER BY se.sensor_id, se.quantity",
        params,
    )
    found = [SeriesRef(*r) for r in await cur.fetchall()]
    if sel.sensors:
        cur = await conn.execute(
            "SELECT sensor_id FROM sensors WHERE sensor_id = ANY(%s)", (list(sel.sensors),)
        )
        known = {r[0] for r in await cur.fetchall()}
        unknown = sorted(set(sel.sensors) - known)
        if unknown:
            raise ApiError(404, f"unknown sensor: {', '.join(unknown)}")
    if not found:
        what = ", ".join(sel.quantities) if sel.quantities else "any quantity"
        raise ApiError(404, f"no series of {what} for this selection")
    return found


def from_district_rollups(sel: Selection, by: Group) -> bool:
    """Whether a grouped ask is for one district's sensors, all of them (no sensor or domain
    narrows it): the district rollups hold its answer at minute and hour resolution."""
    return by is Group.district and sel.district is not None and not sel.sensors and not sel.domain


@dataclass
class GroupCache:
    """``district_groups`` answers for ``ttl_s``: counting a district's series joins every one
    of its sensors (33 ms for 4,000 loops), while its panel's data takes 1 ms. A district's
    sensors change rarely; its answer's ``sensors`` counts may lag a provisioning by ``ttl_s``.
    """

    ttl_s: float = 10.0
    _found: dict[tuple[str, tuple[str, ...]], tuple[float, list[SeriesRef]]] = field(
        default_factory=dict
    )

    async def groups(self, conn: psycopg.AsyncConnection[Any], sel: Selection) -> list[SeriesRef]:
        assert sel.district is not None
        key = (sel.district, tuple(sorted(sel.quantities)))
        now = time.monotonic()
        hit = self._found.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await district_groups(conn, sel)
        if len(self._found) > 10_000:  # made-up districts must not grow it without end
            self._found.clear()
        self._found[key] = (now + self.ttl_s, found)
        return found


async def district_groups(conn: psycopg.AsyncConnection[Any], sel: Selection) -> list[SeriesRef]:
    """The groups ``group_series(resolve(sel), Group.district)`` gives, in the same order and
    with the same units and counts, counted by the database instead of one row per series."""
    assert sel.district is not None
    quantities = list(sel.quantities) or None
    cur = await conn.execute(
        "SELECT se.quantity, (array_agg(se.unit ORDER BY se.sensor_id))[1], count(*)"
        " FROM series se JOIN sensors s USING (sensor_id)"
        " WHERE s.district = %s AND (%s::text[] IS NULL OR se.quantity = ANY(%s::text[]))"
        " GROUP BY se.quantity ORDER BY min(se.sensor_id), se.quantity",
        (sel.district, quantities, quantities),
    )
    rows = await cur.fetchall()
    if not rows:
        what = ", ".join(sel.quantities) if sel.quantities else "any quantity"
        raise ApiError(404, f"no series of {what} for this selection")
    return [SeriesRef(k, sel.district, q, unit, sensors=n) for k, (q, unit, n) in enumerate(rows)]


# -- planning ---------------------------------------------------------------------------------


def _floor(t: datetime, step_s: int) -> datetime:
    s = math.floor((t - EPOCH).total_seconds() / step_s) * step_s
    return EPOCH + timedelta(seconds=s)


def _ceil(t: datetime, step_s: int) -> datetime:
    s = math.ceil((t - EPOCH).total_seconds() / step_s) * step_s
    return EPOCH + timedelta(seconds=s)


def nice_step(seconds: float) -> int:
    """The smallest round step of at least ``seconds``."""
    for s in NICE_STEPS_S:
        if s >= seconds:
            return s
    week = NICE_STEPS_S[-1]
    return int(math.ceil(seconds / week) * week)


def _coarsest(step_s: int) -> Resolution:
    if step_s % 3600 == 0:
        return Resolution.hour
    if step_s % 60 == 0:
        return Resolution.minute
    return Resolution.raw


def make_plan(ask: Ask, series: Sequence[SeriesRef], catalogue: Catalogue, max_points: int) -> Plan:
    span_s = (ask.end - ask.start).total_seconds()
    n = len(series)
    if ask.points > max_points:
        raise bad_request(f"points must be at most {max_points:,} (PUSAT_API_MAX_POINTS)")
    if ask.fill is Fill.none and ask.max_gap_s is not None:
        raise bad_request("max_gap applies to fill=previous")
    if ask.resolution is Resolution.raw and ask.step_s is None:
        if ask.fill is Fill.previous:
            raise bad_request("fill=previous needs buckets: give a step")
        return Plan(ask.start, ask.end, None, Resolution.raw, ask.aggs, ask.fill, None, 0, n)

    width = TIER_WIDTH_S.get(ask.resolution, 0)
    if ask.step_s is not None:
        step = ask.step_s
        if width and step % width:
            raise bad_request(
                f"resolution {ask.resolution.value} has {format_duration(width)} buckets:"
                f" the step must be a whole number of them, not {format_duration(step)}"
            )
    else:
        periods = [catalogue.get(s.quantity) for s in series]
        floor_s = max((q.period for q in periods if q is not None), default=DEFAULT_PERIOD_S)
        step = nice_step(max(span_s / ask.points, floor_s, 1.0))
        if width and step % width:
            step = int(math.ceil(step / width) * width)
    resolution = _coarsest(step) if ask.resolution is Resolution.auto else ask.resolution

    start, end = _floor(ask.start, step), _ceil(ask.end, step)
    buckets = round((end - start).total_seconds() / step)
    if buckets * n > max_points:
        raise bad_request(
            f"too many points: {n} series x {buckets:,} buckets of {format_duration(step)}"
            f" = {n * buckets:,}, more than {max_points:,}; ask for a longer step, fewer"
            " series or a shorter range"
        )
    max_gap = ask.max_gap_s
    if ask.fill is Fill.previous and max_gap is None:
        max_gap = 5 * step
    return Plan(start, end, step, resolution, ask.aggs, ask.fill, max_gap, buckets, n)


# -- the SQL ----------------------------------------------------------------------------------

_RAW_AGG = {
    "mean": "avg(value)",
    "min": "min(value)",
    "max": "max(value)",
    "first": "(array_agg(value ORDER BY ts))[1]",
    "last": "(array_agg(value ORDER BY ts DESC))[1]",
    "count": "count(*)",
    "sum": "sum(value)",
}
# Merging partials (count-weighted mean; first/last by their times).
_MERGE_AGG = {
    "mean": "sum(sum) / sum(count)",
    "min": "min(min)",
    "max": "max(max)",
    "first": "(array_agg(first ORDER BY first_ts))[1]",
    "last": "(array_agg(last ORDER BY last_ts DESC))[1]",
    "count": "sum(count)::bigint",
    "sum": "sum(sum)",
}
# One rollup row per bucket already: no grouping needed.
_ROW_AGG = {
    "mean": "sum / count",
    "min": "min",
    "max": "max",
    "first": "first",
    "last": "last",
    "count": "count",
    "sum": "sum",
}


# Times travel as timestamptz: a binary result carries one as a 64-bit count of microseconds
# since 2000-01-01 UTC, which ``query_rows`` reads as that integer. The server then converts
# nothing per row (``date_part`` on each of a week's 168 hourly rows cost about as much server
# time as finding and reading them) and the client builds no datetime; the shift to the Unix
# epoch is one NumPy addition.
_PG_EPOCH_US = 946_684_800 * US  # 2000-01-01T00:00Z in Unix microseconds
_TIMESTAMPTZ_OID = psycopg.postgres.types["timestamptz"].oid
ROWS_AT_ONCE = 20_000  # rows turned into Python between two turns of the event loop


def sql_for(plan: Plan, bucket_function: str) -> str:
    """The query of a plan: parameters %(series)s, %(start)s, %(end)s, %(step)s, %(limit)s
    (``params_for`` gives them); run it with ``query_rows``.

    Rows are (series_id, time, aggregates...), or (time, aggregates...) for a plan of one
    series (whose id the caller knows); times are read as integers (``query_rows``), and the
    grid is built with NumPy. Buckets come unordered (the grid orders them), which spares the
    database a sort.
    """
    one = plan.series == 1
    # One series (a panel's usual ask) by plain equality: an array parameter costs a
    # Python-level dump in psycopg and an array decode in the server on every execution.
    key = "series_id = %(series)s" if one else "series_id = ANY(%(series)s)"
    sid = "" if one else "series_id, "
    if plan.step_s is None:
        return (
            f"SELECT {sid}ts, value FROM reading_data"
            f" WHERE {key} AND ts >= %(start)s AND ts < %(end)s"
            f" ORDER BY {sid}ts LIMIT %(limit)s"
        )
    group = "1" if one else "1, 2"
    # The origin makes buckets line up with the rollups' (Unix epoch), on both tiers.
    bucket = f"{bucket_function}(%(step)s::interval, {{col}}, '1970-01-01T00:00:00Z'::timestamptz)"
    if plan.resolution is Resolution.raw:
        cols = ", ".join(_RAW_AGG[a] for a in plan.aggs)
        return (
            f"SELECT {sid}{bucket.format(col='ts')}, {cols} FROM reading_data"
            f" WHERE {key} AND ts >= %(start)s AND ts < %(end)s"
            f" GROUP BY {group}"
        )
    if plan.step_s == TIER_WIDTH_S[plan.resolution]:
        cols = ", ".join(_ROW_AGG[a] for a in plan.aggs)
        return (
            f"SELECT {sid}bucket, {cols} FROM {plan.table}"
            f" WHERE {key} AND bucket >= %(start)s AND bucket < %(end)s"
        )
    cols = ", ".join(_MERGE_AGG[a] for a in plan.aggs)
    return (
        f"SELECT {sid}{bucket.format(col='bucket')}, {cols} FROM {plan.table}"
        f" WHERE {key} AND bucket >= %(start)s AND bucket < %(end)s"
        f" GROUP BY {group}"
    )


def grouped_sql(plan: Plan, bucket_function: str) -> str:
    """The query of a grouped plan: like ``sql_for``, but each row merges every member series of
    a group (``%(series)s`` the members' ids, ``%(groups)s`` their group numbers), so the mean
    is weighted by readings across sensors. Rows are (group, time, aggregates...), or (time,
    aggregates...) for one group."""
    if plan.step_s is None:
        raise ValueError("a grouped plan has buckets")
    one = plan.series == 1
    k, group = ("", "1") if one else ("g.k, ", "1, 2")
    raw = plan.resolution is Resolution.raw
    col = "ts" if raw else "bucket"
    bucket = f"{bucket_function}(%(step)s::interval, {col}, '1970-01-01T00:00:00Z'::timestamptz)"
    cols = ", ".join((_RAW_AGG if raw else _MERGE_AGG)[a] for a in plan.aggs)
    return (
        f"SELECT {k}{bucket}, {cols} FROM {plan.table}"
        " JOIN unnest(%(series)s::int[], %(groups)s::int[]) AS g(series_id, k) USING (series_id)"
        f" WHERE {col} >= %(start)s AND {col} < %(end)s GROUP BY {group}"
    )


async def query_rows(
    conn: psycopg.AsyncConnection[Any], query: str, params: Mapping[str, Any] | Sequence[Any]
) -> list[tuple[Any, ...]]:
    """Run a query of ``sql_for`` as the API does: binary results, each time as an integer
    (microseconds since 2000-01-01 UTC; ``unix_us`` shifts them)."""
    async with conn.cursor(binary=True) as cur:
        cur.adapters.register_loader(_TIMESTAMPTZ_OID, Int8BinaryLoader)
        await cur.execute(query.encode(), params)
        # Turned into Python rows a slice at a time, the event loop serving other requests in
        # between: all at once, a city's 510,000 latest rows held it for a second or more.
        rows: list[tuple[Any, ...]] = []
        while chunk := await cur.fetchmany(ROWS_AT_ONCE):
            rows += chunk
            await asyncio.sleep(0)
        return rows


def rows_of(
    conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any] | Sequence[Any]
) -> list[tuple[Any, ...]]:
    """``query_rows`` on a connection that blocks (for work done away from the event loop)."""
    with conn.cursor(binary=True) as cur:
        cur.adapters.register_loader(_TIMESTAMPTZ_OID, Int8BinaryLoader)
        cur.execute(query.encode(), params)
        return cur.fetchall()


def unix_us(pg_us: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Times as ``query_rows`` reads them, in Unix microseconds (a float64 holds them exactly
    for 285 years either side of 2000)."""
    return pg_us.astype(np.int64) + _PG_EPOCH_US


def params_for(plan: Plan, ids: Sequence[int], limit: int) -> dict[str, Any]:
    """The parameters of ``sql_for(plan, ...)`` for the plan's series ``ids``; ``limit`` caps
    raw readings as stored."""
    if len(ids) != plan.series:
        raise ValueError(f"the plan is for {plan.series} series, not {len(ids)}")
    return {
        "series": ids[0] if plan.series == 1 else list(ids),
        "start": plan.start,
        "end": plan.end,
        "step": timedelta(seconds=plan.step_s or 1),
        "limit": limit,
    }


_BEFORE = (
    "SELECT k.series_id, b.ts, b.value FROM unnest(%s::int[]) AS k(series_id)"
    " CROSS JOIN LATERAL (SELECT ts, value FROM reading_data r"
    " WHERE r.series_id = k.series_id AND r.ts < %s ORDER BY ts DESC LIMIT 1) b"
)


def _us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


async def fetch(
    conn: psycopg.AsyncConnection[Any],
    plan: Plan,
    series: Sequence[SeriesRef],
    bucket_function: str,
    max_points: int,
    before: bool = True,
    grouping: Grouping | None = None,
) -> Result:
    """The answer of a plan made for ``series``, or, with ``grouping``, for its groups (then
    without the readings before the window: they belong to sensors, not to groups)."""
    ids = [s.series_id for s in series]
    if grouping is not None:
        params = {
            **params_for(plan, list(range(plan.series)), 0),
            "series": ids,
            "groups": grouping.members,
        }
        found = await query_rows(conn, grouped_sql(plan, bucket_function), params)
        index, times, data = _arrays(found, plan, grouping.groups)
        table = _bucket_table(index, times, data, plan, grouping.groups, {}, grouping.by.value)
        return Result(plan, grouping.groups, table, [], grouping.by)
    params = params_for(plan, ids, max_points + 1)
    found = await query_rows(conn, sql_for(plan, bucket_function), params)
    previous: dict[int, tuple[datetime, float]] = {}
    if before:
        cur = await conn.execute(_BEFORE, (ids, plan.start))
        previous = {sid: (ts, v) for sid, ts, v in await cur.fetchall()}
    if plan.step_s is None and len(found) > max_points:
        raise bad_request(
            f"too many points: the window holds more than {max_points:,} readings;"
            " ask for a step (aggregates) or a shorter range"
        )
    index, times, data = _arrays(found, plan, series)
    if plan.step_s is None:
        table = _raw_table(index, times, data[:, 0], series)
    else:
        table = _bucket_table(index, times, data, plan, series, previous)
    return Result(plan, list(series), table, _before_rows(previous, series))


async def fetch_district(
    conn: psycopg.AsyncConnection[Any],
    plan: Plan,
    district: str,
    groups: Sequence[SeriesRef],
    bucket_function: str,
) -> Result:
    """The answer of a grouped plan for one whole district (``district_groups``), merged from
    the district rollups: one row per bucket and quantity, whatever the district's size."""
    if plan.step_s is None or plan.resolution not in DISTRICT_TABLE:
        raise ValueError("the district rollups hold minute and hour buckets")
    one = plan.series == 1
    k, by = ("", "1") if one else ("g.k, ", "1, 2")
    bucket = f"{bucket_function}(%(step)s::interval, bucket, '1970-01-01T00:00:00Z'::timestamptz)"
    cols = ", ".join(_MERGE_AGG[a] for a in plan.aggs)
    query = (
        f"SELECT {k}{bucket}, {cols} FROM {DISTRICT_TABLE[plan.resolution]}"
        " JOIN unnest(%(quantities)s::text[], %(groups)s::int[]) AS g(quantity, k)"
        " USING (quantity)"
        f" WHERE district = %(district)s AND bucket >= %(start)s AND bucket < %(end)s GROUP BY {by}"
    )
    params = {
        **params_for(plan, [g.series_id for g in groups], 0),
        "quantities": [g.quantity for g in groups],
        "groups": [g.series_id for g in groups],
        "district": district,
    }
    found = await query_rows(conn, query, params)
    index, times, data = _arrays(found, plan, groups)
    table = _bucket_table(index, times, data, plan, groups, {}, Group.district.value)
    read = DISTRICT_TABLE[plan.resolution].removesuffix("_data")
    return Result(plan, list(groups), table, [], Group.district, read)


def _arrays(
    found: Sequence[tuple[Any, ...]], plan: Plan, series: Sequence[SeriesRef]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Rows of ``sql_for(plan)`` as (series index, Unix microseconds, values...) arrays.

    Aggregates over at least one reading are never NULL, but a NULL becomes NaN rather than
    breaking the answer. Rows of a one-series plan carry no series id."""
    one = plan.series == 1
    width = (1 if one else 2) + (len(plan.aggs) if plan.step_s else 1)
    data = np.array(found, dtype=np.float64).reshape(-1, width)  # NumPy reads None as NaN
    if one:
        index = np.zeros(len(data), dtype=np.int64)
    else:
        position = {s.series_id: i for i, s in enumerate(series)}
        lookup = np.zeros(max(position) + 1, dtype=np.int64)
        lookup[list(position)] = list(position.values())
        index = lookup[data[:, 0].astype(np.int64)]
        data = data[:, 1:]
    return index, unix_us(data[:, 0]), data[:, 1:]


def _before_rows(
    previous: dict[int, tuple[datetime, float]], series: Sequence[SeriesRef]
) -> list[dict[str, Any]]:
    by_id = {s.series_id: s for s in series}
    return [
        {
            "sensor_id": by_id[sid].sensor_id,
            "quantity": by_id[sid].quantity,
            "ts": ts.astimezone(UTC).isoformat(),
            "value": v,
        }
        for sid, (ts, v) in previous.items()
    ]


# -- raw readings as stored, in chunks (exports of any size) ----------------------------------


async def before_window(
    conn: psycopg.AsyncConnection[Any], plan: Plan, series: Sequence[SeriesRef]
) -> list[dict[str, Any]]:
    """Each series' last reading before the plan's window (the answer's ``before``)."""
    cur = await conn.execute(_BEFORE, ([s.series_id for s in series], plan.start))
    previous = {sid: (ts, v) for sid, ts, v in await cur.fetchall()}
    return _before_rows(previous, series)


async def raw_chunks(
    conn: psycopg.AsyncConnection[Any],
    plan: Plan,
    series: Sequence[SeriesRef],
    rows: int,
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The readings of a raw plan (no step) as stored, in the order ``fetch`` gives them,
    ``rows`` at a time from a server-side cursor: the whole window never sits in memory, on
    either side. Opens a transaction on ``conn`` (the cursor lives in it). Turn each chunk
    into a table with ``raw_table``."""
    if plan.step_s is not None:
        raise ValueError("raw_chunks reads raw plans (no step)")
    params = params_for(plan, [s.series_id for s in series], 0)
    params["limit"] = None  # LIMIT NULL: all of them
    async with (
        conn.transaction(),
        conn.cursor(name="pusat_export", binary=True) as cur,
    ):
        cur.adapters.register_loader(_TIMESTAMPTZ_OID, Int8BinaryLoader)
        await cur.execute(sql_for(plan, "date_bin"), params)
        while found := await cur.fetchmany(rows):
            yield found


def raw_table(found: Sequence[tuple[Any, ...]], plan: Plan, series: Sequence[SeriesRef]) -> Table:
    """Rows of ``raw_chunks`` as the table ``fetch`` makes of the same rows."""
    index, times, data = _arrays(found, plan, series)
    return _raw_table(index, times, data[:, 0], series)


def _labels(
    series: Sequence[SeriesRef], index: npt.NDArray[np.int64], key: str = "sensor_id"
) -> list[Column]:
    rows = index.tolist()
    return [
        Column(key, "text", [series[i].sensor_id for i in rows]),
        Column("quantity", "text", [series[i].quantity for i in rows]),
        Column("unit", "text", [series[i].unit for i in rows]),
    ]


def _raw_table(
    index: npt.NDArray[np.int64],
    times: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    series: Sequence[SeriesRef],
) -> Table:
    return Table(
        [Column("ts", "time", times), *_labels(series, index), Column("value", "float", values)]
    )


def _bucket_table(
    index: npt.NDArray[np.int64],
    times: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    plan: Plan,
    series: Sequence[SeriesRef],
    previous: dict[int, tuple[datetime, float]],
    key: str = "sensor_id",
) -> Table:
    assert plan.step_s is not None
    step_us = plan.step_s * US
    start_us = _us(plan.start)
    nb = plan.buckets
    # Dense grid per series x bucket x aggregate; NaN is "no data".
    grid = np.full((len(series), nb, len(plan.aggs)), np.nan)
    has = np.zeros((len(series), nb), dtype=bool)
    b = (times - start_us) // step_us
    inside = (b >= 0) & (b < nb)
    grid[index[inside], b[inside]] = values[inside]
    has[index[inside], b[inside]] = True
    for k, a in enumerate(plan.aggs):
        if a == "count":  # an empty bucket holds zero readings, not an unknown number
            grid[:, :, k][~has] = 0.0
    filled = np.zeros_like(has)
    if plan.fill is Fill.previous:
        _carry(grid, has, filled, plan, series, previous, start_us, step_us)
    keep = np.ones_like(has) if plan.fill is not Fill.none else has
    si, bi = np.nonzero(keep)  # row-major: by series, then time
    cols = [
        Column("ts", "time", start_us + bi.astype(np.int64) * step_us),
        *_labels(series, si.astype(np.int64), key),
    ]
    for k, a in enumerate(plan.aggs):
        v = grid[si, bi, k]
        cols.append(Column(a, "int", v.astype(np.int64)) if a == "count" else Column(a, "float", v))
    cols.append(Column("filled", "bool", filled[si, bi]))
    return Table(cols)


def _carry(
    grid: npt.NDArray[np.float64],
    has: npt.NDArray[np.bool_],
    filled: npt.NDArray[np.bool_],
    plan: Plan,
    series: Sequence[SeriesRef],
    previous: dict[int, tuple[datetime, float]],
    start_us: int,
    step_us: int,
) -> None:
    """Carry level aggregates forward over empty buckets, up to max_gap after the last data."""
    assert plan.max_gap_s is not None
    gap_us = plan.max_gap_s * US
    level = [k for k, a in enumerate(plan.aggs) if a in LEVEL_AGGS]
    if not level:
        return
    for i, s in enumerate(series):
        last_us: int | None = None
        carried: npt.NDArray[np.float64] | None = None
        if s.series_id in previous:
            ts, v = previous[s.series_id]
            last_us, carried = _us(ts), np.full(len(level), v)
        for b in range(plan.buckets):
            at = start_us + b * step_us
            if has[i, b]:
                last_us, carried = at, grid[i, b, level]
            elif carried is not None and last_us is not None and at - last_us <= gap_us:
                grid[i, b, level] = carried
                filled[i, b] = True


def describe(result: Result, database_tier: str) -> dict[str, Any]:
    """What the answer covers and how it was made (the ``query`` of the JSON answer)."""
    p = result.plan
    return {
        "start": p.start.isoformat(),
        "end": p.end.isoformat(),
        "step": format_duration(p.step_s) if p.step_s else None,
        "step_s": p.step_s,
        "resolution": p.resolution.value,
        "table": result.read or PUBLIC_NAME[p.resolution],
        "database_tier": database_tier,
        "aggs": list(p.aggs) if p.step_s else [],
        "fill": p.fill.value if p.step_s else None,
        "max_gap_s": p.max_gap_s,
        "buckets": p.buckets,
        "group": result.group.value,
        "series": [
            {"sensor_id": s.sensor_id, "quantity": s.quantity, "unit": s.unit}
            if result.group is Group.sensor
            else {
                result.group.value: s.sensor_id,
                "quantity": s.quantity,
                "unit": s.unit,
                "sensors": s.sensors,
            }
            for s in result.series
        ],
    }
