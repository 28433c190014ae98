"""The city benchmark (issue 13): a city of sensors ingesting in real time while walls, panels
and an analyst query, on one machine, in one run.

One run starts its own durable PostgreSQL (commit timestamps on) and Mosquitto (the ingest
benchmark's ``Services``; with ``--timescale`` a TimescaleDB of the Apache edition instead of
the plain database, when its root is built), then ``pusat api`` and one ``pusat ingest`` as
child processes. It provisions the sensors through the bulk import API, in gateways of
contiguous sensors, each sensor of one domain:

- traffic (80 % of sensors): vehicle_count, flow, occupancy, speed, queue_length every 30 s;
- air (15 %): pm25, pm10, no2, o3, temperature, humidity every 60 s;
- water (5 %): water_level, do, ph, turbidity every 300 s;

about 0.15 readings/s per sensor: 15,000 readings/s at 100,000 sensors. Publisher processes
(``python -m bench.city publish SPEC``) each own a share of the gateways and publish, every
second, one SenML pack per gateway with the readings due that second (event time = that second),
QoS 1, for ``--minutes``. Meanwhile a query process (``python -m bench.city query SPEC``) runs
4 wall clients (latest for all, in JSON and in Parquet by turns; open alarms; district tiles;
the live SSE stream), 4 panel clients (24-hour district panels, 7-day single series) and one
analyst (24-hour raw CSV and Parquet exports of one district) against the API over HTTP. When
the publishers are done and every reading is stored (the run fails when one is missing), the
same queries run again on the same data with ingest idle: the ratio of their p95s is the figure.

Ingest lag is per reading ``pg_xact_commit_timestamp(xmin) - ts``: commit time minus event
time, and the publishers publish each second's packs at that second (their own lateness is
reported beside it). RSS of the worker and the API is sampled from ``/proc`` every few seconds,
with the load average. At the end the worker and the API are restarted with every series known
and timed until ready: the worker until a probe reading it was sent is stored, the API until its
``/healthz`` answers and until a full ``latest`` answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from bench import ingest as bi
from bench import results
from pusat.embedded.ports import free_port

SECTION = "city"
SECTION_BEGIN, SECTION_END = results.markers(SECTION)

# (domain, share of sensors in twentieths, period s, quantities with a base value and a swing)
DOMAINS: tuple[tuple[str, int, int, tuple[tuple[str, float, float], ...]], ...] = (
    (
        "traffic",
        16,
        30,
        (
            ("vehicle_count", 12.0, 5.0),
            ("flow", 900.0, 300.0),
            ("occupancy", 20.0, 8.0),
            ("speed", 50.0, 8.0),
            ("queue_length", 30.0, 10.0),
        ),
    ),
    (
        "air",
        3,
        60,
        (
            ("pm25", 15.0, 4.0),
            ("pm10", 25.0, 5.0),
            ("no2", 20.0, 5.0),
            ("o3", 30.0, 5.0),
            ("temperature", 28.0, 2.0),
            ("humidity", 70.0, 5.0),
        ),
    ),
    (
        "water",
        1,
        300,
        (("water_level", 1.5, 0.2), ("do", 6.0, 0.5), ("ph", 7.0, 0.2), ("turbidity", 10.0, 3.0)),
    ),
)
CYCLE_S = 300  # every period divides it
DISTRICTS = 20
PUBLISHERS = 2
SAMPLE_S = 5.0  # RSS and load average
IMPORT_CHUNK = 20_000  # sensors per bulk-import request (well under its 10 MiB limit)

# Aims of issue 13; reported as met or not, never asserted.
AIM_STORED = 1.0
AIM_LAG_P99_MS = 2000.0
AIM_LOAD_RATIO = 2.0
AIM_LATEST_MS = 250.0
AIM_PANEL_MS = 100.0
AIM_RSS_GROWTH = 1.2
AIM_RSS_GIB = 1.5
AIM_WORKER_START_S = 10.0


@dataclass(frozen=True)
class Config:
    sensors: int = 100_000
    gateways: int = 1_000
    minutes: float = 10.0
    timescale: bool = False
    idle_seconds: float = 60.0  # the idle query phase
    # PostgreSQL settings for an experiment (`--pg-set name=value`), named in the report
    pg_settings: tuple[tuple[str, str], ...] = ()

    @classmethod
    def quick(cls) -> Config:
        return cls(sensors=20_000, gateways=200, minutes=2.0, idle_seconds=30.0)

    @property
    def per_gateway(self) -> int:
        return math.ceil(self.sensors / self.gateways)


# -- the city -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sensor:
    index: int
    sensor_id: str
    domain: str
    district: str
    gateway: str
    period: int
    offset: int  # reports when (t + offset) % period == 0
    quantities: tuple[tuple[str, float, float], ...]


def city(sensors: int, gateways: int) -> list[Sensor]:
    """The sensors, in gateways of contiguous indices; each gateway in one district."""
    per = math.ceil(sensors / gateways)
    kinds = [d for d in DOMAINS for _ in range(d[1])]
    out = []
    for i in range(sensors):
        domain, _, period, quantities = kinds[i % len(kinds)]
        g = i // per
        out.append(
            Sensor(
                i,
                f"{domain[:2].upper()}-{i:06d}",
                domain,
                f"district-{g % DISTRICTS:02d}",
                f"gw-{g:04d}",
                period,
                (i * 7919) % period,  # spread over the period
                quantities,
            )
        )
    return out


def readings_per_second(sensors: list[Sensor]) -> float:
    return sum(len(s.quantities) / s.period for s in sensors)


def import_csv(sensors: list[Sensor]) -> bytes:
    lines = ["sensor_id,gateway_id,domain,district,lat,lon,quantities"]
    for s in sensors:
        lat = 2.90 + (s.index % 317) * 0.0002
        lon = 101.67 + (s.index % 211) * 0.0002
        q = ";".join(name for name, _, _ in s.quantities)
        lines.append(f"{s.sensor_id},{s.gateway},{s.domain},{s.district},{lat:.5f},{lon:.5f},{q}")
    return ("\n".join(lines) + "\n").encode()


def packs_at(gateway_sensors: list[Sensor], t: int) -> bytes | None:
    """The SenML pack of one gateway at second ``t``: every reading due then; None if none."""
    records: list[dict[str, Any]] = []
    for s in gateway_sensors:
        if (t + s.offset) % s.period:
            continue
        phase = t / 3600.0 + s.index * 0.1
        for k, (name, base, swing) in enumerate(s.quantities):
            rec: dict[str, Any] = {
                "n": name,
                "v": round(base + swing * math.sin(phase + k), 2),
            }
            if k == 0:
                rec["bn"] = f"{s.sensor_id}:"
            records.append(rec)
    if not records:
        return None
    records[0]["bt"] = t
    return orjson.dumps(records)


# -- children: publishers and the query load ------------------------------------------------------


@dataclass(frozen=True)
class PublishSpec:
    host: str
    port: int
    root: str
    sensors: int
    gateways: int
    share: int  # this publisher owns the gateways g with g % of == share
    of: int
    start: int  # the first second published (epoch)
    seconds: int


def _publish(spec: PublishSpec) -> None:
    """Every second from ``start``, one pack per owned gateway, QoS 1; at the end, wait for every
    PUBACK and print what was published and how late the publisher was against each second."""
    by_gateway: dict[str, list[Sensor]] = {}
    for s in city(spec.sensors, spec.gateways):
        if int(s.gateway[3:]) % spec.of == spec.share:
            by_gateway.setdefault(s.gateway, []).append(s)
    c = bi._client(f"bench-city-pub-{spec.share}-{uuid.uuid4().hex[:6]}")
    c.max_inflight_messages_set(bi.PUBLISH_INFLIGHT)
    c.max_queued_messages_set(0)
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    c.connect(spec.host, spec.port)
    c.loop_start()
    if not connected.wait(10):
        raise bi.BenchError("publisher: not connected within 10 s")
    packs = readings = 0
    late: list[float] = []  # per second: when its last pack was handed to paho, after the second
    pending: list[Any] = []
    try:
        for t in range(spec.start, spec.start + spec.seconds):
            wait = t - time.time()
            if wait > 0:
                time.sleep(wait)
            for g, sensors in by_gateway.items():
                pack = packs_at(sensors, t)
                if pack is None:
                    continue
                pending.append(c.publish(f"{spec.root}/{g}/senml", pack, qos=1))
                packs += 1
                readings += pack.count(b'"n":')
            late.append(time.time() - t)
            if len(pending) > bi.PUBLISH_WINDOW // 2:
                for info in pending:
                    info.wait_for_publish(60)
                pending = []
        for info in pending:
            info.wait_for_publish(120)
            if not info.is_published():
                raise bi.BenchError("publisher: a pack was not acknowledged within 120 s")
        done = time.time()
    finally:
        c.disconnect()
        c.loop_stop()
    late.sort()
    bi._emit(
        packs=packs,
        readings=readings,
        done=done,
        late_p50=late[len(late) // 2],
        late_p99=late[min(len(late) - 1, int(len(late) * 0.99))],
    )


@dataclass(frozen=True)
class QuerySpec:
    api_url: str
    token: str
    seconds: float
    districts: list[str]
    sensor: str  # the 7-day series'
    pause_s: float = 2.0  # between a client's requests


def _since(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


def _requests() -> dict[str, Callable[[int, list[str], str], tuple[str, dict[str, str]]]]:
    """Query name -> (round, districts, sensor) -> (path, params)."""
    return {
        "latest_all": lambda i, d, s: ("/api/v1/latest", {}),
        # the same in columns: what a client that wants every sensor would rather read
        "latest_all_parquet": lambda i, d, s: ("/api/v1/latest", {"format": "parquet"}),
        "alarms_open": lambda i, d, s: ("/api/v1/alerts", {"state": "open"}),
        # the wall's district tiles at city scale: what wall.html asks for above its threshold
        "district_tiles": lambda i, d, s: ("/api/v1/districts", {"worst": "8"}),
        # one district's latest values in full (runs 1-14 called this district_tiles)
        "district_latest": lambda i, d, s: ("/api/v1/latest", {"district": d[i % len(d)]}),
        "panel_24h": lambda i, d, s: (
            "/api/v1/readings",
            {
                "district": d[i % len(d)],
                "quantity": "flow",
                "start": _since(24),
                "points": "300",
                "group": "district",  # the district's flow as one series, merged in the database
                "before": "false",
            },
        ),
        "series_7d": lambda i, d, s: (
            "/api/v1/readings",
            {"sensor": s, "quantity": "flow", "start": _since(168), "points": "200"},
        ),
        "export_csv": lambda i, d, s: (
            "/api/v1/readings",
            {"district": d[0], "start": _since(24), "resolution": "raw", "format": "csv"},
        ),
        "export_parquet": lambda i, d, s: (
            "/api/v1/readings",
            {"district": d[0], "start": _since(24), "resolution": "raw", "format": "parquet"},
        ),
    }


# The clients: (name, the queries it runs in turn); the wall's fourth is the SSE stream.
CLIENTS = (
    ("wall-latest", ("latest_all", "latest_all_parquet")),
    ("wall-alarms", ("alarms_open",)),
    ("wall-tiles", ("district_tiles", "district_latest")),
    ("panel-1", ("panel_24h",)),
    ("panel-2", ("panel_24h",)),
    ("panel-3", ("series_7d",)),
    ("panel-4", ("series_7d",)),
    ("analyst", ("export_csv", "export_parquet")),
)


async def _client_loop(
    client: httpx.AsyncClient,
    spec: QuerySpec,
    names: tuple[str, ...],
    until: float,
    out: dict[str, list[float]],
    sizes: dict[str, int],
    errors: list[str],
) -> None:
    reqs = _requests()
    i = 0
    while time.monotonic() < until:
        name = names[i % len(names)]
        path, params = reqs[name](i, spec.districts, spec.sensor)
        t0 = time.perf_counter()
        size = 0
        try:
            async with client.stream("GET", path, params=params) as r:
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                if r.status_code != 200:
                    errors.append(f"{name}: HTTP {r.status_code}")
        except httpx.TransportError as e:
            # Reported with the figures, as a wall would see it, and asked again next round.
            errors.append(f"{name}: {type(e).__name__} after {time.perf_counter() - t0:.1f} s")
        else:
            out.setdefault(name, []).append(time.perf_counter() - t0)
            sizes[name] = max(sizes.get(name, 0), size)
        i += 1
        await asyncio.sleep(spec.pause_s)


async def _sse(client: httpx.AsyncClient, until: float, tally: dict[str, float]) -> None:
    """The wall's live stream: events and bytes received."""
    try:
        async with client.stream("GET", "/api/v1/live", timeout=None) as r:
            async for line in r.aiter_lines():
                tally["bytes"] = tally.get("bytes", 0) + len(line) + 1
                if line.startswith("event:"):
                    tally["events"] = tally.get("events", 0) + 1
                if time.monotonic() >= until:
                    break
    except httpx.HTTPError as e:
        tally["errors"] = tally.get("errors", 0) + 1
        sys.stderr.write(f"live stream: {e}\n")


