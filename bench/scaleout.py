"""Ingest scale-out on one machine: one worker against two, as partitions (``--partition K/2``)
and as a shared-subscription group (``--group``), in one run; with ``--rabbitmq``, also one
worker against three on a three-node RabbitMQ cluster (``--source rabbitmq``, docs/scaling.md).

    python -m bench.scaleout [--trials 2] [--json 100000] [--packs 5000] [--rabbitmq]

Each trial gets a fresh database and topic root; the broker queues every message for each
worker's persistent session before the workers start (as the ingest benchmark's pre-loaded
phases, whose services and helpers it uses), so the figure is readings per second from the first
reading received to the last committed. Gateways: 20, which the CRC-32 rule splits 12 / 8 over
two partitions. The modes alternate within each trial so that all see the same machine noise.
Prints a line per trial and the medians; nothing is written.

On RabbitMQ the partition queues are filled over AMQP (as the MQTT plugin fills them) before the
workers start; each worker's Prometheus counters give the messages it read, so "read per stored"
is the messages all workers read over the messages published (1 when each is read once; N for
N partition workers on MQTT, which all read everything).
"""

from __future__ import annotations

import argparse
import re
import statistics
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable

import orjson
import paho.mqtt.client as mqtt
import pika
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench import ingest as bi
from ingest.rabbitmq import Topology, routing_key
from pusat.embedded import rabbitmq
from pusat.embedded.ports import free_port
from pusat.settings import Settings

GATEWAYS = 20
MODES = ("one worker", "2 partitions", "2 in a group")


def messages(form: str, root: str, n: int, t0: float) -> list[tuple[str, bytes]]:
    """The ingest benchmark's streams, spread over ``GATEWAYS`` gateways."""
    if form == "json":
        return [
            (
                f"{root}/gw-{i % GATEWAYS}/json",
                orjson.dumps(
                    {
                        "sensor": f"K-{i % bi.SENSORS}",
                        "ts": t0 + i * bi.JSON_SPACING_S,
                        "values": {"flow": bi.flow(i * 1e-3)},
                    }
                ),
            )
            for i in range(n)
        ]
    return [
        (
            f"{root}/gw-{i % GATEWAYS}/senml",
            bi.senml_pack(
                f"S-{i % bi.SENSORS}", t0 + i * bi.PACK_SPACING_S, bi.RECORD_SPACING_S, i * 0.1
            ),
        )
        for i in range(n)
    ]


def publish(svc: bi.Services, msgs: list[tuple[str, bytes]]) -> None:
    """QoS 1, in windows of 500 acknowledged messages (untimed: the workers are not running)."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-scaleout-pub-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    c.connect(svc.host, svc.port)
    c.loop_start()
    try:
        if not connected.wait(10):
            raise bi.BenchError("publisher: not connected within 10 s")
        for start in range(0, len(msgs), 500):
            infos = [c.publish(t, p, qos=1) for t, p in msgs[start : start + 500]]
            for info in infos:
                info.wait_for_publish(120)
    finally:
        c.disconnect()
        c.loop_stop()


def trial(svc: bi.Services, form: str, n: int, mode: str) -> float:
    root, cid = bi._ids(f"scaleout-{form}")
    url = svc.database(f"scaleout_{uuid.uuid4().hex[:10]}")
    workers = 1 if mode == MODES[0] else 2
    ids = [f"{cid}-{k}" for k in range(1, workers + 1)]
    grouped = mode == MODES[2]
    for client_id in ids:
        if grouped:  # as `pusat ingest --group g` subscribes
            filters = [f"$share/g/{root}/+/+", f"{root}/+/meta", f"{root}/+/status"]
        else:
            filters = [f"{root}/+/+"]
        bi.presubscribe(svc, client_id, filters)
    spacing = bi.JSON_SPACING_S if form == "json" else bi.PACK_SPACING_S
    publish(svc, messages(form, root, n, bi.stream_start(n, spacing)))
    children = []
    for k, client_id in enumerate(ids, 1):
        scale: dict[str, str] = {}
        if workers > 1:
            scale = {"PUSAT_GROUP": "g"} if grouped else {"PUSAT_PARTITION": f"{k}/{workers}"}
        children.append(svc.worker(url, root, client_id, **scale))
    readings = n * (bi.PACK_SIZE if form == "senml" else 1)
    bi.await_rows(url, readings, bi._consume_timeout(readings, 1000), f"{mode} ({form})")
    for child in children:
        if child.terminate() != 0:
            raise bi.BenchError(f"a worker exited with {child.proc.returncode}")
    first, done = bi.stored_span(url)
    return readings / (done - first)


RABBIT_PARTITIONS = 12
RABBIT_MODES = ("rabbitmq, 1 worker", "rabbitmq, 3 workers")


def _metric(port: int, name: str) -> float:
    """The sum over labels of one counter on a worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"{re.escape(name)}[{{ ]", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _fill(cluster: rabbitmq.Cluster, root: str, msgs: list[tuple[str, bytes]]) -> None:
    """Declare the partition queues and publish into amq.topic as the MQTT plugin would
    (persistent), then wait until the queues hold every message."""
    topo = Topology.of(Settings(topic_root=root, amqp_partitions=RABBIT_PARTITIONS))
    conn = pika.BlockingConnection(pika.URLParameters(cluster.amqp_urls[0]))
    try:
        ch = conn.channel()
        topo.declare(ch)
        persistent = pika.BasicProperties(delivery_mode=2)
        for topic, payload in msgs:
            ch.basic_publish("amq.topic", routing_key(topic), payload, persistent)

        def queued() -> int:
            return sum(ch.queue_declare(q, passive=True).method.message_count for q in topo.queues)

        deadline = time.monotonic() + 300
        while queued() < len(msgs):
            if time.monotonic() > deadline:
                raise bi.BenchError(f"only {queued()} of {len(msgs)} messages queued")
            conn.sleep(0.5)
    finally:
        conn.close()


