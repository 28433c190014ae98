"""The query benchmark: what reading rollups buys the API, against the same queries on raw
readings, in one run.

A throwaway PostgreSQL (``pusat.embedded``, started in a temp dir on a free port and stopped at
the end, also on failure) is loaded with minute data for a few hundred sensors over some days,
by binary COPY (``store.copybin``): ``reading_data``, its 1-minute and 1-hour rollups (computed
by ``processing.rollups`` as ingest computes them) and ``latest_data``. Then each query runs
many times, Pusat's form and the raw form alternating back to back so that both see the same
noise, then through the HTTP API:

- latest for all: the API's ``latest`` query vs the newest reading of every series looked up in
  ``reading_data`` (one index probe per series, the best raw readings allow);
- a 24-hour district panel: every sensor of one district at the step 300 points give (5 min),
  as the API plans it (from the 1-minute rollups) vs the same aggregation of raw readings;
- a 7-day single series at 200 points (1 hour: the hourly rollups) vs raw;
- a 7-day district panel at 200 points (hourly rollups) vs raw.

The SQL and its parameters are the API's own (``api.series.sql_for`` and ``params_for`` on
``api.series.make_plan``), run by ``api.series.query_rows`` as the API runs them and timed
including fetching the rows; the same Pusat queries are also timed end to end through the HTTP
API (uvicorn on loopback, JSON answers), which is what the aims are about.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import psycopg
import typer
from psycopg import sql
from rich.console import Console
from rich.table import Table

from api import auth
from api import series as ts
from api.latest import _SQL as LATEST_SQL
from bench import results
from processing import catalogue, rollups
from pusat.embedded import timescale
from pusat.embedded.ports import free_port
from pusat.embedded.postgres import Postgres, start_postgres
from store import copybin, db, migrate

MINUTE_US = 60_000_000
DOMAINS = (("air", "pm25"), ("traffic", "flow"), ("water", "water_level"))
CHUNK = 20  # sensors per COPY batch (20 x 7 days of minutes = 200k rows)

# Aims of issue 4.
AIM_LATEST_MS = 20.0
AIM_PANEL_MS = 50.0
AIM_LONG_RATIO = 10.0


@dataclass(frozen=True)
class Config:
    sensors: int = 300
    days: int = 7
    districts_per_domain: int = 5
    repeats: int = 60  # timed runs of each query form (after 3 untimed)

    @classmethod
    def quick(cls) -> Config:
        return cls(sensors=30, days=2, districts_per_domain=2, repeats=8)


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p95_ms: float
    rows: int

    @classmethod
    def of(cls, seconds: list[float], rows: int) -> Timing:
        ms = sorted(s * 1000 for s in seconds)
        p95 = ms[min(len(ms) - 1, math.ceil(0.95 * len(ms)) - 1)]
        return cls(statistics.median(ms), p95, rows)


@dataclass(frozen=True)
class Row:
    name: str
    what: str
    pusat_table: str
    pusat: Timing  # Pusat's SQL
    raw: Timing  # the same on raw readings
    http: Timing  # Pusat through the HTTP API

    @property
    def ratio(self) -> float:
        return self.raw.p50_ms / self.pusat.p50_ms


@dataclass(frozen=True)
class Aim:
    text: str
    measured: float
    target: float
    unit: str
    lower_is_better: bool

    @property
    def met(self) -> bool:
        return self.measured < self.target if self.lower_is_better else self.measured >= self.target


@dataclass
class Result:
    config: Config
    readings: int
    series: int
    load_seconds: float
    rows: list[Row]
    machine: str
    postgresql: str
    date: str
    command: str
    table_sizes: dict[str, int] = field(default_factory=dict)
    tier: str = "postgresql"

    @property
    def section(self) -> str:
        """This run's section of bench/RESULTS.md: one per tier."""
        return "query" if self.tier == "postgresql" else f"query-{self.tier}"

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def aims(self) -> list[Aim]:
        out = [
            Aim(
                "latest for all sensors, p95 through the API",
                self.row("latest").http.p95_ms,
                AIM_LATEST_MS,
                "ms",
                True,
            ),
            Aim(
                "24-hour district panel, p95 through the API",
                self.row("panel_24h").http.p95_ms,
                AIM_PANEL_MS,
                "ms",
                True,
            ),
        ]
        for name in ("series_7d", "panel_7d"):
            r = self.row(name)
            out.append(Aim(f"{r.what}: raw p50 / Pusat p50", r.ratio, AIM_LONG_RATIO, "x", False))
        return out


