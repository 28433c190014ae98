"""`pusat simulate city --gateways lorawan,sparkplug`: the chosen gateways' readings go out as
ChirpStack uplinks and as a Sparkplug B pumping station, and land through a real Mosquitto and
ingest (with the mapping files the simulator wrote) in PostgreSQL with their values and times."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from ingest.records import NO_BIRTH
from pusat.settings import Settings
from simulators.gateways import GatewaySink
from simulators.publisher import ListSink
from simulators.readings import Message, Reading
from tests.conftest import RunningWorker
from tests.helpers import rows, wait_for


def meta(*sensors: tuple[str, str, list[str]]) -> bytes:
    return orjson.dumps(
        {"sensors": [{"id": i, "domain": d, "quantities": q} for i, d, q in sensors]}
    )


GATEWAYS = ["gw-p01", "gw-p02", "gw-wetland"]
METAS = {
    "gw-p01": meta(("AQ-P01-1", "air", ["pm25", "temperature"])),
    "gw-p02": meta(("AQ-P02-1", "air", ["pm25"])),
    "gw-wetland": meta(("WQ-WET-01", "water", ["water_level", "do"])),
}


def stored(url: str, sensor: str) -> list[tuple[str, float, float]]:
    return rows(
        url,
        "SELECT quantity, value, extract(epoch FROM ts)::float8 FROM readings"
        " WHERE sensor_id = %s AND quantity NOT IN ('rssi', 'snr', 'rx_gateways', 'f_cnt')"
        " ORDER BY ts, quantity",
        (sensor,),
    )


def test_lorawan_and_sparkplug_gateways_land_and_a_rebirth_is_answered(
    settings: Settings, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    inner = ListSink()
    sink = GatewaySink(inner, settings.mqtt(), ["lorawan", "sparkplug"], tmp_path / "gw")
    env = sink.plan(GATEWAYS, METAS)
    assert sink.lorawan == {"gw-p01"} and sink.sparkplug
    s = settings.with_(
        lorawan_mappings=env["PUSAT_LORAWAN_MAPPINGS"],
        sparkplug_mappings=env["PUSAT_SPARKPLUG_MAPPINGS"],
    )
    t = float(int(time.time()) - 300)

    def minute(k: int) -> list[Message]:
        ts = t + 60 * k
        return [
            Message("gw-p01", "senml", b"", ts, [Reading("AQ-P01-1", "pm25", ts, 10.0 + k),
                                                  Reading("AQ-P01-1", "temperature", ts, 30.5)]),
            Message("gw-p02", "senml", b"[]", ts, [Reading("AQ-P02-1", "pm25", ts, 20.0)]),
            Message("gw-wetland", "senml", b"", ts, [Reading("WQ-WET-01", "water_level", ts, 1.2),
                                                      Reading("WQ-WET-01", "do", ts, 6.0 + k)]),
        ]  # fmt: skip

    w = RunningWorker(s).start()
    try:
        sink.open(GATEWAYS, METAS)
        for m in minute(0) + minute(1):
            sink.send(m)
        got = wait_for(lambda: len(r := stored(url, "AQ-P01-1")) == 4 and r, what="LoRaWAN")
        assert got == [
            ("pm25", 10.0, t),
            ("temperature", 30.5, t),
            ("pm25", 11.0, t + 60),
            ("temperature", 30.5, t + 60),
        ]
        got = wait_for(lambda: len(r := stored(url, "WQ-WET-01")) == 4 and r, what="Sparkplug")
        assert got == [
            ("do", 6.0, t),
            ("water_level", 1.2, t),
            ("do", 7.0, t + 60),
            ("water_level", 1.2, t + 60),
        ]
        seen = dict(rows(url, "SELECT gateway_id, status FROM gateways"))
        assert seen["gw-wetland"] == "online" and seen["gw-wetland.WQ-WET-01"] == "online"
        assert "gw-p01" in seen  # the LoRaWAN application records under its own gateway
        # the district gateway left as it was still goes through the usual sink
        assert [m.gateway for m, _ in inner.sent] == ["gw-p02", "gw-p02"]
    finally:
        w.stop()
    # a restarted ingest has no births: the next data is quarantined and a rebirth asked for,
    # which the station answers before its following data
    w = RunningWorker(s).start()
    try:
        for m in minute(2):
            sink.send(m)
        wait_for(
            lambda: rows(url, "SELECT reason FROM quarantine") == [(NO_BIRTH,)], what="no_birth"
        )
        wait_for(lambda: sink._rebirth.is_set(), what="the NCMD rebirth")
        for m in minute(3):
            sink.send(m)
        got = wait_for(lambda: len(r := stored(url, "WQ-WET-01")) == 6 and r, what="reborn")
        assert got[-2:] == [("do", 9.0, t + 180), ("water_level", 1.2, t + 180)]
    finally:
        sink.close()
        w.stop()
