"""The batch writer: one transaction per batch, readings by binary COPY, stored once.

Readings are copied straight into `reading_data`; when its key refuses one (a redelivery, a
replay, a gateway retry), the batch is written again through a staging table with ON CONFLICT
DO NOTHING, so such a reading is stored once and counted as a duplicate. Everything else a batch
changes (both rollup tiers, `latest`, the alarm engine's state, the notification) is one
statement whose rows travel as binary array parameters. `latest` only moves forward in event time.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import pq
from psycopg.adapt import Dumper
from psycopg.copy import QueuedLibpqWriter

from processing.rollups import Partials
from store import copybin

Conn = psycopg.Connection[Any]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class QuarantineRow:
    received_at: float  # Unix seconds
    topic: str
    gateway: str | None
    reason: str
    detail: str
    record: int | None
    payload: bytes


@dataclass(frozen=True)
class SensorMeta:
    sensor_id: str
    gateway: str | None
    domain: str | None = None
    district: str | None = None
    lat: float | None = None
    lon: float | None = None
    name: str | None = None
    quantities: tuple[str, ...] = ()
    units: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayStatus:
    gateway: str
    status: str  # online | offline
    at: float  # Unix seconds
    owner: str = ""  # the publisher speaking; "" is the gateway itself


@dataclass(frozen=True)
class DerivedInfo:
    """What made a derived reading: the index table, and what set its value."""

    sensor_id: str
    quantity: str
    ts_us: int
    method: str
    dominant: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Readings:
    """Valid readings in canonical units, columnar. ``series`` is filled by the writer."""

    sensor: list[str]
    quantity: list[str]
    unit: list[str | None]
    gateway: list[str | None]
    ts_us: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    received_us: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.sensor)


@dataclass
class Batch:
    readings: Readings
    quarantine: list[QuarantineRow] = field(default_factory=list)
    sensors: list[SensorMeta] = field(default_factory=list)
    statuses: list[GatewayStatus] = field(default_factory=list)
    gateways_seen: dict[str, float] = field(default_factory=dict)  # gateway -> last message time
    derived: list[DerivedInfo] = field(default_factory=list)


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _ts_us(us: int) -> datetime:
    return _UNIX_EPOCH + timedelta(microseconds=us)


def encode_payload(payload: bytes) -> tuple[str, str]:
    """Text when the payload is UTF-8 without NUL (PostgreSQL text cannot hold NUL), else base64."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"
    if "\x00" in text:
        return base64.b64encode(payload).decode("ascii"), "base64"
    return text, "utf8"


