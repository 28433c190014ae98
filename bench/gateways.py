"""The gateway benchmark: LoRaWAN uplinks and Sparkplug B data against SenML, in one run.

The same servers and the same measurement as ``bench/ingest.py`` (a durable PostgreSQL with
commit timestamps and a Mosquitto started in a temp dir; the code under test snapshotted first):
for each phase a persistent session subscribes and disconnects, the broker is pre-loaded with
every message (QoS 1), then ``pusat ingest`` starts on that session and a fresh database. Rate =
readings or messages / (first message received -> last reading committed).

1. ``senml-1``: SenML packs of one reading (``<root>/<gw>/senml``), the SenML one-reading rate.
2. ``chirpstack`` and ``tts``: ChirpStack v4 and The Things Stack v3 uplinks of one decoded field
   (the shape of the servers' documented examples), through a mapping file each; every uplink
   stores five readings (the field, rssi, snr, rx_gateways, f_cnt). Rate in uplinks/s.
3. ``senml-100``: SenML packs of 100 readings, the SenML pack rate per reading; and
   ``senml-mixed``, packs of one reading each of 100 quantities: the series shape of a
   Sparkplug device's DDATA (100 series per message instead of one), to tell the cost of the
   shape from the cost of the dialect.
4. ``sparkplug``: edge nodes with one device each; NBIRTH and DBIRTH of 100 metrics, then DDATA
   of those 100 metrics by alias only, seq in order. Rate in metrics (readings) per second.

Aims (issue 16), reported as met or not: uplinks/s >= 50 % of the SenML one-reading messages/s;
Sparkplug DDATA metrics/s >= 50 % of the SenML pack readings/s.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from bench import results
from bench.ingest import (
    BenchError,
    Services,
    Throughput,
    _client,
    _ids,
    await_rows,
    presubscribe,
    services,
    stored_span,
)
from ingest import lorawan, sparkplug, topics
from ingest.sparkplug_proto.sparkplug_b_pb2 import Payload

SECTION = "gateways"
SENSORS = 200  # devices in the one-reading and LoRaWAN phases
NODES = 20  # Sparkplug edge nodes (one device each)
METRICS = 100  # metrics of a Sparkplug device, and readings of a SenML pack
SPACING_S = 0.001  # event times of one sensor's consecutive messages
CS_APP = "bench-chirpstack"
TTS_APP = "bench@tenant"
GROUP = "Bench"
AIM = 0.50


@dataclass(frozen=True)
class Config:
    messages: int = 20_000  # one-reading SenML messages and LoRaWAN uplinks
    packs: int = 2_000  # SenML packs of 100 and Sparkplug DDATA of 100 metrics
    trials: int = 5  # each phase this often, interleaved; the median is reported

    @classmethod
    def quick(cls) -> Config:
        return cls(messages=2_000, packs=100, trials=1)


@dataclass(frozen=True)
class Phase:
    name: str
    what: str
    throughput: Throughput  # the trial of median rate
    unit: str  # what the rate counts: "messages" or "readings"
    trials: tuple[float, ...] = ()  # every trial's rate

    @property
    def rate(self) -> float:
        return _rate(self.throughput, self.unit)


def _rate(t: Throughput, unit: str) -> float:
    return (t.messages if unit == "messages" else t.readings) / t.seconds


@dataclass(frozen=True)
class Result:
    when: str
    command: str
    code: str
    config: Config
    phases: list[Phase]

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)


# -- messages ---------------------------------------------------------------------------------


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def senml_one(root: str, i: int, t: float) -> tuple[str, bytes]:
    doc = [{"bn": f"S-{i % SENSORS}:", "bt": t, "n": "flow", "u": "veh/h", "v": 400 + i % 97}]
    return f"{root}/gw-{i % 5}/senml", orjson.dumps(doc)


def senml_pack(root: str, p: int, t: float) -> tuple[str, bytes]:
    first = {"bn": f"S-{p % SENSORS}:", "bt": t, "n": "flow", "u": "veh/h", "v": 400.0}
    rest = [
        {"n": "flow", "u": "veh/h", "t": round(j * SPACING_S / METRICS, 7), "v": 400.0 + j}
        for j in range(1, METRICS)
    ]
    return f"{root}/gw-{p % 5}/senml", orjson.dumps([first, *rest])


def _dev_eui(i: int) -> str:
    return f"{i % SENSORS:016x}"


def chirpstack_up(i: int, t: float) -> tuple[str, bytes]:
    dev = _dev_eui(i)
    doc = {
        "deduplicationId": str(uuid.UUID(int=i)),
        "time": _iso(t),
        "deviceInfo": {"applicationId": CS_APP, "devEui": dev, "deviceName": f"air-{dev}"},
        "devAddr": "00189440",
        "fCnt": i // SENSORS,
        "fPort": 1,
        "data": "qg==",
        "object": {"temperature": 27.0 + (i % 50) / 10},
        "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -57, "snr": 10.5}],
    }
    return f"application/{CS_APP}/device/{dev}/event/up", orjson.dumps(doc)


def tts_up(i: int, t: float) -> tuple[str, bytes]:
    dev = f"dev-{i % SENSORS}"
    doc = {
        "end_device_ids": {"device_id": dev, "application_ids": {"application_id": "bench"}},
        "received_at": _iso(t),
        "uplink_message": {
            "f_port": 1,
            "f_cnt": i // SENSORS,
            "frm_payload": "qg==",
            "decoded_payload": {"temperature": 27.0 + (i % 50) / 10},
            "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-1"}, "rssi": -35, "snr": 5.2}],
            "received_at": _iso(t),
        },
    }
    return f"v3/{TTS_APP}/devices/{dev}/up", orjson.dumps(doc)


def _node(n: int) -> str:
    return f"PS-{n:02d}"


def senml_mixed(root: str, p: int, t: float) -> tuple[str, bytes]:
    """One reading of each of 100 quantities of one sensor: a Sparkplug device's shape."""
    first = {"bn": f"M-{p % NODES}:", "bt": t, "n": "tag_000", "v": 0.0}
    rest = [{"n": f"tag_{a:03d}", "v": float(a)} for a in range(1, METRICS)]
    return f"{root}/gw-{p % 5}/senml", orjson.dumps([first, *rest])