def rabbit_trial(
    svc: bi.Services, cluster: rabbitmq.Cluster, n: int, workers: int
) -> tuple[float, float]:
    """(readings per second, messages read per message published) for ``workers`` workers."""
    root, cid = bi._ids("scaleout-rmq")
    url = svc.database(f"scaleout_{uuid.uuid4().hex[:10]}")
    _fill(cluster, root, messages("senml", root, n, bi.stream_start(n, bi.PACK_SPACING_S)))
    urls = cluster.amqp_urls
    ports = [free_port() for _ in range(workers)]
    children = [
        svc.worker(
            url,
            root,
            f"{cid}-{k}",
            PUSAT_SOURCE="rabbitmq",
            PUSAT_AMQP_URLS=",".join(urls[k % 3 :] + urls[: k % 3]),
            PUSAT_AMQP_PARTITIONS=str(RABBIT_PARTITIONS),
            PUSAT_AMQP_REBALANCE_S="0.5",
            PUSAT_AMQP_HANDOVER_S="0.5",
            PUSAT_METRICS_PORT=str(ports[k]),
        )
        for k in range(workers)
    ]
    readings = n * bi.PACK_SIZE
    bi.await_rows(url, readings, bi._consume_timeout(readings, 1000), f"rabbitmq x{workers}")
    read = sum(_metric(p, "pusat_ingest_messages_total") for p in ports)
    for child in children:
        if child.terminate() != 0:
            raise bi.BenchError(f"a worker exited with {child.proc.returncode}")
    first, done = bi.stored_span(url)
    return readings / (done - first), read / n


def run_rabbitmq(
    trials: int, packs: int, log: Callable[[str], None] = print
) -> dict[str, list[tuple[float, float]]]:
    """Per mode, (readings/s, read per stored) of each trial, on a throwaway 3-node cluster."""
    out: dict[str, list[tuple[float, float]]] = {}
    with bi.services(log) as svc:
        log("starting a three-node RabbitMQ cluster")
        with rabbitmq.start_cluster(svc.work / "rabbit", 3) as cluster:
            for t in range(trials):
                for mode, workers in zip(RABBIT_MODES, (1, 3), strict=True):
                    rate, read = rabbit_trial(svc, cluster, packs, workers)
                    out.setdefault(mode, []).append((rate, read))
                    log(f"trial {t + 1}: senml {mode:20} {rate:>10,.0f} readings/s,"
                        f" {read:.3f} messages read per message")  # fmt: skip
    return out


def run(
    trials: int, json_messages: int, packs: int, log: Callable[[str], None] = print
) -> dict[tuple[str, str], list[float]]:
    """Readings per second of every (stream, mode), a value per trial; every trial checks that
    all its readings were stored once."""
    rates: dict[tuple[str, str], list[float]] = {}
    with bi.services(log) as svc:
        for t in range(trials):
            for form, n in (("json", json_messages), ("senml", packs)):
                for mode in MODES:
                    r = trial(svc, form, n, mode)
                    rates.setdefault((form, mode), []).append(r)
                    log(f"trial {t + 1}: {form:5} {mode:12} {r:>10,.0f} readings/s")
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--json", type=int, default=100_000, help="one-reading messages per trial")
    ap.add_argument("--packs", type=int, default=5_000, help="SenML packs of 100 per trial")
    ap.add_argument(
        "--rabbitmq",
        action="store_true",
        help="only the RabbitMQ cluster: one worker against three (SenML packs)",
    )
    args = ap.parse_args(argv)
    if args.rabbitmq:
        got = run_rabbitmq(args.trials, args.packs, lambda line: print(line, flush=True))
        one = statistics.median(r for r, _ in got[RABBIT_MODES[0]])
        for name, pairs in got.items():
            rate = statistics.median(r for r, _ in pairs)
            read = statistics.median(x for _, x in pairs)
            each = " / ".join(f"{r / 1000:.1f}k" for r, _ in pairs)
            print(f"senml {name:20} median {rate:>10,.0f} readings/s ({rate / one:.2f}x; {each}),"
                  f" {read:.3f} messages read per message")  # fmt: skip
        return 0
    rates = run(args.trials, args.json, args.packs, lambda line: print(line, flush=True))
    for (form, mode), v in rates.items():
        base = statistics.median(rates[(form, MODES[0])])
        m = statistics.median(v)
        trials = " / ".join(f"{x / 1000:.1f}k" for x in v)
        print(f"{form:5} {mode:12} median {m:>10,.0f} readings/s ({m / base:.2f}x; {trials})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