class Writer:
    """Writes batches through one connection. Not thread-safe: one writer per worker thread.

    Caches (sensor, quantity) -> series id and the set of provisioned sensors; both only grow,
    and entries are added only after the rows behind them are committed, so writers of one
    process may ``share`` them (a worker's two connections: one copy of 510,001 series' keys,
    not two).
    """

    def __init__(self, conn: Conn, share: Writer | None = None) -> None:
        self.conn = conn
        self._series: dict[tuple[str, str], int] = {} if share is None else share._series
        self._provisioned: set[str] = set() if share is None else share._provisioned
        self._pending_provisioned: set[str] = set()
        # Redeliveries come in runs (a reconnect replays the unacknowledged window): after a
        # batch that held stored readings, the next goes through staging first.
        self.expect_new = True
        _adapt(conn)

    def reconnect(self, conn: Conn) -> None:
        """Carry on over a new connection; the caches stay valid (they hold committed rows)."""
        self.conn = conn
        _adapt(conn)

    # -- sensors and series ----------------------------------------------------------------

    def provisioned_sensors(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are provisioned (by a `meta` message or the API)."""
        wanted = set(ids)
        missing = wanted - self._provisioned
        if missing:
            with self.conn.transaction():
                rows = self.conn.execute(
                    "SELECT sensor_id FROM sensors WHERE provisioned AND sensor_id = ANY(%s)",
                    (list(missing),),
                ).fetchall()
            self._provisioned.update(r[0] for r in rows)
        return wanted & self._provisioned

    def series_ids(self, r: Readings) -> npt.NDArray[np.int32]:
        """Series id per reading, registering unknown sensors (unprovisioned) and series.

        New series are committed in their own short transaction before the batch, so the cache
        never holds an id whose row was rolled back.
        """
        n = len(r)
        keys = zip(r.sensor, r.quantity, strict=True)
        # One C-level dict lookup per reading, -1 for unknown keys: no Python loop when all known.
        ids = np.fromiter(map(self._series.get, keys, itertools.repeat(-1)), np.int32, count=n)
        unknown = np.flatnonzero(ids < 0)
        if len(unknown):
            new: dict[tuple[str, str], int] = {}
            for i in unknown.tolist():
                new.setdefault((r.sensor[i], r.quantity[i]), i)
            self._register([(k[0], k[1], r.unit[i], r.gateway[i]) for k, i in new.items()])
            ids[unknown] = [self._series[(r.sensor[i], r.quantity[i])] for i in unknown.tolist()]
        return ids

    def _register(self, rows: Sequence[tuple[str, str, str | None, str | None]]) -> None:
        sensors = sorted({(s, g) for s, _, _, g in rows})
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO sensors (sensor_id, gateway_id) VALUES (%s, %s)"
                " ON CONFLICT (sensor_id) DO NOTHING",
                sensors,
            )
            cur.executemany(
                "INSERT INTO series (sensor_id, quantity, unit) VALUES (%s, %s, %s)"
                " ON CONFLICT (sensor_id, quantity) DO NOTHING",
                [(s, q, u) for s, q, u, _ in rows],
            )
            found = cur.execute(
                "SELECT s.sensor_id, s.quantity, s.series_id FROM series s"
                " JOIN unnest(%s::text[], %s::text[]) AS k(sensor_id, quantity)"
                " USING (sensor_id, quantity)",
                ([s for s, _, _, _ in rows], [q for _, q, _, _ in rows]),
            ).fetchall()
        names: dict[str, str] = {}  # one string per sensor, one per quantity: not per series
        for sensor, quantity, sid in found:
            self._series[(names.setdefault(sensor, sensor), sys.intern(quantity))] = sid

    # -- the batch ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One batch's transaction: everything written through the Tx commits together."""
        tx = self.open()
        try:
            yield tx
        except BaseException:
            self.close(tx, commit=False)
            raise
        self.close(tx, commit=True)

    def open(self) -> Tx:
        """Start a batch's transaction whose steps a caller spreads out (see ``transaction``);
        ``close`` ends it."""
        if self.conn.info.transaction_status != pq.TransactionStatus.IDLE:
            # Otherwise this would be a savepoint in a transaction nobody commits: acknowledged
            # but never stored. A caller left a transaction open; that is the bug to fix.
            raise RuntimeError("the writer's connection is already inside a transaction")
        self._pending_provisioned.clear()  # a failed transaction's sensors were rolled back
        return Tx(self.conn.cursor())  # the first statement begins the transaction

    def close(self, tx: Tx, *, commit: bool) -> None:
        """Commit ``tx`` (or roll it back: nothing to undo on a connection already broken)."""
        tx.cur.close()
        if commit:
            self.conn.commit()
            self._provisioned.update(self._pending_provisioned)
        elif self.conn.info.status == pq.ConnStatus.OK:
            self.conn.rollback()

    def write_side(self, tx: Tx, batch: Batch, *, seen: bool = True) -> None:
        """The batch's sensors, quarantine and gateway updates, inside ``tx``; ``seen``: also
        the gateways' last-seen times (``Tx.merge`` carries them when it runs)."""
        if batch.sensors:
            self._upsert_sensors(tx.cur, batch.sensors)
            self._pending_provisioned.update(m.sensor_id for m in batch.sensors)
        if batch.quarantine:
            self._quarantine(tx.cur, batch.quarantine)
        if seen and batch.gateways_seen:
            tx.cur.execute(_SEEN, _seen_params(batch.gateways_seen))
        if batch.statuses:
            self._statuses(tx.cur, batch.statuses)
        if batch.derived:
            tx.cur.executemany(
                "INSERT INTO derived_info (series_id, ts, method, dominant, detail)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [
                    (
                        self._series[(d.sensor_id, d.quantity)],
                        _ts_us(d.ts_us),
                        d.method,
                        d.dominant,
                        json.dumps(d.detail),
                    )
                    for d in batch.derived
                ],
            )

    @staticmethod
    def _upsert_sensors(cur: psycopg.Cursor[Any], metas: list[SensorMeta]) -> None:
        cur.executemany(
            "INSERT INTO sensors (sensor_id, gateway_id, domain, district, lat, lon, name,"
            " quantities, units, attributes, provisioned)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true)"
            " ON CONFLICT (sensor_id) DO UPDATE SET gateway_id = excluded.gateway_id,"
            " domain = excluded.domain, district = excluded.district, lat = excluded.lat,"
            " lon = excluded.lon, name = excluded.name, quantities = excluded.quantities,"
            " units = excluded.units, attributes = excluded.attributes, provisioned = true,"
            " updated_at = now()",
            [
                (
                    m.sensor_id,
                    m.gateway,
                    m.domain,
                    m.district,
                    m.lat,
                    m.lon,
                    m.name,
                    list(m.quantities),
                    json.dumps(m.units),
                    json.dumps(m.attributes),
                )
                for m in metas
            ],
        )

    @staticmethod
    def _quarantine(cur: psycopg.Cursor[Any], rows: list[QuarantineRow]) -> None:
        with cur.copy(
            "COPY quarantine (received_at, topic, gateway_id, reason, detail, record, payload,"
            " payload_encoding) FROM STDIN"
        ) as cp:
            for q in rows:
                text, encoding = encode_payload(q.payload)
                cp.write_row(
                    (
                        _ts(q.received_at),
                        q.topic,
                        q.gateway,
                        q.reason,
                        q.detail,
                        q.record,
                        text,
                        encoding,
                    )
                )

    @staticmethod
    def _statuses(cur: psycopg.Cursor[Any], statuses: list[GatewayStatus]) -> None:
        # Sorted, so that two workers (each sees every status) lock rows in the same order; a
        # gateway is online while any of its owners' last word is online.
        ordered = sorted(statuses, key=lambda s: (s.gateway, s.owner, s.at))
        cur.executemany(
            "INSERT INTO gateway_status (gateway_id, owner, status, status_at)"
            " VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (gateway_id, owner) DO UPDATE SET status = excluded.status,"
            " status_at = excluded.status_at"
            " WHERE excluded.status_at >= gateway_status.status_at",
            [(s.gateway, s.owner, s.status, _ts(s.at)) for s in ordered],
        )
        cur.execute(
            "INSERT INTO gateways (gateway_id, status, status_at)"
            " SELECT gateway_id, CASE WHEN bool_or(status = 'online') THEN 'online'"
            " ELSE 'offline' END, max(status_at)"
            " FROM gateway_status WHERE gateway_id = ANY(%s) GROUP BY gateway_id"
            " ORDER BY gateway_id"
            " ON CONFLICT (gateway_id) DO UPDATE SET status = excluded.status,"
            " status_at = excluded.status_at",
            (sorted({s.gateway for s in statuses}),),
        )


