"""Every payload format end to end: gateway -> real Mosquitto -> worker -> real PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from pusat.settings import Settings
from tests.conftest import RunningWorker
from tests.helpers import Publisher, rows, scalar, wait_for

pytestmark = pytest.mark.tiers


def stored(url: str, sensor: str) -> dict[str, float]:
    return {
        q: v
        for q, v in rows(
            url, "SELECT quantity, value FROM readings WHERE sensor_id = %s", (sensor,)
        )
    }


def quarantined(url: str) -> list[tuple[Any, ...]]:
    return rows(url, "SELECT reason, detail, topic, payload, record FROM quarantine ORDER BY id")


def count(url: str, table: str = "readings") -> int:
    return int(scalar(url, f"SELECT count(*) FROM {table}"))


def test_senml_pack_with_base_fields_and_relative_time(
    worker: RunningWorker, publisher: Publisher, settings: Settings
) -> None:
    now = time.time()
    pack = [
        {"bn": "WQ-WET-03:", "bt": round(now) - 120, "n": "water_level", "u": "m", "v": 1.21},
        {"n": "do", "u": "mg/l", "v": 6.4},
        {"n": "ph", "u": "pH", "v": 7.1},
        {"n": "turbidity", "u": "NTU", "v": 9.5, "t": 60},
        {"n": "water_temperature", "u": "K", "v": 302.15},
    ]
    publisher.publish(f"{settings.topic_root}/wetland-gw/senml", json.dumps(pack))
    url = settings.database_url
    assert url
    got = wait_for(lambda: (s := stored(url, "WQ-WET-03")) and len(s) == 5 and s, what="5 readings")
    assert got["water_temperature"] == pytest.approx(29.0)  # K converted to Cel
    ts = dict(rows(url, "SELECT quantity, extract(epoch FROM ts)::float FROM readings"))
    assert ts["turbidity"] - ts["water_level"] == pytest.approx(60)
    # relative time: t=-5 with no base time means five seconds before arrival
    publisher.publish(
        f"{settings.topic_root}/air-gw/senml",
        json.dumps([{"bn": "AQ-1:", "n": "pm25", "u": "ug/m3", "v": 12.0, "t": -5}]),
    )
    wait_for(lambda: stored(url, "AQ-1"), what="relative reading")
    (age,) = rows(
        url,
        "SELECT extract(epoch FROM received_at - ts)::float FROM readings WHERE sensor_id = 'AQ-1'",
    )[0]
    assert age == pytest.approx(5, abs=0.01)
    assert rows(
        url,
        "SELECT unit FROM readings WHERE sensor_id = 'WQ-WET-03'"
        " AND quantity = 'water_temperature'",
    ) == [("Cel",)]


def test_native_json_single_and_batch(
    worker: RunningWorker, publisher: Publisher, settings: Settings
) -> None:
    url = settings.database_url
    assert url
    t = time.time() - 30
    one = {"sensor": "TL-1", "ts": t, "values": {"flow": 840, "speed": 42.5}}
    many = [
        {"sensor": "TL-2", "ts": "2026-11-27T10:00:00Z", "values": {"occupancy": 12.5}},
        {"sensor": "TL-3", "values": {"vehicle_count": 14}},
    ]
    publisher.publish(f"{settings.topic_root}/traffic-gw/json", json.dumps(one))
    publisher.publish(f"{settings.topic_root}/traffic-gw/json", json.dumps(many))
    wait_for(lambda: count(url) == 4, what="4 readings")
    assert stored(url, "TL-1") == {"flow": 840.0, "speed": 42.5}


def test_sdm_entities_with_interval_dates(
    worker: RunningWorker, publisher: Publisher, settings: Settings
) -> None:
    url = settings.database_url
    assert url
    end = time.time() - 60
    start = end - 300
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    entities = [
        {
            "id": "urn:ngsi-ld:AirQualityObserved:AQ-SDM-1",
            "type": "AirQualityObserved",
            "dateObserved": iso(end),
            "no2": 37.6,
            "relativeHumidity": 0.65,
            "pm25": 14.0,
        },
        {
            "id": "TF-1",
            "type": "TrafficFlowObserved",
            "refDevice": "LOOP-7",
            "dateObserved": f"{iso(start)}/{iso(end)}",
            "intensity": 50,
            "occupancy": 0.2,
            "averageVehicleSpeed": 48.0,
            "laneId": 1,
        },
        {
            "id": "WQ-SDM-1",
            "type": "WaterQualityObserved",
            "dateObserved": iso(end),
            "pH": 7.2,
            "O2": 6.8,
            "conductivity": 0.025,
            "temperature": 29.5,
        },
    ]
    publisher.publish(f"{settings.topic_root}/sdm-gw/sdm", json.dumps(entities))
    wait_for(lambda: count(url) >= 11, what="SDM readings")
    air = stored(url, "AQ-SDM-1")
    assert air["no2"] == pytest.approx(37.6 / 1.88)  # ug/m3 -> ppb
    assert air["humidity"] == pytest.approx(65.0)  # fraction -> %RH
    loop = stored(url, "LOOP-7")
    assert loop["occupancy"] == pytest.approx(20.0)
    assert loop["flow"] == pytest.approx(50 * 3600 / 300)  # from the interval's length
    water = stored(url, "WQ-SDM-1")
    assert water["conductivity"] == pytest.approx(250.0)  # S/m -> uS/cm
    assert water["water_temperature"] == pytest.approx(29.5)
    ts = {
        q: t
        for q, t in rows(
            url,
            "SELECT quantity, extract(epoch FROM ts)::float"
            " FROM readings WHERE sensor_id = 'LOOP-7'",
        )
    }
    assert ts["flow"] == pytest.approx(round(end), abs=1)  # interval end is the event time


def test_same_message_twice_is_stored_once(
    worker: RunningWorker, publisher: Publisher, settings: Settings
) -> None:
    url = settings.database_url
    assert url
    pack = json.dumps(
        [
            {"bn": "AQ-9:", "bt": time.time() - 10, "n": "pm10", "u": "ug/m3", "v": 40},
            {"n": "pm25", "u": "ug/m3", "v": 20},
        ]
    )
    for _ in range(3):
        publisher.publish(f"{settings.topic_root}/gw/senml", pack)
    wait_for(
        lambda: worker.metrics.value("pusat_ingest_readings_duplicate_total") == 4,
        what="4 duplicates counted",
    )
    assert count(url) == 2
    assert worker.metrics.value("pusat_ingest_readings_stored_total") == 2


HOSTILE: list[tuple[str, bytes | str, str]] = [
    ("senml", b"this is not json", "malformed_json"),
    ("senml", b'{"n": "x"}', "bad_senml"),
    ("senml", '[{"bn": "S-H:", "n": "pm25", "u": "ug/m3", "v": NaN}]', "malformed_json"),
    ("senml", '[{"bn": "S-H:", "n": "pm25", "u": "furlongs", "v": 3}]', "unknown_unit"),
    ("senml", '[{"bn": "S-H:", "n": "pm25", "u": "ug/m3", "v": "12"}]', "bad_senml"),
    ("senml", '[{"bn": "S-H:", "n": "pm25", "u": "ug/m3", "v": -4}]', "out_of_range"),
    ("senml", '[{"bn": "S-H:", "bt": 4102444800, "n": "pm25", "v": 4}]', "bad_time"),
    ("senml", '[{"bn": "S-H:", "n": "pm25", "v": 4, "crit_": 1}]', "must_understand"),
    ("json", '{"sensor": "S-H", "ts": "yesterday", "values": {"pm25": 4}}', "bad_time"),
    ("json", '{"sensor": 12, "values": {}}', "bad_payload"),
    (
        "sdm",
        '{"id": "X", "type": "Spaceship", "dateObserved": "2026-01-01T00:00:00Z"}',
        "bad_payload",
    ),
    ("meta", '{"sensors": [{"lat": 2.9}]}', "bad_meta"),
    ("status", "sleepy", "bad_status"),
]


def test_hostile_input_is_quarantined_with_reasons_and_ingest_keeps_going(
    worker: RunningWorker, publisher: Publisher, settings: Settings
) -> None:
    url = settings.database_url
    assert url
    root = settings.topic_root
    for kind, payload, _ in HOSTILE:
        publisher.publish(f"{root}/bad-gw/{kind}", payload)
    publisher.publish(f"{root}/bad-gw/nonsense", b"{}")  # a kind the contract does not have
    huge = json.dumps([{"bn": "S-BIG:", "n": "pm25", "v": 1}] * 40000)
    publisher.publish(f"{root}/bad-gw/senml", huge)
    expected = [reason for _, _, reason in HOSTILE] + ["bad_topic", "too_large"]
    got = wait_for(
        lambda: (q := quarantined(url)) and len(q) >= len(expected) and q,
        what="every hostile message quarantined",
    )
    assert sorted(r[0] for r in got) == sorted(expected)
    for reason, detail, topic, payload, _ in got:
        assert detail and topic.startswith(root) and payload, reason
    # after all that the worker still stores good data
    publisher.publish(f"{root}/good-gw/json", json.dumps({"sensor": "OK-1", "values": {"pm25": 5}}))
    wait_for(lambda: stored(url, "OK-1") == {"pm25": 5.0}, what="good reading after bad ones")
    assert count(url) == 1


def test_good_records_of_a_bad_pack_still_land(
    worker: RunningWorker, publisher: Publisher, settings: Settings
) -> None:
    url = settings.database_url
    assert url
    t = time.time() - 5
    pack = [
        {"bn": "MIX-1:", "bt": t, "n": "pm25", "u": "ug/m3", "v": 12},
        {"n": "pm10", "u": "parsecs", "v": 30},  # unknown unit
        {"n": "humidity", "u": "%RH", "v": 140},  # out of range
        {"n": "no2", "u": "ppb", "v": 20},
        {"n": "o3", "vs": "high"},  # not a number
    ]
    publisher.publish(f"{settings.topic_root}/gw/senml", json.dumps(pack))
    wait_for(lambda: len(quarantined(url)) == 3, what="3 rejections")
    assert stored(url, "MIX-1") == {"pm25": 12.0, "no2": 20.0}
    reasons = sorted(r[0] for r in quarantined(url))
    assert reasons == ["non_numeric", "out_of_range", "unknown_unit"]
    m = worker.metrics
    assert m.value("pusat_ingest_quarantined_total", {"reason": "unknown_unit"}) == 1
    assert m.value("pusat_ingest_readings_stored_total") == 2


def test_meta_registers_sensors_and_status_records_gateways(
    worker: RunningWorker, publisher: Publisher, settings: Settings
) -> None:
    url = settings.database_url
    assert url
    root = settings.topic_root
    meta = {
        "sensors": [
            {
                "id": "AQ-P8-01",
                "domain": "air",
                "district": "Presint 8",
                "lat": 2.9264,
                "lon": 101.6964,
                "quantities": ["pm25", "pm10"],
            }
        ]
    }
    publisher.publish(f"{root}/gw-p8/meta", json.dumps(meta), retain=True)
    publisher.publish(f"{root}/gw-p8/status", "online", retain=True)
    wait_for(
        lambda: (
            rows(url, "SELECT status FROM gateways WHERE gateway_id = 'gw-p8'") == [("online",)]
        ),
        what="gateway online",
    )
    assert rows(url, "SELECT domain, district, lat, provisioned FROM sensors") == [
        ("air", "Presint 8", 2.9264, True)
    ]
    publisher.publish(f"{root}/gw-p8/status", json.dumps({"status": "offline"}), retain=True)
    wait_for(lambda: rows(url, "SELECT status FROM gateways") == [("offline",)], what="offline")
    publisher.publish(f"{root}/gw-p8/meta", b"", retain=True)  # clear the retained message


def test_unknown_sensor_is_stored_unprovisioned_by_default(
    worker: RunningWorker, publisher: Publisher, settings: Settings
) -> None:
    url = settings.database_url
    assert url
    publisher.publish(
        f"{settings.topic_root}/gw/json",
        json.dumps({"sensor": "NEW-1", "values": {"pm25": 7, "my_new_thing": 3}}),
    )
    wait_for(lambda: count(url) == 2, what="both readings, unknown quantity included")
    assert rows(url, "SELECT provisioned, gateway_id FROM sensors") == [(False, "gw")]


def test_strict_mode_quarantines_unknown_sensors(settings: Settings, publisher: Publisher) -> None:
    strict = settings.with_(strict=True)
    w = RunningWorker(strict).start()
    try:
        url = strict.database_url
        assert url
        root = strict.topic_root
        meta = {"sensors": [{"id": "KNOWN-1", "domain": "air", "quantities": ["pm25"]}]}
        publisher.publish(f"{root}/gw/meta", json.dumps(meta))
        wait_for(lambda: rows(url, "SELECT provisioned FROM sensors") == [(True,)], what="meta")
        publisher.publish(
            f"{root}/gw/json",
            json.dumps(
                [
                    {"sensor": "KNOWN-1", "values": {"pm25": 3, "not_a_quantity": 1}},
                    {"sensor": "STRANGER", "values": {"pm25": 4}},
                ]
            ),
        )
        wait_for(lambda: len(quarantined(url)) == 2, what="2 rejections")
        assert sorted(r[0] for r in quarantined(url)) == ["unknown_quantity", "unknown_sensor"]
        assert stored(url, "KNOWN-1") == {"pm25": 3.0}
        assert count(url, "sensors") == 1
    finally:
        w.stop()


def test_maintenance_between_batches_leaves_every_batch_committed(
    settings: Settings, publisher: Publisher
) -> None:
    """Retention runs on the writer's connection between batches; afterwards each batch must
    still commit (a query left open there once turned every later batch into a savepoint)."""
    url = settings.database_url
    assert url
    w = RunningWorker(settings.with_(maintenance_every_s=0.05)).start()
    try:
        root = settings.topic_root
        for i in range(5):
            publisher.publish(
                f"{root}/gw/json", json.dumps({"sensor": f"MT-{i}", "values": {"pm25": i}})
            )
            wait_for(lambda i=i: count(url) == i + 1, what=f"reading {i} committed")
        assert int(scalar(url, "SELECT count(*) FROM maintenance_runs")) > 0
    finally:
        w.stop()


def test_writer_refuses_a_connection_left_in_a_transaction(database_url: str) -> None:
    import psycopg

    from store.writer import Writer

    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1")  # opens a transaction and leaves it open
        with (
            pytest.raises(RuntimeError, match="already inside a transaction"),
            Writer(conn).transaction(),
        ):
            pass
