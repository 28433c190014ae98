"""Worker start-up and memory with a city's series known, without the 17-minute city run.

``pusat bench city`` ends by restarting the worker with every series known (510,001 at 100,000
sensors) and times it from spawn until a probe reading it was sent is stored; it also samples
the worker's RSS while the city streams. This benchmark reproduces both on their own: it fills
a fresh database of the migrated schema directly in SQL with what the city run leaves behind
(the city's sensors, provisioned, with their domains, districts and gateways; a series per
sensor and quantity; a `latest` row per series, ``--age`` seconds old, and an hourly rollup;
the `alert_state` rows a worker saves for rules that carry the last reading, as after the city's
stream: every rate and flatline pair; none for thresholds the city's smooth values never
approach), then spawns ``pusat ingest`` on it and measures (``--no-known``: the sensors only,
as the city run's first worker meets them):

- start-up: spawn until a probe reading published right after the spawn is stored (the city
  run's measure), and the phases the worker logs (kernels, alarm state);
- RSS (VmRSS) once the probe is stored, and after ``--stream`` seconds of the city's stream
  (``bench.city.spawn_publishers``: one SenML pack per gateway per second), with the peak
  (VmHWM).

``--compare DIR`` measures another checkout's code (its ``ingest``, ``store``, ``processing``...)
on the same database, in turn with this checkout's, back to back (``--rounds`` times each), so a
change can be judged on one machine under one load. ``--profile`` attaches py-spy to each
worker and keeps the raw samples of its start-up (``startup-profile-*.txt``). Run as
``python -m bench.startup``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import city as bc
from bench import ingest as bi
from processing import catalogue, rules
from processing.alerts import NONE

PROBE_SENSOR = "PROBE"  # bench.ingest.probe_worker's sensor, known as after the city run
SAMPLE_S = 5.0


@dataclass(frozen=True)
class Config:
    sensors: int = 100_000
    gateways: int = 1_000
    stream_s: int = 60  # seconds of the city's stream after start-up (0: none)
    age_s: float = 60.0  # how old the newest readings are when the worker starts
    known: bool = True  # False: the sensors only, as before the city run's first worker
    compare: tuple[str, ...] = ()  # other checkouts whose code is measured in turn
    rounds: int = 1
    profile: bool = False


@dataclass
class Measure:
    code: str  # what was measured (bench.ingest.snapshot_code's description)
    start_s: float  # spawn until the probe reading is stored
    phases: dict[str, float]  # seconds since spawn of what the worker logged
    rss_start_kib: int
    hwm_start_kib: int
    load_start: str
    rss_stream_kib: list[tuple[float, int]] = field(default_factory=list)  # (s, KiB)
    hwm_end_kib: int = 0
    published: int = 0
    profile: str = ""  # py-spy's raw samples of the start-up, when asked


def fill(url: str, sensors: list[bc.Sensor], age_s: float, known: bool = True) -> int:
    """The city's rows as a run of ``pusat bench city`` leaves them (``known``), or its
    sensors only, as the city run provisions them before its first worker starts; returns the
    series."""
    cat = catalogue.load()
    effective = rules.load(None)
    now = time.time()
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY sensors (sensor_id, gateway_id, domain, district, lat, lon, quantities,"
            " provisioned) FROM STDIN"
        ) as copy:
            for s in sensors:
                copy.write_row(
                    (
                        s.sensor_id,
                        s.gateway,
                        s.domain,
                        s.district,
                        2.90 + (s.index % 317) * 0.0002,
                        101.67 + (s.index % 211) * 0.0002,
                        [q for q, _, _ in s.quantities],
                        True,
                    )
                )
            copy.write_row((PROBE_SENSOR, "probe", None, None, None, None, ["flow"], False))
        if not known:
            return 0
        names = [q.name for q in cat.quantities]
        cur.execute(
            "INSERT INTO series (sensor_id, quantity, unit)"
            " SELECT s.sensor_id, q.quantity, u.unit"
            " FROM sensors s CROSS JOIN LATERAL unnest(s.quantities) WITH ORDINALITY"
            "   AS q(quantity, k)"
            " LEFT JOIN unnest(%s::text[], %s::text[]) AS u(quantity, unit) USING (quantity)"
            " ORDER BY s.sensor_id, q.k",
            (names, [q.unit for q in cat.quantities]),
        )
        # Each series' newest reading, ``age_s`` old give or take its period's spread.
        cur.execute(
            "INSERT INTO latest_data (series_id, ts, value, received_at)"
            " SELECT series_id, t, 1 + (series_id %% 97) * 0.25, t"
            " FROM (SELECT series_id, to_timestamp(%s - (series_id %% 30)) AS t FROM series) x",
            (now - age_s,),
        )
        # The hour of the stream in the hourly rollups (what the indices read at start).
        cur.execute(
            "INSERT INTO rollup_1h_data (bucket, series_id, count, sum, min, max, first_ts,"
            " first, last_ts, last)"
            " SELECT date_bin('1 hour', ts, timestamptz '2000-01-01'), series_id, 20,"
            " 20 * value, value, value, ts, value, ts, value FROM latest_data"
        )
        keys = [r.key for r in effective]
        cur.execute(
            "INSERT INTO alert_rules (key) SELECT unnest(%s::text[]) ON CONFLICT (key) DO NOTHING",
            (keys,),
        )
        for r in effective:
            if r.kind not in ("rate", "flatline"):
                continue
            if r.scope_kind is not None:
                raise bi.BenchError(f"rule {r.key}: scoped rules are not filled")
            # What the engine saves for a pair whose values keep changing: no run, the last
            # reading (``Alarms._state`` writes these pairs after every reading).
            cur.execute(
                "INSERT INTO alert_state (rule_id, series_id, active, run_start, last_ts,"
                " last_value)"
                " SELECT (SELECT rule_id FROM alert_rules WHERE key = %s), l.series_id, false,"
                " %s, (extract(epoch FROM l.ts) * 1000000)::bigint, l.value"
                " FROM latest_data l JOIN series s USING (series_id) WHERE s.quantity = %s",
                (r.key, NONE, r.quantity),
            )
        cur.execute("ANALYZE")
        row = cur.execute("SELECT count(*) FROM series").fetchone()
    return int(row[0]) if row else 0


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


_LOGGED = {
    "kernels": re.compile(r"processing kernels ready"),
    "alarms": re.compile(r"alarm state of .* loaded"),
}
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _phases(log: Path, spawned: float) -> dict[str, float]:
    """Seconds from spawn to each logged phase (the log's stamps are local time, ms)."""
    out: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if m is None:
            continue
        for name, pattern in _LOGGED.items():
            if name not in out and pattern.search(line):
                at = time.mktime(time.strptime(m[1][:19], "%Y-%m-%d %H:%M:%S"))
                out[name] = at + int(m[1][20:]) / 1000 - spawned
    return out


def measure(
    svc: bi.Services,
    url: str,
    config: Config,
    code: Path,
    described: str,
    log: Any = print,
) -> Measure:
    root, client_id = bi._ids("startup")
    bi.presubscribe(svc, client_id, [f"{root}/+/+"])
    env = svc.worker_env(url, root, client_id, {}, code)
    # In the snapshot's folder: ``python -m`` would import a checkout in the working folder first.
    worker = svc.spawn("pusat-ingest", bi.WORKER_ARGV, env, pipe=False, cwd=code)
    pid = worker.pid
    spy: subprocess.Popen[bytes] | None = None
    raw = Path.cwd() / f"startup-profile-{uuid.uuid4().hex[:6]}.txt"
    if config.profile:  # attached at once: the first moments of the interpreter are missed
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        argv = [binary, "record", "-f", "raw", "-r", "100", "-o", str(raw), "--pid", str(pid)]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bc._probe(svc, url, root, worker)
    start_s = time.time() - worker.spawned
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
        spy.wait(60)
    m = Measure(
        described,
        start_s,
        _phases(worker.log, worker.spawned),
        _status_kib(pid, "VmRSS"),
        _status_kib(pid, "VmHWM"),
        bc._loadavg(),
    )
    log(f"  started in {start_s:.1f} s, RSS {m.rss_start_kib / 1024:.0f} MiB, phases {m.phases}")
    if config.stream_s:
        already = bi._row_count(url)
        begin = int(time.time()) + 2
        publishers = bc.spawn_publishers(
            svc, root, config.sensors, config.gateways, begin, config.stream_s
        )
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(SAMPLE_S):
                m.rss_stream_kib.append((time.time() - begin, _status_kib(pid, "VmRSS")))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        outs = [p.finish(config.stream_s + 600) for p in publishers]
        m.published = sum(int(o["readings"]) for o in outs)
        bi.await_rows(url, already + m.published, 120 + m.published / 5000, "the stream", worker)
        stop.set()
        sampler.join()
        m.rss_stream_kib.append((time.time() - begin, _status_kib(pid, "VmRSS")))
        log(f"  after the stream: RSS {m.rss_stream_kib[-1][1] / 1024:.0f} MiB")
    m.hwm_end_kib = _status_kib(pid, "VmHWM")
    if worker.terminate() != 0:
        raise worker.failure("did not stop cleanly")
    if raw.exists():
        m.profile = str(raw)
    return m


def run(config: Config, log: Any = print) -> dict[str, Any]:
    sensors = bc.city(config.sensors, config.gateways)
    out: dict[str, Any] = {"config": asdict(config), "load_before": bc._loadavg(), "runs": []}
    with bi.services(log) as svc:
        codes = [(svc.work / "code", svc.code)]
        for k, other in enumerate(config.compare):
            dest = svc.work / f"code-{k}"
            described = bi.snapshot_code(dest, Path(other).resolve())
            bi.warm_kernels(dest)
            codes.insert(0, (dest, f"{other}: {described}"))

        def filled() -> str:
            url = svc.database(f"startup_{uuid.uuid4().hex[:8]}")
            t0 = time.monotonic()
            out["series"] = fill(url, sensors, config.age_s, config.known)
            log(f"filled {out['series']:,} series in {time.monotonic() - t0:.1f} s")
            return url

        url = filled()
        for _ in range(config.rounds):
            for code, described in codes:
                log(f"worker of {described}")
                out["runs"].append(asdict(measure(svc, url, config, code, described, log)))
                if not config.known:  # the next worker meets the sensors only too
                    url = filled()
    out["load_after"] = bc._loadavg()
    return out


def markdown(out: dict[str, Any]) -> str:
    lines = [
        f"{out['config']['sensors']:,} sensors, {out['series']:,} series; load average"
        f" {out['load_before']} before, {out['load_after']} after.",
        "",
        "| code | start-up s | kernels s | alarms s | RSS at start MiB | peak at start MiB"
        " | RSS after stream MiB | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in out["runs"]:
        ph = r["phases"]
        after = r["rss_stream_kib"][-1][1] / 1024 if r["rss_stream_kib"] else float("nan")
        lines.append(
            f"| {r['code']} | {r['start_s']:.1f} | {ph.get('kernels', float('nan')):.1f}"
            f" | {ph.get('alarms', float('nan')):.1f} | {r['rss_start_kib'] / 1024:.0f}"
            f" | {r['hwm_start_kib'] / 1024:.0f} | {after:.0f} | {r['hwm_end_kib'] / 1024:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sensors", type=int, default=Config.sensors)
    ap.add_argument("--gateways", type=int, default=Config.gateways)
    ap.add_argument("--stream", type=int, default=Config.stream_s, help="seconds (0: none)")
    ap.add_argument("--age", type=float, default=Config.age_s, help="age of the newest readings")
    ap.add_argument(
        "--no-known",
        dest="known",
        action="store_false",
        help="sensors only: the worker registers every series from the stream",
    )
    ap.add_argument("--compare", action="append", default=[], help="another checkout's root")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="py-spy raw samples of each worker")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    a = ap.parse_args(argv)
    config = Config(
        a.sensors, a.gateways, a.stream, a.age, a.known, tuple(a.compare), a.rounds, a.profile
    )
    out = run(config)
    print(markdown(out))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