_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS staging_readings (i integer, series_id integer,"
    " ts timestamptz, value double precision, received_at timestamptz) ON COMMIT DELETE ROWS"
)

PARTIAL_TYPES = (
    "int4", "timestamptz", "int8", "float8", "float8", "float8", "timestamptz", "float8",
    "timestamptz", "float8",
)  # fmt: skip
LATEST_TYPES = ("int4", "timestamptz", "float8", "timestamptz")
ALARM_STATE_TYPES = ("int4", "int4", "bool", "int8", "int8", "float8")


def _unnest(types: Sequence[str]) -> str:
    return "unnest(" + ", ".join(f"%s::{t}[]" for t in types) + ")"


# Merging partials: the same rules as processing.rollups.merge, in SQL.
_MERGE_SET = """
  count = t.count + excluded.count,
  sum = t.sum + excluded.sum,
  min = least(t.min, excluded.min),
  max = greatest(t.max, excluded.max),
  first_ts = least(t.first_ts, excluded.first_ts),
  first = CASE WHEN excluded.first_ts < t.first_ts THEN excluded.first ELSE t.first END,
  last_ts = greatest(t.last_ts, excluded.last_ts),
  last = CASE WHEN excluded.last_ts > t.last_ts THEN excluded.last ELSE t.last END"""
