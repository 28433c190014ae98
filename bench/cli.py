"""`pusat bench ...`: the benchmarks, each against servers it starts (and stops) itself."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from bench import results

app = typer.Typer(
    help="Benchmarks: Pusat against its baselines, measured side by side in one run.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def bench() -> None:
    """Benchmarks: Pusat against its baselines, measured side by side in one run."""
    # A callback keeps `ingest` a subcommand while it is the only one.


@app.command()
def ingest(
    quick: Annotated[
        bool, typer.Option("--quick", help="a small run of every phase (under a minute)")
    ] = False,
    messages: Annotated[
        int | None,
        typer.Option(
            "--messages",
            min=100,
            help="one-reading messages for Pusat and the counter (default 100,000); the naive"
            " ingestor gets a tenth, the SenML phase messages/20 packs of 100",
        ),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option("--seconds", min=1.0, help="length of the latency phase (default 25)"),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials", min=1, help="repeat each pre-loaded pair, report the median (default 3)"
        ),
    ] = None,
    concurrent: Annotated[
        bool, typer.Option(help="also measure with the publisher running concurrently")
    ] = True,
    timescaledb: Annotated[
        bool, typer.Option(help="also the SenML phase on TimescaleDB (when its root is built)")
    ] = True,
    write_results: Annotated[
        bool, typer.Option(help="update the ingest section of bench/RESULTS.md")
    ] = False,
) -> None:
    """Ingest throughput and latency: Pusat's worker vs a naive ingestor, a do-nothing
    subscriber and raw binary COPY, through a real Mosquitto and PostgreSQL."""
    from dataclasses import replace

    from bench import ingest as bench_ingest

    base = bench_ingest.Config.quick() if quick else bench_ingest.Config()
    if messages is not None:
        base = base.scaled(messages)
    config = replace(
        base,
        latency_seconds=seconds if seconds is not None else base.latency_seconds,
        trials=trials if trials is not None else base.trials,
        concurrent=concurrent,
        timescaledb=timescaledb,
    )
    flags = [
        "--quick" if quick else "",
        f"--messages {messages}" if messages is not None else "",
        f"--seconds {seconds:g}" if seconds is not None else "",
        f"--trials {trials}" if trials is not None else "",
        "" if concurrent else "--no-concurrent",
        "" if timescaledb else "--no-timescaledb",
        "--write-results" if write_results else "",
    ]
    command = " ".join(["pusat bench ingest", *filter(None, flags)])
    console = Console()

    def terminated(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)  # unwinds: every child and server is stopped on the way out

    signal.signal(signal.SIGTERM, terminated)
    try:
        with console.status("starting") as status:

            def progress(message: str) -> None:
                console.log(message)
                status.update(message)

            result = bench_ingest.run(config, command=command, log=progress)
    except bench_ingest.BenchError as e:
        console.print(f"[red]benchmark failed:[/red] {e}")
        raise typer.Exit(1) from e
    bench_ingest.print_result(result, console)
    problems = bench_ingest.figures_are_sane(result)
    if problems:
        console.print(f"[red]implausible figures:[/red] {problems}")
        raise typer.Exit(1)
    if write_results:
        bench_ingest.write_results(result)
        console.print(f"updated {results.RESULTS_FILE}")


@app.command()
def processing(
    quick: Annotated[bool, typer.Option("--quick", help="small sizes (under a minute)")] = False,
    seconds: Annotated[
        float, typer.Option("--seconds", min=2.0, help="length of the alarm-latency phase")
    ] = 20.0,
    write_results: Annotated[
        bool, typer.Option(help="update the processing section of bench/RESULTS.md")
    ] = False,
) -> None:
    """Validation, alert rules, rollups and latest: a batch at a time against one reading at a time,
    and the alarm latency from publish to the alarm row through a real broker and database."""
    from dataclasses import replace

    from bench import ingest as bench_ingest
    from bench import processing as bench_processing

    console = Console()
    flags = [
        "--quick" if quick else "",
        f"--seconds {seconds:g}",
        "--write-results" if write_results else "",
    ]
    try:
        report = bench_processing.run_all(quick, seconds, console.log)
    except bench_ingest.BenchError as e:
        console.print(f"[red]benchmark failed:[/red] {e}")
        raise typer.Exit(1) from e
    report = replace(report, command=" ".join(["pusat bench processing", *filter(None, flags)]))
    console.print(bench_processing.markdown(report))
    if write_results:
        bench_processing.write_results(report)
        console.print(f"updated {results.RESULTS_FILE}")


def _mount_query() -> None:
    from bench.query import query_command

    app.command("query")(query_command)


_mount_query()


def _mount_export() -> None:
    from bench.export import export_command

    app.command("export")(export_command)


_mount_export()


def _mount_wall() -> None:
    from bench.wall import wall_command

    app.command("wall")(wall_command)


_mount_wall()


def _mount_gateways() -> None:
    from bench.gateways import gateways_command

    app.command("gateways")(gateways_command)


_mount_gateways()


@app.command()
def city(
    quick: Annotated[
        bool, typer.Option("--quick", help="2 minutes, 20,000 sensors in 200 gateways")
    ] = False,
    sensors: Annotated[
        int | None, typer.Option("--sensors", min=100, help="sensors (default 100,000)")
    ] = None,
    gateways: Annotated[
        int | None, typer.Option("--gateways", min=2, help="gateways (default 1,000)")
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option("--minutes", min=0.25, help="how long the stream runs (default 10)"),
    ] = None,
    timescale: Annotated[
        bool, typer.Option("--timescale", help="on TimescaleDB (when its root is built)")
    ] = False,
    idle_seconds: Annotated[
        float | None,
        typer.Option("--idle-seconds", min=5.0, help="the idle query phase (default 60)"),
    ] = None,
    pg_set: Annotated[
        list[str] | None,
        typer.Option(
            "--pg-set",
            metavar="NAME=VALUE",
            help="a PostgreSQL server setting for an experiment (repeatable), named in the report",
        ),
    ] = None,
    write_results: Annotated[
        bool, typer.Option(help="update the city section of bench/RESULTS.md")
    ] = False,
) -> None:
    """A city of sensors ingesting in real time (about 0.15 readings/s per sensor) while walls,
    panels and an analyst query the API; fails when a reading is lost."""
    from dataclasses import replace

    from bench import city as bench_city
    from bench import ingest as bench_ingest

    base = bench_city.Config.quick() if quick else bench_city.Config()
    pg_settings = []
    for item in pg_set or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--pg-set")
        pg_settings.append((name.strip(), value.strip()))
    config = replace(
        base,
        sensors=sensors if sensors is not None else base.sensors,
        gateways=gateways if gateways is not None else base.gateways,
        minutes=minutes if minutes is not None else base.minutes,
        idle_seconds=idle_seconds if idle_seconds is not None else base.idle_seconds,
        timescale=timescale,
        pg_settings=tuple(pg_settings),
    )
    flags = [
        "--quick" if quick else "",
        f"--sensors {sensors}" if sensors is not None else "",
        f"--gateways {gateways}" if gateways is not None else "",
        f"--minutes {minutes:g}" if minutes is not None else "",
        f"--idle-seconds {idle_seconds:g}" if idle_seconds is not None else "",
        "--timescale" if timescale else "",
        *(f"--pg-set {k}={v}" for k, v in pg_settings),
        "--write-results" if write_results else "",
    ]
    command = " ".join(["pusat bench city", *filter(None, flags)])
    console = Console()

    def terminated(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)  # unwinds: every child and server is stopped on the way out

    signal.signal(signal.SIGTERM, terminated)
    try:
        result = bench_city.run(config, command, console.log)
    except bench_ingest.BenchError as e:
        console.print(f"[red]benchmark failed:[/red] {e}")
        raise typer.Exit(1) from e
    console.print(bench_city.markdown(result))
    if write_results:
        bench_city.write_results(result)
        console.print(f"updated {results.RESULTS_FILE}")
