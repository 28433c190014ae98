"""The public burst benchmark (issue 15): does a flood of anonymous requests to /city leave the
operators' API and ingest unaffected? And Lighthouse's scores of the page.

``python -m bench.public [--write-results] [--quick] [--equal-client]`` needs Debian's ``wrk``
and ``nginx``; Lighthouse from npm (``npm i -E lighthouse@12.2.3`` in ~/.cache/pusat/lighthouse)
adds its scores. It starts its own durable PostgreSQL and Mosquitto (the ingest benchmark's
``Services``), ``pusat api`` and one ``pusat ingest`` as child processes, provisions a small
city (bench.city's generator) and publishes its readings in real time throughout. An operator
client (a viewer token) asks ``/api/v1/latest`` of one district and ``/api/v1/alerts`` of that
API back to back the whole time. Windows of equal length, an idle one (no public traffic)
before each flood and after the last, each flood ``wrk`` paced to about 2,000 anonymous
``GET /city`` a second:

1. (the first idle window);
2. one address floods: the rate limit answers almost all with 429;
3. the API restarted with the rate limit lifted (as when the flood comes from thousands of
   addresses, each under its limit): every request is served from the server cache;
4. the same flood to a second ``pusat api`` process while the operators keep to the first;
5. the same, the second process at a lower CPU priority (nice);
6. the same flood through nginx with the deployment recipe (deploy/nginx/pusat.conf, its
   per-address limit lifted likewise) in front of the operators' API: nginx started here on a
   free port, in the run's temp dir, as a child (pusat.embedded.nginx);
7. the same, nginx's workers at a lower CPU priority (its worker_priority).

Per phase: the public requests a second wrk reached and their status, how many of them reached
the operators' API (its own request counter), the operators' p50/p95 and their ratio to idle,
and ingest lag (commit time minus event time) p50/p99 of the readings of that phase, against
the aim: operators' p95 and ingest lag p99 within AIM times those of the idle windows before and
after it (their mean, so that drift over the run is not taken for the flood's doing); and the CPU
seconds wrk, the operators' API and what else serves the public used. Everything shares the
machine's cores with the load generator; wrk, which stands for clients on other machines, runs
at nice 19 (``--equal-client``: at the server's own priority, as the first measurements did).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from bench import city as bc
from bench import ingest as bi
from bench import results
from pusat.embedded import nginx
from pusat.embedded.ports import free_port

SECTION = "public"
WRK_THREADS = 2
AIM = 1.5  # operators' p95 and ingest lag p99 within this many times their idle values
NICE = 10  # the lower CPU priority of the phases that have one


@dataclass(frozen=True)
class Config:
    sensors: int = 2_000
    gateways: int = 20
    phase_s: float = 20.0
    rate: int = 2_000  # the public requests a second wrk is paced to
    connections: int = 64
    lighthouse: bool = True
    # wrk stands for clients on other machines: at this CPU priority it takes what the server
    # leaves (0: an equal share)
    client_nice: int = 19


QUICK = Config(sensors=200, gateways=4, phase_s=4.0, rate=200, connections=8, lighthouse=False)


def pace_script(config: Config) -> str:
    """wrk has no rate option: each connection waits before each request (its Lua delay hook),
    a little less than connections / rate seconds because the answer time adds to the wait."""
    return f"function delay() return {max(0, 1000 * config.connections // config.rate - 8)} end\n"


@dataclass
class Phase:
    name: str
    start: float = 0.0
    end: float = 0.0
    public_rps: float | None = None
    public_requests: int | None = None
    non_2xx: int | None = None
    operator_ms: list[float] = field(default_factory=list)
    lag_ms: tuple[float, float] | None = None
    operator_errors: int = 0
    reached_api: int | None = None  # public requests the operators' API answered
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds in the phase, by whom

    def p(self, q: float) -> float:
        xs = sorted(self.operator_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    around: tuple[Phase, Phase] | None = None  # a flood's idle windows before and after it

    @property
    def flood(self) -> bool:
        return self.around is not None

    def lag99(self) -> float:
        return self.lag_ms[1] if self.lag_ms else math.nan

    def ratios(self) -> tuple[float, float, float]:
        """A flood's operators' p50 and p95 and ingest lag p99, each against the mean of the
        idle windows around it (so that drift over the run is not taken for the flood's
        doing)."""
        assert self.around is not None
        a, b = self.around
        return (
            self.p(0.5) / ((a.p(0.5) + b.p(0.5)) / 2),
            self.p(0.95) / ((a.p(0.95) + b.p(0.95)) / 2),
            self.lag99() / ((a.lag99() + b.lag99()) / 2),
        )

    def meets_aim(self) -> bool:
        _, p95, lag = self.ratios()
        return p95 <= AIM and lag <= AIM


def _wrk(url: str, seconds: float, script: Path, config: Config) -> tuple[float, int, int, float]:
    """Requests a second, requests, not 2xx or 3xx, and wrk's CPU seconds."""
    exe = shutil.which("wrk")
    if exe is None:
        raise bi.BenchError("wrk is not installed (apt-get install wrk)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            *(["nice", "-n", str(config.client_nice)] if config.client_nice else []),
            exe,
            f"-t{WRK_THREADS}",
            f"-c{config.connections}",
            f"-d{seconds:.0f}s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rps is None or total is None:
        raise bi.BenchError(f"cannot read wrk's output:\n{out}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return float(rps.group(1)), int(total.group(1)), int(non.group(1)) if non else 0, cpu


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) that ``pid`` and its children that still run (nginx's
    workers) have used."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


LIGHTHOUSE = Path(
    os.environ.get(
        "PUSAT_LIGHTHOUSE",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "pusat/lighthouse/node_modules/.bin/lighthouse",
    )
)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROME_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
    " --disable-background-networking --disable-component-update --disable-sync"
)


