"""The example route tree in deploy/alertmanager/ on Debian's Alertmanager: `amtool` checks it and
says where labelled alerts go, and a started Alertmanager with its routes and inhibition routes
alarms raised by the real pipeline (MQTT -> ingest -> outbox -> notifier) to the right receivers:
a critical wetland alarm to the duty officer at once, traffic warnings to the traffic control
room grouped per district, the rest to the operations desk."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pusat.embedded.ports import free_port
from pusat.settings import Settings
from tests.helpers import Publisher, rows, wait_for
from tests.test_notify import Alertmanager, RunningNotifier, needs_alertmanager

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="Debian's amtool is not installed")


def amtool(*args: str) -> str:
    assert AMTOOL is not None
    done = subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_amtool
def test_the_example_route_tree_is_a_valid_alertmanager_config() -> None:
    out = amtool("check-config", str(EXAMPLE))
    assert "SUCCESS" in out and "1 inhibit rules" in out and "4 receivers" in out


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ("domain=water severity=critical district=Wetland quantity=water_level", "duty-officer"),
        ("domain=water severity=emergency escalated=true", "duty-officer"),
        ("domain=water severity=warning quantity=water_level", "operations"),
        ("domain=traffic severity=warning district=Presint_2", "traffic-control"),
        ("domain=traffic severity=critical escalated=true", "duty-officer"),
        ("domain=air severity=critical", "operations"),
        ("domain=air severity=info kind=flatline", "maintenance"),
    ],
)
def test_amtool_routes_labelled_alerts_of_the_example(labels: str, receiver: str) -> None:
    out = amtool("config", "routes", "test", f"--config.file={EXAMPLE}", *labels.split())
    assert out.strip() == receiver


class Receivers:
    """Where Alertmanager's notifications land: one webhook for every receiver of the example,
    told apart by the `receiver` field of Alertmanager's body."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/alertmanager"
        self.got: list[dict[str, Any]] = []
        lock = self.lock = threading.Lock()
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    got.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, receiver: str) -> list[dict[str, Any]]:
        with self.lock:
            return [n for n in self.got if n["receiver"] == receiver]

    def sensors(self, receiver: str, status: str = "firing") -> set[str]:
        return {
            a["labels"]["sensor"]
            for n in self.to(receiver)
            for a in n["alerts"]
            if a["status"] == status
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _quick(route: dict[str, Any]) -> None:
    """Test timings: what waits minutes in the example waits a second here."""
    for key in ("group_wait", "group_interval"):
        if key in route and route[key] != "0s":
            route[key] = "1s"
    for child in route.get("routes", ()):
        _quick(child)


def example_for_tests(receivers_url: str) -> str:
    """The example's route tree and inhibition as shipped; its receivers (mail, chat, SMS)
    replaced by webhooks of the same names to the test's receiver, its waits shortened."""
    config = yaml.safe_load(EXAMPLE.read_text())
    names = [r["name"] for r in config["receivers"]]
    config["receivers"] = [
        {"name": n, "webhook_configs": [{"url": receivers_url, "send_resolved": True}]}
        for n in names
    ]
    del config["global"]
    _quick(config["route"])
    return yaml.safe_dump(config)


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[tuple[Alertmanager, Receivers]]:
    receivers = Receivers()
    am = Alertmanager(tmp_path / "alertmanager", example_for_tests(receivers.url))
    yield am, receivers
    am.stop()
    receivers.close()


def provision(url: str, *sensors: tuple[str, str, str]) -> None:
    with psycopg.connect(url) as conn:
        for sid, domain, district in sensors:
            conn.execute(
                "INSERT INTO sensors (sensor_id, domain, district) VALUES (%s, %s, %s)",
                (sid, domain, district),
            )


@needs_alertmanager
def test_the_example_route_tree_routes_pipeline_alarms_to_the_right_receivers(
    worker: object,
    publisher: Publisher,
    settings: Settings,
    routed: tuple[Alertmanager, Receivers],
) -> None:
    am, receivers = routed
    url = settings.database_url
    assert url
    provision(
        url,
        ("WQ-WET-01", "water", "Wetland"),
        ("LOOP-P2-01", "traffic", "Presint 2"),
        ("LOOP-P2-02", "traffic", "Presint 2"),
        ("LOOP-P3-01", "traffic", "Presint 3"),
        ("AQ-P8-01", "air", "Presint 8"),
    )
    notifier = RunningNotifier(
        settings.with_(alertmanager_url=am.url, notify_every_s=0.1, alertmanager_resend_s=5)
    )
    try:
        now = round(time.time())
        readings = [
            # Above the flood level: critical at once (the warning, after 1 minute, below).
            {"sensor": "WQ-WET-01", "ts": now - 120, "values": {"water_level": 3.2}},
            # Loop occupancy above 60 % for over 5 minutes at three loops in two districts.
            *({"sensor": s, "ts": now - dt, "values": {"occupancy": 75}}
              for s in ("LOOP-P2-01", "LOOP-P2-02", "LOOP-P3-01") for dt in (400, 60)),
            # Unhealthy PM2.5 for two minutes: a warning for the operations desk.
            *({"sensor": "AQ-P8-01", "ts": now - dt, "values": {"pm25": 70}}
              for dt in (200, 140, 80)),
        ]  # fmt: skip
        publisher.publish(f"{settings.topic_root}/gw-city/json", json.dumps(readings))
        wait_for(
            lambda: rows(url, "SELECT count(*) FROM alerts")[0][0] == 5,
            what="five alarms raised by ingest",
        )
        # The wetland's warning comes after its critical alarm, as in a flood: Alertmanager
        # inhibits a warning only while it holds the critical alarm (posted together, the
        # warning's group could be sent before the inhibitor has seen the critical one).
        wait_for(
            lambda: am.alerts(sensor="WQ-WET-01", severity="critical"),
            what="the critical wetland alarm in Alertmanager",
        )
        publisher.publish(
            f"{settings.topic_root}/gw-city/json",
            json.dumps([{"sensor": "WQ-WET-01", "ts": now - 30, "values": {"water_level": 3.2}}]),
        )
        wait_for(
            lambda: rows(url, "SELECT count(*) FROM alerts")[0][0] == 6,
            what="six alarms raised by ingest",
        )

        # The critical wetland alarm reaches the duty officer, one alarm per notification.
        duty = wait_for(lambda: receivers.to("duty-officer"), what="the duty officer paged")
        first = duty[0]
        assert [a["labels"]["sensor"] for a in first["alerts"]] == ["WQ-WET-01"]
        assert first["alerts"][0]["labels"]["severity"] == "critical"
        assert first["alerts"][0]["annotations"]["unit"] == "m"
        assert receivers.sensors("duty-officer") == {"WQ-WET-01"}

        # Traffic warnings: the control room, one group per district.
        def grouped() -> dict[str, set[str]]:
            by: dict[str, set[str]] = {}
            for n in receivers.to("traffic-control"):
                by.setdefault(n["groupLabels"]["district"], set()).update(
                    a["labels"]["sensor"] for a in n["alerts"]
                )
            return by

        wait_for(
            lambda: grouped() == {"Presint 2": {"LOOP-P2-01", "LOOP-P2-02"},
                                  "Presint 3": {"LOOP-P3-01"}},
            what="traffic warnings grouped per district",
        )  # fmt: skip
        for n in receivers.to("traffic-control"):
            assert n["groupLabels"].keys() == {"district"}
            assert {a["labels"]["district"] for a in n["alerts"]} == {n["groupLabels"]["district"]}

        # The air warning goes to the operations desk; the wetland warning is inhibited by the
        # critical alarm of the same sensor and quantity, so the desk never hears of it.
        wait_for(lambda: "AQ-P8-01" in receivers.sensors("operations"), what="the desk told")
        warning = wait_for(
            lambda: [
                a
                for a in am.alerts(sensor="WQ-WET-01", severity="warning")
                if a["status"]["inhibitedBy"]
            ],
            what="the wetland warning inhibited",
        )
        assert warning[0]["status"]["state"] == "suppressed"
        assert receivers.sensors("operations") == {"AQ-P8-01"}
        assert receivers.sensors("traffic-control") == {"LOOP-P2-01", "LOOP-P2-02", "LOOP-P3-01"}
    finally:
        notifier.stop()


def _subset(shown: Any, shipped: Any, where: str) -> None:
    if isinstance(shown, dict):
        assert isinstance(shipped, dict), where
        for k, v in shown.items():
            assert k in shipped, f"{where}.{k} is not in the example"
            _subset(v, shipped[k], f"{where}.{k}")
    elif isinstance(shown, list) and shown and isinstance(shown[0], dict):
        assert isinstance(shipped, list) and len(shown) == len(shipped), where
        for i, (a, b) in enumerate(zip(shown, shipped, strict=True)):
            _subset(a, b, f"{where}[{i}]")
    else:
        assert shown == shipped, f"{where}: the README says {shown!r}, the example {shipped!r}"


def test_the_readme_shows_the_example_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### An example route tree", 1)[1]
    shown = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    _subset(shown, yaml.safe_load(EXAMPLE.read_text()), "config")
