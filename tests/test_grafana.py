"""Grafana walls as code: the committed files are what the code makes, the dashboards survive the
SDK's schema round trip, and every panel's SQL runs for real, as Grafana's read-only role, on a
database holding a simulated city (Grafana's macros and variables expanded as Grafana would)."""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psycopg
import pytest
import yaml
from grafana_foundation_sdk.models import dashboard as dm

from ingest.alarms import Alarms
from ingest.commit import commit
from ingest.derived import Derived
from processing import catalogue, rules
from pusat.embedded.postgres import Postgres
from pusat.grafana import build, dashboards, datasource, sql
from pusat.grafana.sql import Query
from store import alerts as lifecycle
from store.writer import Batch, GatewayStatus, QuarantineRow, Readings, SensorMeta, Writer
from tests.helpers import rows

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "grafana"

# -- the committed output -------------------------------------------------------------------------


def test_committed_files_are_what_the_code_generates() -> None:
    rendered = build.render()
    committed = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    assert committed == set(rendered), "run `pusat grafana build` and commit deploy/grafana"
    for rel, text in rendered.items():
        assert (DEPLOY / rel).read_text("utf-8") == text, f"{rel}: run `pusat grafana build`"
    assert os.access(DEPLOY / "initdb" / "20-pusat-grafana-role.sh", os.X_OK)


def test_build_writes_only_what_changed(tmp_path: Path) -> None:
    written, removed = build.write(tmp_path)
    assert sorted(written) == sorted(build.render()) and removed == []
    (tmp_path / "dashboards" / "old.json").write_text("{}")
    written, removed = build.write(tmp_path)
    assert written == [] and removed == ["dashboards/old.json"]


def test_provisioning_matches_the_dashboards_and_data_source() -> None:
    ds_file = yaml.safe_load((DEPLOY / "provisioning/datasources/pusat.yaml").read_text())
    (source,) = ds_file["datasources"]
    assert source["type"] == "grafana-postgresql-datasource"  # Grafana 11/12's plugin id
    assert source["uid"] == datasource.UID and source["user"] == datasource.READ_ROLE
    assert source["jsonData"]["database"] == "pusat"
    assert source["secureJsonData"]["password"] == "${GRAFANA_DB_PASSWORD}"
    provider = yaml.safe_load((DEPLOY / "provisioning/dashboards/pusat.yaml").read_text())
    (p,) = provider["providers"]
    assert p["folderUid"] == dashboards.FOLDER_UID and p["options"]["path"] == build.DASHBOARDS_PATH
    playlist = json.loads((DEPLOY / "playlist.json").read_text())
    boards = {json.loads(f.read_text())["uid"] for f in (DEPLOY / "dashboards").glob("*.json")}
    assert {i["value"] for i in playlist["items"]} <= boards
    assert len(boards) == 6
    geo = json.loads((DEPLOY / "maps" / "pusat-districts.geojson").read_text())
    assert len(geo["features"]) == 20
    assert all(f["properties"]["name"].startswith("Presint") for f in geo["features"])


def test_every_panel_reads_the_data_source_and_only_the_public_surface() -> None:
    public = {
        "sensors", "readings", "latest", "rollup_1m", "rollup_1h", "alerts", "alert_events",
        "quarantine", "derived", "gateways",
    }  # fmt: skip
    queries = dashboards.queries()
    assert len(queries) >= 30
    for q in queries:
        sources = set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_0-9]+)(?![a-z_0-9.(])", q.sql))
        ctes = set(re.findall(r"\b([a-z_]+) AS \(", q.sql))
        assert sources - ctes <= public, (q.dashboard, q.panel, sources - ctes - public)
    for uid, d in dashboards.dashboards().items():
        for panel in d["panels"]:
            assert panel["datasource"] == {"type": datasource.TYPE, "uid": datasource.UID}
            assert panel["targets"], (uid, panel["title"])


# -- the schema round trip ------------------------------------------------------------------------


def _annotation_targets(d: dict[str, Any]) -> list[Any]:
    return [a.pop("target") for a in d["annotations"]["list"] if "target" in a]


def kept(ours: Any, theirs: Any) -> bool:
    """Whether everything in ``ours`` is in ``theirs`` with the same value (``theirs`` may hold
    defaults the decoder filled in)."""
    if isinstance(ours, dict):
        return isinstance(theirs, dict) and all(
            k in theirs and kept(v, theirs[k]) for k, v in ours.items()
        )
    if isinstance(ours, list):
        return (
            isinstance(theirs, list)
            and len(ours) == len(theirs)
            and all(kept(a, b) for a, b in zip(ours, theirs, strict=True))
        )
    return bool(ours == theirs)


GRID_COLUMNS = 24  # Grafana's dashboard grid


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))  # a collapsed row holds its own


