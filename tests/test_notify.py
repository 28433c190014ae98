"""Alarm notification on real services: a real Prometheus Alertmanager (Debian's
prometheus-alertmanager) on a free port, a real webhook receiver (an HTTP server in this
process), alarms raised by a real ingest worker from MQTT readings, and operator actions made
through store.alerts as the API makes them."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from notify import webhook
from notify.loop import Notifier
from processing import rules
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from store import alerts as lifecycle
from tests.helpers import Publisher, rows, wait_for

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-shared-secret"
BINARY = shutil.which("prometheus-alertmanager")
needs_alertmanager = pytest.mark.skipif(
    BINARY is None, reason="Debian's prometheus-alertmanager is not installed"
)

TEST_CONFIG = """
route:
  receiver: nobody
  group_wait: 1s
receivers:
  - name: nobody
"""


class Alertmanager:
    """A throwaway Alertmanager: its own config, storage and port; no cluster."""

    def __init__(self, base: Path, config: str = TEST_CONFIG) -> None:
        assert BINARY is not None
        base.mkdir(parents=True, exist_ok=True)
        (base / "alertmanager.yml").write_text(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (base / "alertmanager.log").open("wb")
        self.proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={base / 'alertmanager.yml'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.path={base / 'data'}",
                "--cluster.listen-address=",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout=30, what="Alertmanager ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "Alertmanager exited"
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.url}/api/v2{path}", timeout=5)
        r.raise_for_status()
        return r.json()

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get("/alerts")
        return [a for a in found if all(a["labels"].get(k) == v for k, v in labels.items())]

    def silences(self, state: str = "active") -> list[dict[str, Any]]:
        return [s for s in self.get("/silences") if s["status"]["state"] == state]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path / "alertmanager")
    yield am
    am.stop()


class Receiver:
    """A webhook receiver that can be down (nothing listens on its port) and come up later."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook?key=in-the-query"
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        got, lock = self.got, self.lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    got.append((dict(self.headers), data))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.got)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class RunningNotifier:
    def __init__(self, settings: Settings) -> None:
        self.notifier = Notifier(settings, rules.load(settings.rules))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=self.notifier.run, args=(self.stop_event,), daemon=True
        )
        self.thread.start()
        assert self.notifier.claimed.wait(10), "the notifier did not start"

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def pm25(sensor: str, t: float, v: float) -> bytes:
    return json.dumps([{"bn": f"{sensor}:", "bt": t, "n": "pm25", "u": "ug/m3", "v": v}]).encode()


def provision(url: str, sensor: str, district: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO sensors (sensor_id, domain, district) VALUES (%s, 'air', %s)",
            (sensor, district),
        )


def raise_pm25(publisher: Publisher, settings: Settings, sensor: str) -> int:
    """Readings above the warning limit for two minutes: the pipeline raises the alarm."""
    url = settings.database_url
    assert url
    t0 = round(time.time()) - 200
    for dt in (0, 60, 120):
        publisher.publish(f"{settings.topic_root}/gw/senml", pm25(sensor, t0 + dt, 70.0))
    got = wait_for(
        lambda: rows(url, "SELECT id FROM alerts WHERE sensor_id = %s", (sensor,)),
        what=f"the alarm of {sensor}",
    )
    return int(got[0][0])


def clear_pm25(publisher: Publisher, settings: Settings, sensor: str) -> None:
    t = round(time.time()) - 20
    publisher.publish(f"{settings.topic_root}/gw/senml", pm25(sensor, t, 30.0))


def act(url: str, fn: Any, *args: Any) -> str:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        return str(fn(cur, *args))


def state_of(url: str, alert_id: int) -> str:
    return str(rows(url, "SELECT state FROM alerts WHERE id = %s", (alert_id,))[0][0])