_PARTIAL_COLUMNS = "count, sum, min, max, first_ts, first, last_ts, last"
_MERGE_ROLLUP = f"""{{name}}_rows AS (
SELECT * FROM {{rows}} AS p (series_id, bucket, {_PARTIAL_COLUMNS}{{extra}})),
{{name}} AS (
INSERT INTO {{table}} AS t (series_id, bucket, {_PARTIAL_COLUMNS})
SELECT series_id, bucket, {_PARTIAL_COLUMNS} FROM {{name}}_rows
ON CONFLICT (series_id, bucket) DO UPDATE SET{_MERGE_SET})"""
# Partials of several rows merged into one (a GROUP BY's select list).
_MERGED = """sum(count) AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max,
  min(first_ts) AS first_ts, (array_agg(first ORDER BY first_ts))[1] AS first,
  max(last_ts) AS last_ts, (array_agg(last ORDER BY last_ts DESC))[1] AS last"""
# The district rollups, from the batch's minute partials, whose rows name their sensor and
# quantity by position in two short lists (``Named``): the districts are looked up once per
# sensor of the batch, in this transaction (so a sensor moved by this batch counts in its new
# district), not once per series. The hour from those. Rows in key order: two workers merging
# into the same districts lock them in the same order.
_MERGE_DISTRICTS = f"""district_of AS (
SELECT n.i::int4 AS sensor_i, s.district
FROM unnest(%s::text[]) WITH ORDINALITY AS n(sensor_id, i)
CROSS JOIN LATERAL (SELECT district FROM sensors s WHERE s.sensor_id = n.sensor_id
  AND s.district <> '' OFFSET 0) s),
district_rows AS (
SELECT d.district, q.quantity, p.bucket, {_MERGED}
FROM minute_rows p JOIN district_of d USING (sensor_i)
JOIN unnest(%s::text[]) WITH ORDINALITY AS q(quantity, i) ON q.i = p.quantity_i
GROUP BY 1, 2, 3),
district_minute AS (
INSERT INTO district_rollup_1m_data AS t (district, quantity, bucket, {_PARTIAL_COLUMNS})
SELECT * FROM district_rows ORDER BY 1, 2, 3
ON CONFLICT (district, quantity, bucket) DO UPDATE SET{_MERGE_SET}),
district_hour AS (
INSERT INTO district_rollup_1h_data AS t (district, quantity, bucket, {_PARTIAL_COLUMNS})
SELECT district, quantity, date_bin('1 hour', bucket, '1970-01-01T00:00:00Z'), {_MERGED}
FROM district_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (district, quantity, bucket) DO UPDATE SET{_MERGE_SET})"""
_MERGE_LATEST = f"""newest AS (
INSERT INTO latest_data AS t (series_id, ts, value, received_at)
SELECT * FROM {_unnest(LATEST_TYPES)}
ON CONFLICT (series_id) DO UPDATE SET ts = excluded.ts, value = excluded.value,
  received_at = excluded.received_at
WHERE excluded.ts > t.ts)"""
_SEEN = """INSERT INTO gateways AS t (gateway_id, last_seen)
SELECT * FROM unnest(%s::text[], %s::timestamptz[])
ON CONFLICT (gateway_id) DO UPDATE SET last_seen = greatest(t.last_seen, excluded.last_seen)"""
_SAVE_ALARM_STATE = f"""alarm_state AS (
INSERT INTO alert_state AS t (rule_id, series_id, active, run_start, last_ts, last_value)
SELECT * FROM {_unnest(ALARM_STATE_TYPES)}
ON CONFLICT (rule_id, series_id) DO UPDATE SET active = excluded.active,
  run_start = excluded.run_start, last_ts = excluded.last_ts, last_value = excluded.last_value)"""


