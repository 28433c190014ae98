"""Ingest on a real three-node RabbitMQ cluster (Debian's rabbitmq-server, started by the test on
free ports): gateways publish MQTT into the cluster's MQTT plugin, worker processes consume the
partitioned quorum queues (`pusat ingest --source rabbitmq`). A worker killed mid-stream: nothing
lost, nothing stored twice, its partitions served again by the others within FAILOVER_S; a
worker added while the others run takes partitions from them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest.rabbitmq import Topology, binding_pattern, routing_key
from pusat.embedded import rabbitmq
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from tests.helpers import rows, scalar, wait_for

pytestmark = pytest.mark.skipif(rabbitmq.available() is not None, reason=str(rabbitmq.available()))

PARTITIONS = 8
GATEWAYS = 40
FAILOVER_S = 10.0  # the aim: a lost worker's partitions served again within this


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rabbitmq.Cluster]:
    c = rabbitmq.start_cluster(tmp_path_factory.mktemp("rabbit"), 3)
    yield c
    c.stop()


class Gateway:
    """An MQTT 3.1.1 gateway (RabbitMQ 3.10's plugin speaks 3.1.1) publishing QoS 1."""

    def __init__(self, url: str) -> None:
        host, port = url.rsplit("@", 1)[1].rsplit(":", 1)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self.client.username_pw_set("guest", "guest")
        self.client.max_inflight_messages_set(500)
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect(host, int(port))
        self.client.loop_start()
        assert connected.wait(10), "gateway could not connect to the MQTT plugin"
        self.sent = 0  # the message being published now

    def publish_all(self, messages: list[tuple[str, bytes]], per_s: float) -> None:
        """At about ``per_s`` messages a second, each acknowledged by the cluster."""
        t0 = time.monotonic()
        pending = []
        for i, (topic, payload) in enumerate(messages):
            self.sent = i
            pending.append(self.client.publish(topic, payload, qos=1))
            if len(pending) >= 400:
                for info in pending:
                    info.wait_for_publish(30)
                    assert info.is_published(), "the cluster did not take a message"
                pending.clear()
            ahead = t0 + i / per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        for info in pending:
            info.wait_for_publish(30)
            assert info.is_published(), "the cluster did not take a message"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


SPAN_S = 135.0  # event time a stream covers: past the alarm's two minutes


def spacing(n: int) -> float:
    return SPAN_S / n


def start_of(n: int) -> float:
    """The first event time of an n-message stream that ends 20 s ahead of now (within the
    accepted skew): recent, so that no sensor is judged stale while the test runs."""
    return time.time() - SPAN_S + 20


def stream(root: str, n: int, t0: float) -> list[tuple[str, bytes]]:
    """n two-reading messages from GATEWAYS gateways (one sensor each), distinct event times
    over SPAN_S; PM2.5 stays above the warning threshold, so each sensor's alarm is raised
    once, after two minutes of event time, whichever worker has the sensor then."""
    return [
        (
            f"{root}/gw-{i % GATEWAYS}/json",
            json.dumps(
                {
                    "sensor": f"R-{i % GATEWAYS}",
                    "ts": t0 + i * spacing(n),
                    "values": {"flow": i % 900, "pm25": 80.0},
                }
            ).encode(),
        )
        for i in range(n)
    ]


def raised_once(url: str) -> list[tuple[str, int]]:
    """(sensor, alarms) of the stream's sensors whose PM2.5 warning was not raised once."""
    got = dict(
        rows(
            url,
            "SELECT sensor_id, count(*) FROM alerts WHERE rule = 'pm25:threshold-above:warning'"
            " AND left(sensor_id, 2) = 'R-' GROUP BY 1",
        )
    )
    return [(f"R-{g}", got.get(f"R-{g}", 0)) for g in range(GATEWAYS) if got.get(f"R-{g}") != 1]


class WorkerProcess:
    def __init__(self, env: dict[str, str], name: str, log: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pusat", "ingest", "--source", "rabbitmq"],
            env={**env, "PUSAT_CLIENT_ID": name, "PUSAT_METRICS_PORT": str(self.port)},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return -1.0
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else -1.0

    def served(self) -> int:
        return int(self.metric("pusat_ingest_partitions_served"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def worker_env(
    cluster: rabbitmq.Cluster, database_url: str, root: str, home: Path
) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PUSAT_")},
        "PUSAT_DATABASE_URL": database_url,
        "PUSAT_TOPIC_ROOT": root,
        "PUSAT_HOME": str(home),
        "PUSAT_BATCH_MS": "100",
        "PUSAT_AMQP_PARTITIONS": str(PARTITIONS),
        "PUSAT_AMQP_PREFETCH": "200",
        "PUSAT_AMQP_HANDOVER_S": "0.5",
        "PUSAT_AMQP_REBALANCE_S": "0.5",
        "PUSAT_LOG_EVERY_S": "2",
    }


def rotated(urls: list[str], k: int) -> str:
    """Each worker's list of nodes starts at a different node."""
    return ",".join(urls[k % len(urls) :] + urls[: k % len(urls)])


def stored(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM readings WHERE left(sensor_id, 2) = 'R-'"))


def start_workers(
    env: dict[str, str], cluster: rabbitmq.Cluster, names: list[str], tmp_path: Path, first: int
) -> list[WorkerProcess]:
    return [
        WorkerProcess(
            {**env, "PUSAT_AMQP_URLS": rotated(cluster.amqp_urls, first + k)},
            name,
            tmp_path / f"{name}.log",
        )
        for k, name in enumerate(names)
    ]


def logs(workers: list[WorkerProcess]) -> str:
    return "\n".join(f"--- {w.name}\n" + w.log.read_text()[-3000:] for w in workers)


def test_topology_names_and_bindings() -> None:
    s = Settings(topic_root="city/v1", amqp_partitions=4)
    t = Topology.of(s)
    assert t.queues == [f"pusat.ingest.city.v1.{k:03d}" for k in range(4)]
    assert t.patterns == ["city.v1.#"]
    assert routing_key("city/v1/gw-1/senml") == "city.v1.gw-1.senml"
    assert binding_pattern("application/+/device/+/event/#") == "application.*.device.*.event.#"
    with pytest.raises(ValueError, match="no group or partition"):
        Settings(source="rabbitmq", group="g")


def test_killed_worker_hands_its_partitions_over_and_nothing_is_lost_or_doubled(
    cluster: rabbitmq.Cluster, database_url: str, topic_root: str, tmp_path: Path
) -> None:
    env = worker_env(cluster, database_url, topic_root, tmp_path / "home")
    workers = start_workers(env, cluster, ["w1", "w2", "w3"], tmp_path, 0)
    gateway = Gateway(cluster.nodes[1].mqtt_url)
    try:
        # The topology exists once a worker has declared it: before that, RabbitMQ would drop
        # the gateways' messages as unroutable.
        wait_for(
            lambda: all(w.metric("pusat_ingest_partitions_served") >= 0 for w in workers),
            timeout=60,
            what="three workers up",
        )
        wait_for(lambda: _declared(cluster, topic_root), timeout=30, what="the queues declared")
        n = 12_000
        msgs = stream(topic_root, n, start_of(n))
        publishing = threading.Thread(target=gateway.publish_all, args=(msgs, 1500.0))
        publishing.start()
        # every worker serves a share before the kill
        wait_for(
            lambda: (
                all(w.served() >= 1 for w in workers)
                and sum(w.served() for w in workers) == PARTITIONS
            ),
            timeout=30,
            what="the partitions spread over three workers",
        )
        shares = [w.served() for w in workers]
        wait_for(lambda: stored(database_url) >= 2 * n // 3, timeout=60, what="a third stored")
        lost = workers[1]
        read_before = lost.metric("pusat_ingest_readings_received_total")
        lost.kill()
        t_kill = time.monotonic()
        survivors = [workers[0], workers[2]]
        wait_for(
            lambda: sum(w.served() for w in survivors) == PARTITIONS,
            timeout=FAILOVER_S,
            what=f"the lost worker's partitions served again within {FAILOVER_S} s",
        )
        failover = time.monotonic() - t_kill
        publishing.join(120)
        assert not publishing.is_alive()
        wait_for(lambda: stored(database_url) == 2 * n, timeout=60, what="every reading stored")
        assert stored(database_url) == 2 * n  # and no more: stored once
        distinct = scalar(
            database_url,
            "SELECT count(DISTINCT (sensor_id, quantity, ts)) FROM readings"
            " WHERE left(sensor_id, 2) = 'R-'",
        )
        assert distinct == 2 * n
        assert raised_once(database_url) == []
        read = sum(w.metric("pusat_ingest_readings_received_total") for w in survivors)
        # Each message read by one worker: what the survivors read is the stream less what the
        # lost worker had committed, plus what it had read but not acknowledged (redelivered,
        # refused as duplicates when it had committed them).
        dup = sum(w.metric("pusat_ingest_readings_duplicate_total") for w in survivors)
        assert read + read_before <= 2 * (n + PARTITIONS * 200) + dup, (read, read_before, dup)
        assert read < 2 * n, "the survivors read (nearly) everything: not shared"
        print(
            f"shares {shares}; failover {failover:.2f} s; read {read + read_before:.0f} / {2 * n}"
        )
    except BaseException:
        print(logs(workers))
        raise
    finally:
        gateway.close()
        for w in workers:
            w.stop()


def test_a_worker_added_takes_partitions_without_restarting_the_others(
    cluster: rabbitmq.Cluster, database_url: str, topic_root: str, tmp_path: Path
) -> None:
    env = worker_env(cluster, database_url, topic_root, tmp_path / "home")
    workers = start_workers(env, cluster, ["a1", "a2"], tmp_path, 1)
    gateway = Gateway(cluster.nodes[2].mqtt_url)
    try:
        wait_for(
            lambda: all(w.metric("pusat_ingest_partitions_served") >= 0 for w in workers),
            timeout=60,
            what="two workers up",
        )
        wait_for(lambda: _declared(cluster, topic_root), timeout=30, what="the queues declared")
        n = 20_000  # 20 s of stream: still flowing when the third worker comes
        publishing = threading.Thread(
            target=gateway.publish_all,
            args=(stream(topic_root, n, start_of(n)), 1000.0),
        )
        publishing.start()
        wait_for(
            lambda: sum(w.served() for w in workers) == PARTITIONS,
            timeout=30,
            what="two workers serving all partitions",
        )
        pids = [w.proc.pid for w in workers]
        workers += start_workers(env, cluster, ["a3"], tmp_path, 0)
        wait_for(
            lambda: workers[2].served() >= 2 and sum(w.served() for w in workers) == PARTITIONS,
            timeout=30,
            what="the new worker taking partitions",
        )
        assert all(w.proc.poll() is None for w in workers[:2])
        assert [w.proc.pid for w in workers[:2]] == pids
        publishing.join(120)
        wait_for(lambda: stored(database_url) == 2 * n, timeout=60, what="every reading stored")
        assert raised_once(database_url) == []
    except BaseException:
        print(logs(workers))
        raise
    finally:
        gateway.close()
        for w in workers:
            w.stop()


def _declared(cluster: rabbitmq.Cluster, root: str) -> bool:
    out = cluster.nodes[0].ctl("list_queues", "name", "--quiet", "--no-table-headers")
    base = "pusat.ingest." + routing_key(root)
    return sum(line.strip().startswith(base + ".0") for line in out.splitlines()) == PARTITIONS
