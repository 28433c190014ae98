"""The batch writer: one transaction per batch, readings by binary COPY, stored once.

Readings are copied into a per-connection staging table and moved into `reading_data` with
ON CONFLICT DO NOTHING, so a reading that arrives twice (a redelivery, a replay, a gateway retry)
is stored once and counted as a duplicate. `latest` only moves forward in event time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import pq

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
    and entries are added only after the rows behind them are committed.
    """

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self._series: dict[tuple[str, str], int] = {}
        self._provisioned: set[str] = set()
        self._pending_provisioned: set[str] = set()
        self._staging_ready = False

    def reconnect(self, conn: Conn) -> None:
        """Carry on over a new connection; the caches stay valid (they hold committed rows)."""
        self.conn = conn
        self._staging_ready = False

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
        if len(r) == 0:
            return np.empty(0, dtype=np.int32)
        keys = list(zip(r.sensor, r.quantity, strict=True))
        cache = self._series
        if not cache.keys() >= set(keys):  # set operations: no Python loop when all are known
            new = {k: i for i, k in enumerate(keys) if k not in cache}
            self._register([(k[0], k[1], r.unit[i], r.gateway[i]) for k, i in new.items()])
        ids = operator.itemgetter(*keys)(cache)  # one C-level lookup of every key
        return np.array(ids if len(keys) > 1 else (ids,), dtype=np.int32)

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
        for sensor, quantity, sid in found:
            self._series[(sensor, quantity)] = sid

    # -- the batch ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One batch's transaction: everything written through the Tx commits together."""
        if self.conn.info.transaction_status != pq.TransactionStatus.IDLE:
            # Otherwise this would be a savepoint in a transaction nobody commits: acknowledged
            # but never stored. A caller left a transaction open; that is the bug to fix.
            raise RuntimeError("the writer's connection is already inside a transaction")
        if not self._staging_ready:
            with self.conn.transaction():
                for ddl in _STAGING:
                    self.conn.execute(ddl)
            self._staging_ready = True
        with self.conn.transaction(), self.conn.cursor() as cur:
            yield Tx(cur)
        self._provisioned.update(self._pending_provisioned)
        self._pending_provisioned.clear()

    def write_side(self, tx: Tx, batch: Batch) -> None:
        """The batch's sensors, quarantine and gateway updates, inside ``tx``."""
        if batch.sensors:
            self._upsert_sensors(tx.cur, batch.sensors)
            self._pending_provisioned.update(m.sensor_id for m in batch.sensors)
        if batch.quarantine:
            self._quarantine(tx.cur, batch.quarantine)
        if batch.statuses or batch.gateways_seen:
            self._gateways(tx.cur, batch.statuses, batch.gateways_seen)
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
    def _gateways(
        cur: psycopg.Cursor[Any], statuses: list[GatewayStatus], seen: dict[str, float]
    ) -> None:
        if seen:
            cur.executemany(
                "INSERT INTO gateways (gateway_id, last_seen) VALUES (%s, %s)"
                " ON CONFLICT (gateway_id) DO UPDATE SET last_seen ="
                " greatest(gateways.last_seen, excluded.last_seen)",
                [(g, _ts(t)) for g, t in sorted(seen.items())],
            )
        if statuses:
            cur.executemany(
                "INSERT INTO gateways (gateway_id, status, status_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (gateway_id) DO UPDATE SET status = excluded.status,"
                " status_at = excluded.status_at"
                " WHERE gateways.status_at IS NULL OR excluded.status_at >= gateways.status_at",
                [(s.gateway, s.status, _ts(s.at)) for s in statuses],
            )


_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS staging_readings (i integer, series_id integer,"
    " ts timestamptz, value double precision, received_at timestamptz) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS staging_rollups (series_id integer, bucket timestamptz,"
    " count bigint, sum double precision, min double precision, max double precision,"
    " first_ts timestamptz, first double precision, last_ts timestamptz, last double precision)"
    " ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS staging_latest (series_id integer, ts timestamptz,"
    " value double precision, received_at timestamptz) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS staging_alert_state (rule_id integer, series_id integer,"
    " active boolean, run_start bigint, last_ts bigint, last_value double precision)"
    " ON COMMIT DELETE ROWS",
)