def events(url: str, alert_id: int) -> list[tuple[Any, ...]]:
    return rows(
        url,
        "SELECT event, to_state, actor FROM alert_events WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    )


def test_a_webhook_receiver_that_was_down_gets_every_transition_once_in_order_signed(
    worker: object, publisher: Publisher, settings: Settings
) -> None:
    url = settings.database_url
    assert url
    receiver = Receiver()  # down: nothing listens on its port yet
    s = settings.with_(
        alarm_webhooks=(receiver.url,),
        alarm_webhook_secret=SECRET,
        notify_every_s=0.1,
        notify_max_backoff_s=0.5,
    )
    notifier = RunningNotifier(s)
    try:
        provision(url, "AQ-W", "Presint 9")
        alert_id = raise_pm25(publisher, s, "AQ-W")
        act(url, lifecycle.acknowledge, alert_id, "op-anna", "crew on the way")
        clear_pm25(publisher, s, "AQ-W")
        wait_for(lambda: state_of(url, alert_id) == "closed", what="the alarm closed")
        name = webhook.receiver_name(receiver.url)
        assert name == f"webhook http://127.0.0.1:{receiver.port}/hook"  # no query in records
        wait_for(
            lambda: (
                rows(url, "SELECT failures FROM alarm_receivers WHERE receiver = %s", (name,))[0][0]
                >= 3
            ),
            what="deliveries failing while the receiver is down",
        )
        assert receiver.received() == []
        receiver.up()
        expected = [e[0] for e in events(url, alert_id)]
        assert expected == ["raise", "ack", "clear"]
        got = wait_for(
            lambda: (r := receiver.received()) and len(r) >= len(expected) and r,
            what="every transition at the receiver",
        )
        # Everything is there once the outbox is drained: no duplicates come later.
        wait_for(
            lambda: rows(url, "SELECT count(*) FROM alarm_deliveries")[0][0] == len(expected),
            what="deliveries recorded",
        )
        got = receiver.received()
        assert len(got) == len(expected)
        docs = []
        for headers, body in got:
            assert webhook.verify(
                SECRET.encode(), headers["X-Pusat-Timestamp"], body, headers["X-Pusat-Signature"]
            )
            assert not webhook.verify(b"wrong", headers["X-Pusat-Timestamp"], body,
                                      headers["X-Pusat-Signature"])  # fmt: skip
            doc = json.loads(body)
            assert headers["X-Pusat-Event"] == str(doc["id"])
            docs.append(doc)
        assert [d["event"] for d in docs] == expected
        assert [d["seq"] for d in docs] == sorted(d["seq"] for d in docs)
        assert [d["to_state"] for d in docs] == ["active", "acknowledged", "closed"]
        assert docs[1]["actor"] == "op-anna" and docs[1]["comment"] == "crew on the way"
        a = docs[0]["alert"]
        assert (a["id"], a["sensor_id"], a["quantity"], a["unit"], a["district"]) == (
            alert_id,
            "AQ-W",
            "pm25",
            "ug/m3",
            "Presint 9",
        )
        deliveries = rows(
            url,
            "SELECT receiver, attempts FROM alarm_deliveries WHERE alert_id = %s"
            " ORDER BY outbox_id",
            (alert_id,),
        )
        assert [d[0] for d in deliveries] == [name] * 3
        assert deliveries[0][1] >= 3  # the first one waited through the failures
    finally:
        notifier.stop()
        receiver.close()


@needs_alertmanager
def test_alarms_and_shelving_reach_alertmanager(
    worker: object, publisher: Publisher, settings: Settings, alertmanager: Alertmanager
) -> None:
    url = settings.database_url
    assert url
    s = settings.with_(
        alertmanager_url=alertmanager.url,
        notify_every_s=0.1,
        public_url="https://wall.example.org",
    )
    notifier = RunningNotifier(s)
    try:
        provision(url, "AQ-A", "Presint 8")
        alert_id = raise_pm25(publisher, s, "AQ-A")
        got = wait_for(lambda: alertmanager.alerts(alert_id=str(alert_id)), what="the alert")
        a = got[0]
        assert {k: a["labels"].get(k) for k in ("severity", "domain", "district", "sensor")} == {
            "severity": "warning",
            "domain": "air",
            "district": "Presint 8",
            "sensor": "AQ-A",
        }
        assert a["labels"]["quantity"] == "pm25"
        assert a["labels"]["rule"] == "pm25:threshold-above:warning"
        assert a["annotations"]["value"] == "70" and a["annotations"]["unit"] == "ug/m3"
        assert a["annotations"]["message"] == "PM2.5 unhealthy"
        assert a["annotations"]["wall"] == f"https://wall.example.org/wall#alert-{alert_id}"
        assert a["status"]["state"] == "active"

        # Shelving in Pusat: a silence in Alertmanager until shelved_until.
        until = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
        act(url, lifecycle.shelve, alert_id, until, "op-budi", "roadworks")
        silence = wait_for(lambda: alertmanager.silences(), what="the silence")[0]
        assert silence["matchers"] == [
            {"name": "alert_id", "value": str(alert_id), "isRegex": False, "isEqual": True}
        ]
        assert silence["createdBy"] == "pusat:op-budi" and silence["comment"] == "roadworks"
        assert datetime.fromisoformat(silence["endsAt"]) == until
        wait_for(
            lambda: (
                alertmanager.alerts(alert_id=str(alert_id))[0]["status"]["state"] == "suppressed"
            ),
            what="the alert suppressed by the silence",
        )

        # Acknowledged: visible in the notification; clearing it ends the silence and the alert.
        act(url, lifecycle.acknowledge, alert_id, "op-budi", "")
        wait_for(
            lambda: (
                "op-budi at"
                in alertmanager.alerts(alert_id=str(alert_id))[0]["annotations"].get(
                    "acknowledged", ""
                )
            ),
            what="the acknowledgement as an annotation",
        )
        act(url, lifecycle.close, alert_id, "op-budi", "done")
        wait_for(lambda: not alertmanager.silences(), what="the silence expired")
        assert alertmanager.silences("expired")[0]["id"] == silence["id"]
        wait_for(lambda: not alertmanager.alerts(alert_id=str(alert_id)), what="resolved")
        delivered = rows(
            url, "SELECT receiver FROM alarm_deliveries WHERE alert_id = %s", (alert_id,)
        )
        assert {d[0] for d in delivered} == {"alertmanager"}
    finally:
        notifier.stop()


@needs_alertmanager
def test_a_silence_made_in_alertmanager_shelves_the_alarm_and_its_expiry_unshelves(
    worker: object, publisher: Publisher, settings: Settings, alertmanager: Alertmanager
) -> None:
    url = settings.database_url
    assert url
    s = settings.with_(alertmanager_url=alertmanager.url, notify_every_s=0.1)
    notifier = RunningNotifier(s)
    try:
        provision(url, "AQ-S", "Presint 11")
        alert_id = raise_pm25(publisher, s, "AQ-S")
        wait_for(lambda: alertmanager.alerts(alert_id=str(alert_id)), what="the alert")
        now = datetime.now(UTC)
        r = httpx.post(
            f"{alertmanager.url}/api/v2/silences",
            json={
                "matchers": [
                    {"name": "district", "value": "Presint 1.*", "isRegex": True, "isEqual": True}
                ],
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(hours=1)).isoformat(),
                "createdBy": "duty-officer",
                "comment": "sensor maintenance",
            },
        )
        r.raise_for_status()
        sid = r.json()["silenceID"]
        wait_for(lambda: state_of(url, alert_id) == "shelved", what="shelved by the silence")
        assert events(url, alert_id)[-1] == ("shelve", "shelved", "alertmanager:duty-officer")
        assert len(alertmanager.silences()) == 1  # Pusat made no second silence for it
        httpx.delete(f"{alertmanager.url}/api/v2/silence/{sid}").raise_for_status()
        wait_for(lambda: state_of(url, alert_id) == "active", what="unshelved at the expiry")
        assert events(url, alert_id)[-1] == ("unshelve", "active", "alertmanager:duty-officer")
    finally:
        notifier.stop()


