"""The ingest benchmark: Pusat's worker side by side with its baselines, in one run.

Every figure comes from one run on this machine, through a real Mosquitto and a real PostgreSQL
that the benchmark starts in a temp dir on free loopback ports (``pusat.embedded``) and stops at
the end, also on failure. The database is durable (fsync and synchronous commit on, as in
production) and keeps commit timestamps (``track_commit_timestamp``).

1. One-reading messages (native JSON on ``<root>/<gw>/json``, QoS 1). The broker is pre-loaded:
   each consumer's persistent session (fixed client id, clean_start=False, session expiry)
   subscribes and disconnects, a publisher process publishes N messages which the broker queues,
   then the consumer starts as a subprocess. Rate = readings / (first message received -> last
   reading committed or counted). Consumers:

   - ``pusat``: Pusat's worker, ``python -m pusat ingest``;
   - ``naive``: a paho MQTT 5 subscriber that INSERTs each reading and commits per message, into
     ``reading_data``/``series`` of a fresh database of the same schema;
   - ``counter``: a paho MQTT 5 subscriber that only counts messages.

   The concurrent variant runs the consumer while the publisher publishes (publisher-bound).
2. SenML packs of 100 readings (``<root>/<gw>/senml``), pre-loaded the same way, against one
   binary COPY (``store.copybin``) of as many fresh rows into ``reading_data`` of a fresh database.
3. Latency: packs of 100 readings published at a steady rate for some seconds while the worker
   runs; per reading, ``pg_xact_commit_timestamp(xmin) - ts`` where ``ts`` is the event time the
   publisher stamped when publishing. Also the worker's peak memory (VmHWM).

Event times are fresh, as from live gateways: each stream ends a second before it is published,
and values follow a smooth curve, so that no default alert rule fires (readings an hour old would
make every sensor stale and measure the alarm path of a backlog replay instead).

Received times are the consumers' own (``received_at``, set when the MQTT callback saw the
message), commit times PostgreSQL's: no figure depends on how often the benchmark polls.
Children run as ``python -m bench.ingest publish|count|naive SPEC`` and print JSON lines.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from psycopg import sql
from rich.console import Console, JustifyMethod
from rich.table import Table

from bench import results
from ingest import topics
from pusat.embedded import timescale
from pusat.embedded.broker import Broker, start_broker
from pusat.embedded.postgres import Postgres, start_postgres
from pusat.settings import Settings
from store import copybin

T = TypeVar("T")

SECTION_BEGIN, SECTION_END = results.markers("ingest")

SENSORS = 200  # distinct sensors (series) in every phase
GATEWAYS = 5
PACK_SIZE = 100
ALARM_EVERY = 50  # in the alarm-latency phase, one pack in this many raises an alarm
ALARM_RULE = "water_level:threshold-above:critical"
SESSION_EXPIRY_S = 3600
# The baselines get the same MQTT window as the worker: its Receive Maximum.
RECEIVE_MAXIMUM: int = Settings.model_fields["receive_maximum"].default
PUBLISH_INFLIGHT = 20  # Mosquitto's default Receive Maximum, which pusat.embedded keeps
PUBLISH_WINDOW = 20_000  # unacknowledged publishes at most (paho's packet ids are 16-bit)
TEMPLATE_DB = "bench_template"
JSON_SPACING_S = 0.0005  # event times of consecutive one-reading messages
PACK_SPACING_S = 0.01  # SenML: between packs, and between the records of a pack:
RECORD_SPACING_S = 0.0001  # PACK_SIZE * RECORD_SPACING_S <= PACK_SPACING_S keeps times distinct
# Copied at the start of a run; every child imports them from the copy (PYTHONPATH), so the
# code measured is the code the run started with even while the working tree changes.
WORKER_ARGV = [sys.executable, "-m", "pusat", "ingest", "--log-level", "INFO"]
CODE_UNDER_TEST = ("ingest", "store", "processing", "pusat", "api", "simulators")

# Aims of the issue; reported as met or not, never asserted.
AIM_VS_NAIVE = 20.0
AIM_VS_COUNTER = 0.70
AIM_VS_COPY = 0.50
AIM_P99_MS = 500.0


class BenchError(RuntimeError):
    """The benchmark could not measure (a server, a child or a phase failed or timed out)."""


# -- configuration and results ----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    messages: int = 100_000  # one-reading messages for Pusat and the counter
    naive_messages: int = 10_000  # fewer for the naive ingestor: it is slow by design
    packs: int = 5_000  # SenML packs of PACK_SIZE readings
    latency_seconds: float = 25.0
    latency_rate: int = 5_000  # readings/s during the latency phase
    concurrent: bool = True
    trials: int = 3  # of each pre-loaded Pusat/baseline pair, interleaved; the median is reported
    timescaledb: bool = True  # also the SenML phase on TimescaleDB, when its root is built

    def scaled(self, messages: int) -> Config:
        """This run scaled on the number of one-reading messages."""
        if messages < 100:
            raise ValueError("use at least 100 messages")
        return replace(
            self,
            messages=messages,
            naive_messages=max(100, messages // 10),
            packs=max(10, messages // 20),
        )

    @classmethod
    def quick(cls) -> Config:
        """A small run (well under a minute) that exercises every phase."""
        return cls(messages=4000, naive_messages=400, packs=200, latency_seconds=3.0, trials=1)


@dataclass(frozen=True)
class Machine:
    cpus: int
    memory_gib: float
    cpu_model: str
    python: str
    postgresql: str
    mosquitto: str
    date: str
    command: str
    code: str

    @classmethod
    def describe(cls, postgresql: str, mosquitto: str, command: str, code: str) -> Machine:
        return cls(
            cpus=len(os.sched_getaffinity(0)),
            memory_gib=_meminfo_kib("MemTotal") / 2**20,
            cpu_model=_cpu_model(),
            python=platform.python_version(),
            postgresql=postgresql,
            mosquitto=mosquitto,
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            command=command,
            code=code,
        )


@dataclass(frozen=True)
class Throughput:
    """Readings moved in ``seconds``: from the first message received (or the start, for COPY)
    to the last reading committed (or counted)."""

    name: str
    readings: int
    messages: int
    seconds: float
    wall_seconds: float | None = None  # from the consumer's spawn, interpreter start included
    peak_rss_kib: int | None = None
    trials: tuple[float, ...] = ()  # rates of every trial, when this is the median of several
    alerts: int | None = None  # rows in `alerts` after a Pusat run (the data should raise none)

    @property
    def rate(self) -> float:
        return self.readings / self.seconds


@dataclass(frozen=True)
class Latency:
    """Publish -> commit per reading at a steady publish rate."""

    form: str
    readings: int
    publish_seconds: float
    target_rate: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    peak_rss_kib: int
    alerts: int | None = None

    @property
    def achieved_rate(self) -> float:
        return self.readings / self.publish_seconds


@dataclass(frozen=True)
class Aim:
    what: str
    measured: float
    target: float
    higher_is_better: bool
    unit: str  # "x", "%" or "ms"

    @property
    def met(self) -> bool:
        return (
            self.measured >= self.target if self.higher_is_better else self.measured < self.target
        )

    def show(self, value: float) -> str:
        if self.unit == "%":
            return f"{value * 100:.0f}%"
        if self.unit == "x":
            return f"{value:.1f}x"
        return f"{value:.0f} ms"


@dataclass(frozen=True)
class Result:
    config: Config
    machine: Machine
    publisher: Throughput  # the pre-load publisher, for context
    pusat_json: Throughput
    naive_json: Throughput
    counter_json: Throughput
    senml_pusat: Throughput
    senml_copy: Throughput
    latency: Latency
    pusat_concurrent: Throughput | None = None
    counter_concurrent: Throughput | None = None
    timescaledb: str | None = None  # its versions, when the TimescaleDB rows were measured
    ts_senml_pusat: Throughput | None = None
    ts_senml_copy: Throughput | None = None

    def throughputs(self) -> list[Throughput]:
        found = [
            self.publisher,
            self.pusat_json,
            self.naive_json,
            self.counter_json,
            self.senml_pusat,
            self.senml_copy,
        ]
        found += [
            t
            for t in (
                self.pusat_concurrent,
                self.counter_concurrent,
                self.ts_senml_pusat,
                self.ts_senml_copy,
            )
            if t is not None
        ]
        return found

    def aims(self) -> list[Aim]:
        return [
            Aim(
                "Pusat vs naive ingestor, one-reading messages",
                self.pusat_json.rate / self.naive_json.rate,
                AIM_VS_NAIVE,
                True,
                "x",
            ),
            Aim(
                "Pusat vs do-nothing subscriber, one-reading messages",
                self.pusat_json.rate / self.counter_json.rate,
                AIM_VS_COUNTER,
                True,
                "%",
            ),
            Aim(
                "Pusat vs raw binary COPY, SenML packs of 100",
                self.senml_pusat.rate / self.senml_copy.rate,
                AIM_VS_COPY,
                True,
                "%",
            ),
            Aim(
                f"p99 publish-to-commit at {self.latency.target_rate:,} readings/s",
                self.latency.p99_ms,
                AIM_P99_MS,
                False,
                "ms",
            ),
        ]


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"{key} not found in /proc/meminfo")


def snapshot_code(dest: Path, root: Path | None = None) -> str:
    """Copy the packages under test (of this checkout, or of ``root``) to ``dest``; returns what
    was copied: the commit, whether the copied folders had uncommitted changes, and a
    fingerprint of the copied files."""
    root = root or Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    packages = [name for name in CODE_UNDER_TEST if (root / name / "__init__.py").exists()]
    for name in packages:
        shutil.copytree(
            root / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for path in sorted(dest.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    env = os.environ | {"GIT_OPTIONAL_LOCKS": "0"}  # read-only: not even the index is touched

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            env=env,
        ).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--", *packages).splitlines()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "unknown commit (no git)", []
    changes = f" + uncommitted changes in {len(dirty)} files" if dirty else ""
    return f"{head}{changes} (snapshot {digest.hexdigest()[:12]})"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# -- payloads -----------------------------------------------------------------------------------


def flow(x: float) -> float:
    """A smooth, never flat traffic flow (veh/h) at phase ``x``: no alert rule should fire."""
    return round(1000.0 + 400.0 * math.sin(x), 2)


def json_message(root: str, i: int, t0: float) -> tuple[str, bytes]:
    """Message ``i`` of a one-reading stream: its own event time, one of SENSORS sensors."""
    ts = t0 + i * JSON_SPACING_S
    doc = {"sensor": f"K-{i % SENSORS}", "ts": ts, "values": {"flow": flow(i * 1e-3)}}
    return f"{root}/gw-{i % GATEWAYS}/json", orjson.dumps(doc)


def senml_pack(sensor: str, bt: float, step: float, phase: float) -> bytes:
    """A SenML pack of PACK_SIZE flow readings of one sensor, ``step`` seconds apart."""
    records: list[dict[str, Any]] = [
        {"bn": f"{sensor}:", "bt": bt, "n": "flow", "u": "veh/h", "v": flow(phase)}
    ]
    records += [
        {"n": "flow", "u": "veh/h", "t": round(j * step, 6), "v": flow(phase + j * 1e-3)}
        for j in range(1, PACK_SIZE)
    ]
    return orjson.dumps(records)


def alarm_pack(sensor: str, bt: float) -> bytes:
    """A pack of PACK_SIZE readings whose last is a wetland level past the flood mark: the
    default critical rule (`water_level` above 3.0 m, no minimum duration) raises at once."""
    records: list[dict[str, Any]] = [
        {"bn": f"{sensor}:", "bt": bt, "n": "flow", "u": "veh/h", "v": flow(0.0)}
    ]
    records += [
        {"n": "flow", "u": "veh/h", "t": round(j * 0.00001, 6), "v": flow(j * 1e-3)}
        for j in range(1, PACK_SIZE - 1)
    ]
    records.append({"n": "water_level", "u": "m", "v": 3.5, "t": 0.00099})
    return orjson.dumps(records)


def senml_times(
    t0: float, p: npt.NDArray[np.int64], j: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Event times (Unix microseconds) of record ``j`` of pack ``p``, as in senml_message."""
    return np.round((t0 + p * PACK_SPACING_S + j * RECORD_SPACING_S) * 1e6).astype(np.int64)