def lighthouse(url: str, work: Path) -> dict[str, Any] | None:
    """Lighthouse's mobile preset (its default) on ``url`` with Debian's Chromium: the
    performance and accessibility scores and the bytes transferred; None without Lighthouse."""
    if not LIGHTHOUSE.exists() or not Path(CHROMIUM).exists():
        return None
    out = work / "lighthouse.json"
    subprocess.run(
        [
            str(LIGHTHOUSE),
            url,
            "--quiet",
            "--only-categories=performance,accessibility",
            f"--chrome-flags={CHROME_FLAGS} --user-data-dir={work / 'lh-profile'}",
            "--output=json",
            f"--output-path={out}",
        ],
        env={**os.environ, "CHROME_PATH": CHROMIUM},
        check=True,
        capture_output=True,
        timeout=300,
    )
    report = json.loads(out.read_text())
    audits = report["audits"]
    return {
        "version": report["lighthouseVersion"],
        "performance": round(report["categories"]["performance"]["score"] * 100),
        "accessibility": round(report["categories"]["accessibility"]["score"] * 100),
        "bytes": int(audits["total-byte-weight"]["numericValue"]),
        "fcp_ms": audits["first-contentful-paint"]["numericValue"],
        "lcp_ms": audits["largest-contentful-paint"]["numericValue"],
        "cls": audits["cumulative-layout-shift"]["numericValue"],
        "form_factor": report["configSettings"]["formFactor"],
    }


def _lag(url: str, start: float, end: float) -> tuple[float, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag) FROM"
            " (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts) * 1e3 AS lag"
            " FROM reading_data WHERE ts >= to_timestamp(%s) AND ts < to_timestamp(%s)) l",
            (start, end),
        ).fetchone()
    if row is None or row[0] is None:
        raise bi.BenchError("no lag: no readings in the phase or no commit timestamps")
    return float(row[0][0]), float(row[0][1])


LIFTED = {"PUSAT_PUBLIC_RATE_PER_S": "1000000", "PUSAT_PUBLIC_RATE_BURST": "1000000"}


def _api(svc: bi.Services, url: str, port: int, *, lifted: bool = False, nice: int = 0) -> bi.Child:
    """`pusat api` on ``port``; ``lifted``: the public rate limit out of the way (many
    addresses); ``nice``: at that CPU priority."""
    environment = svc.env | {
        "PUSAT_DATABASE_URL": url,
        "PUSAT_MQTT_URL": svc.broker.url,
        "PUSAT_HOME": str(svc.work / "home"),
        **(LIFTED if lifted else {}),
    }
    argv = [sys.executable, "-m", "pusat", "api", "--host", "127.0.0.1", "--port", str(port)]
    if nice:
        argv = ["nice", "-n", str(nice), *argv]  # exec'd: every thread at that priority
    return svc.spawn("pusat-api", [*argv, "--log-level", "WARNING"], environment, pipe=False)