@needs_alertmanager
def test_an_unacknowledged_alarm_escalates(
    publisher: Publisher, settings: Settings, alertmanager: Alertmanager, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        '[[rule]]\nquantity = "pm25"\nkind = "threshold"\nabove = 55.4\nclear = 45.0\n'
        'for = "2m"\nseverity = "warning"\nmessage = "PM2.5 unhealthy"\nescalate_after = "1s"\n'
    )
    s = settings.with_(alertmanager_url=alertmanager.url, notify_every_s=0.1, rules=rules_file)
    from tests.conftest import RunningWorker

    worker = RunningWorker(s).start()
    notifier = RunningNotifier(s)
    try:
        provision(url, "AQ-E", "Presint 9")
        alert_id = raise_pm25(publisher, s, "AQ-E")
        got = wait_for(
            lambda: alertmanager.alerts(alert_id=str(alert_id), escalated="true"),
            what="the escalated alert",
        )
        assert got[0]["labels"]["severity"] == "critical"
        assert ("escalate", "active", "system") in events(url, alert_id)
        # The alert under the old labels is resolved: one alert for the alarm remains.
        wait_for(
            lambda: len(alertmanager.alerts(alert_id=str(alert_id))) == 1,
            what="the unescalated alert resolved",
        )
        # Escalated once only; and an acknowledged alarm never escalates.
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            far = datetime.now(UTC) + timedelta(hours=1)
            assert lifecycle.escalate(cur, {"pm25:threshold-above:warning": 1.0}, far) == []
        assert [e[0] for e in events(url, alert_id)].count("escalate") == 1
    finally:
        notifier.stop()
        worker.stop()


