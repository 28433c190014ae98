"""The simulated city through the real pipeline: a real broker, a real database, a real worker.

A 90-minute city scenario with one fault of every kind runs as fast as SUMO and SWMM go, in the
past so that it ends about now (a backfill). Then every consequence the manifest expects must be
in the database (quarantine rows with their reasons, alerts with their rule keys, late and
repeated readings stored once) and nothing else: no alert and no quarantine row the manifest does
not explain.

Staleness is judged by the worker's tick against the wall clock. During a backfill every sensor
is minutes to an hour behind the wall clock, so a ticking worker would find them all stale; the
first worker therefore runs with the tick held off (``tick_s`` larger than the machine's
uptime: the tick's clock starts at zero) and a second worker with a short tick takes over once
the run has ended, when only the sensor that went offline (and stayed so) is silent.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import Counter
from pathlib import Path

import pytest

from pusat.settings import Settings
from simulators import scenario
from simulators.manifest import read
from simulators.runner import Options, simulate
from tests.conftest import RunningWorker
from tests.helpers import rows, wait_for

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("libsumo") is None or importlib.util.find_spec("pyswmm") is None,
    reason="the sim extra (SUMO, SWMM) is not installed",
)

SCENARIO = """
name = "test: a quiet hour and a half with one fault of every kind"
duration = "90m"
peak_vph = 6000
seed = 11

[[fault]]
kind = "offline"
sensor = "AQ-P03"
at = "50m"
for = "end"

[[fault]]
kind = "stuck"
sensor = "TF-P08-01"
quantity = "speed"
at = "15m"
for = "50m"

[[fault]]
kind = "stuck"            # 40 minutes of a stuck PM2.5 sensor: under the rule's 2 hours
sensor = "AQ-P06"
quantity = "pm25"
at = "20m"
for = "40m"

[[fault]]
kind = "drift"
sensor = "TF-P13-02"
quantity = "occupancy"
at = "20m"
for = "40m"
rate = 120

[[fault]]
kind = "spike"
sensor = "TF-P08-02"
quantity = "occupancy"
at = "30m"

[[fault]]
kind = "spike"            # on a FIWARE SDM station
sensor = "AQ-P04"
quantity = "co"
at = "33m"

[[fault]]
kind = "spike"            # within the possible range: the level alarms and the rate alarm
sensor = "WQ-WET-03"
quantity = "water_level"
at = "40m"
mode = "factor"
factor = 3

[[fault]]
kind = "late"
sensor = "TF-P12-01"
at = "25m"

[[fault]]
kind = "out_of_order"
sensor = "AQ-P05"
at = "35m"

[[fault]]
kind = "duplicate"
sensor = "WQ-LAKE-01"
at = "30m"
copies = 3

[[fault]]
kind = "skew"
sensor = "AQ-P11"
at = "45m"

[[fault]]
kind = "malformed"
sensor = "TF-P14-01"
at = "20m"

[[fault]]
kind = "malformed"
sensor = "AQ-P16"
at = "22m"
variant = "senml"

[[fault]]
kind = "malformed"        # on a FIWARE SDM gateway
sensor = "AQ-P09"
at = "24m"
variant = "payload"

[[fault]]
kind = "wrong_unit"
sensor = "AQ-P17"
quantity = "temperature"
at = "40m"

[[fault]]
kind = "burst"
sensor = "AQ-P18"
at = "55m"
"""


def test_city_with_faults_through_the_pipeline(settings: Settings, tmp_path: Path) -> None:
    url = settings.database_url
    assert url
    manifest = tmp_path / "manifest.jsonl"
    first = RunningWorker(settings.with_(tick_s=1e9)).start()
    try:
        result = simulate(
            settings,
            Options(
                what="city",
                speed=float("inf"),
                scenario=scenario.parse(SCENARIO, "test.toml"),
                manifest=manifest,
            ),
            threading.Event(),
        )

        def received() -> float:
            m = first.metrics
            return sum(
                m.value("pusat_ingest_messages_total", {"kind": k}) for k in ("senml", "sdm")
            )

        wait_for(lambda: received() >= result.messages, timeout=60, what="every message")
        duplicates = first.metrics.value("pusat_ingest_readings_duplicate_total")
    finally:
        first.stop()  # drains: everything received is committed
    header, faults, summary = read(manifest)
    assert header["mode"] == "backfill" and len(faults) == 16
    assert summary["unexplained_rejections"] == {}

    expected = {(f["sensor"], a) for f in faults for a in f["expect"]["alerts"]}
    maybe = {(f["sensor"], a) for f in faults for a in f["maybe"]["alerts"]}
    # The faults were chosen to show every kind of consequence; the manifest must say so.
    keys = {a for _, a in expected}
    assert {
        "sensor:stale:warning",
        "speed:flatline:info",
        "occupancy:threshold-above:warning",
        "water_level:threshold-above:critical",
        "water_level:rate-above:warning",
    } <= keys
    assert not any(a.startswith("pm25:flatline") for a in keys)  # 40 minutes is not 2 hours
    stale_sensors = {s for s, a in expected if a == "sensor:stale:warning"}

    second = RunningWorker(settings.with_(tick_s=0.2)).start()
    try:
        wait_for(
            lambda: (
                {
                    r[0]
                    for r in rows(
                        url, "SELECT sensor_id FROM alerts WHERE rule = 'sensor:stale:warning'"
                    )
                }
                >= stale_sensors
            ),
            timeout=30,
            what="the stale alarm of the sensor that went offline",
        )
        second.stop_event.wait(2.0)  # a few more ticks: nothing else may go stale
    finally:
        second.stop()

    actual = {(s, r) for s, r in rows(url, "SELECT sensor_id, rule FROM alerts")}
    assert expected <= actual, f"missing alerts: {sorted(expected - actual)}"
    assert actual <= expected | maybe, f"unexpected alerts: {sorted(actual - expected - maybe)}"

    want: Counter[tuple[str, str]] = Counter()
    for f in faults:
        for reason, n in f["expect"]["quarantine"].items():
            want[(f["gateway"], reason)] += n
    got = Counter(
        {
            (gw, reason): n
            for gw, reason, n in rows(
                url, "SELECT gateway_id, reason, count(*) FROM quarantine GROUP BY 1, 2"
            )
        }
    )
    assert got == want
    assert {r for _, r in want} >= {
        "malformed_json",
        "bad_senml",
        "bad_payload",
        "out_of_range",
        "bad_time",
        "unknown_unit",
    }

    stored = [tuple(k) for f in faults for k in f["expect"]["stored"]]
    assert stored, "late, out-of-order, repeated and held-back readings"
    found = rows(
        url,
        "SELECT count(*) FROM readings r JOIN unnest(%s::text[], %s::text[], %s::float8[])"
        " AS k(sensor, quantity, ts) ON r.sensor_id = k.sensor AND r.quantity = k.quantity"
        " AND r.ts = to_timestamp(k.ts)",
        ([s for s, _, _ in stored], [q for _, q, _ in stored], [t for _, _, t in stored]),
    )[0][0]
    assert found == len(stored)
    assert duplicates >= sum(f["expect"]["duplicates"] for f in faults) > 0
