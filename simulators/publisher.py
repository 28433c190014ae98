"""Publishing as real gateways do: paho-mqtt 2.x over MQTT 5, one connection per gateway.

Each gateway connects with its `status` topic set to a retained ``offline`` as its last will,
then publishes a retained ``online`` and its retained `meta` (the self-description ingest
provisions sensors from), then readings with QoS 1. A clean stop publishes ``offline`` itself
(the broker sends the will only when a connection dies). Every status names its owner, this
run (``{"status": ..., "owner": ...}``), and so do the client ids: a second simulator of the
same gateways that ends says offline for itself only, and ingest keeps the gateway online while
another owner still says online. Publishing does not wait for each
acknowledgement: at most ``WINDOW`` are in flight per connection (paho's packet ids are 16-bit).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pusat.settings import MqttTarget
from simulators.readings import Message

WINDOW = 20_000
CONNECT_TIMEOUT_S = 10.0


class PublishError(RuntimeError):
    """The broker could not be reached or stopped acknowledging."""


class Sink(Protocol):
    """Where gateways' messages go: a broker, or a list in a test."""

    def open(self, gateways: Sequence[str], metas: dict[str, bytes]) -> None: ...

    def send(self, m: Message) -> None: ...

    def close(self) -> None: ...


def is_loopback(host: str) -> bool:
    try:
        return all(
            ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None)
        )
    except (OSError, ValueError):
        return False


def status_payload(status: str, owner: str) -> bytes:
    return orjson.dumps({"status": status, "owner": owner})


class _Gateway:
    def __init__(self, target: MqttTarget, root: str, gateway: str, owner: str) -> None:
        self.topic = f"{root}/{gateway}"
        self.owner = owner
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            # One id per owner and gateway: a restarted owner takes its old session over (and
            # its will fires before the new `online`), another owner never does.
            client_id=f"pusat-{owner}-{gateway}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if target.username is not None:
            c.username_pw_set(target.username, target.password)
        if target.tls:
            c.tls_set()
        c.will_set(f"{self.topic}/status", status_payload("offline", owner), qos=1, retain=True)
        c.max_inflight_messages_set(1000)
        c.reconnect_delay_set(1, 5)
        self.connected = threading.Event()
        c.on_connect = self._on_connect
        self.client = c
        self.pending: deque[mqtt.MQTTMessageInfo] = deque()
        self.target = target

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if not getattr(reason, "is_failure", False):
            self.connected.set()

    def connect(self) -> None:
        try:
            self.client.connect(self.target.host, self.target.port, keepalive=30)
        except OSError as e:
            raise PublishError(
                f"cannot reach the broker at {self.target.host}:{self.target.port}: {e}"
            ) from e
        self.client.loop_start()

    def publish(self, kind: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(f"{self.topic}/{kind}", payload, qos=1, retain=retain)
        self.pending.append(info)
        while len(self.pending) > WINDOW:
            self._settle(self.pending.popleft())

    def _settle(self, info: mqtt.MQTTMessageInfo, timeout: float = 30.0) -> None:
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise PublishError(f"{self.topic}: no acknowledgement within {timeout:.0f} s")

    def drain(self) -> None:
        while self.pending:
            self._settle(self.pending.popleft())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MqttSink:
    """``owner``: who speaks for these gateways' status; default a name of this run's own."""

    def __init__(self, target: MqttTarget, topic_root: str, owner: str | None = None) -> None:
        self.target = target
        self.root = topic_root
        self.owner = owner or f"sim-{uuid.uuid4().hex[:6]}"
        self.gateways: dict[str, _Gateway] = {}

    def open(self, gateways: Sequence[str], metas: dict[str, bytes]) -> None:
        for gw in gateways:
            g = _Gateway(self.target, self.root, gw, self.owner)
            self.gateways[gw] = g
            g.connect()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        for gw, g in self.gateways.items():
            if not g.connected.wait(max(0.0, deadline - time.monotonic())):
                self.close()
                raise PublishError(f"gateway {gw}: no CONNACK from the broker within 10 s")
            g.publish("status", status_payload("online", self.owner), retain=True)
            g.publish("meta", metas[gw], retain=True)

    def send(self, m: Message) -> None:
        self.gateways[m.gateway].publish(m.kind, m.payload, m.retain)

    def close(self) -> None:
        for g in self.gateways.values():
            if g.connected.is_set():
                g.publish("status", status_payload("offline", self.owner), retain=True)
        try:
            for g in self.gateways.values():
                if g.connected.is_set():
                    g.drain()
        finally:
            for g in self.gateways.values():
                g.close()
            self.gateways.clear()


class ListSink:
    """Keeps what would be published (dry runs and tests): (message, wall time)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Message, float]] = []
        self.opened: dict[str, bytes] = {}

    def open(self, gateways: Sequence[str], metas: dict[str, bytes]) -> None:
        self.opened = {gw: metas[gw] for gw in gateways}

    def send(self, m: Message) -> None:
        self.sent.append((m, time.time()))

    def close(self) -> None:
        pass