def test_an_acknowledged_alarm_does_not_escalate(
    worker: object, publisher: Publisher, settings: Settings
) -> None:
    url = settings.database_url
    assert url
    alert_id = raise_pm25(publisher, settings, "AQ-K")
    act(url, lifecycle.acknowledge, alert_id, "op-citra", "")
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        far = datetime.now(UTC) + timedelta(hours=1)
        assert lifecycle.escalate(cur, {"pm25:threshold-above:warning": 1.0}, far) == []
        act_id = cur.execute("SELECT escalated_at FROM alerts WHERE id = %s", (alert_id,))
        assert act_id.fetchone() == (None,)


def test_escalate_after_is_parsed_from_the_rules_file() -> None:
    _, parsed = rules.parse(
        '[[rule]]\nquantity = "water_level"\nabove = 2.5\nseverity = "critical"\n'
        'escalate_after = "10m"\n',
        "test",
    )
    assert parsed[0].escalate_after_us == 600_000_000
    assert rules.escalations(parsed) == {"water_level:threshold-above:critical": 600.0}
    with pytest.raises(rules.RuleError, match="escalate_after"):
        rules.parse('[[rule]]\nquantity = "ph"\nbelow = 6\nescalate_after = "soon"\n', "t")


# -- the lifecycle through the HTTP API, in step with Alertmanager ------------------------------


