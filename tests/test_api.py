"""The API on a real server with the suite's PostgreSQL and Mosquitto: sensors, latest, alarms
and their audit trail, quarantine replay through a real ingest worker, the live stream, health,
metrics, tokens, and the whole role x endpoint matrix."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from api import snapshot
from api.server import ServerThread
from pusat.embedded.broker import Broker
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from store import db
from store.writer import QuarantineRow
from tests.conftest import RunningWorker
from tests.helpers import Publisher, plan_nodes, rows, scalar, wait_for
from tests.test_alarms import Watcher
from tests.test_api_support import (
    ROLES,
    US,
    Api,
    make_tokens,
    raise_alert,
    sensor,
    us,
    write,
)

pytest_plugins = ["tests.test_api_support"]


def now_us() -> int:
    return us(datetime.now(UTC))


@pytest.fixture
def city(api: Api) -> Api:
    """A few sensors in two districts with fresh (and one stale) latest values."""
    url = api.settings.database_url or ""
    t = now_us()
    write(
        url,
        [
            ("AQ-P8-01", "pm25", np.array([t - 60 * US, t]), np.array([11.0, 12.5])),
            ("AQ-P8-01", "pm10", np.array([t]), np.array([30.0])),
            ("AQ-P9-01", "pm25", np.array([t - 3600 * US]), np.array([40.0])),  # stale
            ("LOOP-P8-01", "flow", np.array([t]), np.array([640.0])),
            ("WQ-WET-01", "water_level", np.array([t]), np.array([1.21])),
            ("ORPHAN-1", "pm25", np.array([t]), np.array([5.0])),  # seen, never described
        ],
        sensors=[
            sensor("AQ-P8-01", "air", "Presint 8", 2.926, 101.696, ("pm25", "pm10")),
            sensor("AQ-P9-01", "air", "Presint 9", 2.905, 101.680, ("pm25",)),
            sensor("LOOP-P8-01", "traffic", "Presint 8", 2.930, 101.700, ("flow",)),
            sensor("WQ-WET-01", "water", "Wetland", 2.960, 101.690, ("water_level",)),
        ],
    )
    return api


# -- sensors and latest --------------------------------------------------------------------------


def ids(body: list[dict[str, Any]]) -> list[str]:
    return [x["sensor_id"] for x in body]


def test_sensor_list_filters_and_freshness(city: Api) -> None:
    all_ = city.get("/api/v1/sensors").json()
    assert ids(all_) == ["AQ-P8-01", "AQ-P9-01", "LOOP-P8-01", "ORPHAN-1", "WQ-WET-01"]
    by_id = {s["sensor_id"]: s for s in all_}
    assert by_id["AQ-P8-01"]["quantities"] == ["pm10", "pm25"]
    assert by_id["AQ-P8-01"]["stale"] is False and by_id["AQ-P8-01"]["age_s"] < 60
    assert by_id["AQ-P9-01"]["stale"] is True
    assert by_id["ORPHAN-1"]["provisioned"] is False
    assert ids(city.get("/api/v1/sensors", domain="air").json()) == ["AQ-P8-01", "AQ-P9-01"]
    assert ids(city.get("/api/v1/sensors", district="Presint 8").json()) == [
        "AQ-P8-01",
        "LOOP-P8-01",
    ]
    assert ids(city.get("/api/v1/sensors", quantity="pm25").json()) == [
        "AQ-P8-01",
        "AQ-P9-01",
        "ORPHAN-1",
    ]
    assert ids(city.get("/api/v1/sensors", bbox="101.69,2.92,101.71,2.94").json()) == [
        "AQ-P8-01",
        "LOOP-P8-01",
    ]
    assert ids(city.get("/api/v1/sensors", provisioned="false").json()) == ["ORPHAN-1"]
    r = city.get("/api/v1/sensors", bbox="1,2,3")
    assert r.status_code == 400 and "bbox" in r.json()["detail"]

    one = city.get("/api/v1/sensors/AQ-P8-01").json()
    assert [s["quantity"] for s in one["series"]] == ["pm10", "pm25"]
    pm25 = one["series"][1]
    assert pm25["value"] == 12.5 and pm25["unit"] == "ug/m3" and pm25["period_s"] == 60
    r = city.get("/api/v1/sensors/NOPE")
    assert r.status_code == 404 and r.json()["detail"] == "unknown sensor: NOPE"


def test_latest_filters_and_formats(city: Api) -> None:
    body = city.get("/api/v1/latest").json()
    assert len(body) == 6
    pm = {x["sensor_id"]: x for x in body if x["quantity"] == "pm25"}
    assert pm["AQ-P8-01"]["value"] == 12.5  # the newest of the two
    assert pm["AQ-P9-01"]["stale"] is True and pm["AQ-P8-01"]["stale"] is False
    assert pm["AQ-P8-01"]["district"] == "Presint 8" and pm["AQ-P8-01"]["lat"] == 2.926
    air = city.get("/api/v1/latest", domain="air", quantity="pm25").json()
    assert ids(air) == ["AQ-P8-01", "AQ-P9-01"]
    assert ids(city.get("/api/v1/latest", sensor="WQ-WET-01").json()) == ["WQ-WET-01"]
    import pandas as pd

    token = city.tokens["viewer"]
    frame = pd.read_csv(f"{city.url}/api/v1/latest?format=csv&domain=air&token={token}")
    assert list(frame["sensor_id"]) == ["AQ-P8-01", "AQ-P8-01", "AQ-P9-01"]
    pq = pd.read_parquet(f"{city.url}/api/v1/latest?format=parquet&token={token}")
    assert len(pq) == 6 and str(pq["ts"].dt.tz) == "UTC"


def test_districts_count_states_and_put_the_worst_first(city: Api) -> None:
    """The wall's city view: sensors per state in each district, worst districts and worst
    sensors first, as the wall colours them (alarm severity, then silence)."""
    url = city.settings.database_url or ""
    raise_alert(url, "WQ-WET-01", "water_level", "critical")
    raise_alert(url, "LOOP-P8-01", "flow", "warning")
    raise_alert(url, "AQ-P8-01", "pm25", "info")
    body = city.get("/api/v1/districts").json()
    assert body["sensors"] == 5
    assert body["states"] == {"critical": 1, "warning": 1, "silent": 1, "info": 1, "normal": 1}
    order = [d["district"] for d in body["districts"]]
    assert order == ["Wetland", "Presint 8", "Presint 9", None]
    by = {d["district"]: d for d in body["districts"]}
    p8 = by["Presint 8"]
    assert p8["sensors"] == 2 and p8["domains"] == {"air": 1, "traffic": 1}
    assert [(w["sensor_id"], w["state"], w["alarms"]) for w in p8["worst"]] == [
        ("LOOP-P8-01", "warning", 1),
        ("AQ-P8-01", "info", 1),
    ]
    assert p8["lat"] == pytest.approx((2.926 + 2.930) / 2) and p8["not_shown"] == 0
    assert by["Presint 9"]["worst"][0]["state"] == "silent"  # an hour without pm25
    assert by[None]["states"]["normal"] == 1 and by[None]["lat"] is None
    one = city.get("/api/v1/districts", worst=1).json()
    p8 = next(d for d in one["districts"] if d["district"] == "Presint 8")
    assert [w["sensor_id"] for w in p8["worst"]] == ["LOOP-P8-01"] and p8["not_shown"] == 1
    air = city.get("/api/v1/districts", domain="air").json()
    assert [d["district"] for d in air["districts"]] == ["Presint 9", "Presint 8"]
    assert city.get("/api/v1/districts", worst=1000).status_code == 422
    assert city.get("/api/v1/districts", role=None).status_code == 401


def snapshot_builds(api: Api) -> float:
    for line in api.get("/metrics", role=None).text.splitlines():
        if line.startswith('pusat_api_snapshot_builds_total{route="latest"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("max_age_s", [0.0, 600.0])
def test_latest_is_a_snapshot_shared_by_its_clients(
    city: Api, settings: Settings, max_age_s: float
) -> None:
    """Clients asking the same latest share one build while it is young enough (its Age
    header says how old); with PUSAT_API_LATEST_SNAPSHOT_S=0 each request works it out."""
    mine = settings.with_(api_port=free_port(), api_latest_snapshot_s=max_age_s)
    server = ServerThread(mine).start()
    try:
        api = Api(server.url, mine, city.tokens, city.names)

        def pm25() -> float:
            r = api.get("/api/v1/latest", sensor="AQ-P8-01", quantity="pm25")
            assert r.status_code == 200 and "Age" in r.headers
            return float(r.json()[0]["value"])

        assert pm25() == 12.5
        write(
            mine.database_url or "", [("AQ-P8-01", "pm25", np.array([now_us()]), np.array([13.0]))]
        )
        assert pm25() == (12.5 if max_age_s else 13.0)
        before = snapshot_builds(api)

        async def many() -> list[int]:
            headers = {"Authorization": f"Bearer {city.tokens['viewer']}"}
            async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=60) as c:
                got = await asyncio.gather(
                    *(c.get("/api/v1/latest", params={"format": "csv"}) for _ in range(20))
                )
            return [r.status_code for r in got]

        assert asyncio.run(many()) == [200] * 20
        assert snapshot_builds(api) - before == (1 if max_age_s else 0)  # 0: no snapshot
    finally:
        server.stop()


def test_a_large_snapshot_goes_out_in_pieces_and_arrives_whole(
    city: Api, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer larger than a piece is sent a piece at a time (the event loop answers other
    requests between them) with its length announced, byte for byte the answer sent whole."""
    mine = settings.with_(api_port=free_port(), api_latest_snapshot_s=600.0)
    server = ServerThread(mine).start()
    try:
        api = Api(server.url, mine, city.tokens, city.names)
        whole = api.get("/api/v1/latest", format="parquet")
        assert whole.status_code == 200 and "transfer-encoding" not in whole.headers
        pieces: list[int] = []
        send = snapshot._pieces

        async def counted(body: memoryview) -> AsyncIterator[memoryview]:
            async for piece in send(body):
                pieces.append(len(piece))
                yield piece

        monkeypatch.setattr(snapshot, "PIECE", 100)
        monkeypatch.setattr(snapshot, "_pieces", counted)
        again = api.get("/api/v1/latest", format="parquet")  # the same snapshot (600 s)
        assert again.status_code == 200 and again.content == whole.content
        assert int(again.headers["content-length"]) == len(whole.content)
        assert "transfer-encoding" not in again.headers
        assert sum(pieces) == len(whole.content) and max(pieces) == 100
        assert len(pieces) == -(-len(whole.content) // 100)
    finally:
        server.stop()


def test_provision_update_and_bulk_import(city: Api) -> None:
    body = {
        "domain": "air",
        "district": "Presint 11",
        "lat": 2.95,
        "lon": 101.67,
        "quantities": ["pm25"],
        "name": "Presint 11 school",
    }
    with city.client("engineer") as c:
        r = c.put("/api/v1/sensors/AQ-P11-01", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["provisioned"] is True and r.json()["district"] == "Presint 11"
        r = c.put("/api/v1/sensors/AQ-P11-01", json={**body, "district": "Presint 12"})
        assert r.status_code == 200 and r.json()["district"] == "Presint 12"
        # An unprovisioned sensor seen by ingest becomes provisioned, its data kept.
        r = c.put("/api/v1/sensors/ORPHAN-1", json={"domain": "air", "district": "Presint 1"})
        assert r.status_code == 200 and r.json()["provisioned"] is True
        assert r.json()["series"][0]["value"] == 5.0
        r = c.put("/api/v1/sensors/X", json={"lat": 123})
        assert r.status_code == 422
        r = c.put("/api/v1/sensors/X", json={"colour": "red"})
        assert r.status_code == 422

        good = (
            "sensor_id,domain,district,lat,lon,quantities\n"
            "TF-1,traffic,Presint 2,2.91,101.69,flow;speed\n"
            "AQ-P11-01,air,Presint 13,2.95,101.67,pm25\n"
        )
        r = c.post("/api/v1/sensors/import", content=good, headers={"Content-Type": "text/csv"})
        assert r.status_code == 200, r.text
        assert r.json() == {"imported": 2, "created": 1, "updated": 1}
        bad = "sensor_id,domain,lat\nA,air,north\n,air,2.9\nB,air,95\n"
        r = c.post("/api/v1/sensors/import", content=bad)
        assert r.status_code == 400
        detail = r.json()["detail"]
        assert "line 2: lat must be a number" in detail and "line 3: sensor_id" in detail
        assert "line 4" in detail
        r = c.post("/api/v1/sensors/import", content="id,colour\nA,red\n")
        assert r.status_code == 400 and "sensor_id" in r.json()["detail"]
    assert (
        scalar(
            city.settings.database_url or "",
            "SELECT count(*) FROM sensors WHERE sensor_id IN ('A', 'B')",
        )
        == 0
    )
    tf = city.get("/api/v1/sensors/TF-1").json()
    assert tf["quantities"] == ["flow", "speed"] and tf["provisioned"] is True


# -- alarms --------------------------------------------------------------------------------------


def test_alarm_lifecycle_with_audit_trail(city: Api) -> None:
    url = city.settings.database_url or ""
    a = raise_alert(url, "AQ-P8-01", severity="warning")
    b = raise_alert(url, "AQ-P9-01", severity="critical")
    listed = city.get("/api/v1/alerts").json()
    assert [x["id"] for x in listed] == [b, a]  # most severe first
    assert listed[0]["district"] == "Presint 9" and listed[0]["state"] == "active"
    assert [x["id"] for x in city.get("/api/v1/alerts", severity="warning").json()] == [a]
    assert [x["id"] for x in city.get("/api/v1/alerts", district="Presint 8").json()] == [a]

    with city.client("operator") as c:
        r = c.post(f"/api/v1/alerts/{a}/ack", json={"comment": "crew dispatched"})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "acknowledged" and r.json()["acked_by"] == "test-operator"
        r = c.post(f"/api/v1/alerts/{a}/ack", json={})
        assert r.status_code == 409 and "already acknowledged" in r.json()["detail"]
        r = c.post(f"/api/v1/alerts/{b}/shelve", json={"duration": "2h", "comment": "works"})
        assert r.status_code == 200 and r.json()["state"] == "shelved"
        until = datetime.fromisoformat(r.json()["shelved_until"])
        assert timedelta(hours=1, minutes=59) < until - datetime.now(UTC) <= timedelta(hours=2)
        r = c.post(f"/api/v1/alerts/{b}/shelve", json={"until": "2020-01-01T00:00:00Z"})
        assert r.status_code == 400 and "future" in r.json()["detail"]
        r = c.post(f"/api/v1/alerts/{b}/shelve", json={"comment": "no expiry"})
        assert r.status_code == 422
        r = c.post(f"/api/v1/alerts/{b}/clear", json={"comment": "sensor replaced"})
        assert r.status_code == 200 and r.json()["state"] == "closed"
        r = c.post(f"/api/v1/alerts/{b}/clear")
        assert r.status_code == 409 and "already closed" in r.json()["detail"]
        r = c.post("/api/v1/alerts/999999/ack")
        assert r.status_code == 404 and r.json()["detail"] == "no alert 999999"

    trail = city.get(f"/api/v1/alerts/{b}/events").json()
    assert [(e["event"], e["to_state"], e["actor"]) for e in trail] == [
        ("raise", "active", "system"),
        ("shelve", "shelved", "test-operator"),
        ("close", "closed", "test-operator"),
    ]
    assert trail[1]["comment"] == "works" and trail[2]["comment"] == "sensor replaced"
    assert city.get("/api/v1/alerts/424242/events").status_code == 404
    assert [x["id"] for x in city.get("/api/v1/alerts").json()] == [a]
    assert [x["id"] for x in city.get("/api/v1/alerts", state="closed").json()] == [b]
    assert len(city.get("/api/v1/alerts", state="all").json()) == 2


# -- the role x endpoint matrix ------------------------------------------------------------------


Call = tuple[str, str, dict[str, Any]]  # method, path, request keyword arguments


def endpoints(api: Api) -> list[tuple[str, str, Callable[[], Call]]]:
    """(lowest role, label, a fresh call) for every endpoint; writes get fresh targets."""
    url = api.settings.database_url or ""
    counter = iter(range(10_000))

    def fresh_alert() -> int:
        return raise_alert(url, "AQ-P8-01", rule=f"matrix-{next(counter)}")

    def fresh_token() -> int:
        from api import auth
        from store import db

        with db.connect(url) as conn:
            info, _ = auth.create_token(conn, "viewer", f"victim-{next(counter)}")
        return info.id

    def quarantined() -> int:
        write(
            url,
            quarantine=[
                QuarantineRow(
                    time.time(), "tq/v1/gw-q/json", "gw-q", "bad_payload", "test", None, b'{"x": 1}'
                )
            ],
        )
        return int(scalar(url, "SELECT max(id) FROM quarantine"))

    t = "&start=2026-01-01T00:00:00Z&end=2026-01-01T01:00:00Z"
    return [
        ("viewer", "sensors", lambda: ("GET", "/api/v1/sensors", {})),
        ("viewer", "sensor", lambda: ("GET", "/api/v1/sensors/AQ-P8-01", {})),
        ("viewer", "readings", lambda: ("GET", f"/api/v1/readings?sensor=AQ-P8-01{t}", {})),
        ("viewer", "latest", lambda: ("GET", "/api/v1/latest", {})),
        ("viewer", "alerts", lambda: ("GET", "/api/v1/alerts", {})),
        ("viewer", "alert", lambda: ("GET", f"/api/v1/alerts/{fresh_alert()}", {})),
        ("viewer", "alert events", lambda: ("GET", f"/api/v1/alerts/{fresh_alert()}/events", {})),
        ("viewer", "quarantine", lambda: ("GET", "/api/v1/quarantine", {})),
        ("viewer", "whoami", lambda: ("GET", "/api/v1/whoami", {})),
        ("viewer", "wall", lambda: ("GET", "/wall", {})),
        (
            "operator",
            "ack",
            lambda: ("POST", f"/api/v1/alerts/{fresh_alert()}/ack", {"json": {"comment": "m"}}),
        ),
        (
            "operator",
            "shelve",
            lambda: (
                "POST",
                f"/api/v1/alerts/{fresh_alert()}/shelve",
                {"json": {"duration": "1h"}},
            ),
        ),
        ("operator", "clear", lambda: ("POST", f"/api/v1/alerts/{fresh_alert()}/clear", {})),
        (
            "engineer",
            "provision",
            lambda: ("PUT", f"/api/v1/sensors/NEW-{next(counter)}", {"json": {"domain": "air"}}),
        ),
        (
            "engineer",
            "import",
            lambda: (
                "POST",
                "/api/v1/sensors/import",
                {"content": f"sensor_id\nIMP-{next(counter)}\n"},
            ),
        ),
        (
            "engineer",
            "replay",
            lambda: ("POST", "/api/v1/quarantine/replay", {"json": {"ids": [quarantined()]}}),
        ),
        ("admin", "tokens", lambda: ("GET", "/api/v1/tokens", {})),
        (
            "admin",
            "create token",
            lambda: (
                "POST",
                "/api/v1/tokens",
                {"json": {"role": "viewer", "name": f"t-{next(counter)}"}},
            ),
        ),
        ("admin", "revoke token", lambda: ("DELETE", f"/api/v1/tokens/{fresh_token()}", {})),
    ]


def test_every_role_on_every_endpoint(city: Api) -> None:
    rank = {r: i for i, r in enumerate(ROLES)}
    seen = []
    for lowest, label, make in endpoints(city):
        for role in (None, *ROLES):
            method, path, kwargs = make()
            with city.client(role) as c:
                r = c.request(method, path, **kwargs)
            if role is None:
                want = "401"
            elif rank[role] < rank[lowest]:
                want = "403"
            else:
                want = "2xx"
            got = "2xx" if 200 <= r.status_code < 300 else str(r.status_code)
            assert got == want, f"{label} as {role}: {r.status_code} {r.text[:200]}"
            if want == "403":
                assert f"needs the {lowest} role" in r.json()["detail"]
            seen.append((label, role))
    assert len(seen) == 19 * 5
    # A wrong token is a 401 too, and a token in the URL is taken for GET only.
    with httpx.Client(base_url=city.url, headers={"Authorization": "Bearer pusat_nope"}) as c:
        assert c.get("/api/v1/sensors").status_code == 401
    op = city.tokens["operator"]
    a = raise_alert(city.settings.database_url or "", "AQ-P8-01", rule="url-token")
    with httpx.Client(base_url=city.url) as c:
        assert c.get(f"/api/v1/sensors?token={op}").status_code == 200
        r = c.post(f"/api/v1/alerts/{a}/ack?token={op}")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"


def test_anonymous_read_opens_reads_only(settings: Settings) -> None:
    s = settings.with_(api_port=free_port(), anonymous_read=True)
    assert s.database_url is not None
    tokens, _ = make_tokens(s.database_url)
    a = raise_alert(s.database_url, "AQ-1")
    server = ServerThread(s).start()
    try:
        with httpx.Client(base_url=server.url) as c:
            assert c.get("/api/v1/alerts").status_code == 200
            assert c.get("/api/v1/whoami").json() == {"name": "anonymous", "role": "viewer"}
            assert c.get("/wall").status_code == 200
            assert c.post(f"/api/v1/alerts/{a}/ack").status_code == 401
            assert c.get("/api/v1/tokens").status_code == 401  # admin reads need a token
            h = {"Authorization": f"Bearer {tokens['operator']}"}
            assert c.post(f"/api/v1/alerts/{a}/ack", headers=h).status_code == 200
            bad = {"Authorization": "Bearer pusat_unknown"}
            assert c.get("/api/v1/alerts", headers=bad).status_code == 401
    finally:
        server.stop()


def test_tokens_api_and_revocation(api: Api) -> None:
    with api.client("admin") as c:
        r = c.post("/api/v1/tokens", json={"role": "operator", "name": "ana"})
        assert r.status_code == 201
        secret, tid = r.json()["token"], r.json()["id"]
        assert secret.startswith("pusat_")
        assert c.post("/api/v1/tokens", json={"role": "operator", "name": "ana"}).status_code == 409
        assert c.post("/api/v1/tokens", json={"role": "king"}).status_code == 422
        listed = {t["name"]: t for t in c.get("/api/v1/tokens").json()}
        assert listed["ana"]["role"] == "operator" and "token" not in listed["ana"]
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {secret}"}) as ana:
            assert ana.get("/api/v1/whoami").json() == {"name": "ana", "role": "operator"}
            assert c.delete(f"/api/v1/tokens/{tid}").status_code == 200
            assert ana.get("/api/v1/whoami").status_code == 401
        assert c.delete(f"/api/v1/tokens/{tid}").status_code == 404
        me = listed["test-admin"]["id"]
        r = c.delete(f"/api/v1/tokens/{me}")
        assert r.status_code == 409 and "itself" in r.json()["detail"]
    stored = rows(api.settings.database_url or "", "SELECT token_hash FROM api_tokens")
    assert all(len(h) == 64 and not h.startswith("pusat_") for (h,) in stored)


def test_token_cli_prints_the_secret_last(database_url: str, tmp_path: Any) -> None:
    from tests.test_cli import env_without_pusat

    env = env_without_pusat(PUSAT_DATABASE_URL=database_url)
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "token", "create", "--role", "operator", "--name", "ana"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    secret = out.stdout.strip().splitlines()[-1]
    assert secret.startswith("pusat_")
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "token", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert "operator" in out.stdout and "ana" in out.stdout and secret not in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "token", "create", "--role", "king"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "'king'" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "token", "revoke", "ana"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and "revoked" in out.stdout


# -- quarantine replay through a real worker -------------------------------------------------------


def test_replay_reingests_after_a_fix(settings: Settings, publisher: Publisher) -> None:
    s = settings.with_(strict=True, api_port=free_port(), api_token_cache_s=0.0)
    assert s.database_url is not None
    tokens, _ = make_tokens(s.database_url)
    worker = RunningWorker(s).start()
    server = ServerThread(s).start()
    try:
        t = time.time()
        topic = f"{s.topic_root}/gw-new/json"
        publisher.publish(topic, json.dumps({"sensor": "NEW-1", "ts": t, "values": {"pm25": 7.5}}))
        wait_for(
            lambda: scalar(s.database_url or "", "SELECT count(*) FROM quarantine"),
            what="the reading of an unknown sensor quarantined (strict mode)",
        )
        eng = {"Authorization": f"Bearer {tokens['engineer']}"}
        with httpx.Client(base_url=server.url, headers=eng, timeout=30) as c:
            q = c.get("/api/v1/quarantine", params={"reason": "unknown_sensor"}).json()
            assert len(q) == 1 and q[0]["topic"] == topic and q[0]["replayed_at"] is None
            assert c.post("/api/v1/quarantine/replay", json={}).status_code == 400
            # The fix: the engineer provisions the sensor; then replays.
            assert c.put("/api/v1/sensors/NEW-1", json={"domain": "air"}).status_code == 201
            r = c.post("/api/v1/quarantine/replay", json={"reason": "unknown_sensor"})
            assert r.status_code == 200, r.text
            assert r.json() == {"selected": 1, "published": 1, "ids": [q[0]["id"]]}
            wait_for(
                lambda: scalar(
                    s.database_url or "", "SELECT count(*) FROM readings WHERE sensor_id = 'NEW-1'"
                ),
                what="the replayed reading stored",
            )
            replayed = c.get("/api/v1/quarantine", params={"replayed": "true"}).json()
            assert replayed[0]["replayed_at"] is not None
            # Already replayed: selected again only when asked.
            r = c.post("/api/v1/quarantine/replay", json={"reason": "unknown_sensor"})
            assert r.json()["selected"] == 0
    finally:
        server.stop()
        worker.stop()


def test_replay_without_a_broker_is_503(settings: Settings) -> None:
    s = settings.with_(api_port=free_port(), mqtt_url=f"mqtt://127.0.0.1:{free_port()}")
    assert s.database_url is not None
    tokens, _ = make_tokens(s.database_url)
    write(
        s.database_url,
        quarantine=[
            QuarantineRow(time.time(), "x/v1/g/json", "g", "bad_payload", "t", None, b"\x00\xff")
        ],
    )
    server = ServerThread(s).start()
    try:
        h = {"Authorization": f"Bearer {tokens['engineer']}"}
        with httpx.Client(base_url=server.url, headers=h) as c:
            q = c.get("/api/v1/quarantine").json()
            assert q[0]["payload_encoding"] == "base64"
            r = c.post("/api/v1/quarantine/replay", json={"ids": [q[0]["id"]]})
            assert r.status_code == 503 and "unreachable" in r.json()["detail"]
            health = c.get("/healthz").json()
            assert health["status"] == "degraded" and health["broker"]["ok"] is False
        assert (
            scalar(s.database_url, "SELECT count(*) FROM quarantine WHERE replayed_at IS NOT NULL")
            == 0
        )
    finally:
        server.stop()


# -- live stream -----------------------------------------------------------------------------------


class Stream:
    """Reads server-sent events in a thread, keeping (event, data) pairs."""

    def __init__(self, url: str, token: str, **params: str) -> None:
        self.events: list[tuple[str, Any]] = []
        self.client = httpx.Client(timeout=httpx.Timeout(30, read=60))
        self.ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(url, {"token": token, **params}), daemon=True
        )
        self.thread.start()
        assert self.ready.wait(10), "no hello event"

    def _run(self, url: str, params: dict[str, str]) -> None:
        event = "message"
        try:
            with self.client.stream("GET", f"{url}/api/v1/live", params=params) as r:
                for line in r.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        self.events.append((event, json.loads(line[5:])))
                        if event == "hello":
                            self.ready.set()
        except httpx.HTTPError:
            pass  # closed by the test or the server

    def wait(self, pred: Callable[[str, Any], bool], what: str) -> tuple[str, Any]:
        found = wait_for(
            lambda: next((e for e in list(self.events) if pred(*e)), None), timeout=15, what=what
        )
        return found  # type: ignore[no-any-return]

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def streaming(city: Api) -> Iterator[Callable[..., Stream]]:
    opened: list[Stream] = []

    def open_(**params: str) -> Stream:
        s = Stream(city.url, city.tokens["viewer"], **params)
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


def test_live_stream_sends_latest_and_alarm_changes(
    city: Api, streaming: Callable[..., Stream], publisher: Publisher
) -> None:
    s = city.settings
    everything = streaming()
    water_only = streaming(domain="water")
    assert everything.events[0][1]["name"] == "test-viewer"
    worker = RunningWorker(s).start()
    try:
        t = time.time()
        publisher.publish(
            f"{s.topic_root}/gw/json",
            json.dumps({"sensor": "AQ-P8-01", "ts": t, "values": {"pm25": 33.3}}),
        )
        _, items = everything.wait(
            lambda e, d: e == "latest" and any(x["value"] == 33.3 for x in d),
            "the new pm25 value on the live stream",
        )
        x = next(x for x in items if x["value"] == 33.3)
        assert x["sensor_id"] == "AQ-P8-01" and x["domain"] == "air" and x["period_s"] == 60
        publisher.publish(
            f"{s.topic_root}/gw/json",
            json.dumps({"sensor": "WQ-WET-01", "ts": t, "values": {"water_level": 1.5}}),
        )
        water_only.wait(lambda e, d: e == "latest" and d[0]["value"] == 1.5, "the water level")
        assert not any(e == "latest" and d[0]["domain"] == "air" for e, d in water_only.events)
    finally:
        worker.stop()
    a = raise_alert(s.database_url or "", "AQ-P8-01", rule="live")
    with city.client("operator") as c:
        assert c.post(f"/api/v1/alerts/{a}/ack").status_code == 200
    everything.wait(
        lambda e, d: e == "alert" and d["id"] == a and d["state"] == "acknowledged",
        "the acknowledgement on the live stream",
    )
    health = city.get("/healthz", role=None).json()
    assert health["live_clients"] == 2


def test_live_stream_sends_a_batch_that_commits_long_after_it_was_received(
    city: Api, streaming: Callable[..., Stream]
) -> None:
    """A worker that retried through a database outage commits readings received minutes ago:
    they reach the stream when they commit, though their stamps are older than the stream."""
    url = city.settings.database_url or ""
    upsert = (
        "INSERT INTO latest_data (series_id, ts, value, received_at)"
        " SELECT series_id, now(), %s, now() - interval '5 minutes' FROM series"
        " WHERE sensor_id = 'AQ-P8-01' AND quantity = %s"
        " ON CONFLICT (series_id) DO UPDATE SET ts = excluded.ts, value = excluded.value,"
        " received_at = excluded.received_at"
    )
    with db.connect(url) as held:
        held.execute(upsert, (46.25, "pm25"))  # written, not yet committed
        stream = streaming()
        # The hub is looking: a write committed now reaches the stream.
        with db.connect(url) as conn:
            conn.execute(upsert.replace("5 minutes", "0 minutes"), (8.5, "pm10"))
            conn.commit()
            conn.execute("NOTIFY pusat_changes")
            conn.commit()
        # (the first look may carry the fixture's fresh values in the same event)
        stream.wait(
            lambda e, d: e == "latest" and any(x["value"] == 8.5 for x in d), "the pm10 value"
        )
        held.commit()
        held.execute("NOTIFY pusat_changes")
        held.commit()
    _, items = stream.wait(
        lambda e, d: e == "latest" and any(x["value"] == 46.25 for x in d),
        "the pm25 value received 5 minutes ago, committed now",
    )
    assert [x["quantity"] for x in items] == ["pm25"]
    assert sum(e == "latest" and x["value"] == 46.25 for e, d in stream.events for x in d) == 1


def test_the_live_look_joins_the_changed_rows_by_key(settings: Settings) -> None:
    """The hub's look finds a second's changes among all the latest rows; the planner takes a
    third of them as changed and hash-joins every series and sensor unless told otherwise (in
    the city bench, 150 ms of CPU a second). It must look the changed rows up by key."""
    from api.hub import _BY_KEY, _CHANGED, _LATEST, _SNAPSHOT

    url = settings.database_url
    assert url
    with db.connect(url) as conn:
        conn.execute(
            "INSERT INTO sensors (sensor_id, domain, district)"
            " SELECT 'S' || i, 'traffic', 'D' || (i % 50) FROM generate_series(0, 19999) i"
        )
        conn.execute(
            "INSERT INTO series (sensor_id, quantity, unit)"
            " SELECT 'S' || (i % 20000), 'q' || (i / 20000), 'u' FROM generate_series(0, 99999) i"
        )
        conn.execute("INSERT INTO latest_data SELECT series_id, now(), 1, now() FROM series")
        conn.commit()
        conn.execute("ANALYZE sensors, series, latest_data")
        conn.commit()
        (before,) = conn.execute("SELECT pg_current_snapshot()::text").fetchone() or ("",)
        conn.commit()
        conn.execute(
            "UPDATE latest_data SET value = 2 WHERE series_id IN"
            " (SELECT series_id FROM series WHERE sensor_id IN ('S7', 'S8'))"
        )
        conn.commit()
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        _, xmax, window = conn.execute(_SNAPSHOT, (before,)).fetchone() or (None, None, None)
        conn.execute(_BY_KEY)
        args = {"window": window, "xmax": xmax, "prev": before}
        query = _LATEST + _CHANGED.format(t="l")
        changed = conn.execute(query, args).fetchall()
        (plan,) = conn.execute("EXPLAIN (FORMAT JSON) " + query, args).fetchone() or (None,)
        conn.rollback()
    assert sorted({r[0] for r in changed}) == ["S7", "S8"] and len(changed) == 10

    used = list(plan_nodes(plan[0]["Plan"]))
    scans = {n.get("Relation Name"): n["Node Type"] for n in used if n.get("Relation Name")}
    assert scans["series"] == "Index Scan" and scans["sensors"] == "Index Scan", scans


# -- health and metrics ----------------------------------------------------------------------------


def test_healthz_and_metrics(city: Api) -> None:
    r = city.get("/healthz", role=None)
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["database"]["tier"] == "postgresql"
    assert h["broker"]["ok"] is True
    assert 0 <= h["ingest"]["lag_s"] < 60 and h["ingest"]["series"] == 6
    city.get("/api/v1/sensors")
    city.get("/api/v1/sensors/NOPE")
    text = city.get("/metrics", role=None).text
    assert 'pusat_api_requests_total{method="GET",route="/api/v1/sensors",status="200"} 1.0' in text
    assert 'route="/api/v1/sensors/{sensor_id}",status="404"' in text
    assert "pusat_api_ingest_lag_seconds" in text


def test_healthz_when_the_database_is_away(settings: Settings) -> None:
    s = settings.with_(
        api_port=free_port(), database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    )
    server = ServerThread(s).start()
    try:
        r = httpx.get(f"{server.url}/healthz", timeout=30)
        assert r.status_code == 503 and r.json()["status"] == "down"
        r = httpx.get(
            f"{server.url}/api/v1/sensors", timeout=30, headers={"Authorization": "Bearer pusat_x"}
        )
        assert r.status_code == 503 and "database" in r.json()["detail"]
    finally:
        server.stop()


def test_openapi_documents_every_endpoint_with_examples(api: Api) -> None:
    spec = api.get("/openapi.json", role=None).json()
    paths = spec["paths"]
    for p in (
        "/api/v1/sensors",
        "/api/v1/sensors/{sensor_id}",
        "/api/v1/sensors/import",
        "/api/v1/readings",
        "/api/v1/latest",
        "/api/v1/alerts",
        "/api/v1/alerts/{alert_id}/ack",
        "/api/v1/alerts/{alert_id}/shelve",
        "/api/v1/alerts/{alert_id}/clear",
        "/api/v1/alerts/{alert_id}/events",
        "/api/v1/quarantine",
        "/api/v1/quarantine/replay",
        "/api/v1/live",
        "/healthz",
        "/metrics",
        "/wall",
    ):
        assert p in paths, p
    readings = paths["/api/v1/readings"]["get"]
    assert "example" in readings["responses"]["200"]["content"]["application/json"]
    assert {"bearer", "token"} & {k.lower() for k in spec["components"]["securitySchemes"]} or spec[
        "components"
    ]["securitySchemes"]


def test_operator_actions_update_the_retained_alarm_topic(city: Api, broker: Broker) -> None:
    """Sirens follow `<root>/alerts/<severity>/<sensor>`: an acknowledgement shows there, and
    once the alarm is closed the retained message is removed."""
    url = city.settings.database_url or ""
    a = raise_alert(url, "AQ-P8-01", severity="critical")
    topic = f"{city.settings.topic_root}/alerts/critical/AQ-P8-01"
    watcher = Watcher(broker, f"{city.settings.topic_root}/alerts/#")
    try:
        with city.client("operator") as c:
            assert c.post(f"/api/v1/alerts/{a}/ack", json={"comment": "seen"}).status_code == 200
            got = wait_for(lambda: watcher.get(topic), what="the acknowledged alarm on MQTT")
            assert json.loads(got)["alerts"][0]["state"] == "acknowledged"
            assert c.post(f"/api/v1/alerts/{a}/clear", json={}).status_code == 200
            wait_for(lambda: watcher.get(topic) == b"", what="the retained alarm removed")
    finally:
        watcher.close()
