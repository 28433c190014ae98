"""The `pusat` command line. Settings are built here, once, and passed down."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from pusat import runtime
from pusat.settings import Settings

app = typer.Typer(
    help="Pusat: an urban sensor data platform for a city command centre.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="The database: migrations and status.", no_args_is_help=True)
app.add_typer(db_app, name="db")

LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR")]


def _settings(**overrides: object) -> Settings:
    try:
        return runtime.resolve(Settings().with_(**overrides))
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise typer.BadParameter(str(e)) from e


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C), for a clean drain-and-exit."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _need_database(settings: Settings) -> str:
    if settings.database_url is None:
        typer.echo(
            "error: no database: set PUSAT_DATABASE_URL, or start `pusat up` in this folder",
            err=True,
        )
        raise typer.Exit(2)
    return settings.database_url


@db_app.command("upgrade")
def db_upgrade(log_level: LogLevel = "INFO") -> None:
    """Apply the database migrations that are missing (safe to repeat)."""
    from store import db, migrate, tier

    _logging(log_level)
    url = _need_database(_settings())
    with db.connect(url) as conn:
        applied = migrate.upgrade(conn)
        t = tier.detect(conn)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing (up to date)"
    typer.echo(f"applied: {names}; database tier: {t.name}")


@db_app.command("status")
def db_status(log_level: LogLevel = "WARNING") -> None:
    """Show the database tier, schema version, tables (rows, size, chunks, compression),
    retention settings and the last maintenance runs."""
    from store import db, maintenance, migrate, tier

    _logging(log_level)
    settings = _settings()
    url = _need_database(settings)
    with db.connect(url) as conn:
        t = tier.detect(conn)
        version = migrate.current(conn)
        tables = maintenance.status(conn, t) if version is not None else []
        runs = maintenance.last_runs(conn) if version is not None else []
    typer.echo(f"tier: {t.name}")
    typer.echo(f"postgresql: {t.server_version}")
    typer.echo(f"timescaledb: {t.timescaledb_version or '-'}")
    typer.echo(
        f"schema version: {version if version is not None else 'none (run pusat db upgrade)'}"
    )
    if tables:
        typer.echo("tables:")
        for s in tables:
            extra = ""
            if s.chunks is not None:
                extra = f", {s.chunks} chunks ({s.compressed_chunks} compressed)"
            if s.compression_ratio:
                extra += f", compression {s.compression_ratio:.1f}x"
            typer.echo(f"  {s.table}: ~{s.rows or 0:,} rows, {s.bytes / 1048576:.1f} MiB{extra}")
    r = settings
    typer.echo(
        f"retention (days, 0 = forever): readings {r.retention_readings_days:g},"
        f" rollup_1m {r.retention_rollup_1m_days:g}, rollup_1h {r.retention_rollup_1h_days:g},"
        f" quarantine {r.retention_quarantine_days:g}; compress after"
        f" {r.compress_after_days:g} days (community edition)"
    )
    typer.echo("last maintenance runs:" if runs else "last maintenance runs: none")
    for at, table, method, removed, cutoff in runs:
        typer.echo(
            f"  {at:%Y-%m-%d %H:%M:%S} {table}: {method}, removed {removed}"
            + (f", before {cutoff:%Y-%m-%d %H:%M}" if cutoff else "")
        )


@db_app.command("maintain")
def db_maintain(log_level: LogLevel = "INFO") -> None:
    """Apply retention now (and compression policies on the community edition); ingest also
    does this every PUSAT_MAINTENANCE_EVERY_S."""
    from ingest.worker import retention
    from store import db, maintenance, tier

    _logging(log_level)
    settings = _settings()
    url = _need_database(settings)
    with db.connect(url) as conn:
        runs = maintenance.run(
            conn, tier.detect(conn), retention(settings), settings.compress_after_days
        )
    if runs is None:
        typer.echo("another process is running maintenance; nothing done")
        return
    for r in runs:
        typer.echo(f"{r.table}: {r.method}, removed {r.removed}")


@app.command()
def ingest(
    group: Annotated[
        str | None, typer.Option(help="join this shared-subscription group (scale-out)")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="MQTT client id; unique per worker, stable across restarts")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port")
    ] = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Run one ingest worker: MQTT in, validated readings and quarantine out. SIGTERM drains."""
    from ingest.metrics import IngestMetrics
    from ingest.worker import Worker
    from processing import catalogue

    _logging(log_level)
    settings = _settings(group=group, client_id=client_id, metrics_port=metrics_port)
    _need_database(settings)
    if settings.mqtt_url is None:
        typer.echo("error: no broker: set PUSAT_MQTT_URL, or start `pusat up`", err=True)
        raise typer.Exit(2)
    metrics = IngestMetrics()
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    stop = stop_on_signals()
    Worker(settings, catalogue.load(), metrics).run(stop)


@app.command()
def up(
    log_level: LogLevel = "WARNING",
) -> None:
    """Run the whole command centre on this machine: embedded database and broker unless their
    URLs are set, migrations and ingest. Prints where to look; Ctrl-C stops everything."""
    from pusat.up import run

    _logging(log_level)
    run(Settings(), stop_on_signals())


# -- benchmarks (bench/) ---------------------------------------------------------------------------


def _mount_bench() -> None:
    from bench.cli import app as bench_app

    app.add_typer(bench_app, name="bench")


_mount_bench()


def main() -> None:
    app()
