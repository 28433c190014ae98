"""The wall benchmark: first paint of /wall in Chromium for a city of 100,000 sensors.

A throwaway PostgreSQL gets ``--sensors`` sensors in ``--districts`` districts (a third each
traffic, air and water, with the quantities the simulated city has: 466,666 series for
100,000), every series with a fresh latest value, and open alarms on one sensor in 200, made
by the server itself (``generate_series``: loading is not what is measured). `pusat api` runs in
a process of its own. Debian's Chromium (driven by Playwright) then opens the wall, each time in
a new page, and the time from navigation to the first district bubble on the map is the first
paint: the first time while nothing is cached on the server (the district summary is worked
out), then with the shared snapshot warm. The baseline in the same run is the same page made
to show every sensor (`?city_sensors=` past the city's size), as the wall did before, waited
for at most ``--baseline-timeout`` seconds.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from api import auth
from bench import results
from bench.export import bench_database, serve_api
from bench.query import _code, _machine
from store import db

SECTION = "wall"
AIM_S = 2.0
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags that work on the project's machines (../shared/reference/machines.md); Playwright
# gives every launch a new empty profile directory itself. The wall and city tests use them too.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOMAINS = {
    "traffic": ("vehicle_count", "flow", "occupancy", "speed"),
    "air": ("pm25", "pm10", "o3", "co", "no2", "so2"),
    "water": ("water_level", "do", "ph", "water_temperature"),
}


@dataclass(frozen=True)
class Config:
    sensors: int = 100_000
    districts: int = 20
    runs: int = 5
    baseline_timeout_s: float = 120.0

    @classmethod
    def quick(cls) -> Config:
        return cls(sensors=3000, districts=10, runs=2, baseline_timeout_s=60.0)


@dataclass(frozen=True)
class Result:
    config: Config
    series: int
    alarms: int
    cold_s: float
    warm_s: tuple[float, ...]
    bubbles: int
    baseline_s: float | None  # None: not painted within the timeout
    baseline_dots: int
    machine: str
    load_average: tuple[float, float, float]
    postgresql: str
    date: str
    command: str

    @property
    def warm_median_s(self) -> float:
        return statistics.median(self.warm_s)


def load(url: str, config: Config) -> tuple[int, int]:
    """The city's sensors, series, fresh latest values and open alarms: (series, alarms)."""
    domains = list(DOMAINS)
    with db.connect(url) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO sensors (sensor_id, gateway_id, domain, district, lat, lon, quantities,"
            " provisioned)"
            " SELECT format('S-%%s', lpad(i::text, 6, '0')), format('gw-%%s', i / 100),"
            " (%(domains)s::text[])[1 + i %% 3], format('Presint %%s', 1 + i %% %(d)s),"
            " 2.89 + 0.09 * ((i %% %(d)s) / %(d)s::float) + (i %% 97) * 1e-5,"
            " 101.67 + 0.05 * (((i %% %(d)s) * 7 %% %(d)s) / %(d)s::float) + (i %% 89) * 1e-5,"
            " '{}', true FROM generate_series(0, %(n)s - 1) AS i",
            {"domains": domains, "d": config.districts, "n": config.sensors},
        )
        for domain, quantities in DOMAINS.items():
            conn.execute(
                "INSERT INTO series (sensor_id, quantity) SELECT s.sensor_id, q"
                " FROM sensors s CROSS JOIN unnest(%s::text[]) AS q WHERE s.domain = %s",
                (list(quantities), domain),
            )
        conn.execute(
            "INSERT INTO latest_data SELECT series_id, now() - random() * interval '20 s',"
            " random() * 100, now() FROM series"
        )
        conn.execute(
            "INSERT INTO alerts (rule, kind, severity, state, sensor_id, quantity, message,"
            " value, raised_at, updated_at)"
            " SELECT 'bench:threshold:' || sev, 'threshold', sev, 'active', sensor_id,"
            " 'pm25', 'bench alarm', 99, now(), now()"
            " FROM (SELECT sensor_id, CASE WHEN row_number() OVER () % 4 = 0 THEN 'critical'"
            " ELSE 'warning' END AS sev FROM sensors WHERE right(sensor_id, 6)::int % 200 = 7)"
            " AS picked"
        )
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM series), (SELECT count(*) FROM alerts)"
        ).fetchone()
    assert counts is not None
    return int(counts[0]), int(counts[1])


def _paint(browser: object, url: str, selector: str, timeout_s: float) -> tuple[float | None, int]:
    from playwright.sync_api import Browser
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    assert isinstance(browser, Browser)
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    try:
        started = time.perf_counter()
        page.goto(url)
        try:
            page.wait_for_selector(selector, timeout=timeout_s * 1000)
        except PlaywrightTimeout:
            return None, 0
        took = time.perf_counter() - started
        return took, page.locator(selector).count()
    finally:
        page.close()