def _layout_faults(panels: list[dict[str, Any]]) -> list[str]:
    faults: list[str] = []
    placed: list[tuple[str, int, int, int, int]] = []
    for p in _panels(panels):
        g = p.get("gridPos") or {}
        x, y, w, h = (g.get(k) for k in ("x", "y", "w", "h"))
        name = p.get("title", "?")
        if not all(isinstance(v, int) for v in (x, y, w, h)):
            faults.append(f"{name}: no whole gridPos {g}")
            continue
        assert isinstance(x, int) and isinstance(y, int) and isinstance(w, int)
        assert isinstance(h, int)
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
            faults.append(f"{name}: x={x} w={w} y={y} h={h} is off the {GRID_COLUMNS}-column grid")
        for other, ox, oy, ow, oh in placed:
            if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                faults.append(f"{name} overlaps {other}")
        placed.append((name, x, y, w, h))
    return faults


def test_every_panel_fits_the_grid_and_none_overlap() -> None:
    """The dashboards the code makes and the files deploy/ provisions (and any other dashboard
    JSON under pusat/grafana or deploy/grafana): each panel within the 24 columns, none on top
    of another."""
    found = {f"generated {uid}": d for uid, d in dashboards.dashboards().items()}
    for path in sorted([*DEPLOY.rglob("*.json"), *(ROOT / "pusat" / "grafana").rglob("*.json")]):
        doc = json.loads(path.read_text("utf-8"))
        if isinstance(doc, dict) and "panels" in doc:
            found[str(path.relative_to(ROOT))] = doc
    assert len(found) >= 2 * len(dashboards.boards())
    faults = {name: f for name, d in found.items() if (f := _layout_faults(d["panels"]))}
    assert faults == {}