# Merging partials: the same rules as processing.rollups.merge, in SQL.
_MERGE_ROLLUP = """
INSERT INTO {table} AS t (series_id, bucket, count, sum, min, max, first_ts, first, last_ts, last)
SELECT series_id, bucket, count, sum, min, max, first_ts, first, last_ts, last FROM staging_rollups
ON CONFLICT (series_id, bucket) DO UPDATE SET
  count = t.count + excluded.count,
  sum = t.sum + excluded.sum,
  min = least(t.min, excluded.min),
  max = greatest(t.max, excluded.max),
  first_ts = least(t.first_ts, excluded.first_ts),
  first = CASE WHEN excluded.first_ts < t.first_ts THEN excluded.first ELSE t.first END,
  last_ts = greatest(t.last_ts, excluded.last_ts),
  last = CASE WHEN excluded.last_ts > t.last_ts THEN excluded.last ELSE t.last END
"""
CHANNEL = "pusat_changes"  # LISTEN pusat_changes: one notification per committed batch
ROLLUP_TABLES = ("rollup_1m_data", "rollup_1h_data")
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


class Tx:
    """The steps of one batch's transaction."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur

    def readings(self, r: Readings, series: I32) -> npt.NDArray[np.intp]:
        """Store the readings once each; returns the positions (in ``r``) newly stored now.

        A reading already stored (or repeated inside the batch) is not new: only new readings
        may count in rollups and alerts.
        """
        cur = self.cur
        keep = unique_keys(series, r.ts_us)
        if len(keep) == 0:
            return keep
        columns: list[tuple[str, npt.NDArray[np.generic]]] = [
            ("int4", series[keep]),
            ("timestamptz", r.ts_us[keep]),
            ("float8", r.value[keep]),
            ("timestamptz", r.received_us[keep]),
        ]
        # The usual case, nothing stored before: one COPY straight into the table, about twice
        # as fast as staging. A duplicate key aborts it (only its savepoint rolls back) and the
        # batch takes the staging path, which keeps what is new.
        try:
            with (
                cur.connection.transaction(),
                cur.copy(
                    "COPY reading_data (series_id, ts, value, received_at)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as cp,
            ):
                cp.write(copybin.rows(columns))
            return keep
        except psycopg.errors.UniqueViolation:
            pass
        with cur.copy(
            "COPY staging_readings (i, series_id, ts, value, received_at)"
            " FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.write(copybin.rows([("int4", keep.astype(np.int32)), *columns]))
        cur.execute(
            "INSERT INTO reading_data (ts, series_id, value, received_at)"
            " SELECT ts, series_id, value, received_at FROM staging_readings"
            " ON CONFLICT DO NOTHING RETURNING series_id, ts"
        )
        if cur.rowcount == len(keep):
            return keep  # the usual case: nothing was there before; no need to read RETURNING
        # Some were stored before (a redelivery or a replay): find which keys went in now.
        inserted = {(sid, (ts - _UNIX_EPOCH) // _US) for sid, ts in cur.fetchall()}
        s_list, t_list = series.tolist(), r.ts_us.tolist()
        picked = [i for i in keep.tolist() if (s_list[i], t_list[i]) in inserted]
        return np.array(picked, dtype=np.intp)

    def notify(self, readings: int, alarms: int, quarantined: int, sensors: int) -> None:
        """Tell listeners (the API's live stream) what this batch changed, at commit."""
        payload = json.dumps(
            {"readings": readings, "alarms": alarms, "quarantined": quarantined, "sensors": sensors}
        )
        self.cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    def latest(self, series: I32, ts_us: I64, value: F64, received_us: I64) -> None:
        """Move `latest` forward, never back, to these readings (one per series)."""
        if len(series) == 0:
            return
        self.cur.execute("TRUNCATE staging_latest")
        with self.cur.copy("COPY staging_latest FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(
                copybin.rows(
                    [
                        ("int4", series),
                        ("timestamptz", ts_us),
                        ("float8", value),
                        ("timestamptz", received_us),
                    ]
                )
            )
        self.cur.execute(
            "INSERT INTO latest_data (series_id, ts, value, received_at)"
            " SELECT series_id, ts, value, received_at FROM staging_latest"
            " ON CONFLICT (series_id) DO UPDATE SET ts = excluded.ts,"
            " value = excluded.value, received_at = excluded.received_at"
            " WHERE excluded.ts > latest_data.ts"
        )

    def rollups(self, table: str, p: Partials) -> None:
        """Merge partials into a rollup table (late data merges into its bucket)."""
        if table not in ROLLUP_TABLES:
            raise ValueError(f"not a rollup table: {table}")
        if len(p) == 0:
            return
        self.cur.execute("TRUNCATE staging_rollups")
        with self.cur.copy("COPY staging_rollups FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(copybin.partials(p))
        self.cur.execute(_MERGE_ROLLUP.format(table=table).encode())