# -- loading --------------------------------------------------------------------------------------


def _sensors(config: Config) -> list[tuple[str, str, str, str, float, float]]:
    """(sensor, domain, quantity, district, lat, lon) around Putrajaya."""
    rng = np.random.default_rng(4)
    out = []
    for i in range(config.sensors):
        domain, quantity = DOMAINS[i % len(DOMAINS)]
        d = (i // len(DOMAINS)) % config.districts_per_domain
        out.append(
            (
                f"{domain[:2].upper()}-{i:04d}",
                domain,
                quantity,
                f"{domain}-district-{d}",
                2.92 + float(rng.normal(0, 0.02)),
                101.69 + float(rng.normal(0, 0.015)),
            )
        )
    return out


def load(
    conn: psycopg.Connection[Any], config: Config, end: datetime, log: Callable[[str], None]
) -> tuple[int, int]:
    """Fill the database; returns (readings, series)."""
    sensors = _sensors(config)
    cat = catalogue.load()
    units = {q: (cat.get(q).unit if cat.get(q) else None) for _, q in DOMAINS}  # type: ignore[union-attr]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sensors (sensor_id, domain, district, lat, lon, quantities, provisioned)"
            " VALUES (%s, %s, %s, %s, %s, %s, true)",
            [(s, d, dist, lat, lon, [q]) for s, d, q, dist, lat, lon in sensors],
        )
        cur.executemany(
            "INSERT INTO series (sensor_id, quantity, unit) VALUES (%s, %s, %s)",
            [(s, q, units[q]) for s, _, q, *_ in sensors],
        )
        ids = dict(cur.execute("SELECT sensor_id, series_id FROM series").fetchall())
    minutes = config.days * 1440
    end_us = int(end.timestamp() * 1e6) // MINUTE_US * MINUTE_US
    grid = end_us - np.arange(minutes, 0, -1, dtype=np.int64) * MINUTE_US
    rng = np.random.default_rng(11)
    total = 0
    last: list[tuple[int, int, float]] = []
    for start in range(0, len(sensors), CHUNK):
        chunk = sensors[start : start + CHUNK]
        series = np.repeat(np.array([ids[s[0]] for s in chunk], dtype=np.int32), minutes)
        # Each sensor reports once a minute at its own second; values follow a daily cycle.
        offsets = np.repeat(rng.integers(0, 60, len(chunk)) * 1_000_000, minutes)
        t = np.tile(grid, len(chunk)) + offsets
        phase = (t / 86_400e6) * 2 * np.pi
        v = np.round(30 + 15 * np.sin(phase) + rng.normal(0, 3, len(t)), 2).clip(0)
        received = t + 400_000
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(
                "COPY reading_data (series_id, ts, value, received_at) FROM STDIN (FORMAT BINARY)"
            ) as cp:
                cp.write(copybin.readings(series, t, v, received))
            for table, width in (
                ("rollup_1m_data", rollups.MINUTE_US),
                ("rollup_1h_data", rollups.HOUR_US),
            ):
                p = rollups.of_readings(series, t, v, width)
                with cur.copy(
                    f"COPY {table} (series_id, bucket, count, sum, min, max, first_ts,"
                    " first, last_ts, last) FROM STDIN (FORMAT BINARY)"
                ) as cp:
                    cp.write(copybin.partials(p))
        ends = np.arange(1, len(chunk) + 1) * minutes - 1
        last += [(int(series[i]), int(t[i]), float(v[i])) for i in ends]
        total += len(t)
        log(f"loaded {total:,} readings")
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO latest_data (series_id, ts, value, received_at)"
            " VALUES (%s, to_timestamp(%s / 1e6), %s, to_timestamp(%s / 1e6))",
            [(s, t_, v_, t_ + 400_000) for s, t_, v_ in last],
        )
    # As autovacuum would have by then: statistics and visibility maps (index-only scans).
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE")
    conn.autocommit = False
    return total, len(ids)