def senml_message(root: str, p: int, t0: float) -> tuple[str, bytes]:
    """Pack ``p`` of a stream; event times distinct across the whole stream."""
    bt = t0 + p * PACK_SPACING_S
    pack = senml_pack(f"S-{p % SENSORS}", bt, RECORD_SPACING_S, p * 0.1)
    return f"{root}/gw-{p % GATEWAYS}/senml", pack


def stream_start(count: int, spacing_s: float) -> float:
    """Event time of a stream's first reading so that its last is a second before now.

    Fresh event times, as from live gateways: hour-old ones would make every sensor stale and
    measure the alarm path of a backlog instead (see the module's docstring).
    """
    return time.time() - count * spacing_s - 1.0


# -- children: publisher, do-nothing counter, naive ingestor ----------------------------------


@dataclass(frozen=True)
class PublishSpec:
    host: str
    port: int
    root: str
    form: str  # "json", "senml": a burst of messages; "live", "alarms": paced SenML packs
    count: int  # messages
    t0: float = 0.0  # event time base of a burst
    rate: float = 0.0  # messages/s when paced
    timeout_s: float = 120.0


@dataclass(frozen=True)
class ConsumeSpec:
    host: str
    port: int
    client_id: str
    filters: list[str]
    expected: int  # messages
    timeout_s: float
    database_url: str = ""  # the naive ingestor's


def _client(client_id: str) -> Any:
    return mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )


def _session_props(receive_maximum: int | None = None) -> Any:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props


