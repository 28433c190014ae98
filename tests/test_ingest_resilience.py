"""Nothing is lost: a worker killed with SIGKILL mid-stream, a database outage, a SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pusat.embedded.ports import free_port
from pusat.embedded.postgres import Postgres, start_postgres
from pusat.settings import Settings
from store import db, migrate
from tests.conftest import RunningWorker
from tests.helpers import Publisher, scalar, wait_for

pytestmark = pytest.mark.slow


def stream(root: str, n: int, t0: float) -> list[tuple[str, bytes]]:
    """n one-reading messages from 50 sensors, each with its own event time."""
    return [
        (
            f"{root}/gw-{i % 5}/json",
            json.dumps(
                {"sensor": f"K-{i % 50}", "ts": t0 + i * 0.001, "values": {"flow": i % 2000}}
            ).encode(),
        )
        for i in range(n)
    ]


def count(url: str) -> int:
    """Readings of the stream's sensors: probes that arrive late must not count."""
    return int(scalar(url, "SELECT count(*) FROM readings WHERE left(sensor_id, 2) = 'K-'"))


def spawn_worker(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PUSAT_DATABASE_URL": settings.database_url or "",
        "PUSAT_MQTT_URL": settings.mqtt_url or "",
        "PUSAT_TOPIC_ROOT": settings.topic_root,
        "PUSAT_CLIENT_ID": settings.client_id,
        "PUSAT_HOME": str(settings.home),
        "PUSAT_BATCH_MS": "100",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pusat", "ingest", "--log-level", "INFO", *args],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def probe(publisher: Publisher, settings: Settings, url: str, name: str) -> None:
    """Publish until one reading lands: proves the worker is subscribed (retrying is needed since
    a fresh session only receives what is published after its subscription)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        publisher.publish(
            f"{settings.topic_root}/probe/json",
            json.dumps({"sensor": name, "values": {"flow": 1}}),
            qos=0,
        )
        try:
            wait_for(
                lambda: scalar(url, "SELECT count(*) FROM readings WHERE sensor_id = %s", (name,)),
                timeout=1,
            )
            return
        except AssertionError:
            continue
    raise AssertionError("worker never stored the probe")


def test_kill_9_mid_stream_then_restart_stores_every_reading_once(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    log = tmp_path / "worker.log"
    proc = spawn_worker(settings, log)
    try:
        probe(publisher, settings, url, "PROBE-1")
        n = 30000
        messages = stream(settings.topic_root, n, time.time() - 3600)
        sender = threading.Thread(target=publisher.publish_many, args=(messages,))
        sender.start()
        wait_for(lambda: count(url) > 3000, timeout=60, what="some of the stream stored")
        proc.kill()  # SIGKILL: no drain, no goodbye
        proc.wait(10)
        killed_at = count(url)
        sender.join(120)
        assert not sender.is_alive()
        assert killed_at < n, "the worker must be killed mid-stream for this test to mean anything"
        proc = spawn_worker(settings, log)  # same client id: the broker resumes the session
        wait_for(
            lambda: count(url) >= n,
            timeout=120,
            interval=0.2,
            what=f"all {n} readings after the restart (log: {log})",
        )
        assert count(url) == n
        keys = scalar(
            url,
            "SELECT count(*) FROM (SELECT DISTINCT sensor_id, quantity, ts FROM readings"
            " WHERE left(sensor_id, 2) = 'K-') k",
        )
        assert keys == n
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()


@pytest.fixture
def own_pg(tmp_path: Path) -> Iterator[Postgres]:
    server = start_postgres(tmp_path / "own-pg" / "data", free_port(), durable=False)
    yield server
    server.stop()


def test_database_outage_loses_nothing(
    own_pg: Postgres, settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    with psycopg.connect(own_pg.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("outage")))
    url = db.with_database(own_pg.url, "outage")
    with psycopg.connect(url) as conn:
        migrate.upgrade(conn)
    s = settings.with_(database_url=url)
    w = RunningWorker(s).start()
    try:
        n = 6000
        messages = stream(s.topic_root, n, time.time() - 3600)
        publisher.publish_many(messages[:2000])
        wait_for(lambda: count(url) == 2000, what="first part stored")
        own_pg.stop()
        publisher.publish_many(messages[2000:])  # published while the database is down
        # Wherever the worker meets the outage (a batch, a reconnect, the tick, alarm topics),
        # it counts: wait until it has failed and retried a few times, so the outage lasts.
        wait_for(
            lambda: w.metrics.database_down() and w.metrics.db_errors_total() >= 3,
            what="the worker meeting the outage, three times",
        )
        restarted = start_postgres(own_pg.data_dir, own_pg.port, durable=False)
        try:
            wait_for(lambda: count(url) == n, timeout=60, what="everything after the outage")
            assert w.metrics.value("pusat_ingest_readings_stored_total") == n
            assert not w.metrics.database_down()
        finally:
            w.stop()
            restarted.stop()
    finally:
        if w.thread.is_alive():
            w.stop()


def test_an_idle_worker_counts_an_outage_and_says_so(own_pg: Postgres, settings: Settings) -> None:
    """No batch in flight: the tick meets the outage, and the metric and status line show it."""
    url = own_pg.url
    with psycopg.connect(url) as conn:
        migrate.upgrade(conn)
    w = RunningWorker(settings.with_(database_url=url, tick_s=0.2)).start()
    restarted: Postgres | None = None
    try:
        wait_for(lambda: w.metrics.value("pusat_ingest_database_up") == 1, what="connected")
        assert "DOWN" not in w.metrics.summary()
        own_pg.stop()
        wait_for(w.metrics.database_down, what="the idle worker meeting the outage")
        assert w.metrics.db_errors_total() > 0
        assert "database=DOWN" in w.metrics.summary()
        restarted = start_postgres(own_pg.data_dir, own_pg.port, durable=False)
        wait_for(lambda: not w.metrics.database_down(), timeout=30, what="the database back")
        assert "DOWN" not in w.metrics.summary()
    finally:
        w.stop()
        if restarted is not None:
            restarted.stop()


def test_sigterm_drains_commits_and_exits(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    log = tmp_path / "worker.log"
    proc = spawn_worker(settings, log)
    probe(publisher, settings, url, "PROBE-2")
    n = 5000
    publisher.publish_many(stream(settings.topic_root, n, time.time() - 60))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
    assert "ingest stopped" in log.read_text()
    # whatever was not committed before the exit is still at the broker: a restart finishes it
    proc = spawn_worker(settings, log)
    try:
        probe(publisher, settings, url, "PROBE-3")  # the restarted worker is up (handlers set)
        wait_for(lambda: count(url) == n, timeout=60, what="the rest after restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_a_worker_knowing_a_city_of_series_loads_them_outside_its_transactions(
    settings: Settings, database_url: str, publisher: Publisher
) -> None:
    """A restart with 200,000 series known: building their alarm state takes longer than the
    database lets a transaction wait on its worker. Before the fix the load ran inside the first
    batch's transaction, the server ended it, and the worker quarantined the batch or died."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO sensors (sensor_id, domain, district) SELECT 'BIG-' || g, 'traffic',"
            " 'D' || g % 20 FROM generate_series(1, 50000) g"
        )
        conn.execute(
            "INSERT INTO series (sensor_id, quantity) SELECT 'BIG-' || g, q"
            " FROM generate_series(1, 50000) g, unnest(ARRAY['flow', 'speed', 'occupancy',"
            " 'count']) q"
        )
    w = RunningWorker(settings.with_(db_idle_in_transaction_s=0.3)).start()
    try:
        messages = stream(settings.topic_root, 200, time.time() - 60)
        publisher.publish_many(messages)
        wait_for(lambda: count(database_url) == 200, timeout=60, what="the readings stored")
        assert w.worker.failed is None and w.thread.is_alive()
        assert scalar(database_url, "SELECT count(*) FROM quarantine") == 0
        assert w.worker.alarms.loaded
    finally:
        w.stop()
