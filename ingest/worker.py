"""The ingest worker: pull messages, batch by size and time, write, commit, then acknowledge.

A batch is acknowledged only after its transaction commits. When the database is away the worker
keeps the batch, retries with back-off and acknowledges nothing, so the broker keeps (and after a
crash redelivers) every message; the store's unique key makes redelivery harmless.
"""

from __future__ import annotations

import collections
import logging
import operator
import queue
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import psycopg

from ingest import commit as committing
from ingest import lorawan, rabbitmq, sparkplug
from ingest.alarms import Alarms
from ingest.commit import Committed, Started, commit
from ingest.derived import Derived
from ingest.metrics import IngestMetrics
from ingest.mqtt import Inbox, Session
from ingest.pipeline import Accumulator, Limits, quarantine_row
from ingest.records import Rejection
from processing import kernels, rules
from processing.catalogue import Catalogue
from pusat.settings import Settings
from store import db, maintenance, tier
from store.writer import Batch, Readings, Writer, notify

log = logging.getLogger(__name__)

STORE_ERROR = "store_error"
TAKE = 512  # messages taken off the inbox at once
SWITCH_INTERVAL_S = 0.0005  # see Worker.run


class _Stopped(Exception):
    """Stopped while the database was away: nothing more can be committed."""


@dataclass(frozen=True)
class _Pending:
    """A batch whose readings are on their way to the database, not yet committed or acked."""

    acc: Accumulator
    started: Started
    t0: float  # perf_counter() at its start, for the commit-time histogram


def retention(s: Settings) -> maintenance.Retention:
    return maintenance.Retention(
        s.retention_readings_days,
        s.retention_rollup_1m_days,
        s.retention_rollup_1h_days,
        s.retention_quarantine_days,
    )