class Api:
    """The real API server on the test's database, with an operator token."""

    def __init__(self, settings: Settings) -> None:
        from api.server import ServerThread
        from tests.test_api_support import make_tokens

        assert settings.database_url is not None
        self.settings = settings.with_(api_port=free_port(), api_token_cache_s=0.0)
        self.tokens, self.names = make_tokens(settings.database_url)
        self.server = ServerThread(self.settings).start()
        self.url = self.server.url

    def call(self, method: str, path: str, role: str = "operator", **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        r = httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    a = Api(settings)
    yield a
    a.stop()


def am_state(am: Alertmanager, alert_id: int) -> str | None:
    found = am.alerts(alert_id=str(alert_id))
    return str(found[0]["status"]["state"]) if found else None


@needs_alertmanager
def test_shelving_and_unshelving_through_the_api_keep_alertmanager_silences_in_step(
    worker: object,
    publisher: Publisher,
    settings: Settings,
    alertmanager: Alertmanager,
    api: Api,
) -> None:
    url = settings.database_url
    assert url
    s = settings.with_(alertmanager_url=alertmanager.url, notify_every_s=0.1)
    notifier = RunningNotifier(s)
    operator = api.names["operator"]
    try:
        provision(url, "AQ-L", "Presint 14")
        alert_id = raise_pm25(publisher, s, "AQ-L")
        wait_for(lambda: am_state(alertmanager, alert_id) == "active", what="the alert")
        path = f"/api/v1/alerts/{alert_id}"

        # Shelved on the API: a silence until shelved_until, by the token's name.
        a = api.call("POST", f"{path}/shelve", json={"duration": "2h", "comment": "roadworks"})
        assert (a["state"], a["shelved_by"]) == ("shelved", operator)
        silence = wait_for(alertmanager.silences, what="the silence")[0]
        assert silence["createdBy"] == f"pusat:{operator}" and silence["comment"] == "roadworks"
        ends = datetime.fromisoformat(silence["endsAt"])  # Alertmanager keeps milliseconds
        assert abs(ends - datetime.fromisoformat(a["shelved_until"])) < timedelta(milliseconds=1)
        wait_for(lambda: am_state(alertmanager, alert_id) == "suppressed", what="suppressed")

        # Unshelved on the API: the silence is expired, the alert is no longer suppressed.
        a = api.call("POST", f"{path}/unshelve", json={"comment": "works finished"})
        assert (a["state"], a["shelved_by"], a["shelved_until"]) == ("active", None, None)
        wait_for(lambda: not alertmanager.silences(), what="the silence expired")
        assert [x["id"] for x in alertmanager.silences("expired")] == [silence["id"]]
        wait_for(lambda: am_state(alertmanager, alert_id) == "active", what="firing again")
        r = httpx.post(
            api.url + f"{path}/unshelve",
            headers={"Authorization": f"Bearer {api.tokens['operator']}"},
        )
        assert r.status_code == 409 and "not shelved" in r.json()["detail"]
        r = httpx.post(
            api.url + f"{path}/unshelve",
            headers={"Authorization": f"Bearer {api.tokens['viewer']}"},
        )
        assert r.status_code == 403

        # Shelved for a moment: at its expiry the tick returns it to active, the silence ends.
        until = datetime.now(UTC) + timedelta(seconds=3)
        api.call("POST", f"{path}/shelve", json={"until": until.isoformat()})
        wait_for(lambda: len(alertmanager.silences()) == 1, what="the short silence")
        wait_for(lambda: state_of(url, alert_id) == "active", what="the shelving expired")
        wait_for(lambda: not alertmanager.silences(), what="the short silence over")
        assert len(alertmanager.silences("expired")) == 2
        wait_for(lambda: am_state(alertmanager, alert_id) == "active", what="firing again")
        trail = [(e["event"], e["to_state"], e["actor"]) for e in api.call("GET", f"{path}/events")]
        assert trail[-4:] == [
            ("shelve", "shelved", operator),
            ("unshelve", "active", operator),
            ("shelve", "shelved", operator),
            ("settle", "active", "system"),
        ]
    finally:
        notifier.stop()


@needs_alertmanager
def test_a_silence_made_in_alertmanager_shows_on_the_api_as_shelved_by_its_author(
    worker: object,
    publisher: Publisher,
    settings: Settings,
    alertmanager: Alertmanager,
    api: Api,
) -> None:
    url = settings.database_url
    assert url
    s = settings.with_(alertmanager_url=alertmanager.url, notify_every_s=0.1)
    notifier = RunningNotifier(s)
    try:
        provision(url, "AQ-M", "Presint 15")
        alert_id = raise_pm25(publisher, s, "AQ-M")
        wait_for(lambda: am_state(alertmanager, alert_id) == "active", what="the alert")
        now = datetime.now(UTC)
        httpx.post(
            f"{alertmanager.url}/api/v2/silences",
            json={
                "matchers": [{"name": "sensor", "value": "AQ-M", "isRegex": False}],
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(hours=1)).isoformat(),
                "createdBy": "duty-officer",
                "comment": "sensor maintenance",
            },
        ).raise_for_status()
        path = f"/api/v1/alerts/{alert_id}"
        a = wait_for(
            lambda: (x := api.call("GET", path, role="viewer"))["state"] == "shelved" and x,
            what="shelved on the API",
        )
        assert a["shelved_by"] == "alertmanager:duty-officer"
        last = api.call("GET", f"{path}/events", role="viewer")[-1]
        assert (last["event"], last["actor"], last["comment"]) == (
            "shelve",
            "alertmanager:duty-officer",
            "sensor maintenance",
        )
        listed = api.call("GET", "/api/v1/alerts", role="viewer", params={"state": "shelved"})
        assert [(x["id"], x["shelved_by"]) for x in listed] == [
            (alert_id, "alertmanager:duty-officer")
        ]
        assert len(alertmanager.silences()) == 1  # Pusat made none of its own for it

        # An operator shelves it for longer than that silence lasts: Pusat's own silence covers
        # the rest, and the one made in Alertmanager is left as it is.
        a = api.call("POST", f"{path}/shelve", json={"duration": "3h"})
        assert a["shelved_by"] == api.names["operator"]
        ours = wait_for(
            lambda: [x for x in alertmanager.silences() if x["createdBy"].startswith("pusat:")],
            what="Pusat's silence for the longer shelving",
        )
        ends = datetime.fromisoformat(ours[0]["endsAt"])
        assert abs(ends - datetime.fromisoformat(a["shelved_until"])) < timedelta(milliseconds=1)
        assert {x["createdBy"] for x in alertmanager.silences()} == {
            "duty-officer",
            f"pusat:{api.names['operator']}",
        }
    finally:
        notifier.stop()


