"""Retention on plain PostgreSQL (delete by time) and TimescaleDB Apache (drop_chunks): it drops
what it should and nothing else; `pusat db status` and `pusat db maintain` report it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from ingest.commit import commit
from store import maintenance, tier
from store.writer import Batch, Readings, Writer
from tests.helpers import rows

pytestmark = pytest.mark.tiers
DAY_US = 86_400_000_000


def daily(now: datetime, days: int) -> Readings:
    """One reading a day at noon UTC, for `days` days back from today."""
    today = int(now.timestamp() * 1e6) // DAY_US * DAY_US
    ts = np.array([today - d * DAY_US + DAY_US // 2 for d in range(1, days + 1)], dtype=np.int64)
    return Readings(
        ["R1"] * days,
        ["pm25"] * days,
        [None] * days,
        ["gw"] * days,
        ts,
        np.arange(days, dtype=np.float64),
        np.full(days, ts.max(), dtype=np.int64),
    )


def test_retention_drops_what_it_should_and_nothing_else(database_url: str, db_tier: str) -> None:
    now = datetime.now(UTC)
    r = daily(now, 60)
    with psycopg.connect(database_url) as conn:
        commit(Writer(conn), Batch(r))
        t = tier.detect(conn)
        runs = maintenance.run(conn, t, maintenance.Retention(30, 365, 0, 90), 7, now)
    assert runs is not None
    cutoff = now - timedelta(days=30)
    kept = {
        int(x)
        for (x,) in rows(
            database_url, "SELECT (extract(epoch FROM ts) * 1000000)::bigint FROM reading_data"
        )
    }
    newer = {int(x) for x in r.ts_us if x >= cutoff.timestamp() * 1e6}
    assert newer <= kept  # nothing newer than the cutoff is touched
    if db_tier == "postgresql":
        assert kept == newer  # deleted by time: exactly
        method = "delete"
    else:
        # whole chunks (1 day) before the cutoff go; the chunk holding the cutoff stays
        floor = int(cutoff.timestamp() * 1e6) // DAY_US * DAY_US
        assert kept == {int(x) for x in r.ts_us if x >= floor}
        method = "drop_chunks"
    got = {
        (tbl, m) for tbl, m in rows(database_url, "SELECT table_name, method FROM maintenance_runs")
    }
    assert ("reading_data", method) in got
    # rollups keep their own, longer retention: the minute rollups of dropped days are still there
    assert rows(database_url, "SELECT count(*) FROM rollup_1m_data")[0][0] == 60


def test_db_status_and_maintain_commands(database_url: str, db_tier: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSAT_")}
    env["PUSAT_DATABASE_URL"] = database_url
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "db", "maintain"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "reading_data" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "db", "status"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    expected = "postgresql" if db_tier == "postgresql" else "timescaledb-apache"
    assert f"tier: {expected}" in out.stdout
    assert "reading_data:" in out.stdout and "last maintenance runs:" in out.stdout
    if db_tier == "timescaledb":
        assert "chunks" in out.stdout