# -- the queries ----------------------------------------------------------------------------------

RAW_LATEST = (
    "SELECT se.sensor_id, se.quantity, se.unit, r.ts, r.value, r.received_at, s.domain,"
    " s.district, s.lat, s.lon FROM series se JOIN sensors s USING (sensor_id)"
    " CROSS JOIN LATERAL (SELECT ts, value, received_at FROM reading_data d"
    " WHERE d.series_id = se.series_id ORDER BY ts DESC LIMIT 1) r"
    " ORDER BY se.sensor_id, se.quantity"
)


@dataclass(frozen=True)
class Query:
    name: str
    what: str
    pusat_sql: str
    raw_sql: str
    params: dict[str, Any]
    table: str
    http: dict[str, str]  # GET parameters of the same query through the API (None: latest)
    series: bool = True  # an api.series query, run as the API runs it (api.series.query_rows)


async def _series_query(
    conn: psycopg.AsyncConnection[Any],
    name: str,
    what: str,
    sel: ts.Selection,
    start: datetime,
    end: datetime,
    points: int,
) -> Query:
    found = await ts.resolve(conn, sel)
    cat = catalogue.load()
    ask = ts.Ask(start=start, end=end, points=points, aggs=("mean",))
    plan = ts.make_plan(ask, found, cat, 10_000_000)
    raw = ts.make_plan(
        replace(ask, step_s=plan.step_s, resolution=ts.Resolution.raw), found, cat, 10_000_000
    )
    params = ts.params_for(plan, [s.series_id for s in found], 10_000_000)
    http = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "points": str(points),
        "before": "false",
    }
    if sel.sensors:
        http["sensor"] = ",".join(sel.sensors)
    if sel.district:
        http["district"] = sel.district
    if sel.quantities:
        http["quantity"] = ",".join(sel.quantities)
    return Query(
        name,
        what,
        ts.sql_for(plan, "date_bin"),
        ts.sql_for(raw, "date_bin"),
        params,
        ts.PUBLIC_NAME[plan.resolution],
        http,
    )


async def _time(
    conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any], series: bool
) -> tuple[float, int]:
    t0 = time.perf_counter()
    if series:
        n = len(await ts.query_rows(conn, query, params))
    else:
        cur = await conn.execute(query.encode(), params or None, binary=True)
        n = len(await cur.fetchall())
    return time.perf_counter() - t0, n


async def measure(
    url: str, api_url: str, token: str, config: Config, end: datetime, log: Callable[[str], None]
) -> list[Row]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        district = "air-district-0"
        one = _sensors(config)[0][0]
        queries = [
            Query(
                "latest",
                "latest for all sensors",
                LATEST_SQL + " ORDER BY se.sensor_id, se.quantity",
                RAW_LATEST,
                {},
                "latest",
                {},
                series=False,
            ),
            await _series_query(
                conn,
                "panel_24h",
                "24-hour district panel",
                ts.Selection(district=district, quantities=("pm25",)),
                end - timedelta(hours=24),
                end,
                300,
            ),
            await _series_query(
                conn,
                "series_7d",
                f"{config.days}-day single series",
                ts.Selection(sensors=(one,), quantities=("pm25",)),
                end - timedelta(days=config.days),
                end,
                200,
            ),
            await _series_query(
                conn,
                "panel_7d",
                f"{config.days}-day district panel",
                ts.Selection(district=district, quantities=("pm25",)),
                end - timedelta(days=config.days),
                end,
                200,
            ),
        ]
        rows = []
        async with httpx.AsyncClient(
            base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            for q in queries:
                pusat: list[float] = []
                raw: list[float] = []
                http: list[float] = []
                n_pusat = n_raw = n_http = 0
                path = "/api/v1/latest" if q.name == "latest" else "/api/v1/readings"
                for i in range(config.repeats + 3):
                    # Alternate the forms back to back, so a noisy moment hits both. The
                    # HTTP requests run in a loop of their own: a query sent after one waits
                    # for this connection's idle backend and CPU to wake (a few tenths of a
                    # millisecond here), which would be charged to whichever form came first.
                    a, n_pusat = await _time(conn, q.pusat_sql, q.params, q.series)
                    b, n_raw = await _time(conn, q.raw_sql, q.params, q.series)
                    if i >= 3:  # the first runs warm caches
                        pusat.append(a)
                        raw.append(b)
                for i in range(config.repeats + 3):
                    t0 = time.perf_counter()
                    r = await client.get(path, params=q.http)
                    r.raise_for_status()
                    body = r.json()
                    c = time.perf_counter() - t0
                    n_http = len(body) if isinstance(body, list) else len(body["data"])
                    if i >= 3:
                        http.append(c)
                row = Row(
                    q.name,
                    q.what,
                    q.table,
                    Timing.of(pusat, n_pusat),
                    Timing.of(raw, n_raw),
                    Timing.of(http, n_http),
                )
                log(
                    f"{q.what}: Pusat {row.pusat.p50_ms:.2f} ms, raw {row.raw.p50_ms:.2f} ms,"
                    f" API {row.http.p50_ms:.2f} ms (p50)"
                )
                rows.append(row)
    return rows


# -- the run --------------------------------------------------------------------------------------


def _machine() -> str:
    cpus = os.cpu_count() or 0
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpus} CPUs ({model}), {mem:.1f} GiB memory, Python {platform.python_version()}"