@needs_alertmanager
def test_acknowledging_on_the_api_shows_in_alertmanager_and_stops_escalation(
    publisher: Publisher, settings: Settings, alertmanager: Alertmanager, api: Api, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        '[[rule]]\nquantity = "pm25"\nkind = "threshold"\nabove = 55.4\nclear = 45.0\n'
        'for = "2m"\nseverity = "warning"\nmessage = "PM2.5 unhealthy"\nescalate_after = "4s"\n'
    )
    s = settings.with_(alertmanager_url=alertmanager.url, notify_every_s=0.1, rules=rules_file)
    from tests.conftest import RunningWorker

    worker = RunningWorker(s).start()
    notifier = RunningNotifier(s)
    try:
        acked = raise_pm25(publisher, s, "AQ-N1")
        left = raise_pm25(publisher, s, "AQ-N2")
        a = api.call("POST", f"/api/v1/alerts/{acked}/ack", json={"comment": "on it"})
        assert a["state"] == "acknowledged"
        operator = api.names["operator"]
        got = wait_for(
            lambda: (
                (x := alertmanager.alerts(alert_id=str(acked)))
                and "acknowledged" in x[0]["annotations"]
                and x
            ),
            what="the acknowledgement in Alertmanager",
        )
        assert got[0]["annotations"]["acknowledged"].startswith(f"{operator} at ")
        assert got[0]["annotations"]["state"] == "acknowledged"
        # The one nobody acknowledged escalates; by then the acknowledged one was due as well.
        wait_for(
            lambda: alertmanager.alerts(alert_id=str(left), escalated="true"),
            what="the unacknowledged alarm escalated",
        )
        assert "escalate" not in [e[0] for e in events(url, acked)]
        assert alertmanager.alerts(alert_id=str(acked), escalated="true") == []
        assert [x["labels"]["severity"] for x in alertmanager.alerts(alert_id=str(acked))] == [
            "warning"
        ]
    finally:
        notifier.stop()
        worker.stop()


@needs_alertmanager
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is missing")
def test_the_wall_shows_an_alarm_shelved_by_an_alertmanager_silence_and_who_made_it(
    worker: object,
    publisher: Publisher,
    settings: Settings,
    alertmanager: Alertmanager,
    api: Api,
) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    from tests.test_wall import CHROMIUM, FLAGS

    url = settings.database_url
    assert url
    s = settings.with_(alertmanager_url=alertmanager.url, notify_every_s=0.1)
    notifier = RunningNotifier(s)
    try:
        provision(url, "AQ-V", "Presint 16")
        alert_id = raise_pm25(publisher, s, "AQ-V")
        wait_for(lambda: am_state(alertmanager, alert_id) == "active", what="the alert")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = browser.new_page()
                page.goto(f"{api.url}/wall?token={api.tokens['viewer']}")
                row = page.locator(f"#alarms li[data-id='{alert_id}']")
                row.wait_for(timeout=15_000)
                assert "active" in (row.get_attribute("class") or "")
                now = datetime.now(UTC)
                httpx.post(
                    f"{alertmanager.url}/api/v2/silences",
                    json={
                        "matchers": [{"name": "district", "value": "Presint 16", "isRegex": False}],
                        "startsAt": now.isoformat(),
                        "endsAt": (now + timedelta(hours=1)).isoformat(),
                        "createdBy": "duty-officer",
                        "comment": "pump replaced",
                    },
                ).raise_for_status()
                # Live: the notifier's shelving reaches the open page without a reload.
                try:
                    page.wait_for_selector(
                        f"#alarms li.shelved[data-id='{alert_id}']", timeout=15_000
                    )
                except PlaywrightTimeout:
                    # A failure once on another machine, not reproduced: say what each side held.
                    silences = httpx.get(f"{alertmanager.url}/api/v2/silences").json()
                    held = rows(
                        url, "SELECT state, shelved_until FROM alerts WHERE id = %s", (alert_id,)
                    )
                    tied = rows(url, "SELECT silence_id, origin, ends_at FROM alarm_silences")
                    pytest.fail(f"not shelved: alarm {held}, tied {tied}, Alertmanager {silences}")
                expect(row.locator(".shelved-by")).to_contain_text(
                    "shelved by alertmanager:duty-officer until"
                )
            finally:
                browser.close()
    finally:
        notifier.stop()


