"""Reads off the primary: the API with PUSAT_READ_DATABASE_URL on a real streaming replica of
Debian's PostgreSQL (made by pg_basebackup, started by the test on free ports). Reads come from
the replica (a reading written while its replay is paused stays unseen until it resumes), writes
and tokens go to the primary, and /healthz and /metrics show the replica's lag."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest

from api import auth
from api.server import ServerThread
from pusat.embedded import pgnode
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from store import db, migrate
from tests.helpers import rows, wait_for
from tests.test_api_support import make_tokens, raise_alert, us, write

pytestmark = pytest.mark.skipif(
    pgnode.bin_dir() is None, reason="Debian's PostgreSQL is not installed"
)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[str, str]]:
    primary = pgnode.start_primary("127.0.0.1", free_port())
    replica = None
    try:
        with psycopg.connect(primary.url) as conn:
            migrate.upgrade(conn)
        replica = pgnode.start_replica(primary, "127.0.0.1", free_port())
        yield primary.url, replica.url
    finally:
        for node in (replica, primary):
            if node is not None:
                pgnode.remove(node)


def replay(url: str, run: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_resume()" if run else "SELECT pg_wal_replay_pause()")


def latest(c: httpx.Client, sensor: str) -> list[float]:
    r = c.get("/api/v1/latest", params={"sensor": sensor})
    assert r.status_code == 200, r.text
    return [row["value"] for row in r.json()]


def test_reads_come_from_the_replica_writes_go_to_the_primary_lag_is_shown(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    primary, replica = pair
    settings = Settings(
        database_url=primary,
        read_database_url=replica,
        api_port=free_port(),
        api_token_cache_s=0.0,
        home=tmp_path / "home",
    )
    now = us(datetime.now(UTC))
    write(primary, [("RR-1", "pm25", np.array([now - 60_000_000]), np.array([12.0]))])
    tokens, _ = make_tokens(primary)
    server = ServerThread(settings).start()
    headers = {"Authorization": f"Bearer {tokens['operator']}"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
            wait_for(lambda: latest(c, "RR-1") == [12.0], what="the replica has the first reading")
            health = c.get("/healthz").json()
            assert health["replica"]["configured"] and health["replica"]["ok"]
            assert health["status"] == "ok"

            replay(replica, run=False)
            try:
                write(primary, [("RR-1", "pm25", np.array([now]), np.array([30.0]))])
                # the primary has it, the API (reading the paused replica) does not
                assert rows(primary, "SELECT value FROM latest WHERE sensor_id = 'RR-1'") == [
                    (30.0,)
                ]
                assert latest(c, "RR-1") == [12.0]
                lagging = wait_for(
                    lambda: (h := c.get("/healthz").json()["replica"])["lag_bytes"] and h,
                    what="the lag in /healthz",
                )
                assert lagging["lag_s"] > 0
                metrics = c.get("/metrics").text
                assert "pusat_api_replica_lag_bytes" in metrics
                # writes and token checks go to the primary: a token made now works, an
                # acknowledgement is taken (a replica refuses both kinds of write)
                with db.connect(primary) as conn:
                    _, fresh = auth.create_token(conn, "operator", "made-while-paused")
                alert = raise_alert(primary, "RR-1")
                r = c.post(
                    f"/api/v1/alerts/{alert}/ack",
                    headers={"Authorization": f"Bearer {fresh}"},
                    json={"comment": "seen"},
                )
                assert r.status_code == 200, r.text
                assert rows(primary, "SELECT state FROM alerts WHERE id = %s", (alert,)) == [
                    ("acknowledged",)
                ]
            finally:
                replay(replica, run=True)
            wait_for(lambda: latest(c, "RR-1") == [30.0], what="the replica catching up")
            caught_up = wait_for(
                lambda: (h := c.get("/healthz").json()["replica"])["lag_bytes"] == 0 and h,
                what="no lag once replayed",
            )
            assert caught_up["lag_s"] == 0.0
    finally:
        server.stop()


def test_without_a_replica_health_says_so(pair: tuple[str, str], tmp_path: Path) -> None:
    primary, _ = pair
    settings = Settings(database_url=primary, api_port=free_port(), home=tmp_path / "home")
    server = ServerThread(settings).start()
    try:
        health = httpx.get(f"{server.url}/healthz", timeout=30).json()
        assert health["replica"] == {
            "configured": False,
            "ok": None,
            "lag_s": None,
            "lag_bytes": None,
            "error": None,
        }
    finally:
        server.stop()