def _merge_sql(alarm_state: bool) -> bytes:
    """One statement for everything new readings change besides `reading_data`: data-modifying
    CTEs (each runs once, to completion, whether read or not) and the notification."""
    ctes = [
        _MERGE_ROLLUP.format(
            name="minute",
            table="rollup_1m_data",
            rows=_unnest((*PARTIAL_TYPES, "int4", "int4")),
            extra=", sensor_i, quantity_i",
        ),
        _MERGE_ROLLUP.format(
            name="hour", table="rollup_1h_data", rows=_unnest(PARTIAL_TYPES), extra=""
        ),
        _MERGE_DISTRICTS,
        _MERGE_LATEST,
    ]
    if alarm_state:
        ctes.append(_SAVE_ALARM_STATE)
    ctes.append(f"seen AS ({_SEEN})")
    return ("WITH " + ",\n".join(ctes) + "\nSELECT pg_notify(%s, %s)").encode()


_MERGE = {with_state: _merge_sql(with_state) for with_state in (False, True)}


class ArrayParam:
    """A query parameter already encoded as a binary PostgreSQL array (see copybin.array); the
    query casts it (``%s::int4[]``), so the server knows its type."""

    __slots__ = ("data",)

    def __init__(self, kind: str, values: npt.NDArray[np.generic]) -> None:
        self.data = copybin.array(kind, values)


class _ArrayDumper(Dumper):
    format = pq.Format.BINARY
    oid = 0  # unknown: the server takes the type from the cast in the query

    def dump(self, obj: ArrayParam) -> bytes:
        return obj.data


def _adapt(conn: Conn) -> None:
    conn.adapters.register_dumper(ArrayParam, _ArrayDumper)


def _arrays(types: Sequence[str], columns: Sequence[npt.NDArray[np.generic]]) -> list[ArrayParam]:
    return [ArrayParam(t, c) for t, c in zip(types, columns, strict=True)]


def _seen_params(seen: dict[str, float]) -> tuple[list[str], ArrayParam]:
    """Gateways and their last-seen times (Unix seconds), in key order: concurrent workers then
    lock the same rows in the same order."""
    gateways = sorted(seen)
    times = np.round(np.array([seen[g] for g in gateways], dtype=np.float64) * 1e6)
    return gateways, ArrayParam("timestamptz", times.astype(np.int64))


def _partials(p: Partials) -> list[ArrayParam]:
    columns = (p.series, p.bucket, p.count, p.sum, p.min, p.max)
    return _arrays(PARTIAL_TYPES, (*columns, p.first_ts, p.first, p.last_ts, p.last))


@dataclass(frozen=True)
class Named:
    """The sensor and quantity of each row of a batch's minute partials, as 1-based positions
    in ``sensors`` and ``quantities`` (WITH ORDINALITY counts from 1)."""

    sensor_i: I32
    quantity_i: I32
    sensors: list[str]
    quantities: list[str]

    @classmethod
    def of(
        cls, partial_series: I32, series: I32, sensor: Sequence[str], quantity: Sequence[str]
    ) -> Named:
        """``partial_series``: the partials' series (each among ``series``, the series of the
        readings whose sensor and quantity are ``sensor`` and ``quantity``)."""
        known, first = np.unique(series, return_index=True)
        at = first[np.searchsorted(known, partial_series)].tolist()  # a reading of each partial
        s_code, sensors = _positions([sensor[i] for i in at])
        q_code, quantities = _positions([quantity[i] for i in at])
        return cls(s_code, q_code, sensors, quantities)