def test_the_layout_check_catches_overlap_and_overflow() -> None:
    ok = [{"title": "a", "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8}}]
    assert _layout_faults(ok) == []
    wide = [*ok, {"title": "b", "gridPos": {"x": 12, "y": 0, "w": 24, "h": 8}}]
    assert _layout_faults(wide) == ["b: x=12 w=24 y=0 h=8 is off the 24-column grid"]
    on_top = [*ok, {"title": "c", "gridPos": {"x": 6, "y": 4, "w": 12, "h": 8}}]
    assert _layout_faults(on_top) == ["c overlaps a"]
    # The generator refuses a panel wider than the grid rather than place it off the edge.
    with pytest.raises(ValueError, match="24-column grid"):
        dashboards.Board("x", "x", "x").add("too wide", dashboards._table(), "SELECT 1", "table",
                                            (), w=25, h=8)  # fmt: skip


def test_dashboards_survive_the_sdk_round_trip() -> None:
    """Decoding with the SDK (Grafana's schema as code) and encoding again keeps everything we
    wrote: every field is one the schema knows. Annotation targets are the exception, compared
    on their own: the schema types them as the built-in tag filter (with its own TODO saying
    they should be data queries), so it drops a SQL annotation's query; test_grafana_schema
    checks them against @grafana/schema's DataQuery instead."""
    datasource.register()
    for uid, original in dashboards.dashboards().items():
        again = dashboards.to_json(dm.Dashboard.from_json(json.loads(json.dumps(original))))
        ours, theirs = json.loads(json.dumps(original)), json.loads(json.dumps(again))
        targets = _annotation_targets(ours)
        decoded = _annotation_targets(theirs)
        assert kept(ours, theirs), uid
        for t, d in zip(targets, decoded, strict=True):
            assert {k: v for k, v in t.items() if k in d} == d, uid


# -- a simulated city in the database -------------------------------------------------------------

STEP_S = 600  # one reading per series every 10 minutes
HISTORY_S = 8 * 86400  # long enough for the hourly tier

AIR = {"pm25": 18.0, "pm10": 35.0, "no2": 20.0, "o3": 30.0, "co": 0.6, "so2": 3.0,
       "temperature": 30.0, "humidity": 75.0}  # fmt: skip
TRAFFIC = {"flow": 600.0, "speed": 38.0, "occupancy": 12.0, "vehicle_count": 50.0,
           "queue_length": 20.0}  # fmt: skip
WATER = {"water_level": 1.2, "water_flow": 0.4, "do": 6.5, "water_temperature": 29.0,
         "bod": 2.0, "cod": 15.0, "an": 0.2, "tss": 20.0, "ph": 7.1, "turbidity": 9.0,
         "conductivity": 150.0}  # fmt: skip


def _sensor(sid: str, gw: str, domain: str, district: str, lat: float, lon: float,
            values: dict[str, float], **attributes: Any) -> SensorMeta:  # fmt: skip
    return SensorMeta(sid, gw, domain, district, lat, lon, sid, tuple(values), {}, attributes)


SENSORS = [
    (_sensor("AQ-P01", "gw-p01", "air", "Presint 1", 2.935, 101.680, AIR), AIR),
    (_sensor("AQ-P02", "gw-p02", "air", "Presint 2", 2.935, 101.695, AIR), AIR),
    (_sensor("TF-P01-01", "gw-p01", "traffic", "Presint 1", 2.930, 101.682, TRAFFIC,
             free_flow_speed=50.0), TRAFFIC),
    (_sensor("TF-P02-01", "gw-p02", "traffic", "Presint 2", 2.930, 101.697, TRAFFIC,
             free_flow_speed=50.0), TRAFFIC),
    (_sensor("WQ-WET-01", "gw-wetland", "water", "Presint 3", 2.950, 101.670, WATER), WATER),
    (_sensor("WQ-LAKE-01", "gw-wetland", "water", "Presint 3", 2.925, 101.690, WATER), WATER),
]  # fmt: skip
SILENT = _sensor("AQ-OLD", "gw-p02", "air", "Presint 2", 2.940, 101.700, {"pm25": 10.0})


def _value(sensor: str, quantity: str, base: float, t: float, now: float) -> float:
    if sensor == "AQ-P01" and quantity == "pm25":
        if now - t < 40 * 60:  # haze now: an open warning alarm
            return 80.0
        if 2 * 86400 - 3600 < now - t < 2 * 86400:  # an hour of haze two days ago
            return 70.0
    daily = math.sin(2 * math.pi * (t % 86400) / 86400)
    return round(base * (1 + 0.2 * daily) + 0.01 * ((int(t) // STEP_S) % 7), 3)


def _readings(items: list[tuple[str, str, float, float]]) -> Readings:
    ts = np.array([round(t * 1e6) for _, _, t, _ in items], dtype=np.int64)
    return Readings(
        sensor=[s for s, _, _, _ in items],
        quantity=[q for _, q, _, _ in items],
        unit=[None] * len(items),
        gateway=["gw"] * len(items),
        ts_us=ts,
        value=np.array([v for _, _, _, v in items], dtype=np.float64),
        received_us=ts + 2_000_000,  # arrived two seconds after the event
    )


def load_city(url: str) -> None:
    now = time.time()
    start = (now - HISTORY_S) // STEP_S * STEP_S
    cat = catalogue.load()
    with psycopg.connect(url) as conn:
        writer = Writer(conn)
        alarms = Alarms(rules.load(None), cat, "pusat/v1")
        commit(
            writer,
            Batch(
                readings=_readings([]),
                sensors=[m for m, _ in SENSORS] + [SILENT],
                statuses=[
                    GatewayStatus("gw-p01", "online", now - 3600),
                    GatewayStatus("gw-p02", "offline", now - 600),
                ],
            ),
            alarms,
        )
        chunk_s = 12 * 3600  # chronological batches, as ingest would commit them
        t0 = start
        while t0 < now:
            items = [
                (m.sensor_id, q, t, _value(m.sensor_id, q, base, t, now))
                for t in np.arange(t0, min(t0 + chunk_s, now - 60), STEP_S)
                for m, values in SENSORS
                for q, base in values.items()
            ]
            items += [
                ("AQ-OLD", "pm25", t, 10.0)
                for t in np.arange(t0, min(t0 + chunk_s, now - 2 * 86400), STEP_S)
            ]
            items.sort(key=lambda i: i[2])
            commit(writer, Batch(_readings(items)), alarms)
            t0 += chunk_s
            # an operator acknowledges what has cleared: the next haze raises a new alarm
            with conn.transaction(), conn.cursor() as cur:
                cleared = cur.execute("SELECT id FROM alerts WHERE state = 'cleared'").fetchall()
                for (alert_id,) in cleared:
                    lifecycle.acknowledge(cur, alert_id, "operator-1", "haze passed")
        derived = Derived(cat)
        with conn.transaction(), conn.cursor() as cur:  # the writer wants an idle connection
            batch = derived.due(cur, datetime.now(UTC))
        assert batch is not None
        commit(writer, batch, alarms)
        quarantine = [
            QuarantineRow(now - 300, "pusat/v1/gw-p01/senml", "gw-p01", "out_of_range",
                          "pm25 -5 below 0", 0, b'[{"n": "pm25", "v": -5}]'),
            QuarantineRow(now - 200, "pusat/v1/gw-p02/json", "gw-p02", "malformed_json",
                          "not JSON", None, b"{oops"),
        ]  # fmt: skip
        commit(writer, Batch(_readings([]), quarantine=quarantine), alarms)


@pytest.fixture(scope="module")
def city_url(pg: Postgres) -> Iterator[str]:
    """One database holding the city for the whole module (loading it takes seconds)."""
    from psycopg import sql as pgsql

    from store import db

    name = f"grafana_city_{os.getpid()}"
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {}").format(pgsql.Identifier(name)))
        conn.execute(
            pgsql.SQL("CREATE DATABASE {} TEMPLATE pusat_template").format(pgsql.Identifier(name))
        )
    url = db.with_database(pg.url, name)
    load_city(url)
    yield url
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE {} WITH (FORCE)").format(pgsql.Identifier(name)))


# -- Grafana's macros, as its PostgreSQL data source expands them ---------------------------------

# Grafana's own pattern: a macro's arguments end at the first ')'.
_MACRO = re.compile(r"\$__([_a-zA-Z0-9]+)\(([^)]*)\)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(interval: str) -> int:
    m = re.fullmatch(r"(\d+)([smhd])", interval.strip().strip("'\""))
    assert m, f"interval {interval!r}"
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class Range:
    start: datetime
    end: datetime

    @classmethod
    def last(cls, span: timedelta) -> Range:
        end = datetime.now(UTC)
        return cls(end - span, end)

    def interval(self, points: int = 1000) -> str:
        """$__interval as Grafana picks it: range / max data points, rounded up to a nice step."""
        seconds = (self.end - self.start).total_seconds() / points
        for step in ("1s", "10s", "30s", "1m", "5m", "10m", "30m", "1h", "6h"):
            if seconds <= _seconds(step):
                return step
        return "1d"


def expand(query: str, rng: Range, variables: dict[str, list[str]], interval: str) -> str:
    def iso(t: datetime) -> str:
        return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    text = query.replace("$__interval_ms", str(_seconds(interval) * 1000))
    text = text.replace("$__interval", interval)
    for name, values in variables.items():
        quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
        text = re.sub(r"\$\{" + name + r"\}|\$" + name + r"\b", quoted, text)

    def macro(m: re.Match[str]) -> str:
        name, args = m.group(1), [a.strip() for a in m.group(2).split(",")] if m.group(2) else []
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{iso(rng.start)}' AND '{iso(rng.end)}'"
        if name == "timeFrom":
            return f"'{iso(rng.start)}'"
        if name == "timeTo":
            return f"'{iso(rng.end)}'"
        if name in ("timeGroup", "timeGroupAlias"):
            s = _seconds(args[1])
            group = f"floor(extract(epoch from {args[0]})/{s})*{s}"
            return group + (' AS "time"' if name == "timeGroupAlias" else "")
        if name == "time":
            return f'{args[0]} AS "time"'
        raise AssertionError(f"macro $__{name} is not expanded by this helper")

    text = _MACRO.sub(macro, text)
    assert "$" not in text, f"unexpanded: {text}"
    return text


def run_as_grafana(url: str, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``query`` as the read-only role (SET ROLE: the role has no login in the tests)."""
    with psycopg.connect(url) as conn:
        conn.execute(f"SET ROLE {datasource.READ_ROLE}")
        conn.execute("SET TRANSACTION READ ONLY")
        cur = conn.execute(query.encode())
        names = [d.name for d in cur.description or ()]
        return names, cur.fetchall()


def variable_values(url: str) -> dict[str, list[str]]:
    """Every variable at "All", as Grafana sends a multi-value variable: all its values."""
    return {
        "district": [r[0] for r in run_as_grafana(url, sql.VAR_DISTRICT)[1]],
        "domain": [r[0] for r in run_as_grafana(url, sql.VAR_DOMAIN)[1]],
    }


def _dashboard_range(uid: str) -> Range:
    frm = dashboards.dashboards()[uid]["time"]["from"]
    m = re.fullmatch(r"now-(\d+)h", frm)
    assert m
    return Range.last(timedelta(hours=int(m.group(1))))


def check(url: str, q: Query, rng: Range, variables: dict[str, list[str]]) -> None:
    query = expand(q.sql, rng, variables, rng.interval())
    names, result = run_as_grafana(url, query)
    where = f"{q.dashboard} / {q.panel} over {rng.end - rng.start}"
    assert result, f"{where}: no rows\n{query}"
    missing = set(q.needs) - set(names)
    assert not missing, f"{where}: no column {missing} in {names}"
    if q.format == "time_series":
        assert names[0] == "time", f"{where}: a time series starts with its time column"
        times = [r[0] for r in result]
        assert times == sorted(times), f"{where}: Grafana needs time series sorted by time"


ALL_QUERIES = dashboards.queries()


@pytest.mark.parametrize("q", ALL_QUERIES, ids=lambda q: f"{q.dashboard}:{q.panel}")
def test_panel_sql_on_a_city(city_url: str, q: Query) -> None:
    check(city_url, q, _dashboard_range(q.dashboard), variable_values(city_url))


TIERS = {"raw": timedelta(hours=3), "rollup_1m": timedelta(days=1), "rollup_1h": timedelta(days=8)}


@pytest.mark.parametrize("tier", list(TIERS))
def test_time_series_read_the_tier_their_range_calls_for(city_url: str, tier: str) -> None:
    """Each tiered query returns data from each tier, and the plan scans only that one."""
    variables = variable_values(city_url)
    rng = Range.last(TIERS[tier])
    tiered = [q for q in ALL_QUERIES if q.tiered]
    assert len(tiered) >= 15
    for q in tiered:
        check(city_url, q, rng, variables)
    q = tiered[0]
    with psycopg.connect(city_url) as conn:
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                ("EXPLAIN (ANALYZE, COSTS OFF) " + expand(q.sql, rng, variables, "1m")).encode()
            )
        )
    scanned = {
        "raw": "reading_data", "rollup_1m": "rollup_1m_data", "rollup_1h": "rollup_1h_data"
    }  # fmt: skip
    for name, table in scanned.items():
        nodes = [line for line in plan.splitlines() if re.search(rf" on {table}\b", line)]
        # a branch whose range condition is false is planned away, or never executed
        ran = any("never executed" not in line for line in nodes)
        assert ran == (name == tier), f"{tier}: {table} {'scanned' if ran else 'skipped'}\n{plan}"


def test_variables_and_annotations_run_as_grafana(city_url: str) -> None:
    variables = variable_values(city_url)
    assert variables["district"] == ["Presint 1", "Presint 2", "Presint 3"]
    assert set(variables["domain"]) == {"air", "traffic", "water"}
    names, result = run_as_grafana(
        city_url, expand(sql.ALARM_ANNOTATIONS, Range.last(timedelta(days=8)), variables, "1m")
    )
    assert names == ["time", "text", "tags"] and result
    assert any("pm25" in r[1] and r[2].startswith("pusat,alarm,warning,") for r in result)
    board = dashboards.dashboards()["pusat-alarms"]
    sql_annotations = [a for a in board["annotations"]["list"] if "rawSql" in a.get("target", {})]
    assert [a["target"]["rawSql"] for a in sql_annotations] == [sql.ALARM_ANNOTATIONS]


def test_the_geomap_shows_alarms_and_silence(city_url: str) -> None:
    variables = variable_values(city_url)
    query = expand(sql.SENSOR_STATE, Range.last(timedelta(hours=6)), variables, "1m")
    names, result = run_as_grafana(city_url, query)
    state = {r[names.index("sensor_id")]: r[names.index("state")] for r in result}
    assert state["AQ-P01"] >= 3  # the haze: an open warning (or worse) alarm
    assert state["AQ-OLD"] == 2  # silent for two days
    assert state["WQ-LAKE-01"] in (0, 1, 3)


# -- the read-only role ---------------------------------------------------------------------------


def test_the_grafana_role_reads_the_public_surface_only(database_url: str) -> None:
    for forbidden in ("SELECT * FROM reading_data", "SELECT * FROM api_tokens",
                      "SELECT * FROM series", "SELECT * FROM alert_state"):  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            run_as_grafana(database_url, forbidden)
    with psycopg.connect(database_url) as conn:
        conn.execute(f"SET ROLE {datasource.READ_ROLE}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM alerts")
    settings = dict(
        rows(
            database_url,
            "SELECT split_part(s, '=', 1), split_part(s, '=', 2) FROM pg_db_role_setting d"
            " JOIN pg_roles r ON r.oid = d.setrole, unnest(d.setconfig) s WHERE rolname = %s",
            (datasource.READ_ROLE,),
        )
    )
    assert settings["default_transaction_read_only"] == "on"
    assert settings["statement_timeout"] == "60s"


def _psql() -> str:
    found = shutil.which("psql") or next(iter(glob.glob("/usr/lib/postgresql/*/bin/psql")), None)
    if found is None:
        pytest.skip("no psql binary (Debian's postgresql-client)")
    return found


def test_compose_initdb_script_gives_the_role_a_login(database_url: str, tmp_path: Path) -> None:
    """The TimescaleDB image runs it as POSTGRES_USER on POSTGRES_DB; run twice (idempotent)."""
    parts = urlsplit(database_url)
    script = DEPLOY / "initdb" / "20-pusat-grafana-role.sh"
    env = {
        "PATH": f"{Path(_psql()).parent}:{os.environ.get('PATH', '')}",
        "PGHOST": parts.hostname or "",
        "PGPORT": str(parts.port),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_DB": parts.path.lstrip("/"),
        "GRAFANA_DB_PASSWORD": "it's s3cret",
    }
    for _ in range(2):
        out = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    login = rows(
        database_url, "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
        (datasource.READ_ROLE,),
    )  # fmt: skip
    assert login == [(True,)]
    with psycopg.connect(database_url, user=datasource.READ_ROLE, password="x") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (datasource.READ_ROLE,)
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        conn.execute("SELECT count(*) FROM readings").fetchone()