def _emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _publish(spec: PublishSpec) -> None:
    """Publish at QoS 1 in a bounded window and wait for every PUBACK; paced when rate > 0."""
    c = _client(f"bench-pub-{uuid.uuid4().hex[:8]}")
    # paho cannot change its window once connected, and more in flight than the broker's Receive
    # Maximum only slows Mosquitto down (measured: 14.7k msg/s at 20, 9.5k at 1000).
    c.max_inflight_messages_set(PUBLISH_INFLIGHT)
    connack: dict[str, int] = {}
    connected = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        connack["receive_maximum"] = getattr(props, "ReceiveMaximum", 65535)
        connected.set()

    c.on_connect = on_connect
    c.connect(spec.host, spec.port, keepalive=60)
    c.loop_start()
    try:
        if not connected.wait(10):
            raise BenchError("publisher: no CONNACK within 10 s")
        if connack["receive_maximum"] < PUBLISH_INFLIGHT:
            raise BenchError(f"publisher: the broker allows only {connack} in flight")
        if spec.form in ("live", "alarms"):
            messages: Sequence[tuple[str, bytes]] = []
        elif spec.form == "json":
            messages = [json_message(spec.root, i, spec.t0) for i in range(spec.count)]
        elif spec.form == "senml":
            messages = [senml_message(spec.root, p, spec.t0) for p in range(spec.count)]
        else:
            raise BenchError(f"unknown publish form {spec.form!r}")
        pending: deque[Any] = deque()
        deadline = time.monotonic() + spec.timeout_s

        def settle(keep: int) -> None:
            while len(pending) > keep:
                info = pending.popleft()
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                if not info.is_published():
                    raise BenchError(f"publisher: no PUBACK within {spec.timeout_s} s")

        start = time.monotonic()
        first = time.time()
        for k in range(spec.count):
            if spec.form in ("live", "alarms"):
                delay = start + k / spec.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing a steady rate
                p = k
                topic = f"{spec.root}/gw-{p % GATEWAYS}/senml"
                # Event time = now: latency is measured from here. 10 us apart within a pack.
                payload = senml_pack(f"L-{p % SENSORS}", time.time(), 0.00001, p * 0.1)
                if spec.form == "alarms" and p % ALARM_EVERY == ALARM_EVERY // 2:
                    payload = alarm_pack(f"L-A{p}", time.time())
            else:
                topic, payload = messages[k]
            pending.append(c.publish(topic, payload, qos=1))
            settle(PUBLISH_WINDOW)
        settle(0)
        _emit(published=spec.count, first=first, done=time.time())
    finally:
        c.disconnect()
        c.loop_stop()


class _Tally:
    """What a subscriber saw: how many messages, and when the first and the last arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = threading.Event()

    def saw(self, at: float) -> None:
        if self.count == 0:
            self.first = at
        self.count += 1
        self.last = at
        if self.count >= self.expected:
            self.done.set()


def _consume(spec: ConsumeSpec, handle: Callable[[str, bytes, float], None] | None) -> None:
    """Subscribe with a persistent session and run ``handle`` on every message, in the network
    thread, then acknowledge (paho acks QoS 1 when the callback returns)."""
    tally = _Tally(spec.expected)
    subscribed = threading.Event()
    refused: list[str] = []
    c = _client(spec.client_id)

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(f"connect refused: {reason}")
            subscribed.set()
            return
        client.subscribe([(f, SubscribeOptions(qos=1)) for f in spec.filters])

    def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        refused.extend(str(r) for r in reasons if r.is_failure)
        subscribed.set()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        at = time.time()
        # A pre-loaded session delivers its queue before the SUBACK, which then waits behind
        # every slow `handle` call: a delivered message shows the session is live as well.
        subscribed.set()
        if handle is not None:
            handle(msg.topic, msg.payload, at)
        tally.saw(time.time() if handle is not None else at)

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect(
        spec.host,
        spec.port,
        keepalive=60,
        clean_start=False,
        properties=_session_props(RECEIVE_MAXIMUM),
    )
    c.loop_start()
    try:
        if not subscribed.wait(10) or refused:
            raise BenchError(f"subscriber: not subscribed within 10 s {refused}")
        _emit(ready=True)
        if not tally.done.wait(spec.timeout_s):
            raise BenchError(
                f"subscriber: {tally.count} of {spec.expected} messages in {spec.timeout_s} s"
            )
        _emit(count=tally.count, first=tally.first, done=tally.last)
    finally:
        c.disconnect()
        c.loop_stop()


class _NaiveIngestor:
    """The per-message ingestor users write first: one INSERT and one commit per message."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, application_name="bench-naive")
        self.series: dict[tuple[str, str], int] = {}

    def series_id(self, sensor: str, quantity: str, gateway: str) -> int:
        key = (sensor, quantity)
        sid = self.series.get(key)
        if sid is None:
            self.conn.execute(
                "INSERT INTO sensors (sensor_id, gateway_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (sensor, gateway),
            )
            self.conn.execute(
                "INSERT INTO series (sensor_id, quantity) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                key,
            )
            row = self.conn.execute(
                "SELECT series_id FROM series WHERE sensor_id = %s AND quantity = %s", key
            ).fetchone()
            self.conn.commit()
            if row is None:
                raise BenchError(f"naive: series {key} not found after insert")
            sid = self.series[key] = int(row[0])
        return sid

    def __call__(self, topic: str, payload: bytes, received: float) -> None:
        doc = json.loads(payload)
        gateway = topic.split("/")[-2]
        ts = datetime.fromtimestamp(float(doc["ts"]), UTC)
        at = datetime.fromtimestamp(received, UTC)
        for quantity, value in doc["values"].items():
            self.conn.execute(
                "INSERT INTO reading_data (ts, series_id, value, received_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (ts, self.series_id(doc["sensor"], quantity, gateway), float(value), at),
            )
        self.conn.commit()


def child_main(argv: list[str]) -> int:
    """Entry of ``python -m bench.ingest ROLE SPEC_JSON``."""
    if len(argv) != 2:
        sys.stderr.write("usage: python -m bench.ingest publish|count|naive SPEC_JSON\n")
        return 2
    role, raw = argv
    try:
        if role == "publish":
            _publish(PublishSpec(**json.loads(raw)))
        elif role == "count":
            _consume(ConsumeSpec(**json.loads(raw)), None)
        elif role == "naive":
            spec = ConsumeSpec(**json.loads(raw))
            ingestor = _NaiveIngestor(spec.database_url)
            try:
                _consume(spec, ingestor)
            finally:
                ingestor.conn.close()
        else:
            sys.stderr.write(f"unknown role {role!r}\n")
            return 2
    except BenchError as e:
        sys.stderr.write(f"{role}: {e}\n")
        return 1
    return 0


# -- the parent: servers, children, waiting -----------------------------------------------------