async def _queries(spec: QuerySpec) -> None:
    until = time.monotonic() + spec.seconds
    out: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    errors: list[str] = []
    tally: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {spec.token}"}
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(
        base_url=spec.api_url, headers=headers, timeout=300, limits=limits
    ) as client:
        started = time.monotonic()
        sse = asyncio.create_task(asyncio.wait_for(_sse(client, until, tally), spec.seconds + 5))
        await asyncio.gather(
            *(_client_loop(client, spec, names, until, out, sizes, errors) for _, names in CLIENTS)
        )
        with contextlib.suppress(TimeoutError):  # a quiet stream ends at its deadline
            await sse
        elapsed = time.monotonic() - started
    bi._emit(times=out, sizes=sizes, errors=errors[:20], sse=tally, seconds=elapsed)


def child_main(argv: list[str]) -> int:
    """Entry of ``python -m bench.city publish|query SPEC_JSON``."""
    if len(argv) != 2:
        sys.stderr.write("usage: python -m bench.city publish|query SPEC_JSON\n")
        return 2
    role, raw = argv
    try:
        if role == "publish":
            _publish(PublishSpec(**json.loads(raw)))
        elif role == "query":
            asyncio.run(_queries(QuerySpec(**json.loads(raw))))
        else:
            sys.stderr.write(f"unknown role {role!r}\n")
            return 2
    except bi.BenchError as e:
        sys.stderr.write(f"{role}: {e}\n")
        return 1
    return 0