def _code() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=results.RESULTS_FILE.parent,
            timeout=10,
        ).stdout.strip()
        # The results file itself is not code: the ingest benchmark may have just written it.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ":/", ":(top,exclude)bench/RESULTS.md"],
            capture_output=True,
            text=True,
            cwd=results.RESULTS_FILE.parent,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" with uncommitted changes" if dirty else "") if head else "unknown"


def _wait_for(api_url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            err = server.stderr.read().decode() if server.stderr else ""
            raise RuntimeError(f"the API did not start: {err[-2000:]}")
        try:
            if httpx.get(f"{api_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the API did not answer /healthz within 30 s")


def run(
    config: Config,
    command: str = "pusat bench query",
    log: Callable[[str], None] = lambda m: None,
    tier: str = "postgresql",
) -> Result:
    """The whole benchmark on plain PostgreSQL or (``tier`` "timescaledb") on a TimescaleDB of
    the Apache edition from its Debian 13 root (pusat.embedded.timescale)."""
    # On the hour, so every step of the plans (5 min, 1 h) divides the windows exactly.
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="pusat-bench-query-") as tmp:
        pg: Postgres | timescale.TimescaleDB
        if tier == "timescaledb":
            pg = timescale.start_timescaledb(timescale.default_root(), background_workers=False)
        else:
            pg = start_postgres(Path(tmp) / "data", durable=False)
        try:
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("bench")))
            url = db.with_database(pg.url, "bench")
            started = time.perf_counter()
            with db.connect(url) as conn:
                migrate.upgrade(conn)
                readings, n_series = load(conn, config, end, log)
                version = conn.execute("SELECT version()").fetchone()
                sizes = {
                    t: int(conn.execute("SELECT count(*) FROM " + t).fetchone()[0])  # type: ignore[index]
                    for t in ("reading_data", "rollup_1m_data", "rollup_1h_data", "latest_data")
                }
                _, token = auth.create_token(conn, "viewer", "bench")
            load_seconds = time.perf_counter() - started
            log(f"loaded in {load_seconds:.1f}s; measuring")
            # The API in a process of its own, as in production: it must not share this
            # process's interpreter lock with the measuring loop.
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("PUSAT_")}
            env.update(
                PUSAT_DATABASE_URL=url,
                PUSAT_API_MAX_POINTS="1000000",
                PUSAT_HOME=str(Path(tmp) / "home"),
            )
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pusat",
                    "api",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "WARNING",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                api_url = f"http://127.0.0.1:{port}"
                _wait_for(api_url, server)
                rows = asyncio.run(measure(url, api_url, token, config, end, log))
            finally:
                server.terminate()
                server.wait(30)
        finally:
            pg.stop()
    return Result(
        config=config,
        readings=readings,
        series=n_series,
        load_seconds=load_seconds,
        rows=rows,
        machine=_machine(),
        postgresql=(version[0].split(" on ")[0] if version else "PostgreSQL ?"),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command,
        table_sizes=sizes,
        tier=tier,
    )


