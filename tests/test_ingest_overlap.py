"""Back-to-back batches overlap (the next one's readings go out on a second connection while
the last one commits): each reading is still stored once, rollups count it once, and a batch
the database refuses neither blocks nor loses the batch sent behind it."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from pusat.settings import Settings
from tests.conftest import RunningWorker
from tests.helpers import Publisher, rows, scalar, wait_for

pytestmark = pytest.mark.tiers

SENSORS = 20


def message(root: str, i: int, t0: float, value: float | None = None) -> tuple[str, bytes]:
    doc = {
        "sensor": f"OV-{i % SENSORS}",
        "ts": t0 + i,
        "values": {"pm25": float(i % 500) if value is None else value},
    }
    return f"{root}/gw-{i % 3}/json", json.dumps(doc).encode()


def preload(settings: Settings, publisher: Publisher, messages: list[tuple[str, bytes]]) -> None:
    """Queue ``messages`` for the worker's session before it runs, so batches come back to back."""
    RunningWorker(settings).start().stop()  # subscribes: the broker keeps the session's queue
    publisher.publish_many(messages)


def test_overlapping_batches_store_each_reading_once(
    settings: Settings, publisher: Publisher
) -> None:
    url = settings.database_url
    assert url
    small = settings.with_(batch_size=20, batch_ms=1000)
    t0 = time.time() - 3 * 3600
    unique = 3000
    msgs = [message(small.topic_root, i, t0) for i in range(unique)]
    # Every 50th message again 30 messages later: the copy lands in a later batch, whose
    # readings may reach the database while the batch holding the original is not committed.
    again = [(30 + i, msgs[i]) for i in range(0, unique - 30, 50)]
    for offset, (at, m) in enumerate(again):
        msgs.insert(at + offset + 1, m)
    preload(small, publisher, msgs)
    w = RunningWorker(small).start()
    try:
        wait_for(
            lambda: (
                w.metrics.value("pusat_ingest_readings_stored_total") == unique
                and w.metrics.value("pusat_ingest_readings_duplicate_total") == len(again)
            ),
            timeout=120,
            what=f"{unique} stored and {len(again)} duplicates",
        )
        assert w.metrics.value("pusat_ingest_batches_overlapped_total") > 0
    finally:
        w.stop()
    assert int(scalar(url, "SELECT count(*) FROM readings")) == unique
    # Each reading merged into the rollups once, in both tiers.
    for table in ("rollup_1m", "rollup_1h"):
        n, total = rows(url, f"SELECT sum(count), sum(sum) FROM {table}")[0]
        assert (n, total) == (unique, sum(float(i % 500) for i in range(unique))), table
    newest = rows(url, "SELECT sensor_id, value FROM latest ORDER BY sensor_id")
    expected = {f"OV-{i % SENSORS}": float(i % 500) for i in range(unique - SENSORS, unique)}
    assert dict(newest) == expected


def test_a_refused_batch_does_not_lose_the_batch_behind_it(
    settings: Settings, publisher: Publisher
) -> None:
    url = settings.database_url
    assert url
    small = settings.with_(batch_size=10, batch_ms=1000)
    # The database refuses any rollup row holding the value 666 (a bug or a constraint a
    # migration added): that batch's merge fails while the next batch's readings are in flight.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_666() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.max = 666 THEN RAISE EXCEPTION 'no 666 here'; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_666 BEFORE INSERT ON rollup_1m_data"
            " FOR EACH ROW EXECUTE FUNCTION refuse_666()"
        )
    t0 = time.time() - 3 * 3600
    total = 400
    bad = 205  # the sixth message of the 21st batch
    msgs = [message(small.topic_root, i, t0, 666.0 if i == bad else 1.0) for i in range(total)]
    preload(small, publisher, msgs)
    w = RunningWorker(small).start()
    try:
        # The refused batch's ten messages are quarantined whole; every other reading lands.
        wait_for(
            lambda: (
                w.metrics.value("pusat_ingest_readings_stored_total") == total - 10
                and w.metrics.value("pusat_ingest_quarantined_total", {"reason": "store_error"})
                == 10
            ),
            timeout=120,
            what="every other batch stored, the refused one quarantined",
        )
        assert w.metrics.value("pusat_ingest_batches_overlapped_total") > 0
    finally:
        w.stop()
    epochs = rows(url, "SELECT extract(epoch FROM ts)::float8 FROM readings")
    stored = {round(ts - t0) for (ts,) in epochs}
    refused = set(range(200, 210))
    assert stored == set(range(total)) - refused
    assert int(scalar(url, "SELECT sum(count) FROM rollup_1m")) == total - 10
    assert [r[0] for r in rows(url, "SELECT reason FROM quarantine")] == ["store_error"] * 10
