"""The readings API on a real server: resolution choice, exact aggregates on every table,
gaps, the value before the window, and JSON/CSV/Parquet read by pandas straight from the URL."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from api import series as ts
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from tests.test_api_support import US, Api, sensor, us, write

# The API fixtures (a real server per test, tokens of every role).
pytest_plugins = ["tests.test_api_support"]

# Every readings query runs on plain PostgreSQL (date_bin) and on TimescaleDB (time_bucket).
pytestmark = pytest.mark.tiers

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)  # a Friday midnight UTC; 2 days of data follow
DAYS = 2


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    # A low point limit, so "too many points" is reachable with two days of data.
    return settings.with_(api_port=free_port(), api_token_cache_s=0.0, api_max_points=5000)


@pytest.fixture
def data(api: Api) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two air sensors, 2 days of irregular minute data (0 to 3 readings a minute), and one
    traffic sensor with a 3-hour hole."""
    rng = np.random.default_rng(7)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    readings = []
    for sid in ("AQ-1", "AQ-2"):
        minutes = np.arange(DAYS * 1440)
        per = rng.integers(0, 4, len(minutes))  # uneven counts: weighted means matter
        ts = np.concatenate(
            [
                us(T0) + m * 60 * US + np.sort(rng.choice(60, k, replace=False)) * US
                for m, k in zip(minutes, per, strict=True)
                if k
            ]
        ).astype(np.int64)
        values = np.round(rng.gamma(3.0, 6.0, len(ts)), 3)
        out[sid] = (ts, values)
        readings.append((sid, "pm25", ts, values))
    t = us(T0) + np.arange(0, DAYS * 1440, 5) * 60 * US
    keep = (t < us(T0 + timedelta(hours=10))) | (t >= us(T0 + timedelta(hours=13)))
    t = t[keep].astype(np.int64)
    flow = np.arange(len(t), dtype=np.float64)
    out["LOOP-1"] = (t, flow)
    readings.append(("LOOP-1", "flow", t, flow))
    write(
        api.settings.database_url or "",
        readings,
        sensors=[
            sensor("AQ-1", "air", "Presint 8", 2.93, 101.69, ("pm25",)),
            sensor("AQ-2", "air", "Presint 9", 2.91, 101.70, ("pm25",)),
            sensor("LOOP-1", "traffic", "Presint 8", 2.925, 101.695, ("flow",)),
        ],
    )
    return out


