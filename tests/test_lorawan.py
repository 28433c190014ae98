"""LoRaWAN uplinks: the network servers' own documented examples, decoded, and end to end through
a real Mosquitto into PostgreSQL (tests/fixtures/lorawan names each example's source)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from api.quarantine import publish
from ingest import cayenne, lorawan
from ingest.records import NO_DECODED_OBJECT, UNKNOWN_UNIT
from pusat.settings import Settings
from tests.conftest import RunningWorker
from tests.helpers import Publisher, rows, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "lorawan"
CS_APP = "17c82e96-be03-4f38-aef3-f83d48582d97"
LPP_APP = "5b0c9a3e-6a7f-4a7e-9f43-0c1d2e3f4a5b"  # a second ChirpStack application, ours


def fixture(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return doc


def epoch(text: str) -> float:
    """RFC 3339 with nanoseconds, rounded to the microseconds PostgreSQL keeps."""
    head, frac = text.replace("Z", "+00:00").split(".")
    digits = frac[: len(frac) - 6] if "+" in frac else frac
    zone = frac[len(digits) :]
    whole = datetime.fromisoformat(head + zone).timestamp()
    return round(whole + float("0." + digits), 6)


def write_mapping(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CS_MAPPING = f"""
network = "chirpstack"
application = "{CS_APP}"
gateway = "chirpstack-presint8"
[devices]
"0101010101010101" = "AQ-CS-1"
"""
LPP_MAPPING = f"""
network = "chirpstack"
application = "{LPP_APP}"
gateway = "lpp-presint8"
decoder = "cayenne_lpp"
[devices]
"0202020202020202" = "WQ-LPP-1"
[fields.temperature_1]
quantity = "water_temperature"
[fields.analog_input_2]
quantity = "water_level"
unit = "m"
[fields.humidity_3]
quantity = "humidity"
"""
TTS_MAPPING = """
network = "tts"
application = "app1@ttn"
gateway = "tts-presint8"
[devices]
dev1 = "AQ-TTS-1"
[fields.temperature]
quantity = "temperature"
unit = "{unit}"
[fields.luminosity]
quantity = "illuminance"
unit = "lx"
"""


def mappings(tmp_path: Path, tts_unit: str = "Cel") -> str:
    files = [
        write_mapping(tmp_path / "cs.toml", CS_MAPPING),
        write_mapping(tmp_path / "lpp.toml", LPP_MAPPING),
        write_mapping(tmp_path / "tts.toml", TTS_MAPPING.format(unit=tts_unit)),
    ]
    return ",".join(str(f) for f in files)


def lpp_uplink() -> tuple[str, bytes]:
    """ChirpStack's documented uplink, moved to our Cayenne LPP application and device, with an
    LPP frame as its data and a frame counter."""
    doc = fixture("chirpstack_up")["payload"]
    doc["deviceInfo"] = {
        **doc["deviceInfo"],
        "applicationId": LPP_APP,
        "devEui": "0202020202020202",
    }
    frame = (
        cayenne.encode(1, "temperature", 27.2)
        + cayenne.encode(2, "analog_input", 1.21)
        + cayenne.encode(3, "humidity", 64.5)
    )
    doc["data"] = base64.b64encode(frame).decode()
    doc["fCnt"] = 42
    topic = f"application/{LPP_APP}/device/0202020202020202/event/up"
    return topic, json.dumps(doc).encode()


def series(url: str, sensor: str) -> dict[str, tuple[float, str | None, float]]:
    """quantity -> (value, unit, event time) of a sensor's readings."""
    return {
        q: (v, u, t)
        for q, v, u, t in rows(
            url,
            "SELECT r.quantity, r.value, r.unit, extract(epoch FROM r.ts)::float8"
            " FROM readings r WHERE r.sensor_id = %s",
            (sensor,),
        )
    }


# -- decoding, no servers ---------------------------------------------------------------------