def sparkplug_births(t: float) -> list[tuple[str, bytes]]:
    out = []
    for n in range(NODES):
        nb = Payload(timestamp=round(t * 1000), seq=0)
        nb.metrics.add(name="bdSeq", datatype=8, long_value=0)
        db = Payload(timestamp=round(t * 1000), seq=1)
        for a in range(METRICS):
            db.metrics.add(name=f"Tag {a:03d}", alias=a + 1, datatype=10, double_value=float(a))
        node = _node(n)
        out.append((f"spBv1.0/{GROUP}/NBIRTH/{node}", nb.SerializeToString()))
        out.append((f"spBv1.0/{GROUP}/DBIRTH/{node}/Pump", db.SerializeToString()))
    return out


def sparkplug_ddata(p: int, t: float) -> tuple[str, bytes]:
    """DDATA ``p``: node p % NODES, its (p // NODES)-th since the births (seq 2 on)."""
    seq = (2 + p // NODES) % 256
    d = Payload(timestamp=round(t * 1000), seq=seq)
    for a in range(METRICS):
        d.metrics.add(alias=a + 1, double_value=float(a + p % 7))
    return f"spBv1.0/{GROUP}/DDATA/{_node(p % NODES)}/Pump", d.SerializeToString()


# -- running ----------------------------------------------------------------------------------


def _preload(svc: Services, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 and wait until the broker has every message."""
    c = _client(f"bench-gw-pub-{uuid.uuid4().hex[:8]}")
    c.max_inflight_messages_set(1000)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(svc.host, svc.port)
    c.loop_start()
    try:
        if not connected.wait(10):
            raise BenchError("publisher could not connect")
        pending = []
        for topic, payload in messages:
            pending.append(c.publish(topic, payload, qos=1))
            if len(pending) >= 5000:  # paho's packet ids are 16-bit
                for info in pending:
                    info.wait_for_publish(60)
                pending.clear()
        for info in pending:
            info.wait_for_publish(60)
    finally:
        c.disconnect()
        c.loop_stop()


def _mappings(work: Path) -> dict[str, str]:
    cs = work / "chirpstack.toml"
    cs.write_text(f'network = "chirpstack"\napplication = "{CS_APP}"\n'
                  '[fields.temperature]\nquantity = "temperature"\nunit = "Cel"\n')  # fmt: skip
    tts = work / "tts.toml"
    tts.write_text(f'network = "tts"\napplication = "{TTS_APP}"\n'
                   '[fields.temperature]\nquantity = "temperature"\nunit = "Cel"\n')  # fmt: skip
    spb = work / "sparkplug.toml"
    spb.write_text(f'group = "{GROUP}"\n')
    return {
        "PUSAT_LORAWAN_MAPPINGS": f"{cs},{tts}",
        "PUSAT_SPARKPLUG_MAPPINGS": str(spb),
    }


def run_phase(
    svc: Services,
    tag: str,
    make: Callable[[str], list[tuple[str, bytes]]],
    readings: int,
    env: dict[str, str],
) -> Throughput:
    """Pre-load ``make(root)`` for a fresh worker session, then time the worker."""
    root, client_id = _ids(tag)
    url = svc.database(client_id.replace("-", "_"))
    filters = topics.subscriptions(root, None)
    lora = [Path(p) for p in env["PUSAT_LORAWAN_MAPPINGS"].split(",")]
    filters += lorawan.load(lora).subscriptions()
    filters += sparkplug.load([Path(env["PUSAT_SPARKPLUG_MAPPINGS"])]).subscriptions()
    presubscribe(svc, client_id, filters)
    messages = make(root)
    _preload(svc, messages)
    worker = svc.worker(url, root, client_id, **env)
    await_rows(url, readings, 120 + readings / 1000, f"Pusat ({tag})", worker)
    peak = worker.peak_rss_kib()
    worker.terminate()
    first, done = stored_span(url)
    return Throughput("Pusat worker", readings, len(messages), done - first, peak_rss_kib=peak)


def run(config: Config, command: str, log: Callable[[str], None]) -> Result:
    n, packs = config.messages, config.packs
    phases: list[Phase] = []
    with services(log) as svc:
        env = _mappings(svc.work)

        def fresh(count: int) -> float:
            """Event times that end a second before now (fresh, as from live gateways)."""
            return time.time() - 1 - count * SPACING_S

        def one(root: str) -> list[tuple[str, bytes]]:
            t0 = fresh(n // SENSORS + 1)
            return [senml_one(root, i, t0 + (i // SENSORS) * SPACING_S) for i in range(n)]

        def cs(root: str) -> list[tuple[str, bytes]]:
            t0 = fresh(n // SENSORS + 1)
            return [chirpstack_up(i, t0 + (i // SENSORS) * SPACING_S) for i in range(n)]

        def tts(root: str) -> list[tuple[str, bytes]]:
            t0 = fresh(n // SENSORS + 1)
            return [tts_up(i, t0 + (i // SENSORS) * SPACING_S) for i in range(n)]

        def pack(root: str) -> list[tuple[str, bytes]]:
            t0 = fresh(packs // SENSORS + 1)
            return [senml_pack(root, p, t0 + (p // SENSORS) * SPACING_S) for p in range(packs)]

        def mixed(root: str) -> list[tuple[str, bytes]]:
            t0 = fresh(packs // NODES + 1)
            return [senml_mixed(root, p, t0 + (p // NODES) * SPACING_S) for p in range(packs)]

        def spb(root: str) -> list[tuple[str, bytes]]:
            t0 = fresh(packs // NODES + 2)
            data = [sparkplug_ddata(p, t0 + (1 + p // NODES) * SPACING_S) for p in range(packs)]
            return sparkplug_births(t0) + data

        plan = [
            ("senml-1", "SenML, one reading per message", one, n, "messages"),
            ("chirpstack", "ChirpStack v4 uplinks (5 readings each)", cs, 5 * n, "messages"),
            ("tts", "The Things Stack v3 uplinks (5 readings each)", tts, 5 * n, "messages"),
            ("senml-100", "SenML packs of 100", pack, METRICS * packs, "readings"),
            (
                "senml-mixed",
                f"SenML packs of {METRICS} quantities (a Sparkplug device's shape)",
                mixed,
                METRICS * packs,
                "readings",
            ),
            (
                "sparkplug",
                f"Sparkplug B DDATA of {METRICS} metrics by alias",
                spb,
                METRICS * (packs + NODES),
                "readings",
            ),
        ]
        runs: dict[str, list[Throughput]] = {name: [] for name, *_ in plan}
        for trial in range(config.trials):  # interleaved: machine noise spreads over all
            for name, _what, make, readings, _unit in plan:
                log(f"trial {trial + 1}/{config.trials}: phase {name}")
                runs[name].append(run_phase(svc, name, make, readings, env))
        for name, what, _make, _readings, unit in plan:
            ordered = sorted(runs[name], key=lambda t: _rate(t, unit))
            trials = tuple(_rate(t, unit) for t in runs[name])
            phases.append(Phase(name, what, ordered[len(ordered) // 2], unit, trials))
        code = svc.code
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Result(when, command, code, config, phases)


# -- reporting --------------------------------------------------------------------------------


def ratio(r: Result, phase: str, baseline: str) -> tuple[float, tuple[float, ...]]:
    """The median over trials of ``phase``'s rate / ``baseline``'s in the same trial (the two
    ran a few seconds apart, so the machine's other load weighs on both alike), and each."""
    pairs = tuple(
        a / b for a, b in zip(r.phase(phase).trials, r.phase(baseline).trials, strict=True)
    )
    ordered = sorted(pairs)
    return ordered[len(ordered) // 2], pairs


def aims(r: Result) -> list[tuple[str, float, tuple[float, ...]]]:
    one = "SenML one-reading messages/s"
    return [
        (f"ChirpStack uplinks/s vs {one}", *ratio(r, "chirpstack", "senml-1")),
        (f"The Things Stack uplinks/s vs {one}", *ratio(r, "tts", "senml-1")),
        ("Sparkplug DDATA metrics/s vs SenML pack readings/s", *ratio(r, "sparkplug", "senml-100")),
    ]


def markdown(r: Result) -> str:
    begin, end = results.markers(SECTION)
    lines = [
        begin,
        "## Gateways: LoRaWAN and Sparkplug B vs SenML (`pusat bench gateways`)",
        "",
        f"Measured {r.when} with `{r.command}`, code at {r.code}. Same servers and method as the"
        " ingest benchmark (durable PostgreSQL with commit timestamps, Mosquitto, loopback, one"
        " `pusat ingest` with default settings on a session pre-loaded with every message, QoS"
        " 1; seconds from the first message received to the last reading committed), each phase"
        " on a fresh database. LoRaWAN uplinks carry one decoded field and one gateway's radio"
        " metadata, so each stores 5 readings; Sparkplug edge nodes have one device of"
        f" {METRICS} Double metrics, born once ({NODES} nodes), then DDATA by alias.",
        "",
        f"Each phase ran {r.config.trials} times, interleaved; each row is the trial of median"
        " rate, *trials* every trial's rate (uplinks/s for LoRaWAN, readings/s otherwise).",
        "",
        "| phase | messages | readings | seconds | messages/s | readings/s | trials | peak RSS |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in r.phases:
        t = p.throughput
        rss = f"{t.peak_rss_kib / 1024:.0f} MiB" if t.peak_rss_kib else ""
        lines.append(
            f"| {p.what} | {t.messages:,} | {t.readings:,} | {t.seconds:.2f} |"
            f" {t.messages / t.seconds:,.0f} | {t.readings / t.seconds:,.0f} |"
            f" {' / '.join(f'{x / 1000:.1f}k' for x in p.trials)} | {rss} |"
        )
    mixed, each = ratio(r, "sparkplug", "senml-mixed")
    lines += [
        "",
        "Sparkplug DDATA against SenML packs of the same shape (100 series per message):"
        f" {mixed * 100:.0f}% ({' / '.join(f'{x * 100:.0f}%' for x in each)}).",
        "",
        "Aims: the median over trials of the ratio within each trial.",
    ]
    lines += ["", "| aim | measured | trials | target | |", "|---|--:|--:|--:|---|"]
    for what, median, pairs in aims(r):
        lines.append(
            f"| {what} | {median * 100:.0f}% | {' / '.join(f'{x * 100:.0f}%' for x in pairs)} |"
            f" >= {AIM * 100:.0f}% | {'met' if median >= AIM else 'not met'} |"
        )
    lines.append(end)
    return "\n".join(lines) + "\n"


def gateways_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="2,000 uplinks and 100 packs per phase (seconds)")
    ] = False,
    messages: Annotated[
        int | None,
        typer.Option("--messages", min=200, help="one-reading messages and uplinks (20,000)"),
    ] = None,
    packs: Annotated[
        int | None,
        typer.Option("--packs", min=20, help="SenML packs and Sparkplug DDATA (2,000)"),
    ] = None,
    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="runs of each phase, median (5)")
    ] = None,
    write_results: Annotated[
        bool, typer.Option(help="update the gateways section of bench/RESULTS.md")
    ] = False,
) -> None:
    """LoRaWAN uplinks (ChirpStack, The Things Stack) and Sparkplug B DDATA through ingest,
    against SenML one-reading messages and packs of 100, in one run."""
    base = Config.quick() if quick else Config()
    config = Config(messages or base.messages, packs or base.packs, trials or base.trials)
    flags = [
        "--quick" if quick else "",
        f"--messages {messages}" if messages else "",
        f"--packs {packs}" if packs else "",
        f"--trials {trials}" if trials else "",
        "--write-results" if write_results else "",
    ]
    command = " ".join(["pusat bench gateways", *filter(None, flags)])
    console = Console()
    try:
        result = run(config, command, console.log)
    except BenchError as e:
        console.print(f"[red]benchmark failed:[/red] {e}")
        raise typer.Exit(1) from e
    console.print(markdown(result))
    if write_results:
        results.replace_section(SECTION, markdown(result).rstrip("\n"))
        console.print(f"updated {results.RESULTS_FILE}")
