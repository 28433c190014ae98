"""The live hub: one LISTEN connection per app, fanned out to every live-stream client.

The ingest writer sends ``NOTIFY pusat_changes`` when a batch or an alarm change commits. The
hub then reads what changed since its last look (latest values and alarms) once, and hands each
client the events that match its filter. It also looks every ``poll_s`` without a notification,
so a lost LISTEN connection delays events but never loses them; and it looks at most once every
``min_interval_s``, so a city's stream of commits costs one read a second, whatever its rate.

"Changed since the last look" means written by a transaction that the last look's snapshot did
not see. Time stamps cannot say it: ``received_at`` is stamped before a batch commits, and a
batch retried through a database outage commits minutes after it was received. The snapshot
test is exact, so the hub needs no look-back margin and never rereads the whole table (which
with 500,000 series stalled every client once a look-back window covered them all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from api.freshness import period_s
from api.metrics import ApiMetrics
from api.rows import ALERT_COLUMNS, alert_json
from processing.catalogue import Catalogue
from store.writer import CHANNEL

log = logging.getLogger(__name__)

# The first look after the first client connects has no snapshot to compare with: it reads what
# was received since the connection, back by this much (batches commit within a second).
FIRST_LOOK_BACK = timedelta(seconds=10)
QUEUE_SIZE = 256  # events a slow client may fall behind by before it is asked to resync

# (kind, the payload's JSON text): encoded once by the hub, whatever the number of clients; the
# framework's own encoder took a quarter of the API's CPU with one client of a 100,000-sensor city.
Event = tuple[str, str]


@dataclass(eq=False)  # each subscription is itself: hashed by identity
class Subscription:
    domains: frozenset[str] | None  # None: every domain
    kinds: frozenset[str]  # "latest", "alerts"
    queue: asyncio.Queue[Event | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE)
    )
    overflowed: bool = False

    def wants(self, kind: str, domain: str | None) -> bool:
        return kind in self.kinds and (self.domains is None or domain in self.domains)

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # It cannot keep up: end its stream with a resync request rather than block
            # everyone else or silently skip events.
            self.overflowed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.get_nowait()
                self.queue.put_nowait(None)


# A row's xmin as a full transaction id, counted back from the current snapshot's xmax (every
# visible row was written by an older transaction, less than 2^32 ago); and the test whether the
# previous look's snapshot saw it. age() first: a cheap filter that passes only transactions no
# older than that snapshot's oldest one, so the exact test runs on those alone.
_CHANGED = (
    " age({t}.xmin) <= %(window)s AND NOT pg_visible_in_snapshot(("
    "%(xmax)s - ((%(xmax)s %% 4294967296 - {t}.xmin::text::bigint + 4294967296) %% 4294967296)"
    ")::text::xid8, %(prev)s::pg_snapshot)"
)
_LATEST = (
    "SELECT se.sensor_id, se.quantity, se.unit, l.ts, l.value, l.received_at, s.domain,"
    " s.district FROM latest_data l JOIN series se USING (series_id)"
    " JOIN sensors s USING (sensor_id) WHERE"
)
# The planner cannot estimate the snapshot test and takes a third of latest_data as changed; it
# then hash-joins all series and sensors (510,001 and 100,000 rows at the city bench's size: 150 ms
# of a 1-second look). The changed rows are a second's worth: look them up by primary key.
_BY_KEY = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off"
_ALERTS = f"SELECT {ALERT_COLUMNS} FROM alerts a LEFT JOIN sensors s USING (sensor_id) WHERE"
_SNAPSHOT = (
    "SELECT pg_current_snapshot()::text, pg_snapshot_xmax(pg_current_snapshot())::text::bigint,"
    " age((pg_snapshot_xmin(%s::pg_snapshot)::text::bigint %% 4294967296)::text::xid)"
)


class Hub:
    def __init__(
        self,
        database_url: str,
        pool: AsyncConnectionPool[Any],
        metrics: ApiMetrics,
        catalogue: Catalogue,
        poll_s: float = 5.0,
        min_interval_s: float = 1.0,
    ) -> None:
        self.database_url = database_url
        self.catalogue = catalogue
        self.pool = pool
        self.metrics = metrics
        self.poll_s = poll_s
        self.min_interval_s = min_interval_s
        self.subscribers: set[Subscription] = set()
        self.closing = asyncio.Event()
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._since = datetime.now(UTC)  # the first client's connection
        self._snapshot: str | None = None  # the last look's, as pg_snapshot text
        self.listening = asyncio.Event()  # set while the LISTEN connection is up

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="pusat-hub-listen"),
            asyncio.create_task(self._scan_loop(), name="pusat-hub-scan"),
        ]

    def close_streams(self) -> None:
        """End every live stream (the server is shutting down)."""
        self.closing.set()
        for sub in list(self.subscribers):
            sub.overflowed = True
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)

    async def stop(self) -> None:
        self.close_streams()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def subscribe(self, domains: Sequence[str] | None, kinds: Sequence[str]) -> Subscription:
        sub = Subscription(frozenset(domains) if domains else None, frozenset(kinds))
        if not self.subscribers:
            # Nobody watched until now: start from here, not from whenever the last one left
            # (clients load a snapshot when their stream opens).
            self._since = datetime.now(UTC)
            self._snapshot = None
            self._dirty.set()  # take the first snapshot now
        self.subscribers.add(sub)
        self.metrics.live_clients.set(len(self.subscribers))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)
        self.metrics.live_clients.set(len(self.subscribers))

    # -- the loops ------------------------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True, application_name="pusat-api-live"
                )
            except psycopg.OperationalError as e:
                log.warning("live stream: cannot LISTEN (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self._dirty.set()  # anything may have changed while we were away
                    async for _ in conn.notifies():
                        self._dirty.set()
            except psycopg.OperationalError as e:
                log.warning("live stream: LISTEN connection lost (%s)", e)
            finally:
                self.listening.clear()

    async def _scan_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=self.poll_s)
            self._dirty.clear()
            if not self.subscribers:
                continue
            started = time.monotonic()
            try:
                await self.scan()
            except psycopg.OperationalError as e:
                log.warning("live stream: scan failed (%s); retrying", e)
                await asyncio.sleep(1.0)
            # Commits come every few hundred ms: one look for all that came meanwhile.
            await asyncio.sleep(max(0.0, self.min_interval_s - (time.monotonic() - started)))

    async def scan(self) -> None:
        """Read what changed and hand it to the subscribers."""
        # One snapshot for both reads and for the next look's comparison.
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur = await conn.execute(_SNAPSHOT, (self._snapshot or "1:1:",))
            snapshot, xmax, window = await _one(cur)
            if self._snapshot is None:
                since = self._since - FIRST_LOOK_BACK
                cur = await conn.execute(_LATEST + " l.received_at > %s", (since,))
                latest = await cur.fetchall()
                cur = await conn.execute(_ALERTS + " a.updated_at > %s", (since,))
            else:
                await conn.execute(_BY_KEY)
                args = {"window": window, "xmax": xmax, "prev": self._snapshot}
                cur = await conn.execute(_LATEST + _CHANGED.format(t="l"), args)
                latest = await cur.fetchall()
                cur = await conn.execute(_ALERTS + _CHANGED.format(t="a"), args)
            alerts = await cur.fetchall()
            names = [d.name for d in cur.description or ()]
        self._fan_latest(latest)
        self._fan_alerts(alerts, names)
        self._snapshot = snapshot

    def _fan_latest(self, rows: list[tuple[Any, ...]]) -> None:
        by_domain: dict[str | None, list[dict[str, Any]]] = {}
        periods: dict[str, float] = {}  # a second's rows hold a few quantities, 15,000 times
        for sensor, quantity, unit, ts, value, received, domain, district in rows:
            period = periods.get(quantity)
            if period is None:
                period = periods[quantity] = period_s(self.catalogue, quantity)
            by_domain.setdefault(domain, []).append(
                {
                    "sensor_id": sensor,
                    "quantity": quantity,
                    "unit": unit,
                    "ts": ts,  # orjson writes a datetime as isoformat() would, in C
                    "value": value,
                    "received_at": received,
                    "period_s": period,
                    "domain": domain,
                    "district": district,
                }
            )
        if not by_domain:
            return
        # Each domain's items as JSON once (without the brackets); a client's event joins the
        # domains it asked for.
        texts = {d: orjson.dumps(xs).decode()[1:-1] for d, xs in by_domain.items()}
        for sub in list(self.subscribers):
            parts = [t for d, t in texts.items() if sub.wants("latest", d)]
            if parts:
                sub.offer(("latest", "[" + ",".join(parts) + "]"))
                self.metrics.live_events.labels("latest").inc()

    def _fan_alerts(self, rows: list[tuple[Any, ...]], names: list[str]) -> None:
        for row in rows:
            a = alert_json(dict(zip(names, row, strict=True)))
            text: str | None = None
            for sub in list(self.subscribers):
                if sub.wants("alerts", a.get("domain")):
                    text = text or orjson.dumps(a).decode()
                    sub.offer(("alert", text))
                    self.metrics.live_events.labels("alert").inc()


async def _one(cur: psycopg.AsyncCursor[Any]) -> tuple[Any, ...]:
    row = await cur.fetchone()
    assert row is not None  # a SELECT without FROM returns its row
    return tuple(row)