def wait_until(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``condition`` until it returns a truthy value; BenchError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _clean_env(code_dir: Path) -> dict[str, str]:
    """Our environment without PUSAT_* settings (children get only what the benchmark sets),
    importing the code under test from the run's snapshot, and the benchmark itself (not under
    test) from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSAT_")}
    checkout = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(code_dir), checkout, env.get("PYTHONPATH")])
    )
    return env


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


class Child:
    """A subprocess of the benchmark; ``stop()`` ends it (SIGTERM, then SIGKILL) if it runs."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        pipe: bool,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self._log_file: IO[bytes] = log.open("ab")
        self._out = b""
        self.spawned = time.time()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe else self._log_file,
            stderr=self._log_file,
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def failure(self, what: str) -> BenchError:
        return BenchError(f"{self.name}: {what}\n--- tail of {self.log} ---\n{_tail(self.log)}")

    def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the child prints."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._out:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise self.failure(f"printed nothing within {timeout:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait(10)
                raise self.failure(f"exited with code {self.proc.returncode}")
            self._out += chunk
        line, self._out = self._out.split(b"\n", 1)
        doc: dict[str, Any] = json.loads(line)
        return doc

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for a successful exit and return its last JSON line."""
        doc = self.read(timeout)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            raise self.failure("did not exit after its result") from None
        if code != 0:
            raise self.failure(f"exited with code {code}")
        return doc

    def peak_rss_kib(self) -> int:
        """VmHWM: the largest resident set the process has had."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise BenchError(f"no VmHWM in /proc/{self.pid}/status")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the exit code (SIGKILL after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def stop(self) -> None:
        self.terminate(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()


class Services:
    """The servers of one run, the children and the temp dir; everything ends in ``close()``."""

    def __init__(
        self, stack: ExitStack, work: Path, code: str, pg: Postgres, broker: Broker
    ) -> None:
        self.stack = stack
        self.work = work
        self.code = code  # what snapshot_code copied
        self.env = _clean_env(work / "code")
        self.pg = pg
        self.broker = broker
        self.admin = {"postgresql": pg.url}  # admin URL of each tier's server, by tier
        self.host = "127.0.0.1"
        self.port = broker.port
        self._children = 0

    def database(self, name: str, tier: str = "postgresql") -> str:
        """A fresh database of the migrated schema, on the server of ``tier``."""
        admin = self.admin[tier]
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(TEMPLATE_DB)
                )
            )
        return psycopg.conninfo.make_conninfo(admin, dbname=name)

    def add_timescaledb(self, log: Callable[[str], None]) -> str | None:
        """Start a durable TimescaleDB (Apache edition) beside PostgreSQL with the same schema;
        its version, or None when its root is not built."""
        root = timescale.default_root()
        if not timescale.root_ready(root):
            log(f"no TimescaleDB root at {root}: the TimescaleDB rows are left out")
            return None
        ts = timescale.start_timescaledb(root, background_workers=False, durable=True)
        self.stack.callback(ts.stop)
        with psycopg.connect(ts.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
            row = conn.execute("SHOW server_version").fetchone()
        template = psycopg.conninfo.make_conninfo(ts.url, dbname=TEMPLATE_DB)
        done = subprocess.run(
            [sys.executable, "-m", "pusat", "db", "upgrade"],
            env=self.env | {"PUSAT_DATABASE_URL": template},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"pusat db upgrade on TimescaleDB failed: {done.stderr}")
        with psycopg.connect(template, autocommit=True) as conn:
            ext = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
        self.admin["timescaledb"] = ts.url
        return f"PostgreSQL {row[0] if row else '?'}, TimescaleDB {ext[0] if ext else '?'}"

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str], pipe: bool, cwd: Path | None = None
    ) -> Child:
        """A child process, stopped at the end; ``cwd``: its working folder, which
        ``python -m`` puts first on its path (ahead of PYTHONPATH's snapshot). By default the
        run's own folder: from the checkout, a child would import the code as it is edited
        during the run, not the snapshot."""
        self._children += 1
        log = self.work / f"{self._children:02d}-{name}.log"
        child = Child(name, argv, env, log, pipe, cwd or self.work)
        self.stack.callback(child.stop)
        return child

    def bench_child(self, role: str, spec: PublishSpec | ConsumeSpec) -> Child:
        argv = [sys.executable, "-m", "bench.ingest", role, json.dumps(asdict(spec))]
        return self.spawn(role, argv, self.env, pipe=True)

    def worker(self, url: str, root: str, client_id: str, **settings: str) -> Child:
        """`pusat ingest` on this database and broker; ``settings`` adds `PUSAT_*` variables."""
        return self.spawn(
            "pusat-ingest", WORKER_ARGV, self.worker_env(url, root, client_id, settings), pipe=False
        )

    def worker_env(
        self,
        url: str,
        root: str,
        client_id: str,
        settings: dict[str, str],
        code: Path | None = None,
    ) -> dict[str, str]:
        """The environment of a worker (``worker``); ``code``: another snapshot of the code
        (``snapshot_code``) to run instead of this run's."""
        return (self.env if code is None else _clean_env(code)) | {
            "PUSAT_DATABASE_URL": url,
            "PUSAT_MQTT_URL": self.broker.url,
            "PUSAT_TOPIC_ROOT": root,
            "PUSAT_CLIENT_ID": client_id,
            "PUSAT_HOME": str(self.work / "home"),
            **settings,
        }

    def versions(self) -> tuple[str, str]:
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        postgresql = f"PostgreSQL {row[0] if row else '?'} ({self.pg.kind})"
        mosquitto = self.broker.kind
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
        if self.broker.kind == "mosquitto" and binary:
            out = subprocess.run(
                [binary, "-h"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
            found = re.search(r"mosquitto version (\S+)", out)
            mosquitto = f"Mosquitto {found[1] if found else '?'}"
        return postgresql, mosquitto


def _keep_logs(work: Path, log: Callable[[str], None]) -> Callable[..., bool]:
    """An exit callback: after a failed run, a copy of every process's log in a directory of its
    own (the run's is removed), so that the failure can be looked into."""

    def keep(exc_type: type[BaseException] | None, *_: object) -> bool:
        if exc_type is not None:
            dest = Path(tempfile.mkdtemp(prefix="pusat-bench-failed-"))
            for f in work.glob("*.log"):
                shutil.copy2(f, dest)
            log(f"the run failed: its logs are kept in {dest}")
        return False

    return keep


def warm_kernels(code: Path) -> None:
    """Compile processing's kernels into the numba cache of the snapshot in ``code`` once, as a
    first run after installing would: no measured worker then pays the compiler."""
    subprocess.run(
        [sys.executable, "-c", "from processing import kernels; kernels.warm()"],
        env=_clean_env(code),
        check=True,
        timeout=600,
    )


@contextmanager
def services(
    log: Callable[[str], None], server_settings: tuple[tuple[str, str], ...] = ()
) -> Iterator[Services]:
    """A durable PostgreSQL with commit timestamps and a Mosquitto, in a temp dir; stopped and
    removed on exit, also on failure (their logs are then kept elsewhere, and named).
    `server_settings`: (name, value) pairs set on the server too (ALTER SYSTEM), for an
    experiment; a name or value PostgreSQL refuses is a BenchError."""
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="pusat-bench-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        stack.push(_keep_logs(work, log))  # runs before the removal
        code = snapshot_code(work / "code")
        env = _clean_env(work / "code")
        warm_kernels(work / "code")
        log(f"starting PostgreSQL and Mosquitto in {work}")
        data_dir = work / "pg" / "data"
        pg = start_postgres(data_dir, durable=True)
        stack.callback(pg.stop)
        # track_commit_timestamp needs a restart; start_postgres has no option for it.
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
            for name, value in server_settings:
                try:
                    conn.execute(
                        sql.SQL("ALTER SYSTEM SET {} = {}").format(
                            sql.Identifier(name), sql.Literal(value)
                        )
                    )
                except psycopg.Error as e:
                    raise BenchError(f"server setting {name}={value}: {e}") from e
        pg.stop()
        pg = start_postgres(data_dir, pg.port, durable=True)
        stack.callback(pg.stop)
        with psycopg.connect(pg.url, autocommit=True) as conn:
            row = conn.execute("SHOW track_commit_timestamp").fetchone()
            if not row or row[0] != "on":
                raise BenchError("track_commit_timestamp did not turn on")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
        # The schema of the snapshot, applied by its own command.
        template = psycopg.conninfo.make_conninfo(pg.url, dbname=TEMPLATE_DB)
        upgrade = subprocess.run(
            [sys.executable, "-m", "pusat", "db", "upgrade", "--log-level", "WARNING"],
            env=env | {"PUSAT_DATABASE_URL": template, "PUSAT_HOME": str(work / "home")},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if upgrade.returncode != 0:
            raise BenchError(f"pusat db upgrade failed:\n{upgrade.stdout}{upgrade.stderr}")
        # A real Mosquitto only: the pip fallback broker would not measure the same thing.
        broker = start_broker(work / "mqtt", prefer="system")
        stack.callback(broker.stop)
        yield Services(stack, work, code, pg, broker)


def presubscribe(svc: Services, client_id: str, filters: list[str]) -> None:
    """Create a persistent session that holds the subscription, then disconnect: the broker
    queues what is published for it until the consumer connects with the same client id."""
    c = _client(client_id)
    connected = threading.Event()
    subscribed = threading.Event()
    refused: list[str] = []

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        refused.extend(str(r) for r in reasons if r.is_failure)
        subscribed.set()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.connect(svc.host, svc.port, clean_start=False, properties=_session_props())
    c.loop_start()
    try:
        if not connected.wait(10) or refused:
            raise BenchError(f"presubscribe {client_id}: not connected {refused}")
        c.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        if not subscribed.wait(10) or refused:
            raise BenchError(f"presubscribe {client_id}: not subscribed {refused}")
    finally:
        c.disconnect()
        c.loop_stop()


def publish(svc: Services, form: str, root: str, count: int, t0: float) -> Throughput:
    """Publish a burst from a separate process; returns its rate (messages, QoS 1 acked)."""
    spec = PublishSpec(svc.host, svc.port, root, form, count, t0, timeout_s=60 + count / 500)
    out = svc.bench_child("publish", spec).finish(spec.timeout_s + 30)
    per = PACK_SIZE if form == "senml" else 1
    return Throughput("publisher", count * per, count, out["done"] - out["first"])


def _row_count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM reading_data").fetchone()
    return int(row[0]) if row else 0


def await_rows(
    url: str, expected: int, timeout: float, what: str, child: Child | None = None
) -> None:
    """Wait until ``reading_data`` holds ``expected`` rows; fail early if ``child`` exits."""

    def done() -> bool:
        if child is not None and child.proc.poll() is not None:
            raise child.failure(f"exited with code {child.proc.returncode}")
        return _row_count(url) >= expected

    wait_until(done, timeout, f"{expected} rows of {what}")
    got = _row_count(url)
    if got != expected:
        raise BenchError(f"{what}: {got} rows stored, {expected} expected")


def stored_span(url: str) -> tuple[float, float]:
    """(first received_at, last commit time) over ``reading_data``, epoch seconds."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM min(received_at))::float8,"
            " extract(epoch FROM max(pg_xact_commit_timestamp(xmin)))::float8"
            " FROM reading_data"
        ).fetchone()
    if row is None or row[0] is None or row[1] is None:
        raise BenchError("no rows, or no commit timestamps (track_commit_timestamp off?)")
    return float(row[0]), float(row[1])


def alerts_raised(url: str) -> int | None:
    """Rows in the public `alerts` table, None when the schema has none."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('alerts') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return None
        found = conn.execute("SELECT count(*) FROM alerts").fetchone()
    return int(found[0]) if found else None


def _ids(tag: str) -> tuple[str, str]:
    """A unique topic root and client id for one phase."""
    u = uuid.uuid4().hex[:8]
    return f"bench-{tag}-{u}/v1", f"bench-{tag}-{u}"


def _consume_timeout(messages: int, floor_rate: float) -> float:
    return 60 + messages / floor_rate


def probe_worker(svc: Services, url: str, root: str, worker: Child, already: int = 0) -> None:
    """Publish one reading and wait until it is stored (after the ``already`` rows there):
    the worker is connected and writing."""
    c = _client(f"bench-probe-{uuid.uuid4().hex[:8]}")
    c.connect(svc.host, svc.port)
    c.loop_start()
    try:
        doc = {"sensor": "PROBE", "values": {"flow": 1}}
        info = c.publish(f"{root}/probe/json", orjson.dumps(doc), qos=1)
        info.wait_for_publish(10)
        if not info.is_published():
            raise BenchError("probe: no PUBACK within 10 s")
    finally:
        c.disconnect()
        c.loop_stop()
    await_rows(url, already + 1, 60, "the worker's probe", worker)


def run_pusat_preloaded(
    svc: Services, form: str, url: str, root: str, client_id: str, messages: int
) -> Throughput:
    """The worker on a session whose messages were queued before it started."""
    per = PACK_SIZE if form == "senml" else 1
    worker = svc.worker(url, root, client_id)
    await_rows(
        url, messages * per, _consume_timeout(messages * per, 1000), f"Pusat ({form})", worker
    )
    peak = worker.peak_rss_kib()
    if worker.terminate() != 0:
        raise BenchError(f"the worker exited with {worker.proc.returncode}: {_tail(worker.log)}")
    first, done = stored_span(url)
    return Throughput(
        "Pusat worker",
        messages * per,
        messages,
        done - first,
        wall_seconds=done - worker.spawned,
        peak_rss_kib=peak,
        alerts=alerts_raised(url),
    )


def run_counter(svc: Services, client_id: str, root: str, messages: int) -> Throughput:
    spec = ConsumeSpec(
        svc.host,
        svc.port,
        client_id,
        topics.subscriptions(root, None),
        messages,
        _consume_timeout(messages, 2000),
    )
    child = svc.bench_child("count", spec)
    child.read(30)  # ready
    out = child.finish(spec.timeout_s + 30)
    return Throughput(
        "do-nothing counter",
        out["count"],
        out["count"],
        out["done"] - out["first"],
        wall_seconds=out["done"] - child.spawned,
    )


def run_naive(svc: Services, url: str, client_id: str, root: str, messages: int) -> Throughput:
    spec = ConsumeSpec(
        svc.host,
        svc.port,
        client_id,
        topics.subscriptions(root, None),
        messages,
        _consume_timeout(messages, 50),
        database_url=url,
    )
    child = svc.bench_child("naive", spec)
    child.read(30)  # ready
    child.finish(spec.timeout_s + 30)
    await_rows(url, messages, 10, "the naive ingestor")
    first, done = stored_span(url)
    return Throughput(
        "naive ingestor",
        messages,
        messages,
        done - first,
        wall_seconds=done - child.spawned,
    )


def run_concurrent_pusat(svc: Services, messages: int, t0: float) -> Throughput:
    """Worker running and ready, then the publisher: first publish -> last commit."""
    url = svc.database("pusat_concurrent")
    root, client_id = _ids("cpusat")
    presubscribe(svc, client_id, topics.subscriptions(root, None))
    worker = svc.worker(url, root, client_id)
    probe_worker(svc, url, root, worker)
    spec = PublishSpec(
        svc.host, svc.port, root, "json", messages, t0, timeout_s=60 + messages / 500
    )
    out = svc.bench_child("publish", spec).finish(spec.timeout_s + 30)
    await_rows(url, messages + 1, _consume_timeout(messages, 1000), "Pusat (concurrent)", worker)
    peak = worker.peak_rss_kib()
    worker.terminate()
    _, done = stored_span(url)
    return Throughput(
        "Pusat worker",
        messages,
        messages,
        done - out["first"],
        peak_rss_kib=peak,
        alerts=alerts_raised(url),
    )


def run_concurrent_counter(svc: Services, messages: int, t0: float) -> Throughput:
    root, client_id = _ids("ccount")
    spec = ConsumeSpec(
        svc.host,
        svc.port,
        client_id,
        topics.subscriptions(root, None),
        messages,
        _consume_timeout(messages, 1000),
    )
    child = svc.bench_child("count", spec)
    child.read(30)  # subscribed
    pub = PublishSpec(svc.host, svc.port, root, "json", messages, t0, timeout_s=60 + messages / 500)
    published = svc.bench_child("publish", pub).finish(pub.timeout_s + 30)
    out = child.finish(spec.timeout_s + 30)
    return Throughput(
        "do-nothing counter",
        out["count"],
        out["count"],
        out["done"] - published["first"],
    )


def run_copy(
    svc: Services, packs: int, t0: float, database: str, tier: str = "postgresql"
) -> Throughput:
    """One binary COPY of as many rows as the SenML phase stored, same series and times."""
    url = svc.database(database, tier)
    n = packs * PACK_SIZE
    with psycopg.connect(url) as conn:
        sensors = [f"S-{k}" for k in range(SENSORS)]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO sensors (sensor_id, gateway_id) VALUES (%s, %s)",
                [(s, f"gw-{k % GATEWAYS}") for k, s in enumerate(sensors)],
            )
            ids: dict[str, int] = {}
            for s in sensors:
                cur.execute(
                    "INSERT INTO series (sensor_id, quantity, unit) VALUES (%s, 'flow', 'veh/h')"
                    " RETURNING series_id",
                    (s,),
                )
                row = cur.fetchone()
                assert row is not None
                ids[s] = row[0]
        conn.commit()
        p = np.repeat(np.arange(packs, dtype=np.int64), PACK_SIZE)
        j = np.tile(np.arange(PACK_SIZE, dtype=np.int64), packs)
        lookup = np.array([ids[s] for s in sensors], dtype=np.int32)
        series = lookup[p % SENSORS]
        ts_us = senml_times(t0, p, j)
        value = np.round(1000.0 + 400.0 * np.sin(p * 0.1 + j * 1e-3), 2)
        received_us = np.full(n, int(time.time() * 1e6), dtype=np.int64)
        start = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY reading_data (series_id, ts, value, received_at) FROM STDIN (FORMAT BINARY)"
            ) as cp,
        ):
            cp.write(copybin.readings(series, ts_us, value, received_us))
        conn.commit()
        seconds = time.perf_counter() - start
    if _row_count(url) != n:
        raise BenchError("COPY baseline: row count differs")
    return Throughput("raw binary COPY", n, 0, seconds)


