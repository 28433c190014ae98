"""The export benchmark: a large raw-readings export through the HTTP API in constant memory.

A throwaway PostgreSQL (``pusat.embedded``, on a free port, stopped at the end, also on
failure) gets ``--rows`` readings of one district (``--sensors`` sensors, one reading every
10 s each), made by the server itself (``generate_series``: loading is not what is measured).
The API runs in a process of its own (``pusat api``), as in production. After a warm-up export
of each format (so every library the export path imports is loaded), the benchmark exports the
district's raw readings (``resolution=raw``) through ``GET /api/v1/readings`` in each format
asked for, reading the streamed body with httpx and counting its rows, while it

- samples the API process's resident set size (``/proc/<pid>/status``) every 50 ms, for the
  curve; the figure is the kernel's peak RSS (VmHWM, reset just before the export) over the
  RSS just before the export started;
- asks ``/healthz`` over and over on another connection: its latencies show whether other
  requests are answered while the export runs (the event loop stays free).

The CSV export's peak RSS growth is the aim of issue 13 (< 200 MiB for 10 million rows).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import psycopg
import typer
from psycopg import sql
from rich.console import Console

from api import auth
from bench import results
from bench.query import _code, _machine, _wait_for
from pusat.embedded.ports import free_port
from pusat.embedded.postgres import start_postgres
from store import db, migrate

AIM_RSS_MIB = 200.0
SECTION = "export"
FORMATS = ("csv", "jsonl", "parquet")
STEP_S = 10  # each sensor reports every 10 s
DISTRICT = "Presint 1"
MIB = 2**20


@dataclass(frozen=True)
class Config:
    rows: int = 10_000_000
    sensors: int = 100
    formats: tuple[str, ...] = ("csv",)

    @classmethod
    def quick(cls) -> Config:
        return cls(rows=200_000, sensors=10, formats=FORMATS)


@dataclass(frozen=True)
class Export:
    fmt: str
    rows: int  # rows counted in the body (CSV and JSON lines) or read back (Parquet)
    bytes: int
    seconds: float
    first_byte_s: float
    rss_before_mib: float
    rss_peak_mib: float
    rss_samples: tuple[tuple[float, float], ...]  # (seconds since start, MiB)
    probes: int  # /healthz answers during the export
    probe_p50_ms: float
    probe_max_ms: float

    @property
    def growth_mib(self) -> float:
        return self.rss_peak_mib - self.rss_before_mib

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


@dataclass(frozen=True)
class Result:
    config: Config
    loaded: int
    load_seconds: float
    exports: tuple[Export, ...]
    machine: str
    load_average: tuple[float, float, float]  # at the start of the exports
    postgresql: str
    date: str
    command: str

    def export(self, fmt: str) -> Export:
        return next(e for e in self.exports if e.fmt == fmt)


def load(url: str, config: Config) -> int:
    """``config.rows`` readings of ``config.sensors`` sensors in one district."""
    per = config.rows // config.sensors
    with db.connect(url) as conn:
        with conn.transaction():
            conn.execute(
                "INSERT INTO sensors (sensor_id, domain, district, lat, lon, quantities,"
                " provisioned) SELECT 'AQ-' || lpad(i::text, 5, '0'), 'air', %s, 2.92, 101.69,"
                " '{pm25}', true FROM generate_series(1, %s) AS i",
                (DISTRICT, config.sensors),
            )
            conn.execute(
                "INSERT INTO series (sensor_id, quantity, unit)"
                " SELECT sensor_id, 'pm25', 'ug/m3' FROM sensors"
            )
        start = datetime(2026, 1, 1, tzinfo=UTC)
        # One sensor per statement: each is one transaction of modest size.
        ids = [r[0] for r in conn.execute("SELECT series_id FROM series").fetchall()]
        conn.commit()
        for sid in ids:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO reading_data (ts, series_id, value, received_at)"
                    " SELECT %s + i * %s * interval '1 second', %s,"
                    " round((30 + 15 * sin(i / 500.0) + random() * 3)::numeric, 2), now()"
                    " FROM generate_series(0, %s) AS i",
                    (start, STEP_S, sid, per - 1),
                )
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE reading_data")
        row = conn.execute("SELECT count(*) FROM reading_data").fetchone()
    return int(row[0]) if row else 0


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


class Sampler:
    """The RSS of one process every ``every`` seconds, in a thread, until stopped; and its
    true peak over that time (the kernel's high-water mark, reset at the start)."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid = pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()

    def rss_mib(self) -> float:
        return _status_mib(self.pid, "VmRSS")

    def peak_mib(self) -> float:
        return max(_status_mib(self.pid, "VmHWM"), *(m for _, m in self.samples))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self._t0, self.rss_mib()))
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter() - self._t0, self.rss_mib()))