# -- the parent -----------------------------------------------------------------------------------


def spawn_publishers(
    svc: bi.Services, root: str, sensors: int, gateways: int, start: int, seconds: int
) -> list[bi.Child]:
    """The city's PUBLISHERS publisher processes, each its share of the gateways, from ``start``
    (Unix seconds) for ``seconds``."""
    return [
        svc.spawn(
            "publish",
            [
                *(sys.executable, "-m", "bench.city", "publish"),
                json.dumps(
                    asdict(
                        PublishSpec(
                            svc.host, svc.port, root, sensors, gateways, k, PUBLISHERS, start,
                            seconds,
                        )
                    )
                ),
            ],
            svc.env,
            pipe=True,
        )
        for k in range(PUBLISHERS)
    ]  # fmt: skip


@dataclass(frozen=True)
class Timing:
    count: int
    p50_ms: float
    p95_ms: float
    max_bytes: int

    @classmethod
    def of(cls, seconds: list[float], max_bytes: int) -> Timing:
        if not seconds:
            return cls(0, math.nan, math.nan, max_bytes)
        s = sorted(seconds)
        return cls(
            len(s),
            statistics.median(s) * 1e3,
            s[min(len(s) - 1, math.ceil(len(s) * 0.95) - 1)] * 1e3,
            max_bytes,
        )


