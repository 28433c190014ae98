"""The worker's MQTT 5 session: persistent, manually acknowledged, callbacks that only enqueue."""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter

from ingest import lorawan, sparkplug, topics
from ingest.pipeline import Message
from pusat.settings import Settings

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024  # bytes read from the broker's socket at once (under malloc's mmap size)


class Inbox:
    """Messages from the MQTT callback to the worker, at most ``limit`` waiting.

    A deque (appends and pops are atomic, no lock per message) that the worker drains in chunks;
    an event wakes the worker only when it may be waiting. When full, the callback waits until
    the worker has taken half, so the broker is slowed instead of anything being lost. QoS 1
    messages never fill it alone: Receive Maximum limits how many are unacknowledged.
    """

    def __init__(self, limit: int) -> None:
        self._q: collections.deque[Message] = collections.deque()
        self._limit = limit
        self._room = threading.Event()
        self._room.set()
        self._ready = threading.Event()  # set after a put; cleared by take() before it waits
        self._closed = False

    def put(self, m: Message) -> None:
        q = self._q
        if len(q) >= self._limit:
            self._room.clear()
            while len(q) >= self._limit and not self._closed:
                self._room.wait(1.0)  # set by take(); re-checked, so a missed wake-up only delays
        if not self._closed:
            q.append(m)
            if not self._ready.is_set():
                self._ready.set()

    def close(self) -> None:
        """Stop taking messages (shutting down): the callback never waits again, and what is
        refused stays unacknowledged, so the broker delivers it again to the next session."""
        self._closed = True
        self._room.set()

    def take(self, limit: int, timeout: float) -> list[Message]:
        """Up to ``limit`` messages in arrival order, waiting up to ``timeout`` seconds for the
        first; may return none (after the timeout, or early)."""
        q = self._q
        if not q:
            self._ready.clear()
            if not q:  # checked again after clearing: a put in between has set the event
                self._ready.wait(timeout)
        taken = [q.popleft() for _ in range(min(limit, len(q)))]
        if not self._room.is_set() and len(q) <= self._limit // 2:
            self._room.set()
        return taken

    def put_back(self, messages: list[Message]) -> None:
        """Return messages taken but not used to the front, in their order."""
        self._q.extendleft(reversed(messages))

    def qsize(self) -> int:
        return len(self._q)

    def empty(self) -> bool:
        return not self._q