# -- delivery state: on the API and in metrics -------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value}."""
    text = httpx.get(url, timeout=10).text
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def test_delivery_state_shows_on_the_alarm_and_in_metrics(
    worker: object, publisher: Publisher, settings: Settings, api: Api
) -> None:
    url = settings.database_url
    assert url
    receiver = Receiver()  # down at first
    s = settings.with_(
        alarm_webhooks=(receiver.url,),
        alarm_webhook_secret=SECRET,
        notify_every_s=0.1,
        notify_max_backoff_s=0.3,
    )
    notifier = RunningNotifier(s)
    name = webhook.receiver_name(receiver.url)
    path = "/api/v1/alerts/{}"
    try:
        provision(url, "AQ-D", "Presint 17")
        alert_id = raise_pm25(publisher, s, "AQ-D")
        act(url, lifecycle.acknowledge, alert_id, "op-dewi", "")
        wait_for(
            lambda: (
                len(api.call("GET", path.format(alert_id), role="viewer")["pending"]) == 2
                and scrape(f"{api.url}/metrics").get(
                    f'pusat_alarm_receiver_failures{{receiver="{name}"}}', 0
                )
                >= 2
            ),
            what="two transitions waiting for a failing receiver",
        )
        a = api.call("GET", path.format(alert_id), role="viewer")
        assert a["deliveries"] == []
        assert [(p["receiver"], p["event"]) for p in a["pending"]] == [
            (name, "raise"),
            (name, "ack"),
        ]
        assert a["pending"][0]["failures"] >= 2
        assert "Connect" in (a["pending"][0]["last_error"] or "")
        m = scrape(f"{api.url}/metrics")
        assert m[f'pusat_alarm_outbox_pending{{receiver="{name}"}}'] == 2
        assert m["pusat_alarm_outbox_age_seconds"] > 0
        failed = notifier.notifier.metrics.failures.labels(name)._value.get()
        assert failed >= 2

        receiver.up()
        a = wait_for(
            lambda: (
                (x := api.call("GET", path.format(alert_id), role="viewer"))["pending"] == [] and x
            ),
            what="everything delivered",
        )
        assert [(d["receiver"], d["event"]) for d in a["deliveries"]] == [
            (name, "raise"),
            (name, "ack"),
        ]
        first, second = a["deliveries"]
        assert first["attempts"] >= 3 and second["attempts"] == 1
        raised_at = datetime.fromisoformat(first["at"])
        assert raised_at <= datetime.fromisoformat(first["delivered_at"])
        m = scrape(f"{api.url}/metrics")
        assert m[f'pusat_alarm_outbox_pending{{receiver="{name}"}}'] == 0
        assert m[f'pusat_alarm_receiver_failures{{receiver="{name}"}}'] == 0
        assert m["pusat_alarm_outbox_age_seconds"] == 0
        assert notifier.notifier.metrics.delivered.labels(name)._value.get() == 2
    finally:
        notifier.stop()
        receiver.close()

    # A receiver taken out of the configuration is forgotten: it is in no backlog.
    other = settings.with_(
        alarm_webhooks=("http://127.0.0.1:9/elsewhere",), alarm_webhook_secret=SECRET
    )
    RunningNotifier(other).stop()  # forgets at its start (it may register its own, too)
    assert (name,) not in rows(url, "SELECT receiver FROM alarm_receivers")
    m = scrape(f"{api.url}/metrics")
    assert f'pusat_alarm_outbox_pending{{receiver="{name}"}}' not in m