def figures_are_sane(r: Result) -> list[str]:
    """What would make the figures meaningless (never speed targets)."""
    problems = []
    c = r.config
    if r.readings != c.sensors * c.days * 1440:
        problems.append(f"loaded {r.readings} readings, expected {c.sensors * c.days * 1440}")
    for row in r.rows:
        for label, t in (("pusat", row.pusat), ("raw", row.raw), ("http", row.http)):
            if not (0 < t.p50_ms <= t.p95_ms < 60_000) or not math.isfinite(t.p95_ms):
                problems.append(f"{row.name} {label}: p50 {t.p50_ms} p95 {t.p95_ms}")
        if row.pusat.rows != row.raw.rows or row.pusat.rows != row.http.rows:
            problems.append(
                f"{row.name}: rows differ (Pusat {row.pusat.rows}, raw"
                f" {row.raw.rows}, API {row.http.rows})"
            )
        if row.pusat.rows == 0:
            problems.append(f"{row.name}: no rows")
    return problems


# -- the report -----------------------------------------------------------------------------------


def _ms(t: Timing) -> str:
    return f"{t.p50_ms:.2f} / {t.p95_ms:.2f}"


def markdown(r: Result) -> str:
    c = r.config
    sizes = ", ".join(f"`{k}` {v:,}" for k, v in r.table_sizes.items())
    begin, end = results.markers(r.section)
    on_ts = r.tier == "timescaledb"
    lines = [
        begin,
        "## Queries (`pusat bench query`)" + (" on TimescaleDB" if on_ts else ""),
        "",
        f"Measured {r.date} with `{r.command}`, code at {_code()}.",
        "",
        f"Machine: {r.machine}; {r.postgresql}"
        + (
            " (TimescaleDB tier, Apache edition from Debian 13's `postgresql-17-timescaledb`:"
            " hypertables, `time_bucket`)"
            if on_ts
            else " (plain PostgreSQL tier: `date_bin`)"
        )
        + ", started by the benchmark on loopback without fsync (reads are what is measured).",
        "",
        f"Data: {c.sensors} sensors ({', '.join(q for _, q in DOMAINS)}, one each) in"
        f" {c.districts_per_domain} districts per domain, one reading a minute for {c.days} days:"
        f" {r.readings:,} readings loaded by binary COPY with their rollups in"
        f" {r.load_seconds:.0f} s ({sizes}).",
        "",
        f"Each query ran {c.repeats} times after 3 warm-up runs, Pusat's SQL and the same on raw"
        " readings alternating back to back, then the API over HTTP. *Pusat* and *raw*: the SQL"
        " the API runs (`api.series`), executed and fetched as the API does (psycopg, binary,"
        " times as integers: `api.series.query_rows`); *raw* is the same"
        " query on `reading_data` (for latest: the newest reading of each series by an index"
        " probe, the best raw readings allow). *API*: the same Pusat query end to end, `GET`"
        " with httpx to uvicorn, JSON parsed. Milliseconds, p50 / p95.",
        "",
        "| query | rows | Pusat reads | Pusat SQL | raw SQL | raw / Pusat (p50) | API (HTTP) |",
        "|---|--:|---|--:|--:|--:|--:|",
    ]
    for row in r.rows:
        lines.append(
            f"| {row.what} | {row.pusat.rows:,} | `{row.pusat_table}` | {_ms(row.pusat)} |"
            f" {_ms(row.raw)} | {row.ratio:.1f}x | {_ms(row.http)} |"
        )
    lines += ["", "| aim | measured | target | |", "|---|--:|--:|---|"]
    for a in r.aims():
        op = "<" if a.lower_is_better else ">="
        lines.append(
            f"| {a.text} | {a.measured:.1f} {a.unit} | {op} {a.target:g} {a.unit} |"
            f" {'met' if a.met else 'NOT met'} |"
        )
    lines += [
        "",
        "The 24-hour panel reads the 1-minute rollups, which hold as many rows as minute data:"
        " its gain over raw is small by construction; the hourly rollups make the long ranges."
        " One series over 7 days is cheap either way while its raw readings sit in memory"
        " (10,080 rows aggregated in a few milliseconds): Pusat's 168 hourly rows take about a"
        " tenth of a millisecond in the server, and most of its time is what every query costs"
        " (the round trip, decoding rows in Python), so that ratio is bounded by fixed costs; it"
        " grows with the range, the reading rate and the number of series, as the 7-day panel"
        " shows.",
        end,
    ]
    return "\n".join(lines) + "\n"