class Prober:
    """``/healthz`` asked back to back on its own connection while an export runs."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.api_url, timeout=60) as c:
            while not self._stop.is_set():
                t = time.perf_counter()
                c.get("/healthz").raise_for_status()
                self.ms.append((time.perf_counter() - t) * 1000)
                self._stop.wait(0.1)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _params(fmt: str, end: datetime) -> dict[str, str]:
    return {
        "district": DISTRICT,
        "resolution": "raw",
        "start": "2026-01-01T00:00:00Z",
        "end": end.isoformat(),
        "format": fmt,
        "before": "false",
    }


def export(api_url: str, token: str, fmt: str, end: datetime, pid: int) -> Export:
    """One export through the API, body read as it streams, the API's RSS sampled."""
    headers = {"Authorization": f"Bearer {token}"}
    lines = 0
    size = 0
    tail = b""
    parquet = bytearray() if fmt == "parquet" else None
    with Sampler(pid) as sampler, Prober(api_url) as prober:
        before = sampler.rss_mib()
        started = time.perf_counter()
        first = 0.0
        with (
            httpx.Client(base_url=api_url, headers=headers, timeout=600) as c,
            c.stream("GET", "/api/v1/readings", params=_params(fmt, end)) as r,
        ):
            if r.status_code != 200:
                r.read()
                raise RuntimeError(f"export {fmt}: {r.status_code} {r.text[:500]}")
            for part in r.iter_raw(1 << 20):
                if not first:
                    first = time.perf_counter() - started
                size += len(part)
                if parquet is not None:
                    parquet += part
                else:
                    lines += part.count(b"\n")
                    tail = part[-1:]
        seconds = time.perf_counter() - started
    peak = sampler.peak_mib()
    if parquet is not None:
        import io

        import pyarrow.parquet as pq

        rows = pq.ParquetFile(io.BytesIO(parquet)).metadata.num_rows
        del parquet
    else:
        rows = lines - (1 if fmt == "csv" else 0) + (1 if tail not in (b"\n", b"") else 0)
    probe = sorted(prober.ms) or [float("nan")]
    return Export(
        fmt=fmt,
        rows=rows,
        bytes=size,
        seconds=seconds,
        first_byte_s=first,
        rss_before_mib=before,
        rss_peak_mib=peak,
        rss_samples=tuple(sampler.samples),
        probes=len(prober.ms),
        probe_p50_ms=statistics.median(probe),
        probe_max_ms=probe[-1],
    )


@contextmanager
def bench_database(folder: Path) -> Iterator[tuple[str, str]]:
    """A throwaway PostgreSQL in ``folder`` (no fsync), its database ``bench`` migrated; (its
    URL, the server's version) until the block ends, then stopped (also on failure)."""
    pg = start_postgres(folder / "data", durable=False)
    try:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("bench")))
            row = conn.execute("SELECT version()").fetchone()
        url = db.with_database(pg.url, "bench")
        with db.connect(url) as conn:
            migrate.upgrade(conn)
        yield url, (str(row[0]).split(" on ")[0] if row else "PostgreSQL ?")
    finally:
        pg.stop()