def test_pusat_notify_serves_its_metrics(settings: Settings, tmp_path: Path) -> None:
    import os
    import sys

    url = settings.database_url
    assert url
    receiver = Receiver()
    receiver.up()
    port = free_port()
    env = {
        **os.environ,
        "PUSAT_DATABASE_URL": url,
        "PUSAT_ALARM_WEBHOOKS": receiver.url,
        "PUSAT_ALARM_WEBHOOK_SECRET": SECRET,
        "PUSAT_NOTIFY_EVERY_S": "0.1",
        "PUSAT_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path / "notify.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pusat", "notify", "--metrics-port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    name = webhook.receiver_name(receiver.url)
    try:

        def started() -> bool:
            assert proc.poll() is None, (tmp_path / "notify.log").read_text()
            try:
                scrape(f"http://127.0.0.1:{port}/metrics")
            except httpx.HTTPError:
                return False
            # the receiver is registered once the notifier holds the lock and has looked
            return bool(rows(url, "SELECT 1 FROM alarm_receivers"))

        wait_for(started, timeout=30, what="the notifier serving metrics")
        from tests.test_api_support import raise_alert

        alert_id = raise_alert(url, "AQ-P")
        wait_for(lambda: receiver.received(), what="the transition at the receiver")
        m = wait_for(
            lambda: (
                (x := scrape(f"http://127.0.0.1:{port}/metrics")).get(
                    f'pusat_notify_deliveries_total{{receiver="{name}"}}'
                )
                == 1
                and x
            ),
            what="the delivery counted",
        )
        assert m["pusat_notify_outbox_age_seconds"] == 0
        assert m.get(f'pusat_notify_failures_total{{receiver="{name}"}}', 0) == 0
        assert json.loads(receiver.received()[0][1])["alert"]["id"] == alert_id
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()
        receiver.close()


# -- `pusat up` runs the notifier when a receiver is configured ----------------------------------


@pytest.mark.slow
@needs_alertmanager
def test_pusat_up_delivers_alarms_to_alertmanager(
    alertmanager: Alertmanager, tmp_path: Path
) -> None:
    import re
    import signal
    import sys

    from tests.helpers import Publisher as MqttPublisher
    from tests.test_cli import env_without_pusat

    log = tmp_path / "up.log"
    env = env_without_pusat(
        PUSAT_HOME=str(tmp_path / "home"),
        PUSAT_EMBEDDED="system",
        PUSAT_BATCH_MS="50",
        PUSAT_ALERTMANAGER_URL=alertmanager.url,
        PUSAT_NOTIFY_EVERY_S="0.2",
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pusat", "up", "--no-city"],
        cwd=tmp_path,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: "alarm notifications to alertmanager" in log.read_text(),
            timeout=90,
            what=f"the notifier started, in {log}",
        )
        text = log.read_text()
        broker = re.search(r"publish readings to mqtt://([^:\s]+):(\d+) under (\S+)/<g", text)
        api = re.search(r"API: (http://[^/\s]+)/api/v1", text)
        assert broker is not None and api is not None, text
        publisher = MqttPublisher(broker.group(1), int(broker.group(2)))
        try:
            t0 = round(time.time()) - 200
            for dt in (0, 60, 120):
                publisher.publish(f"{broker.group(3)}/gw-up/senml", pm25("AQ-UP", t0 + dt, 70.0))
        finally:
            publisher.close()
        got = wait_for(
            lambda: alertmanager.alerts(sensor="AQ-UP"), timeout=60, what="the alarm posted"
        )
        alert_id = got[0]["labels"]["alert_id"]
        # Links point at the API as `pusat up` started it.
        assert got[0]["annotations"]["wall"] == f"{api.group(1)}/wall#alert-{alert_id}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