def write_results(r: Result, path: Path = results.RESULTS_FILE) -> None:
    """Replace this benchmark's section of ``path`` (or append it); the rest stays as it is."""
    results.replace_section(r.section, markdown(r), path)


def print_result(r: Result, console: Console) -> None:
    t = Table(title=f"{r.readings:,} readings, {r.series} series")
    for col in (
        "query",
        "rows",
        "Pusat reads",
        "Pusat p50/p95",
        "raw p50/p95",
        "raw/Pusat",
        "API p50/p95",
    ):
        t.add_column(col)
    for row in r.rows:
        t.add_row(
            row.what,
            f"{row.pusat.rows:,}",
            row.pusat_table,
            _ms(row.pusat),
            _ms(row.raw),
            f"{row.ratio:.1f}x",
            _ms(row.http),
        )
    console.print(t)
    for a in r.aims():
        console.print(
            f"{'met' if a.met else 'NOT met':>8}  {a.text}: {a.measured:.1f} {a.unit}"
            f" (aim {'<' if a.lower_is_better else '>='} {a.target:g})"
        )


# -- the command ----------------------------------------------------------------------------------


def query_command(
    quick: Annotated[bool, typer.Option("--quick", help="a small run (seconds), to check")] = False,
    sensors: Annotated[int | None, typer.Option(min=3, help="sensors (default 300)")] = None,
    days: Annotated[int | None, typer.Option(min=1, max=31, help="days of minute data (7)")] = None,
    repeats: Annotated[int | None, typer.Option(min=3, help="timed runs per query (60)")] = None,
    write_results_: Annotated[
        bool, typer.Option("--write-results", help="update the queries section of bench/RESULTS.md")
    ] = False,
    timescaledb: Annotated[
        bool, typer.Option(help="also on TimescaleDB (Apache edition), when its root is built")
    ] = True,
) -> None:
    """Query latency: latest for all, a 24-hour district panel and 7-day ranges, from rollups
    against the same queries on raw readings, on minute data for a few hundred sensors."""
    base = Config.quick() if quick else Config()
    config = replace(
        base,
        sensors=sensors or base.sensors,
        days=days or base.days,
        repeats=repeats or base.repeats,
    )
    flags = [
        "--quick" if quick else "",
        f"--sensors {sensors}" if sensors else "",
        f"--days {days}" if days else "",
        f"--repeats {repeats}" if repeats else "",
        "--write-results" if write_results_ else "",
        "" if timescaledb else "--no-timescaledb",
    ]
    console = Console()
    command = " ".join(["pusat bench query", *filter(None, flags)])
    tiers = ["postgresql"]
    if timescaledb and timescale.root_ready(timescale.default_root()):
        tiers.append("timescaledb")
    elif timescaledb:
        console.print(f"no TimescaleDB root at {timescale.default_root()}: plain PostgreSQL only")
    for tier in tiers:
        console.log(f"tier: {tier}")
        result = run(config, command, console.log, tier)
        print_result(result, console)
        problems = figures_are_sane(result)
        if problems:
            console.print(f"[red]implausible figures:[/red] {problems}")
            raise typer.Exit(1)
        if write_results_:
            write_results(result)
            console.print(f"updated {results.RESULTS_FILE} ({result.section})")


app = typer.Typer(help="The query benchmark.", add_completion=False)
app.command("query")(query_command)
