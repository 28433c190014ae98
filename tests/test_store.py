"""The store on a real PostgreSQL and a real TimescaleDB: migrations, tier, public surface,
stored-once writes."""

from __future__ import annotations

import time

import numpy as np
import psycopg
import pytest

from ingest.commit import commit
from store import db, migrate, tier
from store.writer import Batch, QuarantineRow, Readings, SensorMeta, Writer
from tests.conftest import Servers
from tests.helpers import rows, scalar

pytestmark = pytest.mark.tiers

PUBLIC = {
    "sensors": {"sensor_id", "domain", "district", "lat", "lon"},
    "readings": {"ts", "sensor_id", "quantity", "value"},
    "latest": {"sensor_id", "quantity", "ts", "value"},
    "quarantine": {"received_at", "topic", "reason", "payload"},
}


def readings(items: list[tuple[str, str, float, float]]) -> Readings:
    now = time.time()
    return Readings(
        sensor=[s for s, _, _, _ in items],
        quantity=[q for _, q, _, _ in items],
        unit=[None] * len(items),
        gateway=["gw"] * len(items),
        ts_us=np.array([round(t * 1e6) for _, _, t, _ in items], dtype=np.int64),
        value=np.array([v for _, _, _, v in items], dtype=np.float64),
        received_us=np.full(len(items), round(now * 1e6), dtype=np.int64),
    )