def requests_answered(base: str, route: str, status: str | None = None) -> int:
    """Requests the API at ``base`` has answered on ``route`` (with ``status``), by its own
    counter (pusat_api_requests_total)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(text)
        if family.name == "pusat_api_requests"
        for sample in family.samples
        if sample.name == "pusat_api_requests_total"
        and sample.labels["route"] == route
        and status in (None, sample.labels["status"])
    )


class Operator:
    """Back-to-back operator requests, timed, until stopped."""

    def __init__(self, base: str, token: str, district: str) -> None:
        self.base = base
        self.token = token
        self.district = district
        self.samples: list[tuple[float, float]] = []  # (wall time, ms)
        self.errors: list[float] = []  # when a request failed
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        paths = [f"/api/v1/latest?district={self.district}", "/api/v1/alerts"]
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as c:
            k = 0
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = c.get(paths[k % 2]).status_code == 200
                except httpx.HTTPError:
                    ok = False
                    time.sleep(0.05)  # the API is restarting between phases
                if ok:
                    self.samples.append((time.time(), (time.perf_counter() - t0) * 1e3))
                else:
                    self.errors.append(time.time())
                k += 1

    def between(self, start: float, end: float) -> list[float]:
        return [ms for t, ms in self.samples if start <= t < end]


FLOODS = (
    "one address, same process: 429s",
    "many addresses, same process: cache",
    "many addresses, a second `pusat api` serves the public",
    f"many addresses, a second `pusat api` at nice {NICE}",
    "many addresses, through the nginx cache",
    f"many addresses, through the nginx cache, its workers at nice {NICE}",
)


def _window(
    phase: Phase,
    base: str,
    servers: dict[str, int],
    operator: Operator,
    config: Config,
    flood: tuple[str, Path] | None,
) -> None:
    """Measures one window: idle, or wrk flooding ``flood``'s URL with its pace script."""
    answered = requests_answered(base, "/city")
    cpu = {k: cpu_seconds(pid) for k, pid in servers.items()}
    phase.start = time.time()
    if flood is None:
        time.sleep(config.phase_s)
    else:
        phase.public_rps, phase.public_requests, phase.non_2xx, wrk_cpu = _wrk(
            flood[0], config.phase_s, flood[1], config
        )
        phase.cpu_s["wrk"] = wrk_cpu
    phase.end = time.time()
    phase.cpu_s |= {k: cpu_seconds(pid) - cpu[k] for k, pid in servers.items()}
    phase.reached_api = requests_answered(base, "/city") - answered
    phase.operator_ms = operator.between(phase.start, phase.end)
    phase.operator_errors = sum(1 for t in operator.errors if phase.start <= t < phase.end)