class Worker:
    def __init__(self, settings: Settings, catalogue: Catalogue, metrics: IngestMetrics) -> None:
        if settings.database_url is None:
            raise ValueError("no database configured: set PUSAT_DATABASE_URL or run `pusat up`")
        self.settings = settings
        self.catalogue = catalogue
        self.metrics = metrics
        groups = sparkplug.load(settings.sparkplug_mapping_files())
        if groups.groups and settings.group:
            raise ValueError(
                "Sparkplug B needs each edge node's messages in one worker: scale out with"
                " partitions (--partition K/N), not a shared-subscription group"
            )
        # the Sparkplug host's state of every edge node, kept across batches
        self.sparkplug = sparkplug.Host(groups) if groups.groups else None
        self.limits = Limits(
            settings.max_payload_bytes,
            settings.max_skew_s,
            settings.horizon_s,
            settings.strict,
            lorawan.load(settings.lorawan_mapping_files()),
            self.sparkplug,
        )
        self.inbox = Inbox(settings.queue_size)
        self.session: Session | rabbitmq.Session
        if settings.source == "rabbitmq":
            self.session = rabbitmq.Session(settings, self.inbox.put, metrics.elsewhere)
        else:
            self.session = Session(settings, self.inbox, metrics.elsewhere)
        self.alarms = Alarms(
            rules.load(settings.rules), catalogue, settings.topic_root, self._publish
        )
        self._unpublished: set[tuple[str, str]] = set()
        self.derived = Derived(catalogue, settings.partitions(), settings.city_timezone)
        self._writer: Writer | None = None
        self._connect_error: psycopg.Error | None = None  # the last failed connect's, for the log
        # A second connection: the next batch's readings are copied on it while the last one
        # merges and commits (see _write_loop).
        self._spare: Writer | None = None
        # Periodic work between batches: (every seconds, what), and when each last ran. The
        # tick and the indices at once; maintenance first after its interval, not at start.
        self._periodic = [
            (settings.tick_s, self._tick),
            (settings.index_every_s, self._derive),
            (settings.maintenance_every_s, self._maintain),
        ]
        self._last_run = [0.0, 0.0, time.monotonic()]
        self._last_log = time.monotonic()
        self.failed: BaseException | None = None  # what ended run() early, for whoever waits

    # -- database ---------------------------------------------------------------------------

    def _db_failed(self, stage: str, e: psycopg.Error) -> None:
        """Count a database failure wherever the worker met it: operators alert on this."""
        self.metrics.db_errors.labels(stage).inc()
        if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
            self.metrics.db_up.set(0)

    def _open(self) -> Writer | None:
        """The writer, its connection opened first if needed (one try); None while the database
        cannot be reached (counted)."""
        if self._writer is not None and not self._writer.conn.closed:
            return self._writer
        url = self.settings.database_url
        assert url is not None
        try:
            conn = db.connect(
                url,
                application="pusat-ingest",
                idle_in_transaction_s=self.settings.db_idle_in_transaction_s,
            )
        except psycopg.OperationalError as e:
            self._db_failed("connect", e)
            self._connect_error = e
            return None
        if self._writer is None:
            self._writer = Writer(conn)
        else:
            self._writer.reconnect(conn)
        self.metrics.db_up.set(1)
        return self._writer

    def _connect(self, stop: threading.Event) -> Writer | None:
        """The writer, retrying with back-off until connected; None when stopped first."""
        delay = 0.2
        while (writer := self._open()) is None:
            log.warning("database unavailable (%s); retrying in %.1fs", self._connect_error, delay)
            if stop.wait(delay):
                return None
            delay = min(delay * 2, 5.0)
        return writer

    def _write(self, acc: Accumulator, stop: threading.Event) -> bool:
        """Write until committed; False when stopped before the batch could be committed."""
        delay = 0.2
        while True:
            writer = self._connect(stop)
            if writer is None:
                return False
            try:
                batch = acc.finish(writer.provisioned_sensors, time.time())
                t0 = time.perf_counter()
                result = commit(writer, batch, self.alarms)
                self._unpublished |= result.alarms
                self._flush_alarms(writer)
            except db.RETRYABLE as e:
                self._db_failed("batch", e)
                log.warning("batch not written (%s); retrying in %.1fs", e, delay)
                writer.conn.close()
                if stop.wait(delay):
                    return False
                delay = min(delay * 2, 5.0)
                continue
            except psycopg.DatabaseError as e:
                # Not an outage but data the database refused: keep every message of the batch in
                # quarantine rather than retrying forever or dropping it.
                self._db_failed("batch", e)
                log.error("database refused a batch, quarantining its messages: %s", e)
                writer.conn.rollback()
                batch = self._refused(acc, str(e))
                t0 = time.perf_counter()
                result = commit(writer, batch, self.alarms)
            self._account(batch, result.stored, result.duplicates, time.perf_counter() - t0)
            return True

    def _flush_alarms(self, writer: Writer) -> None:
        """Publish the alarm topics that changed (kept until published, across failures)."""
        if self._unpublished:
            with writer.conn.transaction(), writer.conn.cursor() as cur:
                self.alarms.publish(cur, self._unpublished)
            self.metrics.alarm_changes.inc(len(self._unpublished))
            self._unpublished.clear()

    def _load_alarms(self) -> None:
        """The alarm state, read in a transaction of its own (see ``Alarms.reload``); on failure
        the batch's transaction loads it as before."""
        writer = self._open()
        if writer is None:
            return
        t0 = time.monotonic()
        try:
            self.alarms.reload(writer.conn)
            log.info(
                "alarm state of %d series loaded in %.1f s",
                self.alarms.series,
                time.monotonic() - t0,
            )
        except db.RETRYABLE as e:
            self._db_failed("alarms", e)
            log.warning("alarm state not loaded: %s", e)
            writer.conn.close()

    def _tick(self) -> None:
        """Stale sensors, expired shelving, settled flapping: judged even when no data comes."""
        writer = self._open()
        if writer is None:
            return  # counted; the next tick (or batch) tries again
        try:
            with writer.conn.transaction(), writer.conn.cursor() as cur:
                touched = self.alarms.tick(cur, datetime.now(UTC))
                if touched:
                    notify(cur, alarms=len(touched))
                self._unpublished |= touched
            self._flush_alarms(writer)
        except db.RETRYABLE as e:
            self._db_failed("tick", e)
            self.alarms.invalidate()
            log.warning("alarm tick skipped: %s", e)
            writer.conn.close()

    def _derive(self) -> None:
        """Indices for the hours that completed since the last time (from hourly rollups)."""
        writer = self._open()
        if writer is None:
            return
        try:
            with writer.conn.transaction(), writer.conn.cursor() as cur:
                batch = self.derived.due(cur, datetime.now(UTC))
            if batch is not None:
                result = commit(writer, batch, self.alarms)
                self._unpublished |= result.alarms
                self._flush_alarms(writer)
                log.info("derived %d index readings", result.stored)
        except db.RETRYABLE as e:
            self._db_failed("indices", e)
            log.warning("indices skipped: %s", e)
            writer.conn.close()

    def _maintain(self) -> None:
        """Retention (and compression on the community edition), by the tier's means."""
        writer = self._open()
        if writer is None:
            return
        s = self.settings
        try:
            runs = maintenance.run(
                writer.conn, tier.detect(writer.conn), retention(s), s.compress_after_days
            )
        except db.RETRYABLE as e:
            self._db_failed("maintenance", e)
            log.warning("maintenance skipped: %s", e)
            writer.conn.close()
            return
        for r in runs or []:
            if r.removed:
                log.info("retention: %s %s removed %d", r.table, r.method, r.removed)

    def _publish(self, topic: str, payload: bytes) -> None:
        self.session.publish(topic, payload)

    def _refused(self, acc: Accumulator, error: str) -> Batch:
        rows = [
            quarantine_row(m, None, Rejection(STORE_ERROR, f"database refused the batch: {error}"))
            for m in acc.messages
        ]
        empty = Readings([], [], [], [], np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64))
        return Batch(readings=empty, quarantine=rows)

    def _account(self, batch: Batch, stored: int, duplicates: int, seconds: float) -> None:
        m = self.metrics
        m.db_up.set(1)
        m.batches.inc()
        m.stored.inc(stored)
        m.duplicates.inc(duplicates)
        m.commit_seconds.observe(seconds)
        for reason, n in collections.Counter(q.reason for q in batch.quarantine).items():
            m.quarantined.labels(reason).inc(n)
        if len(batch.readings):
            lag = time.time() - batch.readings.ts_us / 1e6
            m.lag_p50.set(float(np.median(lag)))
            m.lag_max.set(float(lag.max()))

    # -- the loop -----------------------------------------------------------------------------

    def _collect(self, stop: threading.Event, max_messages: int | None = None) -> Accumulator:
        """Messages until the batch is full or its time is up (the clock starts at the first)."""
        s = self.settings
        acc = Accumulator(s.topic_root, self.catalogue, self.limits)
        deadline: float | None = None
        while acc.readings < s.batch_size and len(acc.messages) != max_messages:
            timeout = 0.1 if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                break
            limit = TAKE if max_messages is None else min(TAKE, max_messages - len(acc.messages))
            chunk = self.inbox.take(limit, timeout)
            if not chunk:
                if deadline is None and stop.is_set():
                    break
                continue
            if deadline is None:
                deadline = time.monotonic() + s.batch_ms / 1000
            for i, m in enumerate(chunk):
                acc.add(m)
                if acc.readings >= s.batch_size:
                    self.inbox.put_back(chunk[i + 1 :])  # the next batch's
                    break
        self._count_received(acc)
        self._ask_rebirths()
        return acc

    def _ask_rebirths(self) -> None:
        """NCMD Rebirth to the Sparkplug nodes found out of step while decoding (QoS 0, as the
        specification has commands): published here, between batches, not in a callback."""
        if self.sparkplug is None:
            return
        for topic, payload in self.sparkplug.rebirths(time.time()):
            if not isinstance(self.session, Session):
                # Sparkplug's births and data must reach one worker: the MQTT source only.
                log.warning("Sparkplug rebirth %s not asked: not on the MQTT source", topic)
                continue
            log.info("asking for a Sparkplug rebirth: %s", topic)
            self.session.client.publish(topic, payload, qos=0)

    def _count_received(self, acc: Accumulator) -> None:
        # counted per batch: a counter update per message costs as much as decoding it
        by_topic = collections.Counter(map(operator.attrgetter("topic"), acc.messages))
        kinds: dict[str, int] = {}
        for topic, n in by_topic.items():
            kind = topic.rsplit("/", 1)[-1]
            kinds[kind] = kinds.get(kind, 0) + n
        for kind, n in kinds.items():
            self.metrics.messages.labels(kind).inc(n)
        self.metrics.received.inc(acc.readings)

    def _commit(self, acc: Accumulator, stop: threading.Event) -> bool:
        if not acc.messages:
            return True
        if not self._write(acc, stop):
            return False  # stopped during an outage: nothing acked, the broker keeps it all
        self.session.ack(acc.messages)
        return True

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set; then drain what was received, commit, ack and disconnect.

        Two threads: this one takes messages off the queue and decodes them into batches, a
        writer thread commits and acknowledges them in order, so decoding the next batch
        overlaps waiting for the database. Messages that arrive after the stop are left
        unacknowledged: the broker keeps them for the next start of this worker (or another
        member of its group).
        """
        # The writer and network threads wait on sockets and then need the interpreter lock
        # back from the decoding thread, which CPython makes them wait for up to the switch
        # interval (5 ms by default): more than a database round trip. Shorter while we run.
        previous = sys.getswitchinterval()
        sys.setswitchinterval(min(previous, SWITCH_INTERVAL_S))
        try:
            self._run(stop)
        finally:
            sys.setswitchinterval(previous)

    def _run(self, stop: threading.Event) -> None:
        # Before subscribing: the first batch must not wait for the compiler (seconds on a first
        # run; later runs load the compiled kernels from numba's on-disk cache).
        t0 = time.monotonic()
        kernels.warm()
        log.info("processing kernels ready in %.1f s", time.monotonic() - t0)
        self.session.start()
        batches: queue.Queue[Accumulator | None] = queue.Queue(maxsize=2)
        writer = threading.Thread(
            target=self._write_loop, args=(batches, stop), name="ingest-writer", daemon=True
        )
        writer.start()
        try:
            self._collect_loop(batches, stop, writer)
        except BaseException as e:
            self.failed = e  # kept for the thread's owner, then raised as usual
            stop.set()
            raise
        finally:
            self._hand_over(batches, None, writer)
            writer.join()
            self.session.stop()
            for w in (self._writer, self._spare):
                if w is not None:
                    w.conn.close()
            log.info("ingest stopped: %s", self.metrics.summary())
        if self.failed is not None:
            raise self.failed

    @staticmethod
    def _hand_over(
        batches: queue.Queue[Accumulator | None], acc: Accumulator | None, writer: threading.Thread
    ) -> bool:
        """Queue a batch for the writer (waits while it is busy); False when the writer is gone."""
        while writer.is_alive():
            try:
                batches.put(acc, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _collect_loop(
        self,
        batches: queue.Queue[Accumulator | None],
        stop: threading.Event,
        writer: threading.Thread,
    ) -> None:
        while not stop.is_set():
            acc = self._collect(stop)
            if acc.messages and not self._hand_over(batches, acc, writer):
                return
            self.metrics.queue_depth.set(self.inbox.qsize())
            if isinstance(self.session, rabbitmq.Session):
                self.metrics.partitions.set(len(self.session.served()))
            self._maybe_log()
        remaining = self.inbox.qsize()
        while remaining > 0:
            acc = self._collect(stop, max_messages=remaining)
            remaining -= len(acc.messages)
            if not acc.messages or not self._hand_over(batches, acc, writer):
                return

    def _write_loop(self, batches: queue.Queue[Accumulator | None], stop: threading.Event) -> None:
        """Commit and acknowledge batches in order; run the tick and the indices when due.

        Two batches overlap when they come back to back: while batch N merges and commits on
        one connection, the server already stores the readings of N+1, sent on the other.
        Everything after the readings (rollups, alarms, commit, ack) stays in batch order, and
        N+1's transaction is rolled back before N is written again after a failure.
        """
        pending: _Pending | None = None
        try:
            while True:
                try:
                    got = (
                        batches.get(timeout=min(self.settings.tick_s, 0.5))
                        if pending is None
                        else batches.get_nowait()  # the next batch only if it is there now
                    )
                except queue.Empty:
                    got = Accumulator(self.settings.topic_root, self.catalogue, self.limits)
                # A partition newly served (RabbitMQ source): its sensors' alarm state was
                # another worker's until now, so it is read again before their readings.
                acquired = self.session.take_acquired()
                if pending is not None:
                    if got is not None and got.messages and not self._due() and not acquired:
                        pending = self._overlap(pending, got, stop)
                        continue
                    self._finish(pending, stop)
                    pending = None
                if acquired:
                    self.alarms.invalidate()
                if got is None:
                    return
                if not self.alarms.loaded:
                    self._load_alarms()
                self._run_due()
                if got.messages:
                    pending = self._begin(got, stop)
        except _Stopped:
            return  # stopped during an outage: nothing more can be committed
        except BaseException as e:  # noqa: BLE001 - not swallowed: run() raises it again
            self.failed = e
            stop.set()  # a bug: stop the collector too, so the failure is seen
        finally:
            if pending is not None and self.failed is not None:
                pending.started.abandon(self.failed)

    def _due(self) -> list[int]:
        """Which periodic work is due (positions in ``_periodic``)."""
        now, last = time.monotonic(), self._last_run
        return [i for i, (every, _) in enumerate(self._periodic) if now - last[i] >= every]

    def _run_due(self) -> None:
        """The periodic work, between batches (never while one is pending: maintenance may
        wait for locks a pending transaction holds)."""
        for i in self._due():
            self._last_run[i] = time.monotonic()
            self._periodic[i][1]()

    def _sequential(self, acc: Accumulator, stop: threading.Event) -> None:
        """Write, commit and ack ``acc`` on its own, retrying through outages."""
        if not self._commit(acc, stop):
            raise _Stopped

    def _begin(self, acc: Accumulator, stop: threading.Event) -> _Pending | None:
        """Send the batch's readings; None when it went the sequential way (already acked)."""
        writer = self._writer
        if writer is None or writer.conn.closed or not writer.expect_new:
            self._sequential(acc, stop)
            return None
        t0 = time.perf_counter()
        try:
            batch = acc.finish(writer.provisioned_sensors, time.time())
            if not len(batch.readings):
                self._sequential(acc, stop)
                return None
            return _Pending(acc, committing.start(writer, batch), t0)
        except psycopg.Error as e:
            self._fall_back(writer, e)
        self._sequential(acc, stop)
        return None

    def _finish(self, p: _Pending, stop: threading.Event) -> None:
        """Complete a pending batch: merge, commit, ack."""
        try:
            result = committing.complete(p.started, self.alarms)
        except psycopg.Error as e:
            self._fall_back(p.started.writer, e)
            self._sequential(p.acc, stop)
            return
        self._done(p, result)

    def _overlap(self, p: _Pending, acc: Accumulator, stop: threading.Event) -> _Pending | None:
        """Complete ``p`` while the server already stores ``acc``'s readings, sent on the
        spare connection; ``acc`` is the new pending batch (None when it went sequentially).

        ``acc``'s readings go out once ``p``'s are stored, so they can wait on ``p``'s locks
        (a reading in both) but never the other way round.
        """
        spare = self._spare_writer()
        if spare is None or not spare.expect_new or p.started.batch.sensors:
            # (a batch that provisions sensors commits before the next asks which are)
            self._finish(p, stop)
            return self._begin(acc, stop)
        t0 = time.perf_counter()
        try:
            # The next batch's Python while the server stores the last one's readings.
            batch = acc.finish(spare.provisioned_sensors, time.time())
            series = spare.series_ids(batch.readings)
        except psycopg.Error as e:
            self._fall_back(spare, e)
            self._finish(p, stop)
            return self._begin(acc, stop)
        try:
            p.started.copied()
        except psycopg.Error as e:
            self._fall_back(p.started.writer, e)
            self._sequential(p.acc, stop)
            return self._begin(acc, stop)
        if p.started.redelivered:
            self._finish(p, stop)  # through staging, before other readings may hold its keys
            return self._begin(acc, stop)
        try:
            nxt = committing.start(spare, batch, series)
        except psycopg.Error as e:
            self._fall_back(spare, e)
            self._finish(p, stop)
            self._sequential(acc, stop)
            return None
        try:
            result = committing.complete(p.started, self.alarms)
        except psycopg.Error as e:
            # Roll the next batch back first: its uncommitted readings could block these.
            nxt.abandon(e)
            self._fall_back(p.started.writer, e)
            self._sequential(p.acc, stop)
            return self._begin(acc, stop)
        self._done(p, result)
        self.metrics.overlapped.inc()
        self._writer, self._spare = spare, p.started.writer
        return _Pending(acc, nxt, t0)

    def _fall_back(self, writer: Writer, e: psycopg.Error) -> None:
        """A batch could not be written the overlapped way: it is written again on its own."""
        self._db_failed("batch", e)
        log.warning("batch not written (%s); writing it again", e)
        if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
            writer.conn.close()  # reconnected before its next use

    def _spare_writer(self) -> Writer | None:
        """The second connection, opened on first use; None while it cannot be."""
        if self._spare is not None and not self._spare.conn.closed:
            return self._spare
        url = self.settings.database_url
        assert url is not None
        try:
            conn = db.connect(
                url,
                application="pusat-ingest",
                idle_in_transaction_s=self.settings.db_idle_in_transaction_s,
            )
        except psycopg.OperationalError as e:
            self._db_failed("connect", e)
            log.warning("second database connection unavailable: %s", e)
            return None
        if self._spare is None:
            self._spare = Writer(conn, share=self._writer)  # one cache of series for both
        else:
            self._spare.reconnect(conn)
        return self._spare

    def _done(self, p: _Pending, result: Committed) -> None:
        """After a pending batch committed: publish alarms, count, acknowledge."""
        self._unpublished |= result.alarms
        try:
            self._flush_alarms(p.started.writer)
        except db.RETRYABLE as e:
            self._db_failed("alarms", e)
            log.warning("alarm topics not published yet: %s", e)  # kept for the next time
            p.started.writer.conn.close()
        batch = p.started.batch
        self._account(batch, result.stored, result.duplicates, time.perf_counter() - p.t0)
        self.session.ack(p.acc.messages)

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last_log >= self.settings.log_every_s:
            self._last_log = now
            log.info("ingest: %s", self.metrics.summary())