def run_latency(svc: Services, seconds: float, readings_per_s: int) -> Latency:
    """SenML packs at a steady rate while the worker runs; latency per reading from commit
    timestamps."""
    url = svc.database("latency")
    root, client_id = _ids("latency")
    presubscribe(svc, client_id, topics.subscriptions(root, None))
    worker = svc.worker(url, root, client_id)
    probe_worker(svc, url, root, worker)
    rate = readings_per_s / PACK_SIZE
    count = max(1, round(rate * seconds))
    spec = PublishSpec(svc.host, svc.port, root, "live", count, rate=rate, timeout_s=seconds + 60)
    out = svc.bench_child("publish", spec).finish(spec.timeout_s + 30)
    readings = count * PACK_SIZE
    await_rows(url, readings + 1, 60, "the latency phase", worker)
    peak = worker.peak_rss_kib()
    worker.terminate()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY lat),"
            " percentile_cont(0.9) WITHIN GROUP (ORDER BY lat),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY lat), max(lat)"
            " FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(r.xmin) - r.ts)::float8"
            " AS lat FROM reading_data r JOIN series s USING (series_id)"
            " WHERE s.sensor_id LIKE 'L-%%') AS x"
        ).fetchone()
    if row is None or row[0] != readings:
        raise BenchError(f"latency phase: {row and row[0]} readings, {readings} expected")
    return Latency(
        form=f"SenML packs of {PACK_SIZE} at {rate:g} packs/s",
        readings=readings,
        publish_seconds=out["done"] - out["first"],
        target_rate=readings_per_s,
        p50_ms=row[1] * 1000,
        p90_ms=row[2] * 1000,
        p99_ms=row[3] * 1000,
        max_ms=row[4] * 1000,
        peak_rss_kib=peak,
        alerts=alerts_raised(url),
    )