def run(config: Config = Config(), log: Any = print) -> dict[str, Any]:
    if shutil.which("wrk") is None or nginx.binary() is None:
        raise bi.BenchError("needs Debian's wrk and nginx (make system-deps)")
    sensors = bc.city(config.sensors, config.gateways)
    districts = sorted({s.district for s in sensors})
    floods = [Phase(name) for name in FLOODS]
    idles = [Phase("idle") for _ in range(len(floods) + 1)]
    for k, flood in enumerate(floods):
        flood.around = (idles[k], idles[k + 1])
    # idle, flood, idle, flood, ..., idle
    phases = [w for pair in zip(idles, [*floods, None], strict=True) for w in pair if w]
    publish_s = int(config.phase_s * len(phases) + 45)  # and the restarts between phases
    load_before = os.getloadavg()
    with bi.services(log) as svc:
        url = svc.database(f"public_{uuid.uuid4().hex[:8]}")
        from api import auth

        with psycopg.connect(url, autocommit=True) as conn:
            _, viewer = auth.create_token(conn, "viewer", "bench-public-viewer")
            _, engineer = auth.create_token(conn, "engineer", "bench-public-engineer")
        root, client_id = bi._ids("public")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        api = _api(svc, url, port)
        bc._wait_http(f"{base}/healthz", api)
        bc._provision(base, engineer, sensors)
        bi.presubscribe(svc, client_id, [f"{root}/+/+"])
        worker = svc.worker(url, root, client_id)
        bc._probe(svc, url, root, worker)
        start = int(time.time()) + 3
        publishers = bc.spawn_publishers(
            svc, root, config.sensors, config.gateways, start, publish_s
        )
        time.sleep(max(0.0, start - time.time()) + 8)  # the stream runs
        operator = Operator(base, viewer, districts[0])
        operator.thread.start()
        target = f"{base}/city?lang=en"
        script = svc.work / "pace.lua"
        script.write_text(pace_script(config))
        public_api: bi.Child | None = None
        proxy: nginx.Nginx | None = None
        for k, flood in enumerate(floods):
            i = k + 1  # the step of the module's docstring
            if i == 2:
                log("restarting the API with the rate limit lifted")
                api.stop()
                api = _api(svc, url, port, lifted=True)
                bc._wait_http(f"{base}/healthz", api)
            if i in (3, 4):
                if public_api is not None:
                    public_api.stop()
                log(f"a second API process for the public (nice {NICE if i == 4 else 0})")
                public_port = free_port()
                public_api = _api(svc, url, public_port, lifted=True, nice=NICE if i == 4 else 0)
                bc._wait_http(f"http://127.0.0.1:{public_port}/healthz", public_api)
                target = f"http://127.0.0.1:{public_port}/city?lang=en"
            if i in (5, 6):
                if public_api is not None:
                    public_api.stop()
                    public_api = None
                if proxy is not None:
                    proxy.stop()
                log(f"nginx in front of the operators' API (nice {NICE if i == 6 else 0})")
                proxy = nginx.start_nginx(
                    svc.work / f"nginx-{i}",
                    f"127.0.0.1:{port}",
                    rate=1_000_000,  # its per-address limit lifted, as the API's
                    burst=1_000_000,
                    priority=NICE if i == 6 else 0,
                )
                svc.stack.callback(proxy.stop)
                target = f"{proxy.url}/city?lang=en"
            servers = {"operators' API": api.proc.pid}
            if public_api is not None:
                servers["second API"] = public_api.proc.pid
            if proxy is not None:
                servers["nginx"] = proxy.process.pid
            log(f"idle, then {flood.name}: {config.phase_s:.0f} s each")
            _window(idles[k], base, servers, operator, config, None)
            httpx.get(target, timeout=30)  # the first answer fills the cache
            _window(flood, base, servers, operator, config, (target, script))
        log("idle: the last")
        _window(idles[-1], base, {"operators' API": api.proc.pid}, operator, config, None)
        if proxy is not None:
            proxy.stop()
        operator.stop.set()
        operator.thread.join()
        lh: dict[str, dict[str, Any] | None] = {"ms": None, "en": None}
        if config.lighthouse:
            log("Lighthouse on /city (mobile preset)")
            lh = {code: lighthouse(f"{base}/city?lang={code}", svc.work) for code in lh}
        for p in publishers:
            p.finish(publish_s + 600)
        time.sleep(3)  # the last readings of the last phase commit
        for phase in phases:
            phase.lag_ms = _lag(url, phase.start, phase.end)
        api.stop()
        worker.stop()
    return {
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "config": config,
        "phases": phases,
        "readings_per_s": bc.readings_per_second(sensors),
        "lighthouse": lh,
        "districts": len(districts),
        "load": (load_before, os.getloadavg()),
    }


