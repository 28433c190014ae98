"""`pusat simulate` on the command line, the fast publisher, and the live city `pusat up` runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pusat.embedded.broker import Broker
from pusat.settings import Settings
from simulators import city
from simulators.manifest import read
from tests.conftest import RunningWorker
from tests.helpers import rows, scalar, wait_for
from tests.test_cli import env_without_pusat

needs_sim = pytest.mark.skipif(
    importlib.util.find_spec("libsumo") is None or importlib.util.find_spec("pyswmm") is None,
    reason="the sim extra (SUMO, SWMM) is not installed",
)


def pusat(args: list[str], settings: Settings, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = env_without_pusat(
        PUSAT_MQTT_URL=settings.mqtt_url or "", PUSAT_TOPIC_ROOT=settings.topic_root
    )
    return subprocess.run(
        [sys.executable, "-m", "pusat", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


@needs_sim
def test_simulate_wetland_from_the_command_line(
    worker: RunningWorker, settings: Settings, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    manifest = tmp_path / "faults.jsonl"
    out = pusat(
        [
            "simulate",
            "wetland",
            "--speed",
            "max",
            "--duration",
            "1h",
            "--seed",
            "3",
            "--fault",
            "spike:WQ-WET-02:ph",
            "--manifest",
            str(manifest),
        ],
        settings,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "messages" in out.stdout
    assert f"manifest: {manifest} (1 faults)" in out.stdout
    assert "sim " in out.stderr  # the progress line (one line when not a terminal)
    _, faults, _ = read(manifest)
    assert faults[0]["expect"]["quarantine"] == {"out_of_range": 1}
    # 12 readings x 6 buoys x 12 five-minute periods, less the quarantined spike
    wait_for(
        lambda: scalar(url, "SELECT count(*) FROM readings") == 12 * 6 * 12 - 1,
        what="the wetland's readings",
    )
    provisioned = rows(url, "SELECT sensor_id, district, lat, lon FROM sensors ORDER BY 1")
    assert len(provisioned) == 6 and all(r[1] and r[2] and r[3] for r in provisioned)
    wait_for(
        lambda: (
            scalar(url, "SELECT status FROM gateways WHERE gateway_id = 'gw-wetland'") == "offline"
        ),
        what="the gateway going offline at the end",
    )


def test_simulate_needs_a_broker_and_valid_flags(settings: Settings, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "simulate", "city"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env_without_pusat(),
        timeout=60,
    )
    assert out.returncode == 2 and "PUSAT_MQTT_URL" in out.stderr
    out = pusat(["simulate", "city", "--speed", "fast"], settings, tmp_path)
    assert out.returncode == 2 and "--speed" in out.stderr
    out = pusat(["simulate", "city", "--fault", "gremlins"], settings, tmp_path)
    assert out.returncode == 2 and "offline" in out.stderr


def test_flood_publishes_fast_and_bounded(
    worker: RunningWorker, settings: Settings, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    out = pusat(["simulate", "flood", "--count", "400", "--readings", "10"], settings, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("published 400 messages (4,000 readings)")
    wait_for(lambda: scalar(url, "SELECT count(*) FROM readings") == 4000, what="every reading")
    assert scalar(url, "SELECT count(*) FROM quarantine") == 0
    assert scalar(url, "SELECT count(*) FROM alerts") == 0


def test_flood_refuses_a_broker_that_is_not_on_this_machine(
    settings: Settings, tmp_path: Path
) -> None:
    remote = settings.with_(mqtt_url="mqtt://192.0.2.1:1883")  # TEST-NET-1: never contacted
    out = pusat(["simulate", "flood", "--count", "1"], remote, tmp_path)
    assert out.returncode == 2 and "loopback only" in out.stderr


@needs_sim
def test_live_city_for_pusat_up(worker: RunningWorker, settings: Settings, broker: Broker) -> None:
    """`simulators.city.run` as `pusat up` calls it: real time, data at once, a clean stop."""
    url = settings.database_url
    assert url
    stop = threading.Event()
    began = time.monotonic()
    t = threading.Thread(target=city.run, args=(settings, stop), kwargs={"speed": 1.0})
    t.start()
    try:
        wait_for(
            lambda: scalar(url, "SELECT count(DISTINCT sensor_id) FROM readings") >= 36,
            timeout=30,
            what="a first minute from every air and traffic station",
        )
        first_data_s = time.monotonic() - began
        newest = scalar(url, "SELECT extract(epoch FROM max(ts)) FROM readings")
        assert time.time() - 120 < newest <= time.time()  # live: event time is now
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert first_data_s < 15
    wait_for(
        lambda: scalar(url, "SELECT count(*) FROM gateways WHERE status = 'offline'") == 21,
        what="every gateway offline after the stop",
    )
    assert scalar(url, "SELECT count(*) FROM quarantine") == 0