class Session:
    """A paho client whose messages land in a bounded queue, tagged with the connection they came
    on: an acknowledgement is only sent on that same connection, since after a reconnect the
    broker redelivers unacknowledged messages under new packet ids.
    """

    def __init__(self, settings: Settings, inbox: Inbox, elsewhere: Counter) -> None:
        self.settings = settings
        self.inbox = inbox
        # With a partition, messages of other partitions' gateways are acknowledged at once
        # and counted in ``elsewhere``: their own worker has them on its own session.
        self._root = settings.topic_root
        self._part, self._parts = settings.partitions()
        self._elsewhere = elsewhere
        self.generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # set once the broker has confirmed the subscription
        gateways = lorawan.load(settings.lorawan_mapping_files()).subscriptions()
        self._subs = topics.subscriptions(settings.topic_root, settings.group, gateways)
        # Sparkplug never as a shared subscription: a node's births and data must meet in one
        # worker (Worker refuses a group with Sparkplug groups configured)
        self._subs += sparkplug.load(settings.sparkplug_mapping_files()).subscriptions()
        target = settings.mqtt()
        self._target = target
        c = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if target.username:
            c.username_pw_set(target.username, target.password)
        if target.tls:
            c.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        c.reconnect_delay_set(1, 10)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish_received = self._received
        c.on_subscribe = self._on_subscribe
        self.client = c

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        # connect_async: the loop thread keeps retrying while the broker is not there yet.
        self.client.connect_async(
            self._target.host,
            self._target.port,
            keepalive=30,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def stop(self) -> None:
        self.inbox.close()  # the network thread must not be left waiting in the callback
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes) -> None:
        """A retained QoS 1 alarm topic."""
        self.client.publish(topic, payload, qos=1, retain=True)

    def take_acquired(self) -> bool:
        """Never: an MQTT worker's share of the gateways does not move while it runs."""
        return False

    def ack(self, messages: list[Message]) -> int:
        """Acknowledge committed QoS 1 messages of the current connection; returns how many."""
        generation = self.generation
        mids = [m.mid for m in messages if m.qos == 1 and m.generation == generation]
        self.client.ack_many(mids)
        return len(mids)

    # paho callbacks run on the network thread: they must only record and enqueue.
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self.generation += 1
        client.subscribe([(s, SubscribeOptions(qos=1)) for s in self._subs])
        self.connected.set()
        log.info("connected to the broker (session present: %s)", flags.session_present)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            log.error("broker refused the subscription: %s", failed)
            return
        self.subscribed.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        log.warning("disconnected from the broker: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """The messages paho decodes itself (see _Client._handle_publish)."""
        payload = msg.payload
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        self._received(msg.topic, payload, msg.qos, msg.mid)

    def _received(self, topic: str, payload: bytes, qos: int, mid: int) -> None:
        if self._parts > 1 and topics.partition_of(self._root, topic, self._parts) != self._part:
            if qos == 1:
                self.client.ack_many([mid])
            self._elsewhere.inc()
            return
        # Blocks when the queue is full: back-pressure onto the broker instead of losing data.
        self.inbox.put(Message(topic, payload, time.time(), qos, mid, self.generation))


class _Client(mqtt.Client):
    """paho's client with buffered reads and acknowledgements of many messages at once.

    paho reads each packet with one ``recv`` per piece (type, length, body) after a ``select``:
    four system calls per small message, each releasing and retaking the interpreter lock the
    worker's other threads want. Here the socket is read in large chunks and paho takes its
    pieces from the chunk; ``loop_read`` carries on while whole packets wait in it, since
    ``select`` cannot see them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (topic, payload, qos, packet id) of each PUBLISH read the short way; None: paho's way
        self.on_publish_received: Callable[[str, bytes, int, int], None] | None = None
        self._chunk = b""
        self._chunk_pos = 0
        self._chunk_sock: object = None  # the socket the chunk came from

    def _sock_recv(self, bufsize: int) -> bytes:
        chunk, pos = self._chunk, self._chunk_pos
        if pos >= len(chunk) or self._chunk_sock is not self._sock:
            # Raises as paho expects (BlockingIOError when nothing is there); b"": closed.
            chunk, pos = super()._sock_recv(READ_CHUNK), 0
            self._chunk, self._chunk_sock = chunk, self._sock
        piece = chunk[pos : pos + bufsize]
        self._chunk_pos = pos + len(piece)
        return piece

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while (
            rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            and self._chunk_pos < len(self._chunk)
            and self._chunk_sock is self._sock
        ):
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        """A QoS 0 or 1 PUBLISH straight to ``on_publish_received``, acknowledged later by the
        worker: the topic, packet id and payload taken from the packet, its properties skipped.

        paho builds a message object, parses every MQTT 5 property in Python and matches the
        topic against per-topic callbacks for each message: most of the network thread's time
        with one-reading messages. Ingest uses no property (we allow no topic aliases, so every
        PUBLISH names its topic). QoS 2, a topic that is not UTF-8, or a packet that does not
        add up go paho's way.
        """
        sink, packet = self.on_publish_received, self._in_packet["packet"]
        qos = (self._in_packet["command"] & 0x06) >> 1
        if sink is None or qos > 1 or not self._manual_ack or self._protocol != mqtt.MQTTv5:
            return super()._handle_publish()
        parsed = parse_publish(packet, qos)
        if parsed is None:
            return super()._handle_publish()
        topic, mid, payload = parsed
        sink(topic, payload, qos, mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: list[int]) -> None:
        """PUBACKs (success, no properties) for ``mids``, queued as one write: paho's ``ack``
        costs a packet, a wake-up of the network thread and a socket write per message (several
        microseconds each). Like ``ack`` it only queues: a reconnect drops what is still queued,
        and the broker then delivers those messages again."""
        if mids:
            self._packet_queue(PUBACK, pubacks(mids), 0, 0)


def parse_publish(packet: bytes | bytearray, qos: int) -> tuple[str, int, bytes] | None:
    """(topic, packet id, payload) of an MQTT 5 PUBLISH's variable header and payload; None
    when the topic is not UTF-8 or the lengths run past the packet."""
    end = 2 + int.from_bytes(packet[:2], "big")
    topic = packet[2:end]
    mid = 0
    if qos:
        mid = int.from_bytes(packet[end : end + 2], "big")
        end += 2
    # The properties' length: a variable byte integer of at most four bytes.
    length = shift = 0
    for k in range(end, min(end + 4, len(packet))):
        byte = packet[k]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            start = k + 1 + length
            break
    else:
        return None
    if start > len(packet):
        return None
    try:
        return bytes(topic).decode("utf-8"), mid, bytes(packet[start:])
    except UnicodeDecodeError:
        return None


def pubacks(mids: list[int]) -> bytes:
    """Consecutive MQTT PUBACK packets: type, remaining length 2, packet id (big-endian)."""
    packets = np.empty(len(mids), dtype=[("type", "u1"), ("length", "u1"), ("mid", ">u2")])
    packets["type"] = PUBACK
    packets["length"] = 2
    packets["mid"] = mids
    return packets.tobytes()
