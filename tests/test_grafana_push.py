"""`pusat grafana push` against a local HTTP server that answers like Grafana's API and records
every request: the right calls, in an order that works on an empty Grafana, and a second push
that changes nothing. The server is strict where Grafana is and where order matters: a dashboard
needs its folder, and a dashboard that names a missing data source or a playlist that names a
missing dashboard is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import yaml

from pusat.grafana import dashboards, datasource, push

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "glsa_test_token"


class FakeGrafana:
    """Grafana's HTTP API, the parts `pusat grafana push` uses, in memory."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.passwords: dict[str, str] = {}
        self.boards: dict[str, dict[str, Any]] = {}  # uid -> {"dashboard", "meta"}
        self.playlists: dict[str, dict[str, Any]] = {}
        self.annotations: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.requests if m != "GET"]

    # -- the API --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[
        int, Any
    ]:  # fmt: skip
        parts = path.removeprefix("/api/").split("/")
        if parts == ["health"]:
            return 200, {"database": "ok", "version": "11.6.0"}
        if parts[0] == "folders":
            return self.folder(method, parts[1:], body)
        if parts[0] == "datasources":
            return self.datasource(method, parts[1:], body)
        if parts[0] == "dashboards":
            return self.dashboard(method, parts[1:], body)
        if parts[0] == "playlists":
            return self.playlist(method, parts[1:], body)
        if parts[0] == "annotations":
            return self.annotation(method, query, body)
        return 404, {"message": "Not found"}

    def folder(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if method == "GET" and rest:
            found = self.folders.get(rest[0])
            return (200, found) if found else (404, {"message": "folder not found"})
        if method == "POST":
            if body["uid"] in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            self.folders[body["uid"]] = {"id": len(self.folders) + 1, "version": 1, **body}
            return 200, self.folders[body["uid"]]
        if method == "PUT" and rest in self.folders:
            self.folders[rest[0]].update(title=body["title"])
            return 200, self.folders[rest[0]]
        return 404, {"message": "folder not found"}

    def datasource(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if method == "GET" and rest[:1] == ["uid"]:
            found = self.datasources.get(rest[1])
            return (200, found) if found else (404, {"message": "Data source not found"})
        if method == "POST":
            if body["uid"] in self.datasources:
                return 409, {"message": "data source with the same uid already exists"}
            return self._store_datasource(body, version=1)
        if method == "PUT" and rest[:1] == ["uid"] and rest[1] in self.datasources:
            old = self.datasources[rest[1]]
            if old.get("readOnly"):
                return 403, {"message": "Cannot modify read-only data source"}
            return self._store_datasource(body, version=old["version"] + 1)
        return 404, {"message": "Data source not found"}

    def _store_datasource(self, body: dict[str, Any], version: int) -> tuple[int, Any]:
        body = dict(body)
        secure = body.pop("secureJsonData", None) or {}
        if "password" in secure:
            self.passwords[body["uid"]] = secure["password"]
        stored = {
            "id": 1, "orgId": 1, "version": version, "readOnly": False, "basicAuth": False,
            "withCredentials": False, **body,
            "secureJsonFields": {"password": True} if body["uid"] in self.passwords else {},
        }  # fmt: skip
        self.datasources[body["uid"]] = stored
        return 200, {"datasource": stored, "id": 1, "message": "Datasource added"}

    def dashboard(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if method == "GET" and rest[:1] == ["uid"]:
            found = self.boards.get(rest[1])
            return (200, found) if found else (404, {"message": "Dashboard not found"})
        if method == "POST" and rest == ["db"]:
            d = body["dashboard"]
            if body.get("folderUid") not in self.folders:
                return 400, {"message": "folder not found"}
            for p in d.get("panels", []):
                if p["datasource"]["uid"] not in self.datasources:
                    return 400, {"message": f"panel {p['title']}: no data source"}
            old = self.boards.get(d["uid"])
            if old is not None and not body.get("overwrite"):
                return 412, {"message": "A dashboard with the same uid already exists"}
            version = old["dashboard"]["version"] + 1 if old else 1
            self.boards[d["uid"]] = {
                "dashboard": {**d, "id": 7, "version": version},
                "meta": {"folderUid": body["folderUid"], "provisioned": False},
            }
            return 200, {"uid": d["uid"], "status": "success", "version": version}
        return 404, {"message": "Dashboard not found"}

    def playlist(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if method == "GET" and rest:
            found = self.playlists.get(rest[0])
            return (200, found) if found else (404, {"message": "playlist not found"})
        if method in ("POST", "PUT"):
            for item in body["items"]:
                if item["type"] == "dashboard_by_uid" and item["value"] not in self.boards:
                    return 400, {"message": f"no dashboard {item['value']}"}
            uid = body["uid"] if method == "POST" else rest[0]
            if method == "POST" and uid in self.playlists:
                return 409, {"message": "playlist exists"}
            self.playlists[uid] = {**body, "uid": uid, "id": 3}
            return 200, self.playlists[uid]
        return 404, {"message": "playlist not found"}

    def annotation(self, method: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if method == "GET":
            tags = set(query.get("tags", []))
            return 200, [a for a in self.annotations if tags <= set(a["tags"])]
        if method == "POST":
            self.annotations.append({**body, "id": len(self.annotations) + 1})
            return 200, {"id": len(self.annotations), "message": "Annotation added"}
        return 404, {"message": "Not found"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with fake.lock:
                    fake.requests.append((self.command, parts.path, body))
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                        status, answer = 401, {"message": "Unauthorized"}
                    else:
                        status, answer = fake.handle(
                            self.command, parts.path, parse_qs(parts.query), body
                        )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output quiet

        return Handler


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    g = FakeGrafana()
    yield g
    g.close()


CONN = datasource.Connection("timescaledb", 5432, "pusat", "pusat_grafana", "s3cret")


def test_first_push_creates_everything_in_an_order_an_empty_grafana_takes(
    grafana: FakeGrafana,
) -> None:
    report = push.push(push.connect(grafana.url, TOKEN), CONN)
    uids = list(dashboards.dashboards())
    assert grafana.writes() == [
        ("POST", "/api/folders"),
        ("POST", "/api/datasources"),
        *[("POST", "/api/dashboards/db")] * len(uids),
        ("POST", "/api/playlists"),
    ]
    # each object is looked at before it is written
    methods = [(m, p) for m, p, _ in grafana.requests]
    assert methods[0] == ("GET", "/api/folders/pusat")
    assert methods[2] == ("GET", f"/api/datasources/uid/{datasource.UID}")
    assert set(grafana.boards) == set(uids)
    assert all(b["meta"]["folderUid"] == "pusat" for b in grafana.boards.values())
    assert grafana.passwords == {datasource.UID: "s3cret"}
    ds = grafana.datasources[datasource.UID]
    assert ds["type"] == "grafana-postgresql-datasource" and ds["user"] == "pusat_grafana"
    assert ds["url"] == "timescaledb:5432" and ds["jsonData"]["database"] == "pusat"
    assert [i["value"] for i in grafana.playlists["pusat-wall"]["items"]] == list(dashboards.WALL)
    assert report.changed == len(report.actions) == len(uids) + 3


def test_second_push_changes_nothing(grafana: FakeGrafana) -> None:
    api = push.connect(grafana.url, TOKEN)
    push.push(api, CONN)
    grafana.requests.clear()
    report = push.push(api, CONN)
    assert grafana.writes() == []
    assert report.changed == 0


def test_push_updates_only_what_drifted(grafana: FakeGrafana) -> None:
    api = push.connect(grafana.url, TOKEN)
    push.push(api, CONN)
    grafana.boards["pusat-air"]["dashboard"]["title"] = "edited by hand"
    grafana.playlists["pusat-wall"]["interval"] = "5m"
    grafana.requests.clear()
    report = push.push(api, CONN)
    assert grafana.writes() == [
        ("POST", "/api/dashboards/db"),
        ("PUT", "/api/playlists/pusat-wall"),
    ]
    assert grafana.boards["pusat-air"]["dashboard"]["title"] == "Air Quality"
    assert grafana.boards["pusat-air"]["dashboard"]["version"] == 2
    assert ("dashboard pusat-air", "updated") in report.actions
    moved = datasource.Connection("db.internal", 5432, "pusat", "pusat_grafana", "s3cret")
    grafana.requests.clear()
    push.push(api, moved)
    assert grafana.writes() == [("PUT", f"/api/datasources/uid/{datasource.UID}")]
    assert grafana.datasources[datasource.UID]["url"] == "db.internal:5432"
    # the stored password stays: Grafana never shows it, so an update leaves it out
    (update,) = [body for method, _, body in grafana.requests if method == "PUT"]
    assert "secureJsonData" not in update
    assert grafana.passwords == {datasource.UID: "s3cret"}


def test_push_onto_a_provisioned_grafana_only_adds_the_playlist(grafana: FakeGrafana) -> None:
    """The compose stack provisions from deploy/grafana, then its grafana-init job pushes: the
    provisioned (read-only) objects are equal and left alone."""
    deploy = ROOT / "deploy" / "grafana"
    prov = yaml.safe_load((deploy / "provisioning" / "datasources" / "pusat.yaml").read_text())
    (source,) = prov["datasources"]
    source = {k: v for k, v in source.items() if k not in ("secureJsonData", "editable", "orgId")}
    grafana.datasources[datasource.UID] = {
        **source, "id": 1, "version": 1, "readOnly": True, "secureJsonFields": {"password": True}
    }  # fmt: skip
    grafana.folders["pusat"] = {"uid": "pusat", "title": "Pusat", "id": 1, "version": 1}
    for f in (deploy / "dashboards").glob("*.json"):
        d = json.loads(f.read_text())
        grafana.boards[d["uid"]] = {
            "dashboard": {**d, "id": 3, "version": 1},
            "meta": {"folderUid": "pusat", "provisioned": True},
        }
    compose = datasource.Connection("timescaledb", 5432, "pusat", "pusat_grafana", "from-env")
    report = push.push(push.connect(grafana.url, TOKEN), compose)
    assert grafana.writes() == [("POST", "/api/playlists")]
    assert report.changed == 1


def test_a_refused_token_is_a_clear_error(grafana: FakeGrafana) -> None:
    with pytest.raises(push.PushError, match="folder pusat: Grafana answered 401"):
        push.push(push.connect(grafana.url, "wrong"), CONN)
    assert grafana.writes() == []


def test_unreachable_grafana_is_a_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    with pytest.raises(push.PushError, match="cannot reach Grafana"):
        push.push(push.connect(f"http://127.0.0.1:{port}", TOKEN, timeout=2), CONN)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSAT_")}
    env.update(extra)
    return env


def _alarm_events(url: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        alert_id = conn.execute(
            "INSERT INTO alerts (sensor_id, quantity, rule, kind, severity, state, message,"
            " value, raised_at) VALUES ('AQ-P01', 'pm25', 'pm25:threshold-above:warning',"
            " 'threshold', 'warning', 'acknowledged', 'PM2.5 unhealthy', 80, %s) RETURNING id",
            (now - timedelta(hours=2),),
        ).fetchone()
        assert alert_id is not None
        conn.execute(
            "INSERT INTO alert_events (alert_id, event, from_state, to_state, actor, value,"
            " event_time) VALUES (%s, 'raise', NULL, 'active', 'system', 80, %s),"
            " (%s, 'ack', 'active', 'acknowledged', 'operator-1', NULL, NULL)",
            (alert_id[0], now - timedelta(hours=2), alert_id[0]),
        )
        conn.execute(
            "INSERT INTO alert_events (alert_id, event, from_state, to_state, actor, event_time)"
            " VALUES (%s, 'raise', NULL, 'active', 'system', %s)",
            (alert_id[0], now - timedelta(days=3)),  # older than --since-hours: not pushed
        )


def test_cli_pushes_and_adds_alarm_events_as_annotations_once(
    grafana: FakeGrafana, database_url: str, tmp_path: Path
) -> None:
    _alarm_events(database_url)
    env = _env(
        PUSAT_DATABASE_URL=database_url,
        PUSAT_GRAFANA_DB_URL="postgresql://pusat_grafana:pw@timescaledb:5432/pusat",
    )
    cmd = [sys.executable, "-m", "pusat", "grafana", "push", "--url", grafana.url,
           "--token", TOKEN, "--annotations", "--since-hours", "24"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "annotations: 2 added" in out.stdout
    texts = sorted(a["text"] for a in grafana.annotations)
    assert texts == [
        "warning ack: AQ-P01 pm25 - PM2.5 unhealthy (by operator-1)",
        "warning raise: AQ-P01 pm25 - PM2.5 unhealthy",
    ]
    assert all({"pusat", "alarm", "warning"} <= set(a["tags"]) for a in grafana.annotations)
    assert all("dashboardUID" not in a for a in grafana.annotations)  # organisation-wide
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "annotations: unchanged" in again.stdout and "0 changed" in again.stdout
    assert len(grafana.annotations) == 2


def test_cli_without_a_grafana_says_what_to_do(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "grafana", "push"],
        capture_output=True, text=True, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and "PUSAT_GRAFANA_URL" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "grafana", "push", "--url", "http://127.0.0.1:9"],
        capture_output=True, text=True, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and "PUSAT_GRAFANA_DB_URL" in out.stderr