@dataclass(frozen=True)
class AlarmLatency:
    """Publish -> committed alarm row, while readings flow at a steady rate."""

    readings_per_s: float
    seconds: float
    alarms: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def run_alarm_latency(svc: Services, seconds: float, readings_per_s: int) -> AlarmLatency:
    """Paced SenML packs, one in ALARM_EVERY raising an alarm at once; per alarm, the commit
    timestamp of its row minus the event time of the reading that raised it (its publish time)."""
    url = svc.database("alarms")
    root, client_id = _ids("alarms")
    presubscribe(svc, client_id, topics.subscriptions(root, None))
    worker = svc.worker(url, root, client_id)
    probe_worker(svc, url, root, worker)
    rate = readings_per_s / PACK_SIZE
    count = max(ALARM_EVERY, round(rate * seconds))
    spec = PublishSpec(svc.host, svc.port, root, "alarms", count, rate=rate, timeout_s=seconds + 60)
    out = svc.bench_child("publish", spec).finish(spec.timeout_s + 30)
    expected = sum(1 for p in range(count) if p % ALARM_EVERY == ALARM_EVERY // 2)
    await_rows(url, count * PACK_SIZE + 1, 60, "the alarm phase", worker)

    def alarms() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM alerts WHERE rule = %s", (ALARM_RULE,)
            ).fetchone()
        return int(row[0]) if row else 0

    wait_until(lambda: alarms() >= expected, 30, "every alarm row")
    worker.terminate()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY lat),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY lat), max(lat)"
            " FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - raised_at)::float8"
            " AS lat FROM alerts WHERE rule = %s) AS x",
            (ALARM_RULE,),
        ).fetchone()
    if row is None or row[0] != expected:
        raise BenchError(f"alarm phase: {row and row[0]} alarms, {expected} expected")
    return AlarmLatency(
        count * PACK_SIZE / (out["done"] - out["first"]),
        seconds,
        expected,
        row[1] * 1000,
        row[2] * 1000,
        row[3] * 1000,
    )


