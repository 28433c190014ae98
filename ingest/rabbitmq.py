"""The worker's RabbitMQ session: partitioned quorum queues, each served by one worker at a time.

Gateways publish MQTT to RabbitMQ's MQTT plugin, which routes each message into the topic
exchange ``amq.topic`` (``/`` in the topic becomes ``.`` in the routing key). From there:

    amq.topic --<root>.#--> pusat.ingest.<root> (x-consistent-hash on the routing key)
              --> P quorum queues pusat.ingest.<root>.NN, each with single-active-consumer

so one topic always lands in the same queue (sticky per topic, as the design asks), every queue
is replicated by Raft over the cluster's nodes, and of all the workers consuming a queue the
broker delivers to exactly one; when that worker's connection goes (killed, cut off: the
heartbeat), the broker hands the queue, with its unacknowledged messages, to the next one.

What RabbitMQ 3.10 does not do is spread the queues: the first consumer to register is active
on all of them. So each worker also consumes a members queue (no messages; its consumer count
is the number of live workers) and every ``amqp_rebalance_s`` gives up one queue while it holds
more than its fair share (cancel, then consume again at the back of the line): the broker moves
the queue to the next worker waiting. A queue newly served waits ``amqp_handover_s`` before its
messages reach the worker, so that the batch its last worker had in flight has committed, and
the worker reloads alarm state before it processes them (``take_acquired``).

Every message is acknowledged only after its batch has committed, on the channel it came on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from prometheus_client import Counter

from ingest import lorawan
from ingest.pipeline import Message
from pusat.settings import Settings

log = logging.getLogger(__name__)

Put = Callable[[Message], None]


def routing_key(topic: str) -> str:
    """The routing key RabbitMQ's MQTT plugin gives a topic (levels joined by dots)."""
    return topic.replace("/", ".")


def binding_pattern(mqtt_filter: str) -> str:
    """An MQTT topic filter as an AMQP topic binding (``+`` is ``*``, ``#`` stays)."""
    return ".".join("*" if level == "+" else level for level in mqtt_filter.split("/"))


@dataclass(frozen=True)
class Topology:
    exchange: str
    queues: list[str]
    members: str
    patterns: list[str]
    own_prefix: str  # routing keys of the alarm topics ingest itself publishes

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        base = "pusat.ingest." + routing_key(settings.topic_root)
        n = settings.amqp_partitions
        extra = lorawan.load(settings.lorawan_mapping_files()).subscriptions()
        # Everything under the root, so that a topic breaking the contract is quarantined
        # rather than left unrouted (RabbitMQ drops what no binding takes).
        patterns = [binding_pattern(settings.topic_root) + ".#"]
        patterns += [binding_pattern(f) for f in extra]
        return cls(
            exchange=base,
            queues=[f"{base}.{k:03d}" for k in range(n)],
            members=f"{base}.members",
            patterns=patterns,
            own_prefix=routing_key(settings.topic_root) + ".alerts.",
        )

    def declare(self, ch: Any) -> None:
        """Exchanges, queues and bindings; idempotent, so every worker declares them at start.
        The queues must exist before gateways publish: RabbitMQ drops unroutable messages."""
        quorum = {"x-queue-type": "quorum", "x-single-active-consumer": True}
        ch.exchange_declare(self.exchange, "x-consistent-hash", durable=True)
        for p in self.patterns:
            ch.exchange_bind(self.exchange, "amq.topic", p)
        for q in self.queues:
            ch.queue_declare(q, durable=True, arguments=quorum)
            ch.queue_bind(q, self.exchange, "1")  # equal weights on the hash ring
        ch.queue_declare(self.members, durable=True, arguments={"x-queue-type": "quorum"})


@dataclass
class _Partition:
    index: int
    tag: str = ""
    active: bool = False  # the broker delivers this queue to us (seen a delivery)
    since: float = 0.0  # when the first delivery came, while still held
    held: list[Message] = field(default_factory=list)


