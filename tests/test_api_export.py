"""Streamed exports on a real server: raw readings in CSV, JSON lines and Parquet come out
exactly as the one-piece answer would, from a cursor a chunk at a time, while the API keeps
answering other requests."""

from __future__ import annotations

import asyncio
import io
import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np
import orjson
import psycopg
import pyarrow.parquet as pq
import pytest

from api import series as ts
from api import tables
from processing import catalogue
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from tests.helpers import scalar, wait_for
from tests.test_api_support import US, Api, sensor, us, write

pytest_plugins = ["tests.test_api_support"]

pytestmark = pytest.mark.tiers

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
SPAN = {"start": T0.isoformat(), "end": (T0 + timedelta(days=1)).isoformat()}


@pytest.fixture
def chunk_rows() -> int:
    # Chunks of 7 rows: every export here crosses many chunk (and Parquet row group) edges.
    return 7


@pytest.fixture
def api_settings(settings: Settings, chunk_rows: int) -> Settings:
    return settings.with_(
        api_port=free_port(),
        api_token_cache_s=0.0,
        api_export_chunk_rows=chunk_rows,
        api_max_points=5000,
    )


@pytest.fixture
def data(api: Api) -> None:
    """Three sensors in two districts; a quantity without a unit; values whose text needs
    care (integers, tiny and huge floats)."""
    rng = np.random.default_rng(3)
    readings = []
    for sid, q in (("AQ-1", "pm25"), ("AQ-2", "pm25"), ("LOOP-1", "flow"), ("AQ-1", "odd")):
        t = np.sort(rng.choice(86400, 150, replace=False)).astype(np.int64) * US + us(T0)
        t += rng.integers(0, US, len(t))  # microseconds survive
        v = np.round(rng.gamma(3.0, 6.0, len(t)), 3)
        v[:4] = [12.0, 1e-7, 1.5e300, -0.0]
        readings.append((sid, q, t, v))
    write(
        api.settings.database_url or "",
        readings,
        sensors=[
            sensor("AQ-1", "air", "Presint 8", quantities=("pm25",)),
            sensor("AQ-2", "air", "Presint 9", quantities=("pm25",)),
            sensor("LOOP-1", "traffic", "Presint 8", quantities=("flow",)),
        ],
    )


def one_piece(database_url: str, tier: str, **params: Any) -> tables.Table:
    """The table the API's one-piece (non-streamed) path builds for a raw selection."""

    async def run() -> tables.Table:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            sel = ts.Selection(
                params.get("sensor", "").split(",") if "sensor" in params else (),
                (),
                params.get("district"),
            )
            found = await ts.resolve(conn, sel)
            ask = ts.Ask(
                start=T0, end=T0 + timedelta(days=1), resolution=ts.Resolution.raw, before=True
            )
            plan = ts.make_plan(ask, found, catalogue.load(), 10**9)
            result = await ts.fetch(conn, plan, found, "date_bin", 10**9)
            table = result.table
            table.extra = {"query": ts.describe(result, tier), "before": result.before}
            return table

    return asyncio.run(run())


@pytest.mark.parametrize("selection", [{"sensor": "AQ-1"}, {"district": "Presint 8"}])
def test_streamed_exports_equal_the_one_piece_answer(
    api: Api, data: None, selection: dict[str, str]
) -> None:
    params = {**selection, "resolution": "raw", **SPAN}
    doc = api.get("/api/v1/readings", **params)
    assert doc.status_code == 200, doc.text
    tier = orjson.loads(doc.content)["query"]["database_tier"]
    want = one_piece(api.settings.database_url or "", tier, **selection)
    assert len(want) > 100  # many chunks of 7

    csv = api.get("/api/v1/readings", format="csv", **params)
    assert csv.status_code == 200, csv.text
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["X-Pusat-Step"] == "raw"
    assert csv.content == tables.to_csv(want)

    lines = api.get("/api/v1/readings", format="jsonl", **params)
    assert lines.status_code == 200, lines.text
    assert lines.content == tables.to_jsonl(want)
    # ... and its rows are the JSON document's, byte for byte.
    rows = lines.content.rstrip(b"\n").split(b"\n")
    assert doc.content.endswith(b',"data":[' + b",".join(rows) + b"]}")

    parquet = api.get("/api/v1/readings", format="parquet", **params)
    assert parquet.status_code == 200, parquet.text
    got = pq.read_table(io.BytesIO(parquet.content))
    ref = pq.read_table(io.BytesIO(tables.to_parquet(want)))
    assert got.equals(ref, check_metadata=True)
    meta = orjson.loads(got.schema.metadata[b"pusat"])
    assert meta == orjson.loads(doc.content[: doc.content.index(b',"schema"')] + b"}")
    # Written in row groups as the rows came, not as one.
    assert pq.ParquetFile(io.BytesIO(parquet.content)).num_row_groups > 10