@contextmanager
def serve_api(
    url: str, home: Path, env: Mapping[str, str] = {}
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`pusat api` on a free port in a process of its own, as in production, on ``url``'s
    database; (its address, the process) until the block ends."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PUSAT_")}
    environ.update(PUSAT_DATABASE_URL=url, PUSAT_HOME=str(home), **env)
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "pusat", "api", "--host", "127.0.0.1"),
            *("--port", str(port), "--log-level", "WARNING"),
        ],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        api_url = f"http://127.0.0.1:{port}"
        _wait_for(api_url, server)
        yield api_url, server
    finally:
        server.terminate()
        server.wait(30)


def run(
    config: Config,
    command: str = "pusat bench export",
    log: Callable[[str], None] = lambda m: None,
) -> Result:
    with (
        tempfile.TemporaryDirectory(prefix="pusat-bench-export-") as tmp,
        bench_database(Path(tmp)) as (url, version),
    ):
        with db.connect(url) as conn:
            _, token = auth.create_token(conn, "viewer", "bench")
        log(f"loading {config.rows:,} readings")
        t = time.perf_counter()
        loaded = load(url, config)
        load_seconds = time.perf_counter() - t
        log(f"loaded {loaded:,} readings in {load_seconds:.0f} s")
        end = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(
            seconds=STEP_S * (config.rows // config.sensors) + 1
        )
        with serve_api(url, Path(tmp) / "home") as (api_url, server):
            warm = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
            for fmt in FORMATS:  # every library of the export path loaded
                export(api_url, token, fmt, warm, server.pid)
            load_average = os.getloadavg()
            done = []
            for fmt in config.formats:
                log(f"exporting {fmt}")
                e = export(api_url, token, fmt, end, server.pid)
                log(
                    f"{fmt}: {e.rows:,} rows, {e.bytes / MIB:,.0f} MiB in {e.seconds:.1f} s,"
                    f" RSS +{e.growth_mib:.1f} MiB"
                )
                done.append(e)
    return Result(
        config=config,
        loaded=loaded,
        load_seconds=load_seconds,
        exports=tuple(done),
        machine=_machine(),
        load_average=load_average,
        postgresql=version,
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command,
    )


def figures_are_sane(r: Result) -> list[str]:
    """What would make the figures meaningless (never speed targets)."""
    problems = []
    if r.loaded != r.config.rows // r.config.sensors * r.config.sensors:
        problems.append(f"loaded {r.loaded:,} readings, asked for {r.config.rows:,}")
    for e in r.exports:
        if e.rows != r.loaded:
            problems.append(f"{e.fmt}: exported {e.rows:,} rows of {r.loaded:,}")
        if not (e.seconds > 0 and e.rss_before_mib > 10 and len(e.rss_samples) >= 2):
            problems.append(f"{e.fmt}: implausible sampling {e}")
    return problems


def _curve(e: Export, points: int = 8) -> str:
    """The RSS over the export at a few evenly spaced moments (MiB over the start)."""
    s = e.rss_samples
    picks = [s[round(i * (len(s) - 1) / (points - 1))] for i in range(points)]
    return ", ".join(f"{t:.0f}s {m - e.rss_before_mib:+.0f}" for t, m in picks)


def markdown(r: Result) -> str:
    begin, end = results.markers(SECTION)
    c = r.config
    la = ", ".join(f"{x:.2f}" for x in r.load_average)
    lines = [
        begin,
        "## Exports (`pusat bench export`)",
        "",
        f"Measured {r.date} with `{r.command}`, code at {_code()}.",
        "",
        f"Machine: {r.machine}; {r.postgresql} (plain PostgreSQL tier), started by the benchmark"
        " on loopback without fsync. The machine is shared: its load average (1, 5, 15 min)"
        f" was {la} when the exports started.",
        "",
        f"Data: {r.loaded:,} raw readings of {c.sensors} sensors in one district (one every"
        f" {STEP_S} s each), made by the server (`generate_series`) in {r.load_seconds:.0f} s.",
        "",
        "Each export is `GET /api/v1/readings?district=...&resolution=raw&format=...` of the"
        " whole district, read by httpx as it streams (rows counted, body discarded; Parquet"
        " kept to count its rows), against `pusat api` in a process of its own after a warm-up"
        " export of every format. RSS: the API process's, sampled every 50 ms for the curve;"
        " growth is its peak (the kernel's VmHWM, reset before the export) over the RSS just"
        " before the export. `/healthz` was asked every 100 ms on"
        " another connection throughout.",
        "",
        "| format | rows | MiB sent | seconds | rows/s | first byte | API RSS before |"
        " peak growth | /healthz answers, p50 / max |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for e in r.exports:
        lines.append(
            f"| {e.fmt} | {e.rows:,} | {e.bytes / MIB:,.0f} | {e.seconds:.1f} |"
            f" {e.rows_per_s:,.0f} | {e.first_byte_s * 1000:.0f} ms | {e.rss_before_mib:.0f} MiB"
            f" | {e.growth_mib:.1f} MiB | {e.probes}, {e.probe_p50_ms:.1f} / {e.probe_max_ms:.0f}"
            " ms |"
        )
    lines += ["", "RSS growth over each export (seconds in, MiB over the start):", ""]
    lines += [f"- {e.fmt}: {_curve(e)}" for e in r.exports]
    if any(e.fmt == "csv" for e in r.exports):
        e = r.export("csv")
        met = e.growth_mib < AIM_RSS_MIB
        lines += [
            "",
            "| aim | measured | target | |",
            "|---|--:|--:|---|",
            f"| {e.rows:,}-row CSV export: API peak RSS growth | {e.growth_mib:.1f} MiB |"
            f" < {AIM_RSS_MIB:g} MiB | {'met' if met else 'NOT met'} |",
        ]
    lines.append(end)
    return "\n".join(lines) + "\n"


def write_results(r: Result, path: Path = results.RESULTS_FILE) -> None:
    results.replace_section(SECTION, markdown(r), path)


def export_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="200,000 rows, every format (seconds), to check")
    ] = False,
    rows: Annotated[
        int | None, typer.Option(min=1000, help="readings to export (default 10,000,000)")
    ] = None,
    sensors: Annotated[int | None, typer.Option(min=1, help="sensors they come from (100)")] = None,
    formats: Annotated[
        str | None, typer.Option(help="comma-separated: csv, jsonl, parquet (default csv)")
    ] = None,
    write_results_: Annotated[
        bool, typer.Option("--write-results", help="update the exports section of bench/RESULTS.md")
    ] = False,
) -> None:
    """A large raw export (10 million rows by default) through the HTTP API, streamed, with the
    API process's memory sampled and other requests answered meanwhile."""
    base = Config.quick() if quick else Config()
    chosen = tuple(f.strip() for f in formats.split(",")) if formats else base.formats
    unknown = set(chosen) - set(FORMATS)
    if unknown:
        raise typer.BadParameter(f"unknown formats: {', '.join(sorted(unknown))}")
    config = Config(rows or base.rows, sensors or base.sensors, chosen)
    flags = [
        "--quick" if quick else "",
        f"--rows {rows}" if rows else "",
        f"--sensors {sensors}" if sensors else "",
        f"--formats {formats}" if formats else "",
        "--write-results" if write_results_ else "",
    ]
    console = Console()
    result = run(config, " ".join(["pusat bench export", *filter(None, flags)]), console.log)
    console.print(markdown(result))
    problems = figures_are_sane(result)
    if problems:
        console.print(f"[red]implausible figures:[/red] {problems}")
        raise typer.Exit(1)
    if write_results_:
        write_results(result)
        console.print(f"updated {results.RESULTS_FILE}")
