"""Alarms end to end on real services: raise, clear, audit trail, MQTT, restart, stale, flapping."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest.alarms import Alarms
from ingest.commit import commit
from processing import catalogue, rules
from pusat.embedded.broker import Broker
from pusat.settings import Settings
from store import alerts as lifecycle
from store.writer import Batch, Readings, Writer
from tests.conftest import RunningWorker
from tests.helpers import Publisher, plan_nodes, rows, wait_for

pytestmark = pytest.mark.tiers


class Watcher:
    """An MQTT client that keeps the newest payload per topic (a siren, an SMS gateway)."""

    def __init__(self, broker: Broker, pattern: str) -> None:
        parts = urlsplit(broker.url)
        self.latest: dict[str, bytes] = {}
        self.lock = threading.Lock()
        subscribed = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"w-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        c.on_connect = lambda cl, *a: cl.subscribe(pattern, qos=1)
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_message = self._on_message
        assert parts.hostname and parts.port
        c.connect(parts.hostname, parts.port)
        c.loop_start()
        assert subscribed.wait(10)
        self.client = c

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.latest[msg.topic] = bytes(msg.payload)

    def get(self, topic: str) -> bytes | None:
        with self.lock:
            return self.latest.get(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watcher(broker: Broker, settings: Settings) -> Iterator[Watcher]:
    w = Watcher(broker, f"{settings.topic_root}/alerts/#")
    yield w
    w.close()


def pm25(sensor: str, t: float, v: float) -> bytes:
    return json.dumps([{"bn": f"{sensor}:", "bt": t, "n": "pm25", "u": "ug/m3", "v": v}]).encode()


def alerts(url: str) -> list[tuple[object, ...]]:
    return rows(
        url, "SELECT id, sensor_id, quantity, rule, state, severity FROM alerts ORDER BY id"
    )


def test_threshold_alarm_raises_clears_closes_with_audit_and_mqtt(
    worker: RunningWorker, publisher: Publisher, settings: Settings, watcher: Watcher
) -> None:
    url = settings.database_url
    assert url
    topic = f"{settings.topic_root}/gw/senml"
    t0 = round(time.time()) - 250  # recent enough that the sensor is not stale (5 x 60 s)
    for dt, v in [(0, 60.0), (60, 70.0)]:  # 60 s above 55.4: not yet (needs 2 minutes)
        publisher.publish(topic, pm25("AQ-1", t0 + dt, v))
    wait_for(lambda: len(rows(url, "SELECT 1 FROM readings")) == 2, what="first readings")
    assert alerts(url) == []
    publisher.publish(topic, pm25("AQ-1", t0 + 120, 65.0))  # 2 minutes: raised
    got = wait_for(lambda: alerts(url), what="the alarm")
    alert_id = got[0][0]
    assert got == [(alert_id, "AQ-1", "pm25", "pm25:threshold-above:warning", "active", "warning")]
    retained = f"{settings.topic_root}/alerts/warning/AQ-1"
    msg = wait_for(lambda: watcher.get(retained), what="the alarm on MQTT")
    doc = json.loads(msg)
    assert doc["alerts"][0]["state"] == "active" and doc["sensor"] == "AQ-1"
    publisher.publish(topic, pm25("AQ-1", t0 + 180, 50.0))  # hysteresis band: still active
    publisher.publish(topic, pm25("AQ-1", t0 + 240, 40.0))  # below clear (45): cleared
    wait_for(lambda: alerts(url)[0][4] == "cleared", what="cleared, awaiting acknowledgement")
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        assert lifecycle.acknowledge(cur, alert_id, "op-anna", "seen on the wall") == "closed"
    events = rows(
        url,
        "SELECT event, from_state, to_state, actor, comment FROM alert_events"
        " WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    )
    assert events == [
        ("raise", None, "active", "system", ""),
        ("clear", "active", "cleared", "system", ""),
        ("ack", "cleared", "closed", "op-anna", "seen on the wall"),
    ]
    raised_at = rows(url, "SELECT extract(epoch FROM raised_at)::float FROM alerts")[0][0]
    assert raised_at == pytest.approx(round(t0 + 120, 6), abs=1e-3)  # event time, not arrival


def test_alarm_state_survives_a_worker_restart(settings: Settings, publisher: Publisher) -> None:
    url = settings.database_url
    assert url
    topic = f"{settings.topic_root}/gw/senml"
    t0 = round(time.time()) - 200
    first = RunningWorker(settings).start()
    for dt in (0, 45, 90):  # the condition has held 90 s of the 120 s needed
        publisher.publish(topic, pm25("AQ-R", t0 + dt, 80.0))
    wait_for(lambda: len(rows(url, "SELECT 1 FROM readings")) == 3, what="readings")
    first.stop()
    second = RunningWorker(settings).start()
    try:
        publisher.publish(topic, pm25("AQ-R", t0 + 125, 80.0))
        got = wait_for(lambda: alerts(url), what="the alarm after the restart")
        assert [(a[1], a[4]) for a in got] == [("AQ-R", "active")]
    finally:
        second.stop()


def test_threshold_state_is_saved_when_it_changes_and_still_restores(database_url: str) -> None:
    t0 = time.time() - 600

    def reading(t: float, v: float) -> Batch:
        now = round(time.time() * 1e6)
        at = np.array([round(t * 1e6)], dtype=np.int64)
        return Batch(
            Readings(["AQ-S"], ["pm25"], ["ug/m3"], ["gw"], at, np.array([v]), at * 0 + now)
        )

    def saved() -> dict[str, tuple[object, ...]]:
        got = rows(
            database_url,
            "SELECT r.key, s.active, s.run_start, s.last_ts FROM alert_state s"
            " JOIN alert_rules r USING (rule_id)",
        )
        return {str(k): tuple(rest) for k, *rest in got}

    warning, flatline = "pm25:threshold-above:warning", "pm25:flatline:info"
    with psycopg.connect(database_url) as conn:
        w, alarms = Writer(conn), Alarms(rules.load(None), catalogue.load(), "t/v1")
        commit(w, reading(t0, 20.0), alarms)
        # Below both thresholds, nothing to save for them; the flatline rule compares each
        # reading with the one before, so its row follows every reading.
        assert set(saved()) == {flatline}
        commit(w, reading(t0 + 10, 80.0), alarms)  # above the warning threshold: a run starts
        started = saved()[warning]
        assert started == (False, round((t0 + 10) * 1e6), round((t0 + 10) * 1e6))
        commit(w, reading(t0 + 20, 81.0), alarms)  # still holding: the same run
        assert saved()[warning] == started
        assert saved()[flatline][2] == round((t0 + 20) * 1e6)
    # A restarted worker carries the run on: 2 minutes after it started, the alarm raises.
    with psycopg.connect(database_url) as conn:
        w, alarms = Writer(conn), Alarms(rules.load(None), catalogue.load(), "t/v1")
        done = commit(w, reading(t0 + 130, 82.0), alarms)
    assert ("AQ-S", "warning") in done.alarms
    assert saved()[warning][:2] == (True, round((t0 + 10) * 1e6))


def test_a_load_registers_every_series_as_their_rows_one_by_one_would(database_url: str) -> None:
    """A worker's start registers every known series from arrays of codes; what each series
    gets (its rules, sensor, quantity, and its sensor's stale rule and period) is what the
    rows of those series registered through the ordinary path give."""
    S = 1_000_000
    scoped = [
        rules.Rule("pm25", "threshold", "warning", above=50),
        rules.Rule(
            "pm25", "threshold", "warning", above=40, scope_kind="district", scope_value="D1"
        ),
        rules.Rule("flow", "threshold", "warning", above=9, scope_kind="sensor", scope_value="S3"),
        rules.Rule(
            "flow", "rate", "critical", above=2, per_us=S, scope_kind="domain", scope_value="air"
        ),
        rules.Rule(None, "stale", "warning", factor=3),
        rules.Rule(None, "stale", "critical", factor=10, scope_kind="district", scope_value="D2"),
        rules.Rule(None, "stale", "info", factor=2, scope_kind="sensor", scope_value="S1"),
    ]
    sensors = [
        (f"S{i}", [None, "D1", "D2"][i % 3], [None, "air", "traffic"][i % 2]) for i in range(8)
    ]
    with psycopg.connect(database_url) as conn:
        for sensor, district, domain in sensors:
            conn.execute(
                "INSERT INTO sensors (sensor_id, district, domain) VALUES (%s, %s, %s)",
                (sensor, district, domain),
            )
            for q in ("pm25", "flow", "odd_quantity")[: 1 + int(sensor[1:]) % 3]:
                conn.execute(
                    "INSERT INTO series (sensor_id, quantity) VALUES (%s, %s)", (sensor, q)
                )
        conn.commit()
        loaded = Alarms(scoped, catalogue.load(), "t/v1")
        loaded.reload(conn)
        by_rows = Alarms(scoped, catalogue.load(), "t/v1")
        by_rows._register(conn.execute(Alarms._SERIES).fetchall())
        ids = [r[0] for r in conn.execute("SELECT series_id FROM series ORDER BY 1").fetchall()]

    def described(a: Alarms) -> list[tuple[object, ...]]:
        e = a.engine
        out: list[tuple[object, ...]] = []
        for sid in ids:
            k = int(e.sensor_of[sid])
            out.append(
                (
                    sid,
                    [r for r in range(len(scoped)) if e.applies[r, sid]],
                    e.sensors[k],
                    a._quantities[int(a._quantity_of[sid])],
                    int(e.sensor_stale_rule[k]),
                    int(e.sensor_period_us[k]),
                )
            )
        return out

    assert loaded.series == by_rows.series == len(ids) > 8
    assert described(loaded) == described(by_rows)
    assert sorted(loaded.engine.sensors) == sorted(s for s, _, _ in sensors)


def test_stale_sensor_raised_without_data_and_cleared_by_data(
    settings: Settings, publisher: Publisher
) -> None:
    url = settings.database_url
    assert url
    w = RunningWorker(settings.with_(tick_s=0.1)).start()
    try:
        topic = f"{settings.topic_root}/gw/json"
        # pm25's period is 60 s, the default allowance 5 periods: 10 minutes of silence is stale
        publisher.publish(
            topic, json.dumps({"sensor": "QUIET-1", "ts": time.time() - 600, "values": {"pm25": 5}})
        )
        got = wait_for(lambda: alerts(url), what="a stale alarm from the tick")
        assert [(a[1], a[2], a[3], a[4]) for a in got] == [
            ("QUIET-1", None, "sensor:stale:warning", "active")
        ]
        publisher.publish(topic, json.dumps({"sensor": "QUIET-1", "values": {"pm25": 6}}))
        wait_for(lambda: alerts(url)[0][4] == "cleared", what="data clears it")
    finally:
        w.stop()


def test_flapping_alarm_is_not_reraised(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nquantity = "pm25"\nkind = "threshold"\nabove = 55.4\nclear = 45.0\n'
        'severity = "warning"\nflap_count = 4\nflap_window = "1h"\n'
    )
    w = RunningWorker(settings.with_(rules=rules)).start()
    try:
        topic = f"{settings.topic_root}/gw/senml"
        t0 = round(time.time()) - 100
        for i in range(8):  # above, below, above, ... every 10 s
            publisher.publish(topic, pm25("FLAP-1", t0 + 10 * i, 60.0 if i % 2 == 0 else 40.0))
        wait_for(lambda: len(rows(url, "SELECT 1 FROM readings")) == 8, what="readings")
        wait_for(lambda: [a[4] for a in alerts(url)] == ["flapping"], what="one flapping alarm")
        events = rows(url, "SELECT event, to_state FROM alert_events ORDER BY id")
        assert events[:3] == [("raise", "active"), ("clear", "cleared"), ("reraise", "active")]
        became = next(i for i, e in enumerate(events) if e[1] == "flapping")
        assert became == 4  # the first raise after 4 changes in the window: flapping instead
        assert all(e[1] == "flapping" for e in events[became:])  # later changes only recorded
    finally:
        w.stop()


def test_rules_file_overrides_and_scopes_by_district(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nquantity = "pm25"\nkind = "threshold"\nabove = 20\nseverity = "warning"\n'
        'district = "Presint 9"\n'
    )
    w = RunningWorker(settings.with_(rules=rules)).start()
    try:
        root = settings.topic_root
        meta = {
            "sensors": [
                {"id": "P9", "domain": "air", "district": "Presint 9"},
                {"id": "P1", "domain": "air", "district": "Presint 1"},
            ]
        }
        publisher.publish(f"{root}/gw/meta", json.dumps(meta))
        wait_for(lambda: len(rows(url, "SELECT 1 FROM sensors")) == 2, what="meta")
        t = time.time() - 30
        publisher.publish(f"{root}/gw/senml", pm25("P9", t, 25.0))
        publisher.publish(f"{root}/gw/senml", pm25("P1", t, 25.0))
        got = wait_for(lambda: alerts(url), what="the district's stricter alarm")
        assert [(a[1], a[3]) for a in got] == [
            ("P9", "pm25:threshold-above:warning@district=Presint 9")
        ]
    finally:
        w.stop()


def test_operator_actions_and_shelving_expiry(settings: Settings) -> None:
    url = settings.database_url
    assert url
    now = datetime.now(UTC)
    t = lifecycle.Transition(
        "r1",
        "threshold",
        "critical",
        "m",
        "S1",
        "pm25",
        None,
        int(now.timestamp() * 1e6),
        99.0,
        True,
        6,
        1_800_000_000,
    )
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        lifecycle.apply(cur, [t])
        (alert_id,) = cur.execute("SELECT id FROM alerts").fetchone() or (None,)
        assert alert_id is not None
        with pytest.raises(lifecycle.AlertError):
            lifecycle.shelve(cur, alert_id, now - timedelta(minutes=1), "op")
        assert (
            lifecycle.shelve(cur, alert_id, now + timedelta(seconds=1), "op", "works") == "shelved"
        )
        lifecycle.settle(cur, now, {})
        assert cur.execute("SELECT state FROM alerts").fetchone() == ("shelved",)
        # expired while the condition still holds: back to active
        lifecycle.settle(cur, now + timedelta(seconds=2), {})
        assert cur.execute("SELECT state FROM alerts").fetchone() == ("active",)
        assert lifecycle.acknowledge(cur, alert_id, "op") == "acknowledged"
        with pytest.raises(lifecycle.AlertError):
            lifecycle.acknowledge(cur, alert_id, "op")
        assert lifecycle.close(cur, alert_id, "op", "false alarm") == "closed"
        with pytest.raises(lifecycle.AlertError):
            lifecycle.close(cur, alert_id, "op")
        with pytest.raises(lifecycle.AlertError):
            lifecycle.acknowledge(cur, 12345, "op")
        events = [r[0] for r in cur.execute("SELECT event FROM alert_events ORDER BY id")]
        assert events == ["raise", "shelve", "settle", "ack", "close"]


def test_flapping_check_reads_one_series_alarms_not_the_table(settings: Settings) -> None:
    """The flapping check on a raise reads the alarms of that one series and rule through an
    index, closed alarms included: with the table full of closed alarms (a city after a wide
    outage) it must not scan them all, once per raise."""
    url = settings.database_url
    assert url
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO alerts (sensor_id, quantity, rule, kind, severity, state, raised_at,"
            " closed_at) SELECT 'S' || (i % 5000), 'pm25', 'r' || (i / 5000), 'stale',"
            " 'warning', 'closed', now() - interval '1 hour', now()"
            " FROM generate_series(0, 19999) i"
        )
        conn.execute(
            "INSERT INTO alert_events (alert_id, event, to_state, actor, event_time)"
            " SELECT id, 'raise', 'active', 'system', raised_at FROM alerts"
        )
        conn.execute("ANALYZE alerts")
        conn.execute("ANALYZE alert_events")
        cur = psycopg.ClientCursor(conn)  # EXPLAIN with the values bound in the text
        since = datetime.now(UTC) - timedelta(hours=2)
        (plan,) = cur.execute(
            "EXPLAIN (FORMAT JSON) " + lifecycle.FLAP_SQL, ("S42", "pm25", "r1", since)
        ).fetchone() or (None,)
        (count,) = cur.execute(lifecycle.FLAP_SQL, ("S42", "pm25", "r1", since)).fetchone() or (
            None,
        )
    assert count == 1  # the query counts that series' own raise, and only it

    used = list(plan_nodes(plan[0]["Plan"]))
    on_alerts = [n for n in used if n.get("Relation Name") == "alerts"]
    assert on_alerts, used
    assert all(n["Node Type"] != "Seq Scan" for n in on_alerts), used
    assert any(n.get("Index Name") == "alerts_series_rule" for n in on_alerts), used
