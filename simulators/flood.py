"""The fast publisher mode for ingest benchmarks: city-shaped SenML as fast as the broker takes.

Bounded in count and in time, and loopback only: a load test sends traffic to this machine and
nowhere else. Event times are fresh (the moment of publishing) and values smooth, so that the
platform neither rejects the readings as late nor raises alarms: what is measured is ingest.
QoS 1 with a window of unacknowledged publishes (paho's packet ids are 16-bit).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pusat.settings import MqttTarget
from simulators.city import AIR_QUANTITIES
from simulators.publisher import is_loopback

WINDOW = 10_000
GATEWAYS = 20


class FloodError(RuntimeError):
    """Refused (not a loopback broker) or failed (no connection, no acknowledgements)."""


@dataclass(frozen=True)
class Flooded:
    messages: int
    readings: int
    seconds: float


def pack(gateway: int, ts: float, size: int) -> bytes:
    """``size`` readings from the air stations behind one gateway, at ``ts``."""
    records: list[dict[str, object]] = []
    stations = max(1, size // len(AIR_QUANTITIES) + 1)
    n = 0
    for s in range(stations):
        sensor = f"AQ-FLOOD-{gateway:02d}-{s:03d}"
        for i, q in enumerate(AIR_QUANTITIES):
            if n == size:
                break
            rec: dict[str, object] = {"n": q, "v": round(20 + 5 * math.sin(ts / 600 + i + s), 2)}
            if i == 0:
                rec["bn"], rec["bt"] = f"{sensor}:", ts
            records.append(rec)
            n += 1
    return orjson.dumps(records)


def flood(
    target: MqttTarget, topic_root: str, count: int, seconds: float, readings: int = 100
) -> Flooded:
    if not is_loopback(target.host):
        raise FloodError(
            f"refusing to flood {target.host}: the fast mode publishes to loopback only"
        )
    if count < 1 or seconds <= 0 or readings < 1:
        raise FloodError("count, seconds and readings must be positive")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"pusat-flood-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    client.max_inflight_messages_set(WINDOW)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    try:
        client.connect(target.host, target.port)
    except OSError as e:
        raise FloodError(f"cannot reach the broker at {target.host}:{target.port}: {e}") from e
    client.loop_start()
    try:
        if not connected.wait(10):
            raise FloodError("no CONNACK from the broker within 10 s")
        pending: deque[mqtt.MQTTMessageInfo] = deque()
        began = time.monotonic()
        deadline = began + seconds
        sent = 0
        last = [0.0] * GATEWAYS
        while sent < count and time.monotonic() < deadline:
            gw = sent % GATEWAYS
            # Fresh, and a millisecond apart at least per gateway: no reading repeats another.
            last[gw] = max(round(time.time(), 3), round(last[gw] + 0.001, 3))
            payload = pack(gw, last[gw], readings)
            pending.append(client.publish(f"{topic_root}/gw-flood-{gw:02d}/senml", payload, qos=1))
            sent += 1
            while len(pending) > WINDOW:
                pending.popleft().wait_for_publish(max(0.1, deadline - time.monotonic()))
        for info in pending:
            info.wait_for_publish(max(0.1, deadline + 10 - time.monotonic()))
        elapsed = time.monotonic() - began
        unacked = sum(1 for info in pending if not info.is_published())
        if unacked:
            raise FloodError(f"{unacked} messages not acknowledged by the broker")
        return Flooded(sent, sent * readings, elapsed)
    finally:
        client.disconnect()
        client.loop_stop()
