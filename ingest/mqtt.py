"""The worker's MQTT 5 session: persistent, manually acknowledged, callbacks that only enqueue."""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest import topics
from ingest.pipeline import Message
from pusat.settings import Settings

log = logging.getLogger(__name__)


class Inbox:
    """Messages from the MQTT callback to the worker, at most ``limit`` waiting.

    A SimpleQueue (no lock on the common path) with a bound: when it is full the callback waits
    until the worker has taken half, so the broker is slowed instead of anything being lost.
    QoS 1 messages never fill it alone: Receive Maximum limits how many are unacknowledged.
    """

    def __init__(self, limit: int) -> None:
        self._q: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._limit = limit
        self._room = threading.Event()
        self._room.set()
        self._closed = False

    def put(self, m: Message) -> None:
        if self._q.qsize() >= self._limit:
            self._room.clear()
            while self._q.qsize() >= self._limit and not self._closed:
                self._room.wait(1.0)  # set by get(); re-checked, so a missed wake-up only delays
        if not self._closed:
            self._q.put(m)

    def close(self) -> None:
        """Stop taking messages (shutting down): the callback never waits again, and what is
        refused stays unacknowledged, so the broker delivers it again to the next session."""
        self._closed = True
        self._room.set()

    def get(self, timeout: float) -> Message:
        """The next message; queue.Empty after ``timeout`` seconds."""
        m = self._q.get(timeout=timeout)
        if not self._room.is_set() and self._q.qsize() <= self._limit // 2:
            self._room.set()
        return m

    def qsize(self) -> int:
        return self._q.qsize()

    def empty(self) -> bool:
        return self._q.empty()


class Session:
    """A paho client whose messages land in a bounded queue, tagged with the connection they came
    on: an acknowledgement is only sent on that same connection, since after a reconnect the
    broker redelivers unacknowledged messages under new packet ids.
    """

    def __init__(self, settings: Settings, inbox: Inbox) -> None:
        self.settings = settings
        self.inbox = inbox
        self.generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # set once the broker has confirmed the subscription
        self._subs = topics.subscriptions(settings.topic_root, settings.group)
        target = settings.mqtt()
        self._target = target
        c = mqtt.Client(
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

    def ack(self, messages: list[Message]) -> int:
        """Acknowledge committed QoS 1 messages of the current connection; returns how many."""
        n = 0
        for m in messages:
            if m.qos > 0 and m.generation == self.generation:
                self.client.ack(m.mid, m.qos)
                n += 1
        return n

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
        # Blocks when the queue is full: back-pressure onto the broker instead of losing data.
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        self.inbox.put(Message(msg.topic, payload, time.time(), msg.qos, msg.mid, self.generation))