def test_cayenne_lpp_frames_decode_and_bad_frames_say_where() -> None:
    frame = cayenne.encode(3, "temperature", 27.2) + cayenne.encode(5, "gps", 3.1390, 101.6869, 40)
    got = cayenne.decode(frame)
    assert got["temperature_3"] == (pytest.approx(27.2), "Cel")
    assert got["gps_5_latitude"][0] == pytest.approx(3.139)
    assert got["gps_5_longitude"][0] == pytest.approx(101.6869)
    assert got["gps_5_altitude"] == (pytest.approx(40.0), "m")
    # the specification's own example: channel 3 temperature 27.2 C, channel 5 temperature 25.5
    assert cayenne.decode(bytes.fromhex("03670110056700FF")) == {
        "temperature_3": (pytest.approx(27.2), "Cel"),
        "temperature_5": (pytest.approx(25.5), "Cel"),
    }
    with pytest.raises(ValueError, match="unknown Cayenne LPP type"):
        cayenne.decode(b"\x01\xfe\x00")
    with pytest.raises(ValueError, match="needs 2 data bytes"):
        cayenne.decode(b"\x01\x67\x01")


def test_mapping_errors_name_the_file(tmp_path: Path) -> None:
    bad = write_mapping(tmp_path / "bad.toml", 'network = "lorawan"\napplication = "x"\n')
    with pytest.raises(ValueError, match=r"bad\.toml: network must be one of"):
        lorawan.load([bad])
    bad.write_text('network = "tts"\napplication = "a"\n[fields.t]\nunit = "Cel"\n')
    with pytest.raises(ValueError, match=r"fields\.t needs a quantity"):
        lorawan.load([bad])


def test_routes_only_configured_applications(tmp_path: Path) -> None:
    m = lorawan.load([write_mapping(tmp_path / "cs.toml", CS_MAPPING)])
    route = m.route(fixture("chirpstack_up")["topic"])
    assert route is not None and route.device == "0101010101010101" and route.event == "up"
    assert m.route("application/other/device/0101010101010101/event/up") is None
    assert m.route(f"application/{CS_APP}/device/0101010101010101/event/txack") is None
    assert m.subscriptions() == [
        f"application/{CS_APP}/device/+/event/{e}" for e in ("up", "status", "join", "ack")
    ]


# -- end to end -------------------------------------------------------------------------------


@pytest.fixture
def lora_settings(settings: Settings, tmp_path: Path) -> Settings:
    # The documented examples are from 2020 and 2022: accept readings that old.
    return settings.with_(lorawan_mappings=mappings(tmp_path), horizon_s=20 * 365 * 86400.0)