def test_an_empty_export_is_a_valid_file(api: Api, data: None) -> None:
    params = {"sensor": "AQ-2", "resolution": "raw", "start": "2026-01-01T00:00:00Z"}
    params["end"] = "2026-01-02T00:00:00Z"
    csv = api.get("/api/v1/readings", format="csv", **params)
    assert csv.content == b"ts,sensor_id,quantity,unit,value\n"
    assert api.get("/api/v1/readings", format="jsonl", **params).content == b""
    got = pq.read_table(io.BytesIO(api.get("/api/v1/readings", format="parquet", **params).content))
    assert got.num_rows == 0 and got.column_names == [
        "ts",
        "sensor_id",
        "quantity",
        "unit",
        "value",
    ]


# -- a large export ----------------------------------------------------------------------------

BIG = 200_000  # readings: tens of MB of JSON lines, more than the sockets between us buffer


@pytest.fixture
def big(api: Api) -> int:
    url = api.settings.database_url or ""
    write(url, sensors=[sensor("BIG-1", "air", "Presint 1", quantities=("pm25",))])
    write(url, [("BIG-1", "pm25", np.array([us(T0)]), np.array([1.0]))])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO reading_data (ts, series_id, value, received_at)"
            " SELECT %s + i * interval '1 second', series_id, i::float8 / 7, now()"
            " FROM series, generate_series(1, %s) AS i WHERE sensor_id = 'BIG-1'",
            (T0, BIG - 1),
        )
    return BIG


def _cursor_open(database_url: str) -> bool:
    # The export's connection, between two FETCHes of its cursor: the read is not finished.
    return bool(
        scalar(
            database_url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'pusat-api' AND state = 'idle in transaction'"
            " AND query LIKE 'FETCH%%'",
        )
    )


def start_reading(api: Api, query: str) -> tuple[socket.socket, bytes]:
    """A plain HTTP/1.0 client with a small receive buffer, which stops reading after the
    first rows: the server cannot have sent (or read) much more than that. Returns the socket
    and the body bytes read so far."""
    parts = urlsplit(api.url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname or "", parts.port or 80))
    sock.sendall(
        f"GET /api/v1/readings?{query} HTTP/1.0\r\nHost: x\r\n"
        f"Authorization: Bearer {api.tokens['viewer']}\r\n\r\n".encode()
    )
    first = b""
    while b"\r\n\r\n" not in first or first.count(b"\n") < 10:
        part = sock.recv(4096)
        assert part, f"the connection closed after {first!r}"
        first += part
    head, _, body = first.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock, body


@pytest.mark.parametrize("chunk_rows", [5000])
def test_a_large_export_streams_while_other_requests_are_answered(api: Api, big: int) -> None:
    url = api.settings.database_url or ""
    params = {
        "sensor": "BIG-1",
        "resolution": "raw",
        "start": T0.isoformat(),
        "end": (T0 + timedelta(days=3)).isoformat(),
    }
    query = urlencode({**params, "format": "jsonl"})
    sock, body = start_reading(api, query)
    # The first rows arrived while the cursor is still open: the rest is not yet read.
    wait_for(lambda: _cursor_open(url), what="the export's cursor, open between fetches")
    # Other requests are answered meanwhile.
    assert api.get("/api/v1/sensors").status_code == 200
    assert api.get("/healthz").status_code == 200
    assert _cursor_open(url)
    # The rest arrives whole.
    chunks = [body]
    while part := sock.recv(1 << 16):
        chunks.append(part)
    sock.close()
    lines = b"".join(chunks).rstrip(b"\n").split(b"\n")
    assert len(lines) == big
    last = orjson.loads(lines[-1])
    assert last["value"] == (big - 1) / 7.0
    assert last["ts"] == (T0 + timedelta(seconds=big - 1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    wait_for(lambda: not _cursor_open(url), what="the cursor closed")
    # Far beyond PUSAT_API_MAX_POINTS (5000 here): streamed, while one JSON document is refused.
    r = api.get("/api/v1/readings", **params)
    assert r.status_code == 400 and "too many points" in r.text


@pytest.mark.parametrize("chunk_rows", [5000])
def test_a_client_leaving_mid_export_frees_its_connection(api: Api, big: int) -> None:
    url = api.settings.database_url or ""
    query = urlencode(
        {
            "sensor": "BIG-1",
            "resolution": "raw",
            "format": "csv",
            "start": T0.isoformat(),
            "end": (T0 + timedelta(days=3)).isoformat(),
        }
    )
    sock, _ = start_reading(api, query)
    wait_for(lambda: _cursor_open(url), what="the export's cursor, open between fetches")
    sock.close()
    # The cursor's transaction ends and its connection goes back to the pool.
    wait_for(lambda: not _cursor_open(url), what="the cursor closed after the client left")
    assert not scalar(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'pusat-api' AND state LIKE 'idle in transaction%%'",
    )
    assert api.get("/api/v1/sensors").status_code == 200