@dataclass(frozen=True)
class Sample:
    at_s: float  # since the publishers started
    worker_kib: int
    api_kib: int
    load1: float
    # CPU seconds used so far (user + system): the worker; the API with its build processes;
    # the PostgreSQL server with every backend (exited ones through the postmaster's cutime)
    worker_cpu_s: float = 0.0
    api_cpu_s: float = 0.0
    pg_cpu_s: float = 0.0
    checkpoints: int = 0  # timed + requested, since the server started
    vacuuming: str = ""  # the tables (auto)vacuum is working on at that moment
    # CPU seconds so far of the server's processes by client (application name, else the
    # process's kind: "autovacuum worker", "walwriter"...), as last seen alive: a backend that
    # lives less than a sample apart (one per `latest` build) is in pg_cpu_s only
    pg_clients: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    config: Config
    command: str
    machine: bi.Machine
    tier: str
    sensors: int
    series: int
    provision_s: float
    published: int
    stored: int
    publish_s: float
    expected_rate: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    publisher_late_p99_ms: float
    under_load: dict[str, Timing]
    idle: dict[str, Timing]
    sse_events_per_s: float
    sse_bytes_per_s: float
    query_errors: list[str]
    samples: list[Sample]
    lag_p99_windows_ms: list[float]  # per window between two shown samples (``shown``)
    bytes_per_million: dict[str, float]
    table_bytes: dict[str, int]
    worker_start_s: float
    api_health_s: float
    api_latest_s: float
    quarantined: int
    alerts: int
    load_before: str
    load_after: str
    notes: list[str] = field(default_factory=list)
    server_settings: dict[str, str] = field(default_factory=dict)  # the experiment's, as held

    @property
    def stored_rate(self) -> float:
        return self.stored / self.publish_s

    @property
    def published_rate(self) -> float:
        return self.published / self.publish_s

    def rss(self, role: str, minute: float) -> int:
        """RSS (KiB) of the first sample at or after ``minute``, else the last."""
        for s in self.samples:
            if s.at_s >= minute * 60:
                return s.worker_kib if role == "worker" else s.api_kib
        last = self.samples[-1]
        return last.worker_kib if role == "worker" else last.api_kib

    def aims(self) -> list[tuple[str, str, str, bool | None]]:
        """(measure, aim, measured, met) in the issue's order; None where not measured."""
        out: list[tuple[str, str, str, bool | None]] = []
        share = self.stored / self.published if self.published else 0.0
        out.append(
            (
                f"stored / published readings ({self.published_rate:,.0f} readings/s published"
                f" for {self.config.minutes:g} min)",
                "100 %, lag p99 < 2 s",
                f"{share * 100:.3f} %, lag p99 {self.lag_p99_ms / 1e3:.2f} s",
                share >= AIM_STORED and self.lag_p99_ms < AIM_LAG_P99_MS,
            )
        )
        for name, t in self.under_load.items():
            idle = self.idle.get(name)
            if idle is None or not idle.count or not t.count:
                continue
            ratio = t.p95_ms / idle.p95_ms
            out.append((f"{name}: p95 under ingest / idle", "<= 2x", f"{ratio:.2f}x", ratio <= 2.0))
        for name, how in (("latest_all", ""), ("latest_all_parquet", ", as Parquet")):
            latest = self.under_load.get(name)
            if latest is not None and latest.count:
                out.append(
                    (
                        f"latest for all {self.sensors:,} sensors{how}, p95 under load",
                        "< 250 ms",
                        f"{latest.p95_ms:.0f} ms",
                        latest.p95_ms < AIM_LATEST_MS,
                    )
                )
        panel = self.under_load.get("panel_24h")
        if panel is not None and panel.count:
            out.append(
                (
                    "24-hour district panel, p95 under load",
                    "< 100 ms",
                    f"{panel.p95_ms:.0f} ms",
                    panel.p95_ms < AIM_PANEL_MS,
                )
            )
        end_min = self.config.minutes
        first = self.rss("worker", 1.0)
        last = self.rss("worker", end_min)
        growth = last / first if first else math.nan
        out.append(
            (
                f"worker RSS after {end_min:g} min / after 1 min",
                "<= 1.2 and < 1.5 GiB",
                f"{growth:.2f} ({last / 1024:.0f} / {first / 1024:.0f} MiB)",
                growth <= AIM_RSS_GROWTH and last < AIM_RSS_GIB * 2**20,
            )
        )
        out.append(
            (
                "10-million-row CSV export: API peak RSS growth",
                "< 200 MiB",
                "not measured here (the analyst exports one district's day:"
                f" {self.under_load.get('export_csv', Timing(0, 0, 0, 0)).max_bytes / 2**20:.0f}"
                " MiB of CSV); `pusat bench export` measures it",
                None,
            )
        )
        out.append(
            (
                f"worker start-up with {self.series:,} known series",
                "< 10 s",
                f"{self.worker_start_s:.1f} s",
                self.worker_start_s < AIM_WORKER_START_S,
            )
        )
        return out


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (field 3 first); [] once it has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rindex(")") + 2 :].split()


def _own_ticks(f: list[str]) -> int:
    """A process's own CPU ticks (utime + stime) from its stat fields."""
    return int(f[11]) + int(f[12])