def test_network_server_examples_land_with_values_units_and_event_times(
    lora_settings: Settings, publisher: Publisher
) -> None:
    url = lora_settings.database_url
    assert url
    w = RunningWorker(lora_settings).start()
    try:
        tts, cs = fixture("tts_up"), fixture("chirpstack_up")
        topic, lpp = lpp_uplink()
        for doc in (tts, cs, fixture("chirpstack_status"), fixture("chirpstack_join")):
            publisher.publish(doc["topic"], json.dumps(doc["payload"]))
        publisher.publish(topic, lpp)
        publisher.publish(topic, lpp)  # delivered twice: stored once
        publisher.publish(fixture("tts_join")["topic"], json.dumps(fixture("tts_join")["payload"]))

        t_tts = epoch(tts["payload"]["uplink_message"]["received_at"])
        got = wait_for(lambda: (s := series(url, "AQ-TTS-1")) and len(s) == 6 and s, what="TTS")
        assert got == {
            "temperature": (1.0, "Cel", pytest.approx(t_tts)),
            "illuminance": (0.64, "lx", pytest.approx(t_tts)),
            "rssi": (-35.0, "dBm", pytest.approx(t_tts)),
            "snr": (5.0, "dB", pytest.approx(t_tts)),
            "rx_gateways": (1.0, "count", pytest.approx(t_tts)),
            "f_cnt": (1.0, "count", pytest.approx(t_tts)),
        }

        t_lpp = epoch(cs["payload"]["time"])
        got = wait_for(lambda: (s := series(url, "WQ-LPP-1")) and len(s) == 7 and s, what="LPP")
        assert got == {
            "water_temperature": (pytest.approx(27.2), "Cel", pytest.approx(t_lpp)),
            "water_level": (pytest.approx(1.21), "m", pytest.approx(t_lpp)),
            "humidity": (64.5, "%RH", pytest.approx(t_lpp)),
            "rssi": (-36.0, "dBm", pytest.approx(t_lpp)),
            "snr": (10.5, "dB", pytest.approx(t_lpp)),
            "rx_gateways": (1.0, "count", pytest.approx(t_lpp)),
            "f_cnt": (42.0, "count", pytest.approx(t_lpp)),
        }

        # ChirpStack's example uplink has no codec output: quarantined with the reason, while
        # its radio metadata and the status event's battery still land.
        t_status = epoch(fixture("chirpstack_status")["payload"]["time"])
        got = wait_for(lambda: (s := series(url, "AQ-CS-1")) and len(s) == 5 and s, what="CS")
        assert got == {
            "rssi": (-36.0, "dBm", pytest.approx(t_lpp)),
            "snr": (10.5, "dB", pytest.approx(t_lpp)),
            "rx_gateways": (1.0, "count", pytest.approx(t_lpp)),
            "f_cnt": (0.0, "count", pytest.approx(t_lpp)),  # proto3 JSON omits a zero fCnt
            "battery": (88.3, "%", pytest.approx(t_status)),
        }
        quarantined = rows(url, "SELECT reason, topic, gateway_id, detail FROM quarantine")
        assert [(r, t, g) for r, t, g, _ in quarantined] == [
            (NO_DECODED_OBJECT, cs["topic"], "chirpstack-presint8")
        ]
        # joins say the applications' gateways are online
        statuses = wait_for(
            lambda: (
                dict(rows(url, "SELECT gateway_id, status FROM gateways WHERE status IS NOT NULL"))
                or None
            ),
            what="gateway status",
        )
        assert wait_for(lambda: len(statuses) == 2 or None, what="two statuses") and statuses == {
            "chirpstack-presint8": "online",
            "tts-presint8": "online",
        }
        assert rows(url, "SELECT count(*) FROM readings WHERE sensor_id = 'WQ-LPP-1'") == [(7,)]
    finally:
        w.stop()


def test_rejected_uplink_lands_after_the_mapping_is_fixed_and_replayed(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    old = settings.with_(
        lorawan_mappings=mappings(tmp_path, tts_unit="degC"), horizon_s=20 * 365 * 86400.0
    )
    tts = fixture("tts_up")
    w = RunningWorker(old).start()
    try:
        publisher.publish(tts["topic"], json.dumps(tts["payload"]))
        got = wait_for(
            lambda: rows(url, "SELECT reason, detail FROM quarantine"), what="quarantine"
        )
        assert [r for r, _ in got] == [UNKNOWN_UNIT] and "degC" in got[0][1]
        assert "temperature" not in series(url, "AQ-TTS-1")
    finally:
        w.stop()
    fixed = old.with_(lorawan_mappings=mappings(tmp_path, tts_unit="Cel"))
    w = RunningWorker(fixed).start()
    try:
        ((topic, payload),) = rows(url, "SELECT topic, payload FROM quarantine")
        publish(fixed.mqtt(), [(topic, payload.encode())])  # what POST /quarantine/replay does
        t = epoch(tts["payload"]["uplink_message"]["received_at"])
        got = wait_for(lambda: "temperature" in (s := series(url, "AQ-TTS-1")) and s, what="fixed")
        assert got["temperature"] == (1.0, "Cel", pytest.approx(t))
        assert rows(url, "SELECT count(*) FROM readings WHERE sensor_id = 'AQ-TTS-1'") == [(6,)]
    finally:
        w.stop()
