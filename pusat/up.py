"""`pusat up`: the whole command centre in one process tree on one machine.

Embedded PostgreSQL and broker in PUSAT_HOME unless their URLs are set, migrations, an ingest
worker, the HTTP API with its /wall, the simulated city, and the alarm notifier when a receiver
is configured (PUSAT_ALERTMANAGER_URL, PUSAT_ALARM_WEBHOOKS); a live status line until Ctrl-C or
SIGTERM, then everything stops in order: the city, ingest (which drains), the notifier, the API,
the services.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from rich.console import Console
from rich.live import Live

from api import auth
from api.server import ServerThread
from ingest.metrics import IngestMetrics
from ingest.worker import Worker
from processing import catalogue
from pusat import runtime
from pusat.embedded import ports
from pusat.embedded.broker import start_broker
from pusat.embedded.postgres import start_postgres
from pusat.settings import Settings
from store import db, migrate, tier

if TYPE_CHECKING:
    from simulators.runner import Progress

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


# -- the API and its wall --------------------------------------------------------------------

WALL_TOKEN_FILE = "wall-token"  # in PUSAT_HOME, readable by its owner only
WALL_TOKEN_NAME = "pusat-up-wall"


def _wall_token(s: Settings) -> str | None:
    """An operator token for the printed wall URL, kept in PUSAT_HOME across restarts.

    The person at this machine started the centre, so their wall may acknowledge alarms.
    """
    if s.anonymous_read:
        return None
    assert s.database_url is not None
    path = s.home / WALL_TOKEN_FILE
    with db.connect(s.database_url) as conn:
        if path.exists():
            secret = path.read_text().strip()
            live = conn.execute(
                "SELECT 1 FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL",
                (auth.hash_token(secret),),
            ).fetchone()
            if live:
                return secret
        # Its secret is lost (or it was revoked): replace the token of that name.
        auth.revoke_token(conn, WALL_TOKEN_NAME)
        _, secret = auth.create_token(conn, "operator", WALL_TOKEN_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)  # also when an older file was left with wider rights
    path.write_text(secret + "\n")
    return secret


def _start_api(s: Settings, console: Console) -> ServerThread:
    s = s.with_(api_port=_port(s.api_port))
    server = ServerThread(s).start()
    token = _wall_token(s)
    # soft_wrap: a URL broken over two lines cannot be clicked or copied.
    console.print(f"API: {server.url}/api/v1 (documentation: {server.url}/docs)", soft_wrap=True)
    console.print(f"wall: {server.url}/wall" + (f"?token={token}" if token else ""), soft_wrap=True)
    if s.public:
        page = f"public page: {server.url}/city (open data: {server.url}/open/v1/)"
        console.print(page, soft_wrap=True)
    return server


class City:
    """The simulated city in a thread of its own; what it last reported, for the status line."""

    def __init__(self, settings: Settings, speed: float) -> None:
        self.stop = threading.Event()
        self.progress: Progress | None = None
        self.error: str | None = None
        self.thread = threading.Thread(
            target=self._run, args=(settings, speed), name="city", daemon=True
        )

    def _run(self, settings: Settings, speed: float) -> None:
        from simulators import city
        from simulators.publisher import PublishError
        from simulators.traffic import SumoMissing
        from simulators.wetland import SwmmMissing

        try:
            city.run(settings, self.stop, speed=speed, on_progress=self._seen)
        except (SumoMissing, SwmmMissing, PublishError) as e:
            self.error = str(e)  # shown on the status line; the rest of the centre carries on

    def _seen(self, p: Progress) -> None:
        self.progress = p

    def status(self) -> str:
        if self.error:
            return f"city: stopped ({self.error})"
        p = self.progress
        if p is None:
            return "city: starting"
        return f"city: {p.messages:,} messages, {p.msg_rate:,.0f} msg/s"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def _active_alarms(url: str) -> int | None:
    try:
        with db.connect(url, autocommit=True, application="pusat-up") as conn:
            row = conn.execute("SELECT count(*) FROM alerts WHERE state <> 'closed'").fetchone()
    except psycopg.OperationalError:
        return None
    return int(row[0]) if row else None


def _status(
    metrics: IngestMetrics, started: float, rate: float, alarms: int | None, city: City | None
) -> str:
    parts = [
        f"[bold]pusat[/] up {time.monotonic() - started:6.0f}s",
        f"{rate:8.0f} readings/s",
        metrics.summary(),
        f"open alarms {alarms if alarms is not None else '?'}",
    ]
    if city is not None:
        parts.append(city.status())
    return " | ".join(parts)


def _start_notifier(s: Settings, stop: threading.Event, console: Console) -> threading.Thread:
    """The alarm notifier in a thread of its own, stopping with ingest."""
    from notify.loop import Notifier
    from processing import rules

    notifier = Notifier(s, rules.load(s.rules))
    thread = threading.Thread(target=notifier.run, args=(stop,), name="notify", daemon=True)
    thread.start()
    console.print("alarm notifications to " + ", ".join(notifier.receivers), soft_wrap=True)
    return thread


def run(settings: Settings, stop: threading.Event, city: bool = True, speed: float = 1.0) -> None:
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
        api_server: ServerThread | None = None
        simulated: City | None = None
        notifier: threading.Thread | None = None
        try:
            # Announce the running centre (other commands find it through PUSAT_HOME) once
            # ingest listens, so whoever reads the state can publish straight away.
            worker.session.subscribed.wait(30)
            runtime.save(s.home, runtime.State(s.database_url, s.mqtt_url, os.getpid()))
            console.print(f"publish readings to {s.mqtt_url} under {s.topic_root}/<gateway>/<kind>")
            api_server = _start_api(s, console)
            if s.notifies():
                # Alarm links point at the API as started (its port may differ from the setting).
                linked = s.with_(public_url=s.public_url or api_server.url)
                notifier = _start_notifier(linked, stop, console)
            if city:
                simulated = City(s, speed)
                simulated.thread.start()
                console.print(
                    f"the simulated city publishes to it (speed {speed:g}x);"
                    " `pusat up --no-city` runs without it"
                )
            console.print("Ctrl-C stops everything.")
            _watch(console, metrics, thread, stop, s.database_url, simulated)
        finally:
            if simulated is not None:
                simulated.close()  # first: its gateways say offline while ingest still listens
            stop.set()
            thread.join()
            if notifier is not None:
                notifier.join(30)
            if api_server is not None:
                api_server.stop()
            runtime.clear(s.home)
        console.print("stopped: " + metrics.summary())
        if worker.failed is not None:
            raise SystemExit(f"error: ingest stopped on an error: {worker.failed}")


def _watch(
    console: Console,
    metrics: IngestMetrics,
    thread: threading.Thread,
    stop: threading.Event,
    url: str,
    city: City | None,
) -> None:
    """A live status line until stopped (or until ingest ends by itself, which is an error)."""
    started = time.monotonic()
    last_stored, last_t = 0.0, started
    alarms: int | None = None
    with Live(console=console, refresh_per_second=2, transient=True) as live:
        while not stop.wait(1.0) and thread.is_alive():
            now = time.monotonic()
            stored = metrics.value("pusat_ingest_readings_stored_total")
            rate = (stored - last_stored) / (now - last_t)
            last_stored, last_t = stored, now
            if int(now - started) % 5 == 0:
                alarms = _active_alarms(url)
            live.update(_status(metrics, started, rate, alarms, city))