def doc(api: Api, **params: Any) -> dict[str, Any]:
    r = api.get("/api/v1/readings", **params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def expected(ts: np.ndarray, v: np.ndarray, start: datetime, step_s: int, n: int) -> dict[str, Any]:
    """Aggregates per bucket computed here from the raw readings (NaN where empty)."""
    b = (ts - us(start)) // (step_s * US)
    out: dict[str, Any] = {
        k: np.full(n, np.nan) for k in ("mean", "min", "max", "sum", "first", "last")
    }
    out["count"] = np.zeros(n, dtype=np.int64)
    for i in range(n):
        m = b == i
        if m.any():
            x = v[m]
            out["mean"][i], out["min"][i], out["max"][i] = x.mean(), x.min(), x.max()
            out["sum"][i], out["count"][i] = x.sum(), m.sum()
            out["first"][i], out["last"][i] = x[0], x[-1]
    return out


AGGS = ["mean", "min", "max", "sum", "count", "first", "last"]


@pytest.mark.parametrize(
    ("step", "resolution", "table"),
    [
        ("2h", "auto", "rollup_1h"),  # merging hourly rows
        ("2h", "1m", "rollup_1m"),  # merging minute rows
        ("2h", "raw", "readings"),
        ("1h", "auto", "rollup_1h"),  # one row per bucket
        ("90s", "auto", "readings"),  # not whole minutes: only raw can serve it
        ("15m", "auto", "rollup_1m"),
    ],
)
def test_aggregates_are_exact_on_every_table(
    api: Api,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    db_tier: str,
    step: str,
    resolution: str,
    table: str,
) -> None:
    start, end = T0 + timedelta(hours=6), T0 + timedelta(hours=30)
    d = doc(
        api,
        sensor="AQ-1",
        quantity="pm25",
        start=start.isoformat(),
        end=end.isoformat(),
        step=step,
        resolution=resolution,
        agg=AGGS,
    )
    q = d["query"]
    assert q["table"] == table and q["database_tier"].startswith(db_tier)
    step_s = q["step_s"]
    n = q["buckets"]
    assert n == (end - start).total_seconds() / step_s
    ts, v = data["AQ-1"]
    want = expected(ts, v, start, step_s, n)
    frame = pd.DataFrame(d["data"])
    assert len(frame) == n and (frame["sensor_id"] == "AQ-1").all()
    for k in AGGS:
        got = frame[k].to_numpy(dtype=float)
        np.testing.assert_allclose(got, want[k].astype(float), rtol=1e-9, err_msg=k)
    assert not frame["filled"].any()


def test_resolution_follows_range_and_points(
    api: Api,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    def query(**p: Any) -> dict[str, Any]:
        return doc(api, sensor="AQ-1", quantity="pm25", **p)["query"]  # type: ignore[no-any-return]

    hour = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}
    # A short window: never finer than the quantity's 60 s period, from the minute rollups.
    q = query(**hour)
    assert (q["step_s"], q["table"], q["buckets"]) == (60, "rollup_1m", 60)
    # Two days in 48 points: hourly rollups.
    q = query(start=T0.isoformat(), end=(T0 + timedelta(days=2)).isoformat(), points=48)
    assert (q["step_s"], q["table"]) == (3600, "rollup_1h")
    # Two days in 300 points: 10-minute steps from the minute rollups.
    q = query(start=T0.isoformat(), end=(T0 + timedelta(days=2)).isoformat(), points=300)
    assert (q["step_s"], q["table"]) == (600, "rollup_1m")
    # Asked for explicitly.
    assert query(**hour, resolution="1h")["table"] == "rollup_1h"
    raw = doc(api, sensor="AQ-1", quantity="pm25", resolution="raw", **hour)
    assert raw["query"]["table"] == "readings" and raw["query"]["step"] is None
    ts, _ = data["AQ-1"]
    in_hour = ((ts >= us(T0)) & (ts < us(T0 + timedelta(hours=1)))).sum()
    assert len(raw["data"]) == in_hour and set(raw["data"][0]) >= {"ts", "value", "unit"}


def test_window_widens_to_whole_buckets_and_reports_it(
    api: Api,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    start = T0 + timedelta(hours=1, minutes=17)
    r = api.get(
        "/api/v1/readings",
        sensor="AQ-1",
        quantity="pm25",
        start=start.isoformat(),
        end=(start + timedelta(hours=3)).isoformat(),
        step="1h",
    )
    q = r.json()["query"]
    assert q["start"] == (T0 + timedelta(hours=1)).isoformat()
    assert q["end"] == (T0 + timedelta(hours=5)).isoformat()
    assert r.headers["X-Pusat-Resolution"] == "1h" and r.headers["X-Pusat-Step"] == "1h"


def test_gaps_as_nulls_or_carried_forward_and_the_value_before(
    api: Api,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    window = {
        "sensor": "LOOP-1",
        "quantity": "flow",
        "step": "30m",
        "agg": ["mean", "count"],
        "start": (T0 + timedelta(hours=9)).isoformat(),
        "end": (T0 + timedelta(hours=14)).isoformat(),
    }
    ts, v = data["LOOP-1"]
    last_before = v[ts < us(T0 + timedelta(hours=9))][-1]
    nulls = doc(api, **window)
    frame = pd.DataFrame(nulls["data"])
    assert len(frame) == 10
    hole = frame["ts"].between("2026-11-20T10:00", "2026-11-20T12:59")
    assert frame.loc[hole, "mean"].isna().all() and (frame.loc[hole, "count"] == 0).all()
    assert frame.loc[~hole, "mean"].notna().all() and not frame["filled"].any()
    (before,) = nulls["before"]
    assert before["value"] == last_before and before["sensor_id"] == "LOOP-1"

    none = pd.DataFrame(doc(api, **window, fill="none")["data"])
    assert len(none) == 4  # only buckets with data

    carried = pd.DataFrame(doc(api, **window, fill="previous", max_gap="1h")["data"])
    # The last bucket before the hole (09:30) carries into 10:00 and 10:30 (<= 1 h), not later.
    last_mean = frame.loc[frame["ts"].str.startswith("2026-11-20T09:30"), "mean"].item()
    filled = carried[carried["filled"]]
    assert list(filled["ts"].str[11:16]) == ["10:00", "10:30"]
    assert (filled["mean"] == last_mean).all() and (filled["count"] == 0).all()
    assert carried.loc[hole & ~carried["filled"], "mean"].isna().all()


def test_pandas_reads_json_csv_and_parquet_from_the_url(
    api: Api,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    base = (
        f"{api.url}/api/v1/readings?sensor=AQ-1,AQ-2&quantity=pm25&step=1h&agg=mean&agg=count"
        f"&start={T0.isoformat().replace('+', '%2B')}&end=2026-11-20T12:00:00Z"
        f"&token={api.tokens['viewer']}"
    )
    from_json = pd.read_json(base, orient="table")
    from_csv = pd.read_csv(base + "&format=csv", parse_dates=["ts"])
    from_parquet = pd.read_parquet(base + "&format=parquet")
    for frame in (from_json, from_csv, from_parquet):
        assert len(frame) == 24
        assert list(frame["sensor_id"].unique()) == ["AQ-1", "AQ-2"]
        assert str(frame["ts"].dt.tz) == "UTC"
        assert frame["ts"].iloc[0] == pd.Timestamp(T0)
    for frame in (from_csv, from_parquet):
        np.testing.assert_allclose(frame["mean"], from_json["mean"])
        assert (frame["count"].to_numpy() == from_json["count"].to_numpy()).all()
    # The token may also travel as a header (pandas' storage_options for HTTP).
    plain = base.rsplit("&token=", 1)[0]
    header = {"Authorization": f"Bearer {api.tokens['viewer']}"}
    assert len(pd.read_csv(plain + "&format=csv", storage_options=header)) == 24
    # The Parquet file carries the query description in its metadata.
    import json

    import pyarrow.parquet as pq

    raw = api.get(
        "/api/v1/readings",
        sensor="AQ-1",
        quantity="pm25",
        step="1h",
        start=T0.isoformat(),
        end="2026-11-20T02:00:00Z",
        format="parquet",
    ).content
    meta = json.loads(pq.read_schema(io.BytesIO(raw)).metadata[b"pusat"])
    assert meta["query"]["table"] == "rollup_1h"


def test_district_and_domain_select_series(
    api: Api,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    span = {"start": T0.isoformat(), "end": "2026-11-20T06:00:00Z", "step": "1h"}
    d = doc(api, district="Presint 8", **span)
    assert {(s["sensor_id"], s["quantity"]) for s in d["query"]["series"]} == {
        ("AQ-1", "pm25"),
        ("LOOP-1", "flow"),
    }
    d = doc(api, domain="air", quantity="pm25", **span)
    assert [s["sensor_id"] for s in d["query"]["series"]] == ["AQ-1", "AQ-2"]


@pytest.mark.parametrize(
    ("step", "table"),
    [("2h", "rollup_1h"), ("1h", "rollup_1h"), ("15m", "rollup_1m"), ("90s", "readings")],
)
def test_a_group_merges_its_sensors_exactly(
    api: Api,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    step: str,
    table: str,
) -> None:
    """group=domain: one series for all the air sensors, its aggregates those of their readings
    taken together (the mean weighted by readings, not a mean of means); group=district: one
    per district, each here the one sensor it holds."""
    start, end = T0 + timedelta(hours=6), T0 + timedelta(hours=30)
    span = {"start": start.isoformat(), "end": end.isoformat(), "step": step, "agg": AGGS}
    d = doc(api, domain="air", quantity="pm25", group="domain", **span)
    q = d["query"]
    assert q["table"] == table and q["group"] == "domain"
    assert q["series"] == [{"domain": "air", "quantity": "pm25", "unit": "ug/m3", "sensors": 2}]
    ts = np.concatenate([data["AQ-1"][0], data["AQ-2"][0]])
    v = np.concatenate([data["AQ-1"][1], data["AQ-2"][1]])
    want = expected(ts, v, start, q["step_s"], q["buckets"])
    frame = pd.DataFrame(d["data"])
    assert len(frame) == q["buckets"] and (frame["domain"] == "air").all()
    assert "sensor_id" not in frame
    for k in ("mean", "min", "max", "sum", "count"):  # first/last: ties between the sensors
        got = frame[k].to_numpy(dtype=float)
        np.testing.assert_allclose(got, want[k].astype(float), rtol=1e-9, err_msg=k)
    a, b = (expected(*data[s], start, q["step_s"], q["buckets"])["mean"] for s in ("AQ-1", "AQ-2"))
    both = np.isfinite(a) & np.isfinite(b)
    assert both.any()
    assert not np.allclose(frame["mean"].to_numpy(dtype=float)[both], ((a + b) / 2)[both])

    per = doc(api, domain="air", quantity="pm25", group="district", **span)
    alone = {s: doc(api, sensor=s, quantity="pm25", **span)["data"] for s in ("AQ-1", "AQ-2")}
    by_district = pd.DataFrame(per["data"]).groupby("district")
    for district, sid in (("Presint 8", "AQ-1"), ("Presint 9", "AQ-2")):
        mine = by_district.get_group(district)
        theirs = pd.DataFrame(alone[sid])
        for k in ("mean", "min", "max", "sum", "count", "first", "last"):
            np.testing.assert_allclose(
                mine[k].to_numpy(dtype=float), theirs[k].to_numpy(dtype=float), err_msg=k
            )


@pytest.mark.parametrize(
    "shape",
    [
        {"step": "1h"},  # hourly rows as they are
        {"step": "2h"},  # hourly rows merged
        {"step": "15m"},  # minute rows merged
        {"step": "90s"},  # raw readings aggregated
        {"resolution": "raw"},  # raw readings as stored
    ],
)
def test_one_series_answers_as_it_does_among_several(
    api: Api,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    shape: dict[str, str],
) -> None:
    # One series is matched by equality, several by = ANY(array): the rows must not differ.
    span = {"start": (T0 + timedelta(hours=5)).isoformat(), "end": "2026-11-20T08:00:00Z"}
    agg = [] if shape.get("resolution") == "raw" else AGGS
    one = doc(api, sensor="AQ-1", quantity="pm25", agg=agg, **span, **shape)
    both = doc(api, sensor="AQ-1,AQ-2", quantity="pm25", agg=agg, **span, **shape)
    assert one["query"]["table"] == both["query"]["table"]
    assert one["data"] and one["data"] == [r for r in both["data"] if r["sensor_id"] == "AQ-1"]
    if shape.get("resolution") == "raw":  # times of readings as stored keep their microseconds
        ts, v = data["AQ-1"]
        m = (ts >= us(T0 + timedelta(hours=5))) & (ts < us(T0 + timedelta(hours=8)))
        got = pd.to_datetime([r["ts"] for r in one["data"]]).as_unit("us").asi8
        np.testing.assert_array_equal(got, ts[m])
        assert [r["value"] for r in one["data"]] == v[m].tolist()


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"sensor": "NOPE", "quantity": "pm25"}, 404, "unknown sensor: NOPE"),
        ({"sensor": "AQ-1", "quantity": "no2"}, 404, "no series"),
        ({"quantity": "pm25"}, 400, "name at least one sensor"),
        (
            {"sensor": "AQ-1", "start": "2026-11-21T00:00:00Z", "end": "2026-11-20T00:00:00Z"},
            400,
            "start must be before end",
        ),
        (
            {"sensor": "AQ-1", "start": "2026-11-20T00:00:00", "end": "2026-11-21T00:00:00Z"},
            400,
            "time zone",
        ),
        (
            {
                "sensor": "AQ-1",
                "start": "2020-01-01T00:00:00Z",
                "end": "2026-01-01T00:00:00Z",
                "step": "1m",
            },
            400,
            "too many points",
        ),
        (
            {
                "sensor": "AQ-1,AQ-2",
                "start": "2026-11-20T00:00:00Z",
                "end": "2026-11-22T00:00:00Z",
                "resolution": "raw",
            },
            400,
            "too many points",
        ),
        ({"sensor": "AQ-1", "step": "90s", "resolution": "1m"}, 400, "whole number"),
        ({"sensor": "AQ-1", "resolution": "raw", "fill": "previous"}, 400, "needs buckets"),
        ({"sensor": "AQ-1", "points": 10_000_000}, 400, "points must be at most"),
        ({"domain": "air", "group": "district", "resolution": "raw"}, 400, "merges buckets"),
        ({"domain": "air", "group": "street"}, 422, "district"),
        ({"sensor": "AQ-1", "step": "0m"}, 400, "longer than zero"),
        ({"sensor": "AQ-1", "step": "soon"}, 422, "pattern"),
        ({"sensor": "AQ-1", "format": "xlsx"}, 422, "json"),
        ({"sensor": "AQ-1", "agg": "median"}, 422, "mean"),
        ({"sensor": "AQ-1", "start": "yesterday"}, 422, "datetime"),
        ({"sensor": "AQ-1", "start": "0001-01-01T00:00:00Z"}, 400, "between 1900 and 2200"),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    api: Api,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    params: dict[str, Any],
    status: int,
    message: str,
) -> None:
    r = api.get("/api/v1/readings", **params)
    assert r.status_code == status, r.text
    assert message in r.text


def test_times_arrive_as_exact_integers(database_url: str) -> None:
    # api.series reads timestamptz results as integer microseconds (no per-row conversion in
    # the server, no datetimes in the client): exact to the microsecond either side of 2000.
    times = [
        datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 20, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2199, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]

    async def run() -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await ts.query_rows(
                conn, "SELECT t, 1.5 FROM unnest(%(times)s::timestamptz[]) AS t", {"times": times}
            )

    rows = asyncio.run(run())
    got = ts.unix_us(np.array([r[0] for r in rows], dtype=np.float64))
    assert got.tolist() == [us_exact(t) for t in times]
    assert [r[1] for r in rows] == [1.5] * len(times)


def us_exact(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
