"""The `pusat` command line. Settings are built here, once, and passed down."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

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
    partition: Annotated[
        str | None,
        typer.Option(
            help="K/N: take only the gateways of partition K of N (scale-out on Mosquitto:"
            " each gateway, with its alarm state, stays with one worker)"
        ),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="MQTT client id; unique per worker, stable across restarts")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus metrics on this port")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="mqtt (default: the broker at PUSAT_MQTT_URL) or rabbitmq (partitioned quorum"
            " queues at PUSAT_AMQP_URLS, with failover; see docs/scaling.md)"
        ),
    ] = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Run one ingest worker: MQTT in, validated readings and quarantine out. SIGTERM drains."""
    from ingest.metrics import IngestMetrics
    from ingest.worker import Worker
    from processing import catalogue

    _logging(log_level)
    settings = _settings(
        group=group,
        partition=partition,
        client_id=client_id,
        metrics_port=metrics_port,
        source=source,
    )
    _need_database(settings)
    if settings.source == "rabbitmq":
        try:
            settings.amqp()
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
    elif settings.mqtt_url is None:
        typer.echo("error: no broker: set PUSAT_MQTT_URL, or start `pusat up`", err=True)
        raise typer.Exit(2)
    metrics = IngestMetrics()
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    stop = stop_on_signals()
    Worker(settings, catalogue.load(), metrics).run(stop)