def test_migrations_are_recorded_and_safe_to_repeat(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        assert migrate.upgrade(conn) == []  # the template already holds them all
        assert migrate.current(conn) == migrate.available()[-1].version
    versions = [r[0] for r in rows(database_url, "SELECT version FROM schema_migrations")]
    assert versions == [m.version for m in migrate.available()]


def test_fresh_database_upgrades_from_nothing(servers: Servers, db_tier: str) -> None:
    admin = servers.url(db_tier)
    name = f"fresh_{int(time.time() * 1000)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(db.with_database(admin, name)) as conn:
            assert migrate.current(conn) is None
            applied = migrate.upgrade(conn)
            assert [m.version for m in applied] == [m.version for m in migrate.available()]
            assert migrate.upgrade(conn) == []
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_tier_is_detected(database_url: str, db_tier: str) -> None:
    with psycopg.connect(database_url) as conn:
        t = tier.detect(conn)
        hypertables = (
            {
                r[0]
                for r in conn.execute(
                    "SELECT hypertable_name FROM timescaledb_information.hypertables"
                )
            }
            if t.timescale
            else set()
        )
    if db_tier == "postgresql":
        assert (t.name, t.bucket_function, t.timescaledb_version) == (
            tier.POSTGRESQL,
            "date_bin",
            None,
        )
    else:
        assert t.name == tier.TIMESCALE_APACHE and t.bucket_function == "time_bucket"
        assert {"reading_data", "rollup_1m_data", "rollup_1h_data", "quarantine"} <= hypertables


@pytest.mark.parametrize("relation", sorted(PUBLIC))
def test_public_sql_surface(database_url: str, relation: str) -> None:
    cols = {
        r[0]
        for r in rows(
            database_url,
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
            (relation,),
        )
    }
    assert PUBLIC[relation] <= cols


def test_same_reading_twice_is_stored_once(database_url: str) -> None:
    t0 = time.time() - 60
    batch = Batch(readings([("S1", "pm25", t0, 10.0), ("S1", "pm25", t0 + 1, 11.0)]))
    with psycopg.connect(database_url) as conn:
        w = Writer(conn)
        first = commit(w, batch)
        second = commit(w, batch)
        # the same key inside one batch counts once too
        third = commit(
            w, Batch(readings([("S1", "pm25", t0 + 2, 1.0), ("S1", "pm25", t0 + 2, 1.0)]))
        )
    assert (first.stored, first.duplicates) == (2, 0)
    assert (second.stored, second.duplicates) == (0, 2)
    assert (third.stored, third.duplicates) == (1, 1)
    assert scalar(database_url, "SELECT count(*) FROM readings") == 3
    # an unknown sensor is registered, unprovisioned
    assert rows(database_url, "SELECT sensor_id, provisioned FROM sensors") == [("S1", False)]


def test_writers_sharing_caches_know_each_others_series(database_url: str) -> None:
    """A worker's two connections share one cache of series (committed rows only): what one
    registered the other knows without asking the database."""
    t0 = time.time() - 60
    r = readings([("S1", "pm25", t0, 10.0), ("S2", "no2", t0, 3.0)])
    with psycopg.connect(database_url) as conn, psycopg.connect(database_url) as other:
        first = Writer(conn)
        ids = first.series_ids(r)
        second = Writer(other, share=first)
        other.close()  # any query would fail now
        assert second.series_ids(r).tolist() == ids.tolist()
    with psycopg.connect(database_url) as third:  # a writer of its own asks the database
        assert Writer(third).series_ids(r).tolist() == ids.tolist()


def test_a_batch_repeating_a_reading_is_written_again_through_staging(database_url: str) -> None:
    t0 = time.time() - 60
    repeated = [("S1", "pm25", t0, 1.0), ("S1", "pm25", t0, 1.0), ("S1", "pm25", t0 + 1, 2.0)]
    with psycopg.connect(database_url) as conn:
        w = Writer(conn)
        first = commit(w, Batch(readings(repeated)))  # the direct COPY meets its own repeat
        assert not w.expect_new  # so the next batch goes through staging first
        second = commit(w, Batch(readings([("S1", "pm25", t0 + 2, 3.0)])))
        assert w.expect_new  # nothing was repeated: straight into the table again
    assert (first.stored, first.duplicates) == (2, 1)
    assert (second.stored, second.duplicates) == (1, 0)
    assert rows(database_url, "SELECT sum(count)::int, sum(sum) FROM rollup_1m") == [(3, 6.0)]
    assert rows(database_url, "SELECT sum(count)::int, sum(sum) FROM rollup_1h") == [(3, 6.0)]
    assert rows(database_url, "SELECT value FROM latest") == [(3.0,)]


def test_latest_moves_only_forward_in_event_time(database_url: str) -> None:
    t0 = time.time() - 600
    with psycopg.connect(database_url) as conn:
        w = Writer(conn)
        commit(w, Batch(readings([("S1", "speed", t0 + 10, 50.0), ("S1", "speed", t0 + 5, 40.0)])))
        commit(w, Batch(readings([("S1", "speed", t0, 30.0)])))  # late
    got = rows(database_url, "SELECT value, extract(epoch FROM ts)::float FROM latest")
    assert got == [(50.0, pytest.approx(t0 + 10, abs=1e-5))]
    assert scalar(database_url, "SELECT count(*) FROM readings") == 3  # late data still in history


def test_quarantine_keeps_binary_payloads_and_meta_provisions(database_url: str) -> None:
    raw = b"\x00\xffnot text"
    batch = Batch(
        readings([]),
        quarantine=[
            QuarantineRow(
                time.time(), "pusat/v1/gw/senml", "gw", "malformed_json", "not JSON", None, raw
            )
        ],
        sensors=[SensorMeta("AQ-1", "gw", "air", "Presint 1", 2.93, 101.69, quantities=("pm25",))],
    )
    with psycopg.connect(database_url) as conn:
        commit(Writer(conn), batch)
    ((payload, encoding),) = rows(database_url, "SELECT payload, payload_encoding FROM quarantine")
    import base64

    assert encoding == "base64" and base64.b64decode(payload) == raw
    assert rows(database_url, "SELECT district, provisioned, quantities FROM sensors") == [
        ("Presint 1", True, ["pm25"])
    ]


class _Abort(Exception):
    pass


def test_a_rolled_back_meta_does_not_count_as_provisioned(database_url: str) -> None:
    meta = Batch(readings([]), sensors=[SensorMeta("AQ-9", "gw", "air", quantities=("pm25",))])
    with psycopg.connect(database_url) as conn:
        w = Writer(conn)
        with pytest.raises(_Abort), w.transaction() as tx:
            w.write_side(tx, meta)
            raise _Abort  # the batch's transaction fails after the sensor was written
        commit(w, Batch(readings([("S1", "pm25", time.time(), 1.0)])))  # a later batch commits
        assert w.provisioned_sensors({"AQ-9"}) == set()
    assert scalar(database_url, "SELECT count(*) FROM sensors WHERE sensor_id = 'AQ-9'") == 0


def test_rollups_merge_late_data_and_never_count_a_duplicate(database_url: str) -> None:
    base = (int(time.time()) // 3600 - 2) * 3600  # an hour boundary two hours ago
    first = [("R1", "pm25", base + 10.0, 10.0), ("R1", "pm25", base + 50.0, 30.0)]
    late = [("R1", "pm25", base + 5.0, 2.0), ("R1", "pm25", base + 70.0, 7.0)]
    with psycopg.connect(database_url) as conn:
        w = Writer(conn)
        commit(w, Batch(readings(first)))
        commit(w, Batch(readings(late + first)))  # late readings plus a redelivery
    got = rows(
        database_url,
        "SELECT extract(epoch FROM bucket)::bigint, count, min, max, mean, first, last"
        " FROM rollup_1m ORDER BY bucket",
    )
    assert got == [(base, 3, 2.0, 30.0, 14.0, 2.0, 30.0), (base + 60, 1, 7.0, 7.0, 7.0, 7.0, 7.0)]
    hour = rows(database_url, "SELECT count, sum, first, last FROM rollup_1h")
    assert hour == [(4, 49.0, 2.0, 7.0)]


def test_the_tables_ingest_rewrites_leave_room_on_their_pages(
    database_url: str, db_tier: str
) -> None:
    """Migration 0012: room for HOT updates, on the tables and (TimescaleDB) on the chunks
    made after it, which is where the rollups' rows are."""
    t0 = time.time() - 600
    with psycopg.connect(database_url) as conn:
        commit(Writer(conn), Batch(readings([("S1", "speed", t0, 50.0)])))
    want = {
        "latest_data": "50",
        "rollup_1h_data": "50",
        "rollup_1m_data": "70",
        "alert_state": "50",
    }
    query = (
        "SELECT c.relname, o.option_value FROM pg_class c,"
        " pg_options_to_table(c.reloptions) o WHERE c.relname = %s AND o.option_name = 'fillfactor'"
    )
    for table, fillfactor in want.items():
        assert rows(database_url, query, (table,)) == [(table, fillfactor)]
    if db_tier == "timescaledb":
        chunks = rows(
            database_url,
            "SELECT chunk_schema || '.' || chunk_name FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'rollup_1m_data'",
        )
        assert chunks, "the reading made a chunk"
        for (chunk,) in chunks:
            got = scalar(
                database_url,
                "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = %s::regclass",
                (chunk,),
            )
            assert got is not None and "fillfactor=70" in got, chunk
