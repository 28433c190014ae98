"""The TimescaleDB community edition's SQL, checked on PGlite's TimescaleDB build over the wire
protocol: hypertables from the migrations, retention and compression policies, and a continuous
aggregate that answers long ranges exactly as the platform's own rollups do.

PGlite serves one session at a time, has no COPY FROM STDIN and never runs policies by itself,
so data goes in with INSERT and jobs run with CALL run_job(id).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest

from processing import rollups
from pusat.embedded.ports import free_port
from store import maintenance, migrate, tier
from tests.helpers import wait_for

SERVER = Path(__file__).resolve().parent.parent / "deploy" / "pglite" / "server.mjs"
DAY_US = 86_400_000_000


def pglite_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "pusat" / "pglite"


@pytest.fixture(scope="module")
def community() -> Iterator[psycopg.Connection]:
    modules = pglite_dir() / "node_modules" / "@unni-craftsman" / "pglite"
    if shutil.which("node") is None or not modules.exists():
        pytest.skip(
            f"community-edition tier skipped: no PGlite TimescaleDB build in"
            f" {pglite_dir()} (`make test` installs it with npm)"
        )
    port = free_port()
    log = pglite_dir() / f"server-{port}.log"
    # the server module resolves its packages from the folder it sits in
    shutil.copy(SERVER, pglite_dir() / "server.mjs")
    proc = subprocess.Popen(
        ["node", str(pglite_dir() / "server.mjs"), str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"postgresql://postgres:any@127.0.0.1:{port}/postgres"

    def up() -> psycopg.Connection | None:
        if proc.poll() is not None:
            raise AssertionError(f"PGlite server exited: {log.read_text()}")
        try:
            return psycopg.connect(
                url, sslmode="disable", prepare_threshold=None, autocommit=True, connect_timeout=2
            )
        except psycopg.OperationalError:
            return None

    conn = wait_for(up, timeout=60, interval=0.2, what="the PGlite server")
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        yield conn
    finally:
        conn.close()
        proc.terminate()
        proc.wait(10)


def test_migrations_build_hypertables_and_tier_is_community(
    community: psycopg.Connection,
) -> None:
    migrate.upgrade(community)
    assert migrate.upgrade(community) == []
    t = tier.detect(community)
    assert t.name == tier.TIMESCALE_COMMUNITY and t.bucket_function == "time_bucket"
    hyper = {
        r[0]
        for r in community.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables"
        )
    }
    assert {"reading_data", "rollup_1m_data", "rollup_1h_data", "quarantine"} <= hyper
    caggs = {
        r[0]
        for r in community.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates"
        )
    }
    assert "reading_1h_cagg" in caggs


def _load(conn: psycopg.Connection, now: datetime) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readings every 20 minutes for 60 days for two series, inserted row by row."""
    conn.execute("INSERT INTO sensors (sensor_id) VALUES ('C1') ON CONFLICT DO NOTHING")
    ids = [
        conn.execute(
            "INSERT INTO series (sensor_id, quantity, unit) VALUES ('C1', %s, 'x')"
            " ON CONFLICT (sensor_id, quantity) DO UPDATE SET unit = excluded.unit"
            " RETURNING series_id",
            (q,),
        ).fetchone()[0]
        for q in ("pm25", "pm10")
    ]  # type: ignore[index]
    end = int(now.timestamp() * 1e6) // DAY_US * DAY_US
    ts = np.arange(end - 60 * DAY_US, end, 20 * 60_000_000, dtype=np.int64)
    series = np.repeat(np.array(ids, dtype=np.int32), len(ts))
    ts_all = np.tile(ts, len(ids))
    value = np.round(np.sin(ts_all / 3.6e9) * 40 + 50 + series, 3)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO reading_data (ts, series_id, value, received_at)"
            " VALUES (to_timestamp(%s / 1e6), %s, %s, now())",
            list(zip(ts_all.tolist(), series.tolist(), value.tolist(), strict=True)),
        )
    return series, ts_all, value


def test_policies_cagg_compression_and_retention(community: psycopg.Connection) -> None:
    migrate.upgrade(community)
    now = datetime.now(UTC)
    series, ts, value = _load(community, now)
    t = tier.detect(community)
    runs = maintenance.run(community, t, maintenance.Retention(30, 365, 0, 90), 7, now)
    assert runs is not None
    jobs = {
        (p, h): j
        for j, p, h in community.execute(
            "SELECT job_id, proc_name, hypertable_name FROM timescaledb_information.jobs"
        )
    }
    assert ("policy_retention", "reading_data") in jobs
    assert ("policy_compression", "reading_data") in jobs

    # the continuous aggregate answers a 60-day range exactly as the platform's rollups
    community.execute("CALL refresh_continuous_aggregate('reading_1h_cagg', NULL, NULL)")
    cagg = community.execute(
        "SELECT series_id, (extract(epoch FROM bucket) * 1000000)::bigint, count, sum, min, max,"
        " (extract(epoch FROM first_ts) * 1000000)::bigint, first,"
        " (extract(epoch FROM last_ts) * 1000000)::bigint, last"
        " FROM reading_1h_cagg ORDER BY series_id, bucket"
    ).fetchall()
    ours = rollups.of_readings(series, ts, value, rollups.HOUR_US)
    expected = [
        tuple(getattr(ours, f)[i].item() for f in rollups.Partials.__dataclass_fields__)
        for i in range(len(ours))
    ]
    assert len(cagg) == len(expected) == 2 * 60 * 24
    for got, want in zip(cagg, expected, strict=True):
        assert got[:3] == want[:3] and got[4:] == pytest.approx(want[4:])
        assert got[3] == pytest.approx(want[3])

    # compression: old chunks compressed; data and the stored-once guarantee unchanged
    community.execute(f"CALL run_job({jobs[('policy_compression', 'reading_data')]})")
    compressed = community.execute(
        "SELECT count(*) FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'reading_data' AND is_compressed"
    ).fetchone()
    assert compressed and compressed[0] >= 50
    total = community.execute("SELECT count(*), sum(value) FROM reading_data").fetchone()
    assert total and total[0] == len(ts) and total[1] == pytest.approx(float(value.sum()))
    old = int(ts[0])
    community.execute(
        "INSERT INTO reading_data (ts, series_id, value, received_at)"
        " VALUES (to_timestamp(%s / 1e6), %s, 999, now()) ON CONFLICT DO NOTHING",
        (old, int(series[0])),
    )
    assert community.execute("SELECT count(*) FROM reading_data").fetchone() == (len(ts),)

    # retention: whole chunks older than 30 days go, nothing newer
    community.execute(f"CALL run_job({jobs[('policy_retention', 'reading_data')]})")
    left = community.execute(
        "SELECT min((extract(epoch FROM ts) * 1000000)::bigint), count(*) FROM reading_data"
    ).fetchone()
    assert left is not None
    cutoff = int(now.timestamp() * 1e6) - 30 * DAY_US
    assert cutoff - DAY_US <= left[0] <= cutoff + DAY_US
    assert left[1] == int((ts >= left[0]).sum())