def _positions(names: list[str]) -> tuple[I32, list[str]]:
    """Each name's 1-based position among the distinct names, and those names in order."""
    seen: dict[str, int] = {}
    codes = np.fromiter((seen.setdefault(n, len(seen) + 1) for n in names), np.int32, len(names))
    return codes, list(seen)


@dataclass(frozen=True)
class Latest:
    """The newest reading of each series in a batch, for `latest`."""

    series: I32
    ts_us: I64
    value: F64
    received_us: I64


@dataclass(frozen=True)
class AlarmState:
    """The alarm engine's state of the (rule, series) pairs a batch touched, for `alert_state`."""

    rule_id: I32
    series: I32
    active: npt.NDArray[np.bool_]
    run_start: I64
    last_ts: I64
    last_value: F64

    def __len__(self) -> int:
        return len(self.rule_id)


class Redelivered(Exception):
    """The direct COPY met a reading already stored (or one repeated in the batch); the
    transaction is aborted and the batch must be written again through staging."""


CHANNEL = "pusat_changes"  # LISTEN pusat_changes: one notification per committed batch
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def notify(cur: psycopg.Cursor[Any], **changed: int) -> None:
    """Tell listeners (the API's live stream) what a transaction changed, when it commits."""
    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(changed)))


def unique_keys(series: I32, ts_us: I64) -> npt.NDArray[np.intp]:
    """Positions of the first occurrence of each (series, ts), in input order."""
    if len(series) == 0:
        return np.empty(0, dtype=np.intp)
    order = np.lexsort((ts_us, series))  # stable: the first occurrence comes first
    s, t = series[order], ts_us[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (s[1:] != s[:-1]) | (t[1:] != t[:-1])
    return np.sort(order[first])


class DirectCopy:
    """Readings COPYed straight into `reading_data`, sent but not yet awaited: the server
    stores them while the caller does other work, until ``wait`` (or ``abandon``).

    It must be its transaction's first statement: a key violation aborts the transaction
    (``wait`` raises Redelivered). The data goes out from a thread of psycopg's, so sending never
    blocks the caller, even when the server waits for a lock held by the caller's other
    transaction.
    """

    def __init__(self, cur: psycopg.Cursor[Any], data: bytes) -> None:
        self._stack = contextlib.ExitStack()
        try:
            cp = self._stack.enter_context(cur.copy(_COPY_READINGS, writer=QueuedLibpqWriter(cur)))
            cp.write(data)
        except BaseException as e:
            self._stack.__exit__(type(e), e, e.__traceback__)
            raise

    def wait(self) -> None:
        """Until the server has stored every row; raises Redelivered on a key violation."""
        try:
            self._stack.close()
        except psycopg.errors.UniqueViolation as e:
            raise Redelivered(str(e)) from e

    def abandon(self, why: BaseException) -> None:
        """End the COPY with an error: the server rolls it back with its transaction."""
        # The COPY fails as asked (or the connection is already gone): nothing was stored.
        with contextlib.suppress(psycopg.Error):
            self._stack.__exit__(type(why), why, why.__traceback__)


_COPY_READINGS = "COPY reading_data (series_id, ts, value, received_at) FROM STDIN (FORMAT BINARY)"


class Tx:
    """The steps of one batch's transaction."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur

    def send_readings(self, r: Readings, series: I32) -> DirectCopy:
        """Start the direct COPY of ``r`` (see ``readings``); the caller waits on it later."""
        return DirectCopy(self.cur, copybin.rows(_reading_columns(r, series)))

    def readings(self, r: Readings, series: I32, *, direct: bool = True) -> npt.NDArray[np.intp]:
        """Store the readings once each; returns the positions (in ``r``) newly stored now.

        A reading already stored (or repeated inside the batch) is not new: only new readings
        may count in rollups and alerts. ``direct``: one COPY straight into the table, about
        twice as fast as staging, and no savepoint (a round trip each way); it must be the
        transaction's first statement, since a duplicate key aborts the whole transaction and
        raises Redelivered.
        """
        if len(r) == 0:
            return np.empty(0, dtype=np.intp)
        columns = _reading_columns(r, series)
        if direct:
            DirectCopy(self.cur, copybin.rows(columns)).wait()
            # The key held: every reading was new and none repeated another.
            return np.arange(len(r), dtype=np.intp)
        return self._staged(r, series, columns)

    def _staged(
        self, r: Readings, series: I32, columns: list[tuple[str, npt.NDArray[np.generic]]]
    ) -> npt.NDArray[np.intp]:
        cur = self.cur
        keep = unique_keys(series, r.ts_us)
        if len(keep) == 0:
            return keep
        cur.execute(_STAGING)  # a temporary table: once per connection, IF NOT EXISTS after
        with cur.copy(
            "COPY staging_readings (i, series_id, ts, value, received_at)"
            " FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.write(
                copybin.rows([("int4", keep.astype(np.int32))] + [(k, c[keep]) for k, c in columns])
            )
        cur.execute(
            "INSERT INTO reading_data (ts, series_id, value, received_at)"
            " SELECT ts, series_id, value, received_at FROM staging_readings"
            " ON CONFLICT DO NOTHING RETURNING series_id, ts"
        )
        if cur.rowcount == len(keep):
            return keep  # nothing was there before; no need to read RETURNING
        # Some were stored before (a redelivery or a replay): find which keys went in now.
        inserted = {(sid, (ts - _UNIX_EPOCH) // _US) for sid, ts in cur.fetchall()}
        s_list, t_list = series.tolist(), r.ts_us.tolist()
        picked = [i for i in keep.tolist() if (s_list[i], t_list[i]) in inserted]
        return np.array(picked, dtype=np.intp)

    def notify(self, readings: int, alarms: int, quarantined: int, sensors: int) -> None:
        """Tell listeners (the API's live stream) what this batch changed, at commit."""
        self.cur.execute(
            "SELECT pg_notify(%s, %s)", (CHANNEL, _changes(readings, alarms, quarantined, sensors))
        )

    def merge(
        self,
        minute: Partials,
        named: Named,
        hour: Partials,
        latest: Latest,
        state: AlarmState | None,
        seen: dict[str, float],
        changes: tuple[int, int, int, int],
    ) -> None:
        """One statement: partials merged into both rollup tiers (late data merges into its
        bucket) and, through ``named`` (the sensor and quantity of each minute partial), into
        their districts', `latest` moved forward (never back), the alarm engine's state saved, the
        gateways' last-seen times, and the notification of ``changes`` (readings, alarms,
        quarantined, sensors) sent at commit."""
        params: list[object] = [
            *_partials(minute),
            ArrayParam("int4", named.sensor_i),
            ArrayParam("int4", named.quantity_i),
            *_partials(hour),
            named.sensors,
            named.quantities,
        ]
        params += _arrays(
            LATEST_TYPES, (latest.series, latest.ts_us, latest.value, latest.received_us)
        )
        with_state = state is not None and len(state) > 0
        if with_state:
            assert state is not None
            columns = (state.rule_id, state.series, state.active, state.run_start)
            params += _arrays(ALARM_STATE_TYPES, (*columns, state.last_ts, state.last_value))
        params += [*_seen_params(seen), CHANNEL, _changes(*changes)]
        self.cur.execute(_MERGE[with_state], params, prepare=True)


def _reading_columns(r: Readings, series: I32) -> list[tuple[str, npt.NDArray[np.generic]]]:
    return [
        ("int4", series),
        ("timestamptz", r.ts_us),
        ("float8", r.value),
        ("timestamptz", r.received_us),
    ]


def _changes(readings: int, alarms: int, quarantined: int, sensors: int) -> str:
    return json.dumps(
        {"readings": readings, "alarms": alarms, "quarantined": quarantined, "sensors": sensors}
    )
