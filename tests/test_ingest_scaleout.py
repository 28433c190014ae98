"""Scale-out and recovery on real services: a shared-subscription group, partitions by gateway,
a broker restart, and the Prometheus endpoint of a worker process."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from ingest import topics
from pusat.embedded.broker import start_broker
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from tests.conftest import RunningWorker
from tests.helpers import Publisher, rows, scalar, wait_for
from tests.test_ingest_resilience import spawn_worker, stream


def count(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM reading_data"))


def test_shared_group_splits_the_load_and_stores_everything_once(
    settings: Settings, publisher: Publisher
) -> None:
    url = settings.database_url
    assert url
    root = settings.topic_root
    # retained before any worker runs: each worker of the group must still see it
    meta = {"sensors": [{"id": "K-0", "domain": "traffic", "district": "Presint 2"}]}
    publisher.publish(f"{root}/gw-0/meta", json.dumps(meta), retain=True)
    group = f"g{uuid.uuid4().hex[:6]}"
    workers = [
        RunningWorker(settings.with_(group=group, client_id=f"{settings.client_id}-{i}")).start()
        for i in range(2)
    ]
    try:
        n = 4000
        publisher.publish_many(stream(root, n, time.time() - 600))
        wait_for(lambda: count(url) == n, timeout=60, what="all readings from the group")
        shares = [w.metrics.value("pusat_ingest_readings_stored_total") for w in workers]
        assert sum(shares) == n
        assert all(s > 0 for s in shares), f"one worker got nothing: {shares}"
        assert rows(url, "SELECT district, provisioned FROM sensors WHERE sensor_id = 'K-0'") == [
            ("Presint 2", True)
        ]
        for w in workers:
            assert w.metrics.value("pusat_ingest_messages_total", {"kind": "meta"}) >= 1
    finally:
        for w in workers:
            w.stop()
        publisher.publish(f"{root}/gw-0/meta", b"", retain=True)


def test_partition_of_a_topic_is_its_gateways_and_every_topic_has_one() -> None:
    root = "pusat/v1"
    for g in ("gw-0", "gw-1", "Wetland inlet", "taman-wetland-Ω"):
        parts = {topics.partition_of(root, f"{root}/{g}/{kind}", 3) for kind in topics.KINDS}
        assert parts == {topics.gateway_partition(g, 3)}  # all of a gateway's topics: one worker
    assert {topics.gateway_partition(f"gw-{i}", 3) for i in range(100)} == {1, 2, 3}
    # A topic outside the contract (an unknown kind) still goes to exactly one partition.
    assert topics.partition_of(root, f"{root}/gw-0/nonsense", 3) in {1, 2, 3}
    assert topics.gateway_partition(None, 3) == 1


def partition_worker(settings: Settings, k: int, **changes: Any) -> RunningWorker:
    """A running worker of partition k of 2, with its own persistent session."""
    s = settings.with_(partition=f"{k}/2", client_id=f"{settings.client_id}-p{k}", **changes)
    return RunningWorker(s).start()


def zigzag(
    root: str, gateways: list[str], first: int, last: int, t0: float
) -> list[list[tuple[str, bytes]]]:
    """Messages ``first`` to ``last - 1`` of each gateway's one sensor, interleaved across the
    gateways as they would arrive, one second apart in event time: flow 0, 0, 100, 100, 0, ...
    Only a worker that sees consecutive readings sees a rise of 100 per second."""
    return [
        [
            (
                f"{root}/{g}/json",
                json.dumps(
                    {"sensor": f"Z-{g}", "ts": t0 + i, "values": {"flow": 100 * (i // 2 % 2)}}
                ).encode(),
            )
            for g in gateways
        ]
        for i in range(first, last)
    ]


def test_partitions_keep_each_gateway_with_one_worker_and_lose_nothing_while_one_is_away(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    root = settings.topic_root
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nquantity = "flow"\nkind = "rate"\nabove = 60\nper = "1s"\n'
        'max_gap = "10s"\nseverity = "warning"\n'
    )
    # An odd number, so that strictly alternating delivery to two workers would split every
    # sensor's stream (Mosquitto's own shared delivery did not alternate strictly when tried).
    gateways = [f"gw-{i}" for i in range(11)]
    owner = {g: topics.gateway_partition(g, 2) for g in gateways}
    assert set(owner.values()) == {1, 2}, owner  # both partitions own some of these gateways

    def start(k: int) -> RunningWorker:
        return partition_worker(settings, k, rules=rules)

    def publish(first: int, last: int) -> None:
        for messages in zigzag(root, gateways, first, last, t0):
            publisher.publish_many(messages)

    t0 = round(time.time()) - 600
    workers = {k: start(k) for k in (1, 2)}
    try:
        publish(0, 40)
        wait_for(lambda: count(url) == 440, timeout=60, what="the first 40 readings of each")
        # Every sensor's rises were seen by one worker reading its gateway's stream in order.
        wait_for(
            lambda: scalar(url, "SELECT count(DISTINCT sensor_id) FROM alerts") == 11,
            what="a rate alarm on every sensor",
        )
        for k, w in workers.items():
            mine = sum(40 for g in gateways if owner[g] == k)
            assert w.metrics.value("pusat_ingest_readings_stored_total") == mine
            assert w.metrics.value("pusat_ingest_messages_other_partition_total") == 440 - mine

        # Partition 2's worker goes away; the broker keeps its share in its session meanwhile.
        workers.pop(2).stop()
        publish(40, 60)
        first_share = sum(20 for g in gateways if owner[g] == 1)
        wait_for(lambda: count(url) == 440 + first_share, timeout=60, what="partition 1's share")
        workers[2] = start(2)
        wait_for(lambda: count(url) == 660, timeout=60, what="partition 2's share, kept for it")
    finally:
        for w in workers.values():
            w.stop()


def test_a_restarted_partition_worker_raises_no_stale_alarm_for_another_partitions_sensor(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    """A worker loads every sensor at start, but another worker takes some of their readings:
    before calling a sensor stale it must look at what the database holds."""
    url = settings.database_url
    assert url
    root = settings.topic_root
    rules = tmp_path / "rules.toml"
    # pm25 reports every 60 s: stale after 6 s of silence, for the test (a stall of the test
    # machine that long would make BUSY-1 and BUSY-2 really stale)
    rules.write_text('[[rule]]\nkind = "stale"\nfactor = 0.1\nseverity = "warning"\n')
    gateway = {
        k: next(f"gw-{i}" for i in range(50) if topics.gateway_partition(f"gw-{i}", 2) == k)
        for k in (1, 2)
    }

    def start(k: int) -> RunningWorker:
        return partition_worker(settings, k, rules=rules, tick_s=0.1)

    def readings(n: int) -> None:
        """A fresh reading of one sensor on each partition: the n-th of each."""
        for k in (1, 2):
            body = {"sensor": f"BUSY-{k}", "ts": time.time(), "values": {"pm25": 10 + n % 7}}
            publisher.publish(f"{root}/{gateway[k]}/json", json.dumps(body))
        wait_for(lambda: count(url) == 2 * n, what=f"readings {n}")

    workers = [start(1), start(2)]
    try:
        readings(1)
        workers[0].stop()
        # Partition 1's worker loads both sensors as of now; only BUSY-1's readings reach it.
        workers[0] = start(1)
        n, began = 1, time.monotonic()
        while time.monotonic() - began < 2.5 * 6:  # well past the window of the loaded value
            n += 1
            readings(n)
        assert rows(url, "SELECT sensor_id, rule, state FROM alerts") == []
    finally:
        for w in workers:
            w.stop()


def test_worker_reconnects_after_a_broker_restart(settings: Settings, tmp_path: Path) -> None:
    url = settings.database_url
    assert url
    port = free_port()
    broker = start_broker(tmp_path / "mq", port, persistence=True)
    s = settings.with_(mqtt_url=broker.url)
    w = RunningWorker(s).start()
    pub = Publisher("127.0.0.1", port)
    try:
        pub.publish_many(stream(s.topic_root, 500, time.time() - 600)[:500])
        wait_for(lambda: count(url) == 500, what="readings before the restart")
        pub.close()
        broker.stop()
        wait_for(lambda: not w.worker.session.connected.is_set(), what="the worker noticing")
        broker = start_broker(tmp_path / "mq", port, persistence=True)
        wait_for(w.worker.session.subscribed.is_set, timeout=30, what="the worker reconnecting")
        pub = Publisher("127.0.0.1", port)
        pub.publish_many(stream(s.topic_root, 1000, time.time() - 300)[500:])
        wait_for(lambda: count(url) == 1000, timeout=30, what="readings after the restart")
    finally:
        pub.close()
        w.stop()
        broker.stop()


@pytest.mark.slow
def test_worker_process_serves_prometheus_metrics(
    settings: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    port = free_port()
    log = tmp_path / "worker.log"
    proc = spawn_worker(settings, log, "--metrics-port", str(port))
    try:

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return str(r.read().decode())

        def stored_one() -> bool:
            publisher.publish(
                f"{settings.topic_root}/gw/json",
                json.dumps({"sensor": "M-1", "values": {"pm25": 3}}),
                qos=0,
            )
            publisher.publish(f"{settings.topic_root}/gw/json", b"garbage", qos=0)
            try:
                text = scrape()
            except OSError:
                return False
            # at least one: probes published while the first commit was slow may land together
            m = re.search(r"^pusat_ingest_readings_stored_total (\S+)$", text, re.MULTILINE)
            return m is not None and float(m.group(1)) >= 1

        wait_for(stored_one, timeout=30, interval=0.5, what="metrics to show a stored reading")
        text = scrape()
        assert 'pusat_ingest_quarantined_total{reason="malformed_json"}' in text
        assert "pusat_ingest_lag_p50_seconds" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