def run(config: Config, command: str, log: Console) -> Result:
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory(prefix="pusat-bench-wall-") as tmp,
        bench_database(Path(tmp)) as (url, version),
    ):
        log.log(f"loading {config.sensors:,} sensors")
        series, alarms = load(url, config)
        with db.connect(url) as conn:
            _, token = auth.create_token(conn, "viewer", "bench-wall")
        with serve_api(url, Path(tmp) / "home") as (api_url, _), sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            load_average = os.getloadavg()
            wall = f"{api_url}/wall?token={token}"
            bubble = "#map circle.district-bubble"
            cold, bubbles = _paint(browser, wall, bubble, 60)
            if cold is None:
                raise RuntimeError("the city wall did not paint within 60 s")
            warm = []
            for _ in range(config.runs):
                t, _n = _paint(browser, wall, bubble, 60)
                if t is None:
                    raise RuntimeError("the city wall did not paint within 60 s")
                warm.append(t)
            log.log(f"city wall: cold {cold:.2f} s, warm {statistics.median(warm):.2f} s")
            old = f"{wall}&city_sensors={config.sensors * 10}"
            baseline, dots = _paint(browser, old, "#map .sensor", config.baseline_timeout_s)
            log.log(f"sensor-by-sensor wall: {baseline if baseline else 'not painted'}")
            browser.close()
    return Result(
        config=config,
        series=series,
        alarms=alarms,
        cold_s=cold,
        warm_s=tuple(warm),
        bubbles=bubbles,
        baseline_s=baseline,
        baseline_dots=dots,
        machine=_machine(),
        load_average=load_average,
        postgresql=version,
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command,
    )


def markdown(r: Result) -> str:
    begin, end = results.markers(SECTION)
    c = r.config
    la = ", ".join(f"{x:.2f}" for x in r.load_average)
    base = (
        f"{r.baseline_s:.2f} s ({r.baseline_dots:,} sensors drawn)"
        if r.baseline_s is not None
        else f"not painted within {c.baseline_timeout_s:.0f} s"
    )
    warm = " / ".join(f"{t:.2f}" for t in r.warm_s)
    lines = [
        begin,
        "## The wall at city scale (`pusat bench wall`)",
        "",
        f"Measured {r.date} with `{r.command}`, code at {_code()}.",
        "",
        f"Machine: {r.machine}; {r.postgresql} (plain PostgreSQL tier, no fsync), Debian's"
        " Chromium through Playwright, `pusat api` in a process of its own. The machine is"
        f" shared: its load average (1, 5, 15 min) was {la} when the pages were opened.",
        "",
        f"Data: {c.sensors:,} sensors in {c.districts} districts, {r.series:,} series each with"
        f" a fresh latest value, {r.alarms:,} open alarms. First paint: navigation to the first"
        " district bubble on the map, each time in a new page.",
        "",
        "| wall | first paint |",
        "|---|---|",
        f"| by district, nothing cached on the server | {r.cold_s:.2f} s ({r.bubbles} districts) |",
        f"| by district, the summary's snapshot warm (median of {len(r.warm_s)}: {warm} s) |"
        f" {r.warm_median_s:.2f} s |",
        f"| sensor by sensor, as before (baseline, same run) | {base} |",
        "",
        "| aim (issue 13) | measured | target | |",
        "|---|--:|--:|---|",
        f"| first paint of the wall with {c.sensors:,} sensors (warm) | {r.warm_median_s:.2f} s |"
        f" < {AIM_S:g} s | {'met' if r.warm_median_s < AIM_S else 'NOT met'} |",
        f"| the same, nothing cached | {r.cold_s:.2f} s | < {AIM_S:g} s |"
        f" {'met' if r.cold_s < AIM_S else 'NOT met'} |",
        end,
    ]
    return "\n".join(lines) + "\n"


def wall_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="3,000 sensors in 10 districts, 2 runs: to check")
    ] = False,
    sensors: Annotated[int | None, typer.Option(min=10, help="sensors (default 100,000)")] = None,
    districts: Annotated[int | None, typer.Option(min=1, help="districts (default 20)")] = None,
    write_results_: Annotated[
        bool, typer.Option("--write-results", help="update the wall section of bench/RESULTS.md")
    ] = False,
) -> None:
    """First paint of /wall in Chromium for a city of 100,000 sensors, by district, against the
    sensor-by-sensor page in the same run."""
    base = Config.quick() if quick else Config()
    config = Config(
        sensors or base.sensors, districts or base.districts, base.runs, base.baseline_timeout_s
    )
    if not Path(CHROMIUM).exists():
        raise typer.BadParameter("Debian's chromium is not installed (deploy/system-deps.sh)")
    flags = [
        "--quick" if quick else "",
        f"--sensors {sensors}" if sensors else "",
        f"--districts {districts}" if districts else "",
        "--write-results" if write_results_ else "",
    ]
    console = Console()
    result = run(config, " ".join(["pusat bench wall", *filter(None, flags)]), console)
    console.print(markdown(result))
    if result.bubbles != min(config.districts, config.sensors):
        console.print(f"[red]implausible:[/red] {result.bubbles} bubbles for {config.districts}")
        raise typer.Exit(1)
    if write_results_:
        results.replace_section(SECTION, markdown(result))
        console.print(f"updated {results.RESULTS_FILE}")