@app.command()
def notify(
    metrics_port: Annotated[
        int | None, typer.Option(help="serve the notifier's Prometheus metrics on this port")
    ] = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Deliver alarm transitions from the outbox to Alertmanager and the signed webhooks, in
    order, retrying receivers that are down. One notifier delivers at a time; others wait."""
    from notify.loop import Notifier
    from notify.metrics import NotifyMetrics
    from processing import rules

    _logging(log_level)
    settings = _settings(metrics_port=metrics_port)
    _need_database(settings)
    if not settings.notifies():
        typer.echo(
            "error: nothing to notify: set PUSAT_ALERTMANAGER_URL or PUSAT_ALARM_WEBHOOKS",
            err=True,
        )
        raise typer.Exit(2)
    metrics = NotifyMetrics()
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    Notifier(settings, rules.load(settings.rules), metrics).run(stop_on_signals())


@app.command()
def up(
    city: Annotated[
        bool, typer.Option(help="run the simulated city (on by default; --no-city for none)")
    ] = True,
    speed: Annotated[
        float, typer.Option(min=0.1, help="simulated city speed: 1 is real time")
    ] = 1.0,
    log_level: LogLevel = "WARNING",
) -> None:
    """Run the whole command centre on this machine: embedded database and broker unless their
    URLs are set, migrations, ingest, the API with /wall, and the simulated city. Prints where
    to look and a live status line; Ctrl-C stops everything."""
    from pusat.up import run

    _logging(log_level)
    run(Settings(), stop_on_signals(), city=city, speed=speed)


# -- the HTTP API and its tokens (api/) -----------------------------------------------------------

token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@app.command("api")
def api_command(
    host: Annotated[str | None, typer.Option(help="address to listen on (PUSAT_API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on (PUSAT_API_PORT)")] = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Serve the HTTP API, /healthz, /metrics and the /wall page. Ctrl-C or SIGTERM stops it."""
    from api.server import serve

    _logging(log_level)
    settings = _settings(api_host=host, api_port=port)
    _need_database(settings)
    typer.echo(f"API: http://{settings.api_host}:{settings.api_port}/docs")
    typer.echo(f"wall: http://{settings.api_host}:{settings.api_port}/wall?token=<viewer token>")
    serve(settings, log_level)


class TokenRole(StrEnum):
    viewer = "viewer"
    operator = "operator"
    engineer = "engineer"
    admin = "admin"


@token_app.command("create")
def token_create(
    role: Annotated[TokenRole, typer.Option(help="what it may do (viewer < operator < ...)")],
    name: Annotated[
        str | None,
        typer.Option(help="who holds it: the actor in the alarm audit trail (unique)"),
    ] = None,
    log_level: LogLevel = "WARNING",
) -> None:
    """Create an API token. It is printed once, on the last line, and stored only hashed."""
    from api import auth
    from store import db

    _logging(log_level)
    url = _need_database(_settings())
    with db.connect(url) as conn:
        try:
            info, secret = auth.create_token(conn, role.value, name)
        except auth.TokenNameTaken as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
    typer.echo(f"created token {info.name!r} (role {info.role}, id {info.id}); it is shown once:")
    typer.echo(secret)


@token_app.command("list")
def token_list(
    revoked: Annotated[bool, typer.Option(help="also list revoked tokens")] = False,
    log_level: LogLevel = "WARNING",
) -> None:
    """List API tokens (names and roles; the secrets are not stored)."""
    from api import auth
    from store import db

    _logging(log_level)
    url = _need_database(_settings())
    with db.connect(url) as conn:
        tokens = auth.list_tokens(conn, include_revoked=revoked)
    for t in tokens:
        used = t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "never"
        gone = f" revoked {t.revoked_at.isoformat(timespec='seconds')}" if t.revoked_at else ""
        typer.echo(f"{t.id:>5}  {t.role:<9} {t.name}  (last used {used}){gone}")


@token_app.command("revoke")
def token_revoke(
    token: Annotated[str, typer.Argument(help="the token's name or id")],
    log_level: LogLevel = "WARNING",
) -> None:
    """Revoke an API token by name or id (running APIs stop accepting it within seconds)."""
    from api import auth
    from store import db

    _logging(log_level)
    url = _need_database(_settings())
    with db.connect(url) as conn:
        info = auth.revoke_token(conn, token)
    if info is None:
        typer.echo(f"error: no live token named {token!r} or with that id", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked token {info.name!r} (role {info.role}, id {info.id})")


# -- end of the API block ------------------------------------------------------------------------


# -- the simulated city (simulators/) -------------------------------------------------------------

simulate_app = typer.Typer(
    help="Run the simulated Putrajaya: publish its sensors' readings to the broker, with faults.",
    no_args_is_help=True,
)
app.add_typer(simulate_app, name="simulate")

_SIM_HELP = {
    "traffic": "Traffic loops from Eclipse SUMO on the city's street grid.",
    "air": "Air-quality stations: regional background plus SUMO's traffic emissions, dispersed.",
    "wetland": "Wetland buoys: EPA SWMM's chain of cells to the lake, and water quality.",
    "city": "The whole city: traffic, air and wetland together (what `pusat up` runs).",
}


def _simulate_command(what: str) -> Callable[..., None]:
    def command(
        speed: Annotated[
            str, typer.Option(help="simulated seconds per second: 1 real time, 600, or max")
        ] = "1",
        start: Annotated[
            str | None,
            typer.Option(help="RFC 3339, 'now' or '-2h'; default now, or (faster) now - duration"),
        ] = None,
        duration: Annotated[
            str | None, typer.Option(help="simulated time to run, e.g. 90m, 6h; default: forever")
        ] = None,
        seed: Annotated[int | None, typer.Option(help="same seed, same readings")] = None,
        scenario: Annotated[
            str | None,
            typer.Option(
                help="TOML file, or a bundled one: rush-hour, monsoon-storm, haze, incident"
            ),
        ] = None,
        fault: Annotated[
            list[str] | None,
            typer.Option(
                help="inject KIND[:SENSOR[:QUANTITY]] (repeatable): offline, stuck, drift, spike,"
                " late, out_of_order, duplicate, skew, malformed, wrong_unit, burst"
            ),
        ] = None,
        all_faults: Annotated[bool, typer.Option(help="inject one fault of every kind")] = False,
        manifest: Annotated[
            Path | None,
            typer.Option(help="write every fault and its expected outcome (JSON lines)"),
        ] = None,
        quiet: Annotated[bool, typer.Option(help="no live progress line")] = False,
        gateways: Annotated[
            str | None,
            typer.Option(
                help="lorawan,sparkplug: a quarter of the district gateways publish as ChirpStack"
                " uplinks, the wetland as a Sparkplug B pumping station; the mapping files ingest"
                " needs are written to PUSAT_HOME/gateways"
            ),
        ] = None,
        log_level: LogLevel = "WARNING",
    ) -> None:
        from simulators import console
        from simulators.faults import FaultError
        from simulators.publisher import PublishError
        from simulators.runner import simulate
        from simulators.scenario import ScenarioError
        from simulators.traffic import SumoMissing
        from simulators.wetland import SwmmMissing

        _logging(log_level)
        settings = _settings()
        if settings.mqtt_url is None:
            typer.echo("error: no broker: set PUSAT_MQTT_URL, or start `pusat up`", err=True)
            raise typer.Exit(2)
        try:
            opts = console.options(
                what, speed, start, duration, seed, scenario, fault or [], all_faults, manifest
            )
            sink = _dialect_sink(settings, gateways) if gateways else None
            result = simulate(
                settings, opts, stop_on_signals(), None if quiet else console.ProgressLine(), sink
            )
        except (ValueError, ScenarioError, FaultError) as e:
            raise typer.BadParameter(str(e)) from e
        except (PublishError, SumoMissing, SwmmMissing) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        typer.echo(console.summary(result, manifest))

    command.__doc__ = _SIM_HELP[what] + " Ctrl-C stops it cleanly (gateways go offline)."
    return command


def _dialect_sink(settings: Settings, kinds: str) -> Any:
    """The broker sink with some gateways speaking LoRaWAN or Sparkplug B (simulators/gateways)."""
    from simulators.gateways import GatewaySink, parse_kinds
    from simulators.publisher import MqttSink

    chosen = parse_kinds(kinds)  # ValueError: a bad parameter
    inner = MqttSink(settings.mqtt(), settings.topic_root)
    return GatewaySink(inner, settings.mqtt(), chosen, settings.home / "gateways")


for _what in ("traffic", "air", "wetland", "city"):
    simulate_app.command(_what)(_simulate_command(_what))


@simulate_app.command("flood")
def simulate_flood(
    count: Annotated[int, typer.Option(help="messages to publish at most")] = 10_000,
    seconds: Annotated[float, typer.Option(help="stop after this long at most")] = 30.0,
    readings: Annotated[int, typer.Option(help="readings per SenML message")] = 100,
    log_level: LogLevel = "WARNING",
) -> None:
    """Publish city-shaped SenML as fast as the broker takes it (ingest benchmarks)."""
    from simulators.flood import FloodError, flood

    _logging(log_level)
    settings = _settings()
    if settings.mqtt_url is None:
        typer.echo("error: no broker: set PUSAT_MQTT_URL, or start `pusat up`", err=True)
        raise typer.Exit(2)
    try:
        r = flood(settings.mqtt(), settings.topic_root, count, seconds, readings)
    except FloodError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(
        f"published {r.messages:,} messages ({r.readings:,} readings) in {r.seconds:.2f} s:"
        f" {r.messages / r.seconds:,.0f} msg/s, {r.readings / r.seconds:,.0f} readings/s"
    )


# -- end of the simulated city --------------------------------------------------------------------


# -- Grafana walls and gateway credentials (pusat/grafana, pusat/gateways.py) ---------------------

grafana_app = typer.Typer(
    help="Grafana walls as code: build the dashboards and provisioning, push them to a Grafana.",
    no_args_is_help=True,
)
app.add_typer(grafana_app, name="grafana")
gateway_app = typer.Typer(
    help="Gateway credentials on Mosquitto: password file and ACL.", no_args_is_help=True
)
app.add_typer(gateway_app, name="gateway")


@grafana_app.command("build")
def grafana_build(
    out: Annotated[
        Path, typer.Option(help="where the dashboards and provisioning files go")
    ] = Path("deploy/grafana"),
) -> None:
    """Write the dashboards, provisioning files, playlist and offline map into OUT."""
    from pusat.grafana import build

    written, removed = build.write(out)
    total = len(build.render())
    typer.echo(f"{out}: {len(written)} written, {total - len(written)} unchanged")
    for rel in written:
        typer.echo(f"  wrote {rel}")
    for rel in removed:
        typer.echo(f"  removed {rel}")


@grafana_app.command("push")
def grafana_push(
    url: Annotated[
        str | None,
        typer.Option(help="Grafana's URL (PUSAT_GRAFANA_URL); user:password@ in it is basic auth"),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="service account token (PUSAT_GRAFANA_TOKEN)")
    ] = None,
    annotations: Annotated[
        bool, typer.Option(help="also push alarm events as annotations (reads the database)")
    ] = False,
    since_hours: Annotated[
        float, typer.Option(help="with --annotations: events of the last this many hours")
    ] = 24.0,
    log_level: LogLevel = "WARNING",
) -> None:
    """Create or update the folder, data source, dashboards and playlist in a Grafana.

    Only what differs is written, so a second push changes nothing."""
    from datetime import UTC, datetime, timedelta

    from pusat.grafana import datasource, push
    from store import db

    _logging(log_level)
    settings = _settings(grafana_url=url, grafana_token=token)
    if settings.grafana_url is None:
        typer.echo("error: no Grafana: give --url or set PUSAT_GRAFANA_URL", err=True)
        raise typer.Exit(2)
    db_url = settings.grafana_db_url or settings.database_url
    if db_url is None:
        typer.echo(
            "error: the data source needs a database: set PUSAT_GRAFANA_DB_URL"
            " (or PUSAT_DATABASE_URL)",
            err=True,
        )
        raise typer.Exit(2)
    try:
        conn = datasource.Connection.from_url(db_url)
        if settings.grafana_db_url is None:  # Grafana reads as the read-only role
            conn = conn.with_user(datasource.READ_ROLE, None)
        api = push.connect(settings.grafana_url, settings.grafana_token)
        report = push.push(api, conn)
        if annotations:
            since = datetime.now(UTC) - timedelta(hours=since_hours)
            with db.connect(_need_database(settings)) as dbconn:
                events = push.alarm_events(dbconn, since)
            push.push_annotations(api, events, since, report)
    except push.PushError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    for what, action in report.actions:
        typer.echo(f"{what}: {action}")
    typer.echo(f"{report.changed} changed, {len(report.actions) - report.changed} unchanged")


@gateway_app.command("add")
def gateway_add(
    gateway: Annotated[str, typer.Argument(help="the gateway id: its MQTT user and topic level")],
    password_stdin: Annotated[
        bool, typer.Option(help="read the password from standard input instead of generating one")
    ] = False,
    passwd_file: Annotated[
        Path | None, typer.Option(help="Mosquitto password file (PUSAT_MOSQUITTO_PASSWORD_FILE)")
    ] = None,
    acl_file: Annotated[
        Path | None, typer.Option(help="Mosquitto ACL file (PUSAT_MOSQUITTO_ACL_FILE)")
    ] = None,
) -> None:
    """Give a gateway a Mosquitto password and ACL lines: it may publish only under its topics.

    A generated password is printed once, on the last line. Restart Mosquitto afterwards."""
    import sys

    from pusat import gateways

    settings = _settings(mosquitto_password_file=passwd_file, mosquitto_acl_file=acl_file)
    try:
        gateways.check_gateway_id(gateway)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else gateways.new_password()
    if not password:
        raise typer.BadParameter("empty password on standard input")
    gateways.add_gateway(
        settings.mosquitto_password_file,
        settings.mosquitto_acl_file,
        gateway,
        password,
        settings.topic_root,
    )
    typer.echo(
        f"gateway {gateway}: password in {settings.mosquitto_password_file}, ACL in"
        f" {settings.mosquitto_acl_file}; it may publish under {settings.topic_root}/{gateway}/#"
    )
    if not password_stdin:
        typer.echo("its password, shown once:")
        typer.echo(password)


# -- end of the Grafana and gateway block ----------------------------------------------------------


# -- benchmarks (bench/) ---------------------------------------------------------------------------


def _mount_bench() -> None:
    from bench.cli import app as bench_app

    app.add_typer(bench_app, name="bench")


# `pusat ingest` starts without the benchmarks' modules: bench.query alone imports FastAPI and
# the API, a second of a city worker's start-up. Any other invocation, and an import of this
# module (the CLI's tests), has every command.
if sys.argv[1:2] != ["ingest"]:
    _mount_bench()


def main() -> None:
    app()