def _cpu_s(root: int) -> float:
    """CPU seconds of ``root`` and of its children: live ones read, exited ones as cutime."""
    own = _stat(root)
    if not own:
        return 0.0
    ticks = sum(int(x) for x in own[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(root):
            f = _stat(int(entry.name))
            if f and f[1] == str(root):  # ppid
                ticks += _own_ticks(f)
    return ticks * _TICK_S


def _postmaster(pg: Any) -> int:
    return int((Path(pg.data_dir) / "postmaster.pid").read_text().split()[0])


_BACKENDS = (
    "SELECT pid, coalesce(nullif(application_name, ''), backend_type) FROM pg_stat_activity"
    " WHERE pid <> pg_backend_pid()"
)


def _pg_clients(
    conn: psycopg.Connection[Any], seen: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds of the server's processes by client; `seen` keeps each pid's last figure,
    so a backend that has gone still counts what it was last seen using."""
    for pid, name in conn.execute(_BACKENDS).fetchall():
        f = _stat(int(pid))
        if f:
            seen[int(pid)] = (str(name), _own_ticks(f) * _TICK_S)
    totals: dict[str, float] = {}
    for name, cpu in seen.values():
        totals[name] = totals.get(name, 0.0) + cpu
    return totals


_SERVER_STATE = (
    "SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter),"
    " (SELECT string_agg(DISTINCT relid::regclass::text || ' ' || phase, ', ')"
    " FROM pg_stat_progress_vacuum)"
)


def _held(conn: psycopg.Connection[Any], names: list[str]) -> dict[str, str]:
    """The values the server holds for these settings, in its own spelling."""
    held = {}
    for name in names:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
        held[name] = str(row[0]) if row else "?"
    return held


def _count(url: str, query: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query.encode()).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _wait_http(url: str, child: bi.Child, timeout: float = 120) -> float:
    t0 = time.monotonic()

    def up() -> bool:
        if child.proc.poll() is not None:
            raise child.failure(f"exited with code {child.proc.returncode}")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    bi.wait_until(up, timeout, url, interval=0.05)
    return time.monotonic() - t0


def _api(svc: bi.Services, url: str, port: int) -> bi.Child:
    env = svc.env | {
        "PUSAT_DATABASE_URL": url,
        "PUSAT_MQTT_URL": svc.broker.url,
        "PUSAT_HOME": str(svc.work / "home"),
        "PUSAT_API_MAX_POINTS": "20000000",
    }
    argv = [sys.executable, "-m", "pusat", "api", "--host", "127.0.0.1", "--port", str(port)]
    return svc.spawn("pusat-api", [*argv, "--log-level", "WARNING"], env, pipe=False)


def _provision(api_url: str, token: str, sensors: list[Sensor]) -> None:
    with httpx.Client(
        base_url=api_url, timeout=600, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        for start in range(0, len(sensors), IMPORT_CHUNK):
            body = import_csv(sensors[start : start + IMPORT_CHUNK])
            r = client.post(
                "/api/v1/sensors/import", content=body, headers={"Content-Type": "text/csv"}
            )
            if r.status_code != 200:
                raise bi.BenchError(f"bulk import: HTTP {r.status_code}: {r.text[:500]}")


def _timings(out: dict[str, Any]) -> dict[str, Timing]:
    return {
        name: Timing.of(times, int(out["sizes"].get(name, 0)))
        for name, times in out["times"].items()
    }


def _lag(url: str, since: int) -> tuple[float, float, float]:
    """Commit time minus event time over the readings of the run, in ms: p50, p99, max."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag), max(lag)"
            " FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts) * 1e3 AS lag"
            " FROM reading_data WHERE ts >= to_timestamp(%s)) l",
            (since,),
        ).fetchone()
    if row is None or row[0] is None:
        raise bi.BenchError("no lag: no readings or no commit timestamps")
    return float(row[0][0]), float(row[0][1]), float(row[1])


def _lag_windows(url: str, since: int, edges: list[float]) -> list[float]:
    """Lag p99 (ms) of the readings whose event time falls in each window between two edges
    (seconds since ``since``): the lag over time, beside the samples; NaN for an empty one."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT width_bucket(extract(epoch FROM ts) - %s, %s::float8[]) AS w,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY"
            " extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts) * 1e3)"
            " FROM reading_data WHERE ts >= to_timestamp(%s) GROUP BY w",
            (since, edges, since),
        ).fetchall()
    found = {int(w): float(p) for w, p in rows}
    return [found.get(i, math.nan) for i in range(1, len(edges))]


def _sizes(url: str, tier: str) -> dict[str, int]:
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("reading_data", "rollup_1m_data", "rollup_1h_data", "latest_data"):
            if tier == "timescaledb":
                row = conn.execute(
                    "SELECT CASE WHEN EXISTS (SELECT 1 FROM timescaledb_information.hypertables"
                    " WHERE hypertable_name = %s) THEN hypertable_size(%s::regclass)"
                    " ELSE pg_total_relation_size(%s::regclass) END",
                    (table, table, table),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT pg_total_relation_size(%s::regclass)", (table,)
                ).fetchone()
            out[table] = int(row[0]) if row and row[0] is not None else 0
    return out


def _probe(svc: bi.Services, url: str, root: str, worker: bi.Child) -> None:
    try:
        already = _count(url, "SELECT count(*) FROM readings")
        bi.probe_worker(svc, url, root, worker, already=already)
    except bi.BenchError as e:
        raise worker.failure(str(e)) from e


def run(config: Config, command: str, log: Callable[[str], None] = print) -> Result:
    sensors = city(config.sensors, config.gateways)
    rate = readings_per_second(sensors)
    districts = sorted({s.district for s in sensors})
    publish_s = max(1, round(config.minutes * 60))
    notes: list[str] = []
    load_before = _loadavg()
    with bi.services(log, config.pg_settings) as svc:
        tier = "postgresql"
        if config.timescale:
            if svc.add_timescaledb(log) is not None:
                tier = "timescaledb"
            else:
                notes.append(
                    "--timescale asked, but no TimescaleDB root is built: plain PostgreSQL"
                )
        url = svc.database(f"city_{uuid.uuid4().hex[:8]}", tier)
        if tier == "timescaledb":
            notes.append(
                "TimescaleDB of the Apache edition: lag uses commit timestamps only if that server"
                " tracks them"
            )
        from api import auth  # the snapshot's schema is this code's; tokens are rows

        with psycopg.connect(url, autocommit=True) as conn:
            _, viewer = auth.create_token(conn, "viewer", "bench-city-viewer")
            _, engineer = auth.create_token(conn, "engineer", "bench-city-engineer")
            # what the server holds for the experiment's settings, as it reports them
            held = _held(conn, [name for name, _ in config.pg_settings])
        root, client_id = bi._ids("city")
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        api = _api(svc, url, port)
        _wait_http(f"{api_url}/healthz", api)
        log(f"provisioning {len(sensors):,} sensors in {config.gateways:,} gateways")
        t0 = time.monotonic()
        _provision(api_url, engineer, sensors)
        provision_s = time.monotonic() - t0
        # The worker's persistent session exists before it starts: nothing published is missed.
        bi.presubscribe(svc, client_id, [f"{root}/+/+"])
        worker = svc.worker(url, root, client_id)
        _probe(svc, url, root, worker)
        log(f"publishing {rate:,.0f} readings/s for {publish_s} s")
        start = int(time.time()) + 3
        publishers = spawn_publishers(svc, root, config.sensors, config.gateways, start, publish_s)
        samples: list[Sample] = []
        stop_sampling = threading.Event()

        postmaster = _postmaster(svc.pg)

        def sample() -> None:
            seen: dict[int, tuple[str, float]] = {}
            with psycopg.connect(url, autocommit=True) as conn:
                while not stop_sampling.is_set():
                    row = conn.execute(_SERVER_STATE).fetchone()
                    clients = _pg_clients(conn, seen)
                    samples.append(
                        Sample(
                            time.time() - start,
                            _rss_kib(worker.pid),
                            _rss_kib(api.pid),
                            float(_loadavg().split()[0]),
                            _cpu_s(worker.pid),
                            _cpu_s(api.pid),
                            _cpu_s(postmaster),
                            int(row[0]) if row else 0,
                            str(row[1] or "") if row else "",
                            clients,
                        )
                    )
                    stop_sampling.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        # The queries start once the stream runs (a tenth in) and end with it.
        warm = max(5.0, publish_s * 0.1)
        time.sleep(max(0.0, start - time.time()) + warm)
        sampler.start()
        # The 7-day panel reads a loop's flow: the first sensor may be an air station (a 404).
        loop = next(s.sensor_id for s in sensors if any(q[0] == "flow" for q in s.quantities))
        spec = QuerySpec(api_url, viewer, publish_s - warm - 2, districts, loop)
        queries = svc.spawn(
            "query",
            [sys.executable, "-m", "bench.city", "query", json.dumps(asdict(spec))],
            svc.env,
            pipe=True,
        )
        loaded = queries.finish(publish_s + 600)
        outs = [p.finish(publish_s + 600) for p in publishers]
        stop_sampling.set()
        sampler.join()
        published = sum(int(o["readings"]) for o in outs)
        done = max(float(o["done"]) for o in outs)
        log(f"published {published:,} readings; waiting for the queue to drain")
        expected = published + 1  # and the probe's

        def drained() -> bool:
            if worker.proc.poll() is not None:
                raise worker.failure(f"exited with code {worker.proc.returncode}")
            return bi._row_count(url) >= expected

        with contextlib.suppress(bi.BenchError):  # what is missing is counted just below
            bi.wait_until(drained, 60 + published / 5000, "the queue to drain", interval=1.0)
        stored = bi._row_count(url) - 1
        if stored != published:
            raise bi.BenchError(
                f"readings lost: {published:,} published, {stored:,} stored"
                f" ({published - stored:,} missing) after the queue drained"
            )
        log(f"all {stored:,} readings stored; the same queries with ingest idle")
        idle_spec = QuerySpec(api_url, viewer, config.idle_seconds, districts, sensors[0].sensor_id)
        idle = svc.spawn(
            "query",
            [sys.executable, "-m", "bench.city", "query", json.dumps(asdict(idle_spec))],
            svc.env,
            pipe=True,
        ).finish(config.idle_seconds + 600)
        lag = _lag(url, start)
        lag_windows = _lag_windows(url, start, [0.0, *(x.at_s for x in shown(samples))])
        sizes = _sizes(url, tier)
        series = _count(url, "SELECT count(*) FROM series")
        quarantined = _count(url, "SELECT count(*) FROM quarantine")
        alerts = bi.alerts_raised(url) or 0
        load_after = _loadavg()
        log("restarting the worker and the API with every series known")
        if worker.terminate() != 0:
            raise worker.failure("did not stop cleanly")
        worker = svc.worker(url, root, client_id)
        _probe(svc, url, root, worker)
        worker_start_s = time.time() - worker.spawned
        api.terminate()
        port2 = free_port()
        api = _api(svc, url, port2)
        api_health_s = _wait_http(f"http://127.0.0.1:{port2}/healthz", api)

        def latest_ok() -> bool:
            r = httpx.get(
                f"http://127.0.0.1:{port2}/api/v1/latest",
                headers={"Authorization": f"Bearer {viewer}"},
                timeout=60,
            )
            return r.status_code == 200

        bi.wait_until(latest_ok, 120, "a full latest after the API restart", interval=0.05)
        api_latest_s = time.time() - api.spawned
        postgresql, mosquitto = svc.versions()
        machine = bi.Machine.describe(postgresql, mosquitto, command, svc.code)
    errors = list(loaded["errors"]) + list(idle["errors"])
    readings = max(1, published)
    return Result(
        config=config,
        command=command,
        machine=machine,
        tier=tier,
        sensors=len(sensors),
        series=series,
        provision_s=provision_s,
        published=published,
        stored=stored,
        publish_s=done - start,
        expected_rate=rate,
        lag_p50_ms=lag[0],
        lag_p99_ms=lag[1],
        lag_max_ms=lag[2],
        publisher_late_p99_ms=max(float(o["late_p99"]) for o in outs) * 1e3,
        under_load=_timings(loaded),
        idle=_timings(idle),
        sse_events_per_s=float(loaded["sse"].get("events", 0)) / float(loaded["seconds"]),
        sse_bytes_per_s=float(loaded["sse"].get("bytes", 0)) / float(loaded["seconds"]),
        query_errors=errors,
        samples=samples,
        lag_p99_windows_ms=lag_windows,
        bytes_per_million={t: b / readings * 1e6 for t, b in sizes.items()},
        table_bytes=sizes,
        worker_start_s=worker_start_s,
        api_health_s=api_health_s,
        api_latest_s=api_latest_s,
        quarantined=quarantined,
        alerts=alerts,
        load_before=load_before,
        load_after=load_after,
        notes=notes,
        server_settings=held,
    )


# -- the report -----------------------------------------------------------------------------------


def shown(samples: list[Sample]) -> list[Sample]:
    """The samples the report's over-time table shows: about a dozen."""
    return samples[:: max(1, len(samples) // 12)]


def _per_core(samples: list[Sample], cpu: Callable[[Sample], float]) -> list[str]:
    """CPU use between two shown samples, in % of one core."""
    out, before = [], (0.0, cpu(samples[0]) if samples else 0.0)
    for x in shown(samples):
        dt = x.at_s - before[0]
        out.append(f"{(cpu(x) - before[1]) / dt * 100:.0f}" if dt > 0 else "-")
        before = (x.at_s, cpu(x))
    return out


def _met(met: bool | None) -> str:
    return "n/a" if met is None else ("yes" if met else "**no**")


CLIENT_ROW_MIN = 0.03  # of one core over the run: smaller clients go unnamed


def _client_rows(samples: list[Sample], row: Callable[[str, list[str]], str]) -> list[str]:
    """PostgreSQL's CPU split by client, one row each for those using a few % of a core."""
    if len(samples) < 2 or samples[-1].at_s <= samples[0].at_s:
        return []
    span = samples[-1].at_s - samples[0].at_s
    first, last = samples[0].pg_clients, samples[-1].pg_clients
    names = sorted(last, key=lambda n: first.get(n, 0.0) - last[n])

    def cpu_of(name: str) -> Callable[[Sample], float]:
        return lambda x: x.pg_clients.get(name, 0.0)

    return [
        row(f"of which {name} %", _per_core(samples, cpu_of(name)))
        for name in names
        if (last[name] - first.get(name, 0.0)) / span >= CLIENT_ROW_MIN
    ]


def _over_time(r: Result) -> list[str]:
    at = shown(r.samples)

    def row(name: str, cells: list[str]) -> str:
        return f"| {name} | " + " | ".join(cells) + " |"

    first = r.samples[0].at_s if r.samples else 0.0
    rows = [
        row("over time (s since the stream began)", [f"{x.at_s:.0f}" for x in at]),
        "|---|" + "---|" * len(at),
        row("worker RSS MiB", [f"{x.worker_kib / 1024:.0f}" for x in at]),
        row("API RSS MiB", [f"{x.api_kib / 1024:.0f}" for x in at]),
        row("load average", [f"{x.load1:.1f}" for x in at]),
        row(
            "lag p99 s (readings since the column before)",
            [f"{v / 1e3:.1f}" for v in r.lag_p99_windows_ms],
        ),
        row("worker CPU %", _per_core(r.samples, lambda x: x.worker_cpu_s)),
        row("API CPU % (with its build processes)", _per_core(r.samples, lambda x: x.api_cpu_s)),
    ]
    if r.tier == "postgresql":
        rows += [
            row("PostgreSQL CPU % (all backends)", _per_core(r.samples, lambda x: x.pg_cpu_s)),
            *_client_rows(r.samples, row),
            row("checkpoints so far", [str(x.checkpoints) for x in at]),
        ]
    vacuums: list[list[Any]] = []  # [from s, to s, what]: runs of samples alike
    for x in r.samples:
        if vacuums and vacuums[-1][2] == x.vacuuming:
            vacuums[-1][1] = x.at_s
        else:
            vacuums.append([x.at_s, x.at_s, x.vacuuming])
    vacuums_text = "; ".join(f"{a:.0f}-{b:.0f} s: {what}" for a, b, what in vacuums if what)
    notes = [
        "",
        "Vacuum at work when sampled (every"
        f" {SAMPLE_S:g} s from {first:.0f} s): {vacuums_text or 'never'}.",
    ]
    return rows + notes


def markdown(r: Result) -> str:
    m = r.machine
    c = r.config
    loads = [s.load1 for s in r.samples]
    during = f"{min(loads):.2f}-{max(loads):.2f}" if loads else "?"
    lines = [
        SECTION_BEGIN,
        "## City scale: ingesting while walls, panels and an analyst query (issue 13)",
        "",
        f"`{r.command}` on {m.date}: {m.cpus} CPUs ({m.cpu_model}), {m.memory_gib:.1f} GiB,"
        f" Python {m.python}, {m.postgresql}, {m.mosquitto}; code {m.code}. Database tier:"
        f" {r.tier}."
        + (
            " Server settings for this run: "
            + ", ".join(f"`{k}={v}`" for k, v in r.server_settings.items())
            + "."
            if r.server_settings
            else ""
        ),
        "",
        f"**Machine load**: 1-minute load average {r.load_before.split()[0]} before the run,"
        f" {during} while it ran, {r.load_after.split()[0]} at its end (2 cores, shared with"
        " other people's tests): figures from a loaded machine, read them as such.",
        "",
        f"{r.sensors:,} sensors in {c.gateways:,} gateways ({r.series:,} series), provisioned"
        f" through the bulk import API in {r.provision_s:.1f} s; {PUBLISHERS} publisher"
        f" processes, one SenML pack per gateway per second, QoS 1, for {c.minutes:g} min;"
        " one worker, one API.",
        "",
        "| ingest | |",
        "|---|---|",
        f"| readings/s expected from the mix | {r.expected_rate:,.0f} |",
        f"| readings/s published / stored | {r.published_rate:,.0f} / {r.stored_rate:,.0f} |",
        f"| readings published / stored (after the queue drained) | {r.published:,} /"
        f" {r.stored:,} |",
        f"| ingest lag p50 / p99 / max (commit time - event time, per reading) |"
        f" {r.lag_p50_ms:.0f} / {r.lag_p99_ms:.0f} / {r.lag_max_ms:.0f} ms |",
        f"| publishers' lateness against each second, p99 (part of the lag) |"
        f" {r.publisher_late_p99_ms:.0f} ms |",
        f"| quarantined / alarms raised | {r.quarantined} / {r.alerts} |",
        "",
        "| query (client) | under ingest p50 / p95 | idle p50 / p95 | p95 ratio | requests"
        " (load / idle) | largest answer |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in r.under_load.items():
        i = r.idle.get(name, Timing(0, math.nan, math.nan, 0))
        ratio = t.p95_ms / i.p95_ms if i.count else math.nan
        lines.append(
            f"| {name} | {t.p50_ms:.0f} / {t.p95_ms:.0f} ms | {i.p50_ms:.0f} / {i.p95_ms:.0f} ms"
            f" | {ratio:.2f}x | {t.count} / {i.count} | {t.max_bytes / 1024:,.0f} KiB |"
        )
    lines += [
        "",
        f"Live stream (one wall client): {r.sse_events_per_s:.1f} events/s,"
        f" {r.sse_bytes_per_s / 1024:.1f} KiB/s under ingest."
        + (f" Query errors: {'; '.join(r.query_errors)}." if r.query_errors else ""),
        "",
        *_over_time(r),
        "",
        "| database | bytes | bytes per million readings |",
        "|---|---|---|",
    ]
    for table, b in r.table_bytes.items():
        lines.append(
            f"| {table} | {b / 2**20:,.1f} MiB | {r.bytes_per_million[table] / 2**20:,.1f} MiB |"
        )
    lines += [
        "| compressed chunks | n/a | n/a (plain PostgreSQL or TimescaleDB Apache edition:"
        " no compression) |",
        "",
        f"Start-up with every series known: worker {r.worker_start_s:.1f} s (spawn to a probe"
        f" reading stored), API {r.api_health_s:.1f} s to `/healthz`, {r.api_latest_s:.1f} s to"
        " a full `latest`.",
        "",
        "| aim (issue 13) | aim | measured | met |",
        "|---|---|---|---|",
    ]
    for what, aim, measured, met in r.aims():
        lines.append(f"| {what} | {aim} | {measured} | {_met(met)} |")
    lines += ["", *(f"Note: {n}" for n in r.notes)]
    lines.append(SECTION_END)
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def write_results(r: Result, path: Path = results.RESULTS_FILE) -> None:
    results.replace_section(SECTION, markdown(r), path)


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