def median(runs: list[Throughput]) -> Throughput:
    """The run of median rate (the lower middle of an even count), carrying every trial's rate."""
    ordered = sorted(runs, key=lambda x: x.rate)
    middle = ordered[(len(ordered) - 1) // 2]
    return replace(middle, trials=tuple(x.rate for x in ordered) if len(runs) > 1 else ())


def run(config: Config, command: str = "", log: Callable[[str], None] | None = None) -> Result:
    """The whole benchmark; every server and child is stopped before it returns or raises."""
    say = log or (lambda message: None)
    with services(say) as svc:
        postgresql, mosquitto = svc.versions()
        machine = Machine.describe(postgresql, mosquitto, command, svc.code)

        trials = config.trials
        say(
            f"one-reading messages: pre-loading {config.messages:,} for {trials} Pusat and"
            f" {trials} counter sessions"
        )
        root, base_id = _ids("json")
        filters = topics.subscriptions(root, None)
        pusat_ids = [f"{base_id}-pusat-{k}" for k in range(trials)]
        counter_ids = [f"{base_id}-counter-{k}" for k in range(trials)]
        for client_id in pusat_ids + counter_ids:
            presubscribe(svc, client_id, filters)
        t0 = stream_start(config.messages, JSON_SPACING_S)
        publisher = publish(svc, "json", root, config.messages, t0)
        pusat_runs, counter_runs = [], []
        for k in range(trials):
            say(f"one-reading messages: Pusat worker, trial {k + 1} of {trials}")
            url = svc.database(f"pusat_json_{k}")
            pusat_runs.append(
                run_pusat_preloaded(svc, "json", url, root, pusat_ids[k], config.messages)
            )
            say(f"one-reading messages: do-nothing subscriber, trial {k + 1} of {trials}")
            counter_runs.append(run_counter(svc, counter_ids[k], root, config.messages))
        pusat_json, counter_json = median(pusat_runs), median(counter_runs)

        say(f"one-reading messages: naive ingestor ({config.naive_messages:,})")
        naive_url = svc.database("naive_json")
        naive_root, naive_id = _ids("naive")
        presubscribe(svc, naive_id, topics.subscriptions(naive_root, None))
        t0 = stream_start(config.naive_messages, JSON_SPACING_S)
        publish(svc, "json", naive_root, config.naive_messages, t0)
        naive_json = run_naive(svc, naive_url, naive_id, naive_root, config.naive_messages)

        pusat_concurrent = counter_concurrent = None
        if config.concurrent:
            say("one-reading messages, publishing concurrently: Pusat worker")
            t0 = stream_start(config.messages, JSON_SPACING_S)
            pusat_concurrent = run_concurrent_pusat(svc, config.messages, t0)
            say("one-reading messages, publishing concurrently: do-nothing subscriber")
            t0 = stream_start(config.messages, JSON_SPACING_S)
            counter_concurrent = run_concurrent_counter(svc, config.messages, t0)

        say(f"SenML packs: pre-loading {config.packs:,} packs of {PACK_SIZE}")
        senml_root, senml_base = _ids("senml")
        senml_ids = [f"{senml_base}-{k}" for k in range(trials)]
        for client_id in senml_ids:
            presubscribe(svc, client_id, topics.subscriptions(senml_root, None))
        t0 = stream_start(config.packs, PACK_SPACING_S)
        publish(svc, "senml", senml_root, config.packs, t0)
        senml_runs, copy_runs = [], []
        for k in range(trials):
            say(f"SenML packs: Pusat worker, trial {k + 1} of {trials}")
            url = svc.database(f"pusat_senml_{k}")
            senml_runs.append(
                run_pusat_preloaded(svc, "senml", url, senml_root, senml_ids[k], config.packs)
            )
            say(f"SenML packs: raw binary COPY, trial {k + 1} of {trials}")
            copy_runs.append(run_copy(svc, config.packs, t0, f"copy_{k}"))
        senml_pusat, senml_copy = median(senml_runs), median(copy_runs)

        ts_version = ts_pusat = ts_copy = None
        if config.timescaledb:
            say("SenML packs on TimescaleDB (Apache edition): starting it")
            ts_version = svc.add_timescaledb(say)
        if ts_version is not None:
            ts_ids = [f"{senml_base}-ts-{k}" for k in range(trials)]
            for client_id in ts_ids:
                presubscribe(svc, client_id, topics.subscriptions(senml_root, None))
            t0 = stream_start(config.packs, PACK_SPACING_S)
            publish(svc, "senml", senml_root, config.packs, t0)
            ts_runs, ts_copy_runs = [], []
            for k in range(trials):
                say(f"SenML packs on TimescaleDB: Pusat worker, trial {k + 1} of {trials}")
                url = svc.database(f"ts_senml_{k}", "timescaledb")
                ts_runs.append(
                    run_pusat_preloaded(svc, "senml", url, senml_root, ts_ids[k], config.packs)
                )
                say(f"SenML packs on TimescaleDB: raw binary COPY, trial {k + 1} of {trials}")
                ts_copy_runs.append(run_copy(svc, config.packs, t0, f"ts_copy_{k}", "timescaledb"))
            ts_pusat, ts_copy = median(ts_runs), median(ts_copy_runs)

        say(f"latency: {config.latency_rate:,} readings/s for {config.latency_seconds:g} s")
        latency = run_latency(svc, config.latency_seconds, config.latency_rate)
        say("stopping servers")
    return Result(
        config=config,
        machine=machine,
        publisher=publisher,
        pusat_json=pusat_json,
        naive_json=naive_json,
        counter_json=counter_json,
        senml_pusat=senml_pusat,
        senml_copy=senml_copy,
        latency=latency,
        pusat_concurrent=pusat_concurrent,
        counter_concurrent=counter_concurrent,
        timescaledb=ts_version,
        ts_senml_pusat=ts_pusat,
        ts_senml_copy=ts_copy,
    )


# -- reporting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    phase: str
    consumer: str
    readings: str
    seconds: str
    from_spawn: str
    rate: str
    trials: str
    versus: str
    peak_rss: str


def _default(setting: str) -> int:
    return int(Settings.model_fields[setting].default)


def _mib(kib: int | None) -> str:
    return "" if kib is None else f"{kib / 1024:.0f} MiB"


def _pct(a: float, b: float) -> str:
    return f"{a / b * 100:.0f}%"


def rows(r: Result) -> list[Row]:
    """Throughput figures: absolute numbers and the ratio to the baseline of the same run."""

    def row(phase: str, x: Throughput, versus: str) -> Row:
        return Row(
            phase,
            x.name,
            f"{x.readings:,}",
            f"{x.seconds:.2f}",
            "" if x.wall_seconds is None else f"{x.wall_seconds:.2f}",
            f"{x.rate:,.0f}",
            " / ".join(f"{t / 1000:.1f}k" for t in x.trials),
            versus,
            _mib(x.peak_rss_kib),
        )

    p, n, c = r.pusat_json, r.naive_json, r.counter_json
    out = [
        row(
            "1 JSON, pre-loaded",
            p,
            f"{p.rate / n.rate:.1f}x naive; {_pct(p.rate, c.rate)} of counter",
        ),
        row("", n, "baseline"),
        row("", c, f"baseline; {c.rate / n.rate:.1f}x naive"),
        row("", r.publisher, "pre-load, untimed"),
    ]
    if r.pusat_concurrent and r.counter_concurrent:
        pc, cc = r.pusat_concurrent, r.counter_concurrent
        out += [
            row("1b JSON, concurrent", pc, f"{_pct(pc.rate, cc.rate)} of counter"),
            row("", cc, "baseline"),
        ]
    s, k = r.senml_pusat, r.senml_copy
    out += [
        row(f"2 SenML, {PACK_SIZE}/pack", s, f"{_pct(s.rate, k.rate)} of COPY"),
        row("", k, "baseline"),
    ]
    if r.ts_senml_pusat and r.ts_senml_copy:
        ts, tk = r.ts_senml_pusat, r.ts_senml_copy
        out += [
            row(
                "2t SenML on TimescaleDB",
                ts,
                f"{_pct(ts.rate, tk.rate)} of its COPY; {_pct(ts.rate, s.rate)} of Pusat on"
                " PostgreSQL",
            ),
            row("", tk, f"baseline; {_pct(tk.rate, k.rate)} of COPY on PostgreSQL"),
        ]
    return out


def latency_items(r: Result) -> list[tuple[str, str]]:
    lat = r.latency
    return [
        ("published", lat.form),
        (
            "rate",
            f"{lat.achieved_rate:,.0f} readings/s achieved"
            f" ({_pct(lat.achieved_rate, lat.target_rate)} of {lat.target_rate:,})",
        ),
        ("readings", f"{lat.readings:,} over {lat.publish_seconds:.1f} s"),
        ("p50", f"{lat.p50_ms:.0f} ms"),
        ("p90", f"{lat.p90_ms:.0f} ms"),
        ("p99", f"{lat.p99_ms:.0f} ms ({lat.p99_ms / AIM_P99_MS * 100:.0f}% of the 500 ms aim)"),
        ("max", f"{lat.max_ms:.0f} ms"),
        ("worker peak RSS", f"{_mib(lat.peak_rss_kib)} (VmHWM)"),
    ]


def aim_items(r: Result) -> list[tuple[str, str, str, str]]:
    return [
        (
            a.what,
            a.show(a.measured),
            f"{'>=' if a.higher_is_better else '<'} {a.show(a.target)}",
            "met" if a.met else "NOT met",
        )
        for a in r.aims()
    ]


ROW_HEADERS: tuple[tuple[str, JustifyMethod], ...] = (
    ("phase", "left"),
    ("consumer", "left"),
    ("readings", "right"),
    ("seconds", "right"),
    ("from spawn", "right"),
    ("readings/s", "right"),
    ("trials", "right"),
    ("vs baseline (same run)", "left"),
    ("peak RSS", "right"),
)


def tables(r: Result) -> list[Table]:
    figures = Table(title="Ingest throughput (seconds: first message received -> last committed)")
    for name, justify in ROW_HEADERS:
        figures.add_column(name, justify=justify)
    for x in rows(r):
        figures.add_row(
            x.phase,
            x.consumer,
            x.readings,
            x.seconds,
            x.from_spawn,
            x.rate,
            x.trials,
            x.versus,
            x.peak_rss,
        )
    latency = Table(title="Publish-to-commit latency (PostgreSQL commit timestamps)")
    latency.add_column("")
    latency.add_column("")
    for label, value in latency_items(r):
        latency.add_row(label, value)
    aims = Table(title="Aims")
    for name in ("aim", "measured", "target", ""):
        aims.add_column(name)
    for what, measured, target, met in aim_items(r):
        aims.add_row(what, measured, target, met, style="green" if met == "met" else "red")
    return [figures, latency, aims]


def alerts_note(r: Result) -> str:
    counts = [x.alerts for x in r.throughputs() if x.name == "Pusat worker"] + [r.latency.alerts]
    if any(c is None for c in counts):
        return "Alerts raised in Pusat's databases: not counted (no `alerts` table)"
    total = sum(c or 0 for c in counts)
    return f"Alerts raised in Pusat's databases: {total} (the data should raise none)"


def print_result(r: Result, console: Console | None = None) -> None:
    console = console or Console()
    for t in tables(r):
        console.print(t)
    console.print(alerts_note(r))
    m = r.machine
    console.print(
        f"{m.cpus} CPUs ({m.cpu_model}), {m.memory_gib:.1f} GiB, Python {m.python},"
        f" {m.postgresql}, {m.mosquitto}, {m.date}; code at {m.code}"
    )


def markdown(r: Result) -> str:
    """The RESULTS.md section of this run, between its markers."""
    m, c = r.machine, r.config
    lines = [
        SECTION_BEGIN,
        "## Ingest (`pusat bench ingest`)",
        "",
        f"Measured {m.date} with `{m.command}`, code at {m.code}: every process of the run"
        " imported Pusat from a copy of its packages taken at the start, whose compiled"
        " processing kernels were cached (as after a first run) before any timing.",
        "",
        f"Machine: {m.cpus} CPUs (`nproc`; {m.cpu_model}), {m.memory_gib:.1f} GiB memory,"
        f" Python {m.python}, {m.postgresql}, {m.mosquitto}; everything on loopback, started by"
        " the benchmark. The database is durable (fsync and synchronous commit on) with"
        " `track_commit_timestamp = on`; the worker runs with its default settings (batches of up"
        f" to {_default('batch_size'):,} readings or {_default('batch_ms')} ms, Receive Maximum"
        f" {_default('receive_maximum'):,}, which the baselines get too)."
        + (
            f" TimescaleDB rows: {r.timescaledb} (Apache edition, chrooted Debian 13 packages),"
            " also durable, `reading_data` a hypertable of 1-day chunks."
            if r.timescaledb
            else ""
        ),
        "",
        f"Sizes: {c.messages:,} one-reading messages for Pusat and the counter,"
        f" {c.naive_messages:,} for the naive ingestor, {c.packs:,} SenML packs of {PACK_SIZE}"
        f" ({c.packs * PACK_SIZE:,} readings) and as many rows for COPY, latency for"
        f" {c.latency_seconds:g} s at {c.latency_rate:,} readings/s; {SENSORS} sensors."
        + (
            f" The pre-loaded Pusat/baseline pairs ran {c.trials} times, interleaved; each row"
            " shows the trial of median rate, *trials* every trial's rate."
            if c.trials > 1
            else ""
        ),
        "",
        "Consumers: Pusat's worker (`python -m pusat ingest`); the naive ingestor, a paho MQTT 5"
        " subscriber that INSERTs each reading and commits per message into the same schema; the"
        " counter, a paho MQTT 5 subscriber that only counts messages; each a subprocess."
        " Pre-loaded: the broker queued every message (QoS 1) for the consumer's persistent"
        " session before the consumer started. Seconds run from the first message the consumer"
        " received (its `received_at`) to the last reading committed"
        " (`pg_xact_commit_timestamp(xmin)`) or counted; *from spawn* adds the process start."
        " Concurrent: the consumer runs and a publisher process (paho, QoS 1) publishes at the same"
        " time; seconds from the first publish, so the publisher bounds both rates. COPY: one"
        " binary COPY (`store.copybin`) of fresh rows into `reading_data` (with its primary key)"
        " of a fresh database, buffer building included. Event times are fresh (each stream ends a"
        " second before it is published) and flow values follow a smooth curve, as from live"
        " gateways, so no alert rule fires.",
        "",
        "| " + " | ".join(name for name, _ in ROW_HEADERS) + " |",
        "|" + "|".join("---" if j == "left" else "--:" for _, j in ROW_HEADERS) + "|",
    ]
    for x in rows(r):
        lines.append(
            f"| {x.phase} | {x.consumer} | {x.readings} | {x.seconds} | {x.from_spawn}"
            f" | {x.rate} | {x.trials} | {x.versus} | {x.peak_rss} |"
        )
    lines += [
        "",
        "Latency: packs published at a steady rate (each stamped with the time of publishing as"
        " its event time) while the worker runs; per reading, commit timestamp minus event time.",
        "",
        "| latency | |",
        "|---|---|",
    ]
    lines += [f"| {label} | {value} |" for label, value in latency_items(r)]
    lines += ["", alerts_note(r) + ".", "", "| aim | measured | target | |", "|---|--:|--:|---|"]
    lines += [f"| {w} | {v} | {t} | {met} |" for w, v, t, met in aim_items(r)]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def write_results(r: Result, path: Path = results.RESULTS_FILE, notes: str = "") -> None:
    """Replace this benchmark's section of ``path``; ``notes`` (markdown) go at its end."""
    section = markdown(r)
    if notes:
        section = section.replace(SECTION_END, "\n" + notes.strip() + "\n" + SECTION_END)
    results.replace_section("ingest", section, path)


def figures_are_sane(r: Result) -> list[str]:
    """Problems with the figures (not speed targets): empty when every row is positive, finite."""
    problems = []
    for x in r.throughputs():
        if x.readings <= 0 or not (math.isfinite(x.seconds) and x.seconds > 0):
            problems.append(f"{x.name}: {x.readings} readings in {x.seconds} s")
    lat = r.latency
    values = [lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.max_ms]
    if not all(math.isfinite(v) and v > 0 for v in values) or values != sorted(values):
        problems.append(f"latency percentiles: {values}")
    if lat.peak_rss_kib <= 0 or lat.readings <= 0:
        problems.append(f"latency phase: {lat.readings} readings, {lat.peak_rss_kib} KiB")
    return problems


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