class Session:
    """Consumes every partition queue on one channel of one connection to one of the cluster's
    nodes (the next one after a failure). Same surface as the MQTT session for the worker."""

    def __init__(self, settings: Settings, put: Put, elsewhere: Counter) -> None:
        self.settings = settings
        self.urls = settings.amqp()
        self.topology = Topology.of(settings)
        self._put = put
        self._elsewhere = elsewhere
        self.generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counter: threading.Thread | None = None
        self._workers = 0  # live workers, as last counted (0: not known yet)
        self._conn: Any = None
        self._ch: Any = None
        self._parts: list[_Partition] = []
        self._outstanding: set[int] = set()  # delivered, not yet acknowledged or rejected
        self._acquired = threading.Event()
        self._node = 0  # index into urls of the node to try next
        self.node_url: str | None = None
        self.moves = 0  # partitions this worker gave up to rebalance

    # -- the worker's side ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ingest-amqp", daemon=True)
        self._thread.start()
        self._counter = threading.Thread(target=self._count_loop, name="ingest-amqp-count")
        self._counter.daemon = True
        self._counter.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._counter is not None:
            self._counter.join(10)

    def ack(self, messages: list[Message]) -> int:
        """Acknowledge committed messages of the current connection; returns how many."""
        generation, conn, ch = self.generation, self._conn, self._ch
        tags = [m.mid for m in messages if m.generation == generation]
        if not tags or conn is None:
            return 0

        def send() -> None:
            if ch.is_open and self.generation == generation:
                self._ack(ch, tags)

        try:
            conn.add_callback_threadsafe(send)
        except pika.exceptions.ConnectionWrongStateError:
            return 0  # gone: the broker delivers them again
        return len(tags)

    def _ack(self, ch: Any, tags: list[int]) -> None:
        """One cumulative ack for the tags below every still unacknowledged delivery (each ack
        is a command the queue replicates, so one for a batch, not one per message), single
        acks for the rest. Runs on the network thread."""
        out = self._outstanding
        out.difference_update(tags)
        low = min(out) if out else None
        below = [t for t in tags if low is None or t < low]
        if below:
            ch.basic_ack(max(below), multiple=True)
        for t in tags:
            if low is not None and t > low:
                ch.basic_ack(t)

    def publish(self, topic: str, payload: bytes) -> None:
        """An alarm topic, into amq.topic (MQTT subscribers of the cluster get it; RabbitMQ
        3.10 keeps retained messages only of MQTT publishers, so it is not retained)."""
        conn, ch = self._conn, self._ch
        if conn is None:
            return
        key = routing_key(topic)

        def send() -> None:
            if ch.is_open:
                ch.basic_publish("amq.topic", key, payload, pika.BasicProperties(delivery_mode=2))

        try:
            conn.add_callback_threadsafe(send)
        except pika.exceptions.ConnectionWrongStateError:
            log.warning("alarm topic %s not published: no connection", topic)

    def take_acquired(self) -> bool:
        """True once after this worker began serving a partition (reload alarm state)."""
        if self._acquired.is_set():
            self._acquired.clear()
            return True
        return False

    def served(self) -> list[int]:
        """The partitions this worker is serving now."""
        return [p.index for p in self._parts if p.active and not p.held]

    # -- the network thread -------------------------------------------------------------------

    def _loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            url = self.urls[self._node % len(self.urls)]
            self._node += 1
            try:
                self._session(url)
                delay = 0.5
            except (pika.exceptions.AMQPError, OSError) as e:
                log.warning("RabbitMQ session on %s ended: %r; next node in %.1fs", url, e, delay)
            finally:
                self.connected.clear()
                self.subscribed.clear()
                self._conn = self._ch = None
                self._parts = []
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, 5.0)

    def _params(self, url: str) -> Any:
        params = pika.URLParameters(url)
        params.heartbeat = self.settings.amqp_heartbeat_s
        params.blocked_connection_timeout = 30
        params.socket_timeout = 5
        params.connection_attempts = 1
        return params

    def _count_loop(self) -> None:
        """Count the live workers (consumers of the members queue) on a connection of its own:
        the count asks the queue's Raft leader, which can take seconds while the cluster
        elects a new one, and the consuming thread must not wait for that."""
        while not self._stop.is_set():
            url = self.node_url or self.urls[0]
            try:
                conn = pika.BlockingConnection(self._params(url))
            except (pika.exceptions.AMQPError, OSError):
                self._stop.wait(1.0)
                continue
            try:
                ch = conn.channel()
                while not self._stop.is_set() and (self.node_url or url) == url:
                    q = ch.queue_declare(self.topology.members, passive=True)
                    self._workers = q.method.consumer_count
                    conn.sleep(self.settings.amqp_rebalance_s)
            except (pika.exceptions.AMQPError, OSError) as e:
                log.info("worker count on %s interrupted: %r", url, e)
                self._stop.wait(1.0)
            finally:
                if conn.is_open:
                    with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                        conn.close()

    def _session(self, url: str) -> None:
        conn = pika.BlockingConnection(self._params(url))
        try:
            ch = conn.channel()
            ch.confirm_delivery()  # alarm topics: the node takes each before we go on
            log.info("connected to %s; declaring the partition queues", url)
            self.topology.declare(ch)
            ch.basic_qos(prefetch_count=self.settings.amqp_prefetch)
            self.generation += 1
            self._conn, self._ch = conn, ch
            self._outstanding = set()
            self._parts = [_Partition(k) for k in range(len(self.topology.queues))]
            ch.basic_consume(self.topology.members, lambda *a: None, auto_ack=False)
            for p in self._parts:
                self._consume(p)
            self.node_url = url
            self.connected.set()
            self.subscribed.set()
            log.info("consuming %d partitions on %s", len(self._parts), url)
            next_balance = time.monotonic() + self.settings.amqp_rebalance_s
            while not self._stop.is_set():
                conn.process_data_events(time_limit=0.05)
                now = time.monotonic()
                self._release(now)
                if now >= next_balance:
                    next_balance = now + self.settings.amqp_rebalance_s * random.uniform(0.8, 1.2)
                    self._rebalance(ch, self._workers)
        finally:
            if conn.is_open:
                try:
                    conn.process_data_events(time_limit=0)  # the acknowledgements queued last
                    conn.close()
                except (pika.exceptions.AMQPError, OSError):
                    pass

    def _consume(self, p: _Partition) -> None:
        generation = self.generation
        p.active, p.held, p.since = False, [], 0.0

        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            self._delivered(p, generation, method, body)

        p.tag = self._ch.basic_consume(self.topology.queues[p.index], on_message)

    def _delivered(self, p: _Partition, generation: int, method: Any, body: bytes) -> None:
        key: str = method.routing_key
        if key.startswith(self.topology.own_prefix):
            self._ch.basic_ack(method.delivery_tag)  # our own alarm topics, routed back
            self._elsewhere.inc()
            return
        m = Message(key.replace(".", "/"), body, time.time(), 1, method.delivery_tag, generation)
        self._outstanding.add(m.mid)
        if p.active:
            self._put(m)
            return
        if not p.held:
            p.since = time.monotonic()
        p.held.append(m)

    def _release(self, now: float) -> None:
        """Hand over the messages of partitions whose handover wait has passed."""
        for p in self._parts:
            if p.held and now - p.since >= self.settings.amqp_handover_s:
                self._acquired.set()  # before the messages: the worker reloads, then reads
                held, p.held, p.active = p.held, [], True
                log.info("serving partition %d", p.index)
                for m in held:
                    self._put(m)

    def _rebalance(self, ch: Any, workers: int) -> None:
        """Give up one partition while serving more than ceil(partitions / workers)."""
        if workers <= 1:
            return  # alone, or not counted yet
        mine = [p for p in self._parts if p.active or p.held]
        fair = math.ceil(len(self._parts) / workers)
        if len(mine) <= fair:
            return
        p = random.choice(mine)
        ch.basic_cancel(p.tag)
        # What was delivered stays ours to commit and acknowledge; what was held is not
        # processed here: rejected, so the broker gives it to the next worker in order.
        for m in p.held:
            ch.basic_reject(m.mid, requeue=True)
            self._outstanding.discard(m.mid)
        self.moves += 1
        log.info("gave up partition %d (%d workers, %d held here)", p.index, workers, len(mine))
        self._consume(p)  # back in line, for when another worker goes
