"""Scale-out and recovery on real services: a shared-subscription group, a broker restart,
and the Prometheus endpoint of a worker process."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

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
