"""`pusat up`: the whole command centre in one process tree on one machine.

Embedded PostgreSQL and broker in PUSAT_HOME unless their URLs are set, migrations, and an
ingest worker; a live status line until Ctrl-C or SIGTERM, then everything stops in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from psycopg import sql
from rich.console import Console
from rich.live import Live

from ingest.metrics import IngestMetrics
from ingest.worker import Worker
from processing import catalogue
from pusat import runtime
from pusat.embedded import ports
from pusat.embedded.broker import start_broker
from pusat.embedded.postgres import start_postgres
from pusat.settings import Settings
from store import db, migrate, tier

log = logging.getLogger(__name__)

# Fixed ports so dashboards and gateways can be pointed at a restarted centre; another free port
# is taken (and printed) when one is busy.
DATABASE_PORT = 55432
BROKER_PORT = 18830
DATABASE_NAME = "pusat"


def _port(preferred: int) -> int:
    return preferred if ports.port_is_free(preferred) else ports.free_port()


def _ensure_database(admin_url: str) -> str:
    """The `pusat` database on the embedded server, created on first start."""
    with db.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
    return db.with_database(admin_url, DATABASE_NAME)


@contextlib.contextmanager
def services(settings: Settings, console: Console) -> Iterator[Settings]:
    """Start what is not configured; yields settings with both URLs filled in."""
    home = settings.home.resolve()
    if runtime.load(home) is not None:
        raise SystemExit(f"error: a `pusat up` is already running with PUSAT_HOME={home}")
    with contextlib.ExitStack() as stack:
        database_url, mqtt_url = settings.database_url, settings.mqtt_url
        if database_url is None:
            console.print("starting the embedded database ...")
            pg = stack.enter_context(
                start_postgres(
                    home / "postgres" / "data", _port(DATABASE_PORT), prefer=settings.embedded
                )
            )
            database_url = _ensure_database(pg.url)
            console.print(f"  database ({pg.kind}): {database_url}")
        if mqtt_url is None:
            console.print("starting the embedded broker ...")
            broker = stack.enter_context(
                start_broker(
                    home / "broker",
                    _port(BROKER_PORT),
                    prefer=settings.embedded,
                    persistence=True,
                )
            )
            mqtt_url = broker.url
            console.print(f"  broker ({broker.kind}): {mqtt_url}")
        yield settings.with_(database_url=database_url, mqtt_url=mqtt_url, home=Path(home))


def _status(metrics: IngestMetrics, started: float, rate: float) -> str:
    return (
        f"[bold]pusat[/] up {time.monotonic() - started:6.0f}s | {rate:8.0f} readings/s | "
        + metrics.summary()
    )


def run(settings: Settings, stop: threading.Event) -> None:
    console = Console()
    with services(settings, console) as s:
        assert s.database_url is not None
        with db.connect(s.database_url) as conn:
            applied = migrate.upgrade(conn)
            t = tier.detect(conn)
        console.print(f"database tier: {t.name}; migrations applied now: {len(applied)}")
        metrics = IngestMetrics()
        worker = Worker(s, catalogue.load(), metrics)
        thread = threading.Thread(target=worker.run, args=(stop,), name="ingest", daemon=True)
        thread.start()
        try:
            # Announce the running centre (other commands find it through PUSAT_HOME) once
            # ingest listens, so whoever reads the state can publish straight away.
            worker.session.subscribed.wait(30)
            runtime.save(s.home, runtime.State(s.database_url, s.mqtt_url, os.getpid()))
            console.print(f"publish readings to {s.mqtt_url} under {s.topic_root}/<gateway>/<kind>")
            console.print("Ctrl-C stops everything.")
            _watch(console, metrics, thread, stop)
        finally:
            stop.set()
            thread.join()
            runtime.clear(s.home)
        console.print("stopped: " + metrics.summary())
        if worker.failed is not None:
            raise SystemExit(f"error: ingest stopped on an error: {worker.failed}")


def _watch(
    console: Console, metrics: IngestMetrics, thread: threading.Thread, stop: threading.Event
) -> None:
    """A live status line until stopped (or until ingest ends by itself, which is an error)."""
    started = time.monotonic()
    last_stored, last_t = 0.0, started
    with Live(console=console, refresh_per_second=2, transient=True) as live:
        while not stop.wait(1.0) and thread.is_alive():
            now = time.monotonic()
            stored = metrics.value("pusat_ingest_readings_stored_total")
            rate = (stored - last_stored) / (now - last_t)
            last_stored, last_t = stored, now
            live.update(_status(metrics, started, rate))