def markdown(r: dict[str, Any], command: str) -> str:
    begin, end = results.markers(SECTION)
    c: Config = r["config"]
    before, after = (" ".join(f"{x:.2f}" for x in load) for load in r["load"])
    lines = [
        begin,
        "## Public burst (`python -m bench.public`)",
        "",
        f"Measured {r['at']} with `{command}` (load average {before} before the run, {after}"
        f" after): one `pusat api` and one `pusat ingest` on a durable PostgreSQL and Mosquitto,"
        f" {c.sensors:,} sensors publishing {r['readings_per_s']:,.0f} readings/s in real time"
        " throughout; an operator client asks that `pusat api` directly for `/api/v1/latest` of"
        f" a district and `/api/v1/alerts`, back to back; Debian's `wrk` ({WRK_THREADS} threads,"
        f" {c.connections} connections, paced to about {c.rate:,} a second, at nice"
        f" {c.client_nice}: it stands for clients on other machines, so it takes the CPU the"
        " server leaves rather than an equal share) sends anonymous"
        f" `GET /city?lang=en` for {c.phase_s:.0f} s per phase, all on the same {_cpus()} CPUs."
        " Default public settings (20 requests/s and a burst of 60 per address, 15 s cache) in"
        " the first flood: wrk's one address is limited. Then the limit is lifted, standing for"
        " a flood from many addresses each under its limit: every answer comes from the server"
        " cache; then the same flood goes to a second `pusat api` process on the same database"
        f" (then that process at nice {NICE}) while the operators keep to the first; last, it"
        " goes through nginx with the deployment recipe `deploy/nginx/pusat.conf` (its"
        f" per-address limit lifted too; then its workers at nice {NICE}) in front of the"
        " operators' `pusat api`. \"Reached the API\": the public requests the operators' `pusat"
        f" api` answered (its own request counter). An idle window (no public traffic) before"
        " each flood and after the last; each flood is compared with the mean of the idle"
        " windows before and after it, so that drift over the run is not taken for the flood's"
        f" doing. Aim: operators' p95 and ingest lag p99 within {AIM:g}x of the idle around.",
        "",
        "| phase | public req/s reached | public answers | of which not 200 | reached the API |"
        " operator p50 | operator p95 | p50, p95 vs the idle around | operator requests (failed) |"
        f" ingest lag p50 | ingest lag p99 | lag p99 vs the idle around | aim (p95 and lag p99"
        f" within {AIM:g}x the idle around) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for p in r["phases"]:
        lag = p.lag_ms or (math.nan, math.nan)
        vs, lag_vs, aim = "-", "-", "-"
        if p.flood:
            r50, r95, rlag = p.ratios()
            vs, lag_vs = f"{r50:.1f}x, {r95:.1f}x", f"{rlag:.1f}x"
            aim = "met" if p.meets_aim() else "not met"
        lines.append(
            f"| {p.name} | {_n(p.public_rps)} | {_n(p.public_requests)} | {_n(p.non_2xx)} |"
            f" {_n(p.reached_api)} | {p.p(0.5):.1f} ms | {p.p(0.95):.1f} ms | {vs} |"
            f" {len(p.operator_ms):,} ({p.operator_errors}) |"
            f" {lag[0]:.0f} ms | {lag[1]:.0f} ms | {lag_vs} | {aim} |"
        )
    met = [p.name for p in r["phases"] if p.flood and p.meets_aim()]
    unmet = [p.name for p in r["phases"] if p.flood and not p.meets_aim()]
    lines += [
        "",
        f"The aim is met in: {'; '.join(met) or 'no phase'}. Not met in:"
        f" {'; '.join(unmet) or 'no phase'}.",
        "",
        f"Where the CPU went in each phase (CPU seconds in its {c.phase_s:.0f} s; the machine"
        f" has {_cpus() * c.phase_s:.0f}): the load generator, the operators' `pusat api`,"
        " and what else served the public (the second `pusat api`, nginx's master and"
        " workers). Ingest, PostgreSQL, Mosquitto and the publishers are not counted here.",
        "",
        "| phase | wrk | operators' API | second API | nginx |",
        "|---|--:|--:|--:|--:|",
    ]
    for p in r["phases"]:
        cells = [p.cpu_s.get(k) for k in ("wrk", "operators' API", "second API", "nginx")]
        lines.append(
            f"| {p.name} | " + " | ".join("-" if x is None else f"{x:.1f}" for x in cells) + " |"
        )
    lines += ["", "### Lighthouse on /city", ""]
    lh = r["lighthouse"]
    if not any(lh.values()):
        lines.append("Not measured: no Lighthouse (see the module's docstring for the install).")
    else:
        v = next(x for x in lh.values() if x)
        lines += [
            f"Lighthouse {v['version']}, {v['form_factor']} preset (its default: a mid-range"
            " phone, throttled network and CPU), Debian's Chromium, against the same running"
            f" city ({r['districts']} districts) after the phases. Aims: performance and"
            " accessibility at least 95, page weight under 100 KB.",
            "",
            "| page | performance | accessibility | bytes transferred | first contentful paint"
            " | largest contentful paint | layout shift |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for code, x in lh.items():
            if x:
                lines.append(
                    f"| /city?lang={code} | {x['performance']} | {x['accessibility']} |"
                    f" {x['bytes']:,} | {x['fcp_ms']:.0f} ms | {x['lcp_ms']:.0f} ms |"
                    f" {x['cls']:.3f} |"
                )
    lines += ["", end, ""]
    return "\n".join(lines)


def _n(x: float | int | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _cpus() -> int:
    return os.cpu_count() or 0


def main(argv: list[str]) -> int:
    flags = [f for f in ("--quick", "--equal-client", "--write-results") if f in argv]
    unknown = [a for a in argv if a not in flags]
    if unknown:
        print(
            "usage: python -m bench.public [--quick] [--equal-client] [--write-results];"
            f" not {unknown}"
        )
        return 2
    command = " ".join(["python -m bench.public", *flags])
    config = QUICK if "--quick" in argv else Config()
    if "--equal-client" in argv:  # wrk at the server's own priority
        config = dataclasses.replace(config, client_nice=0)
    r = run(config)
    text = markdown(r, command)
    print(text)
    if "--write-results" in argv:
        results.replace_section(SECTION, text.rstrip("\n"), Path(results.RESULTS_FILE))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
