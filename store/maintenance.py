"""Retention and compression, each tier with what it has.

| | plain PostgreSQL | TimescaleDB Apache | TimescaleDB community |
|---|---|---|---|
| retention | DELETE by time (our scheduler) | drop_chunks (our scheduler) | retention policies |
| compression | - | - | compression policies |

Our scheduler is the ingest worker (every PUSAT_MAINTENANCE_EVERY_S, one worker at a time by an
advisory lock) and `pusat db maintain`. Every run is recorded in `maintenance_runs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from store.tier import TIMESCALE_COMMUNITY, Tier

_LOCK_KEY = 0x50555342  # one maintenance run at a time across workers


@dataclass(frozen=True)
class Retention:
    """Days to keep, per kind of data; 0 keeps it forever."""

    readings_days: float
    rollup_1m_days: float
    rollup_1h_days: float
    quarantine_days: float


@dataclass(frozen=True)
class Target:
    table: str
    column: str
    days: float


def targets(r: Retention) -> list[Target]:
    return [
        Target("reading_data", "ts", r.readings_days),
        Target("rollup_1m_data", "bucket", r.rollup_1m_days),
        Target("rollup_1h_data", "bucket", r.rollup_1h_days),
        Target("district_rollup_1m_data", "bucket", r.rollup_1m_days),
        Target("district_rollup_1h_data", "bucket", r.rollup_1h_days),
        Target("quarantine", "received_at", r.quarantine_days),
    ]


@dataclass(frozen=True)
class Run:
    table: str
    method: str  # delete | drop_chunks | policy | compression_policy
    removed: int  # rows deleted or chunks dropped (0 for policies)
    cutoff: datetime | None


def _hypertables(conn: psycopg.Connection[Any]) -> set[str]:
    return {
        r[0]
        for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
    }


def run(
    conn: psycopg.Connection[Any],
    tier: Tier,
    retention: Retention,
    compress_after_days: float,
    now: datetime | None = None,
) -> list[Run] | None:
    """Apply retention (and compression on the community edition) once; None when another
    process is running maintenance right now."""
    now = now or datetime.now(UTC)
    runs: list[Run] = []
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not got or not got[0]:
            return None
        hyper = _hypertables(conn) if tier.timescale else set()
        for t in targets(retention):
            if tier.name == TIMESCALE_COMMUNITY and t.table in hyper:
                runs.append(_policy(conn, t))
            elif t.days <= 0:
                continue
            elif t.table in hyper:
                runs.append(_drop_chunks(conn, t, now))
            else:
                runs.append(_delete(conn, t, now))
        if retention.readings_days > 0:  # derived_info follows its readings
            runs.append(_delete(conn, Target("derived_info", "ts", retention.readings_days), now))
        if tier.name == TIMESCALE_COMMUNITY and "reading_data" in hyper:
            runs.append(_compression(conn, compress_after_days))
        for r in runs:
            conn.execute(
                "INSERT INTO maintenance_runs (tier, table_name, method, removed, cutoff)"
                " VALUES (%s, %s, %s, %s, %s)",
                (tier.name, r.table, r.method, r.removed, r.cutoff),
            )
    return runs


def _delete(conn: psycopg.Connection[Any], t: Target, now: datetime) -> Run:
    cutoff = now - timedelta(days=t.days)
    cur = conn.execute(
        sql.SQL("DELETE FROM {} WHERE {} < %s").format(
            sql.Identifier(t.table), sql.Identifier(t.column)
        ),
        (cutoff,),
    )
    return Run(t.table, "delete", cur.rowcount, cutoff)


def _drop_chunks(conn: psycopg.Connection[Any], t: Target, now: datetime) -> Run:
    """Whole chunks older than the cutoff go (a chunk straddling it stays until it is past)."""
    cutoff = now - timedelta(days=t.days)
    dropped = conn.execute(
        "SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz)", (t.table, cutoff)
    ).fetchall()
    return Run(t.table, "drop_chunks", len(dropped), cutoff)


def _policy(conn: psycopg.Connection[Any], t: Target) -> Run:
    """Keep the table's retention policy equal to the setting (TimescaleDB runs it)."""
    conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", (t.table,))
    if t.days > 0:
        conn.execute(
            "SELECT add_retention_policy(%s::regclass, drop_after => %s::interval)",
            (t.table, f"{t.days} days"),
        )
    return Run(t.table, "policy", 0, None)


def _compression(conn: psycopg.Connection[Any], after_days: float) -> Run:
    """Compressed by series, ordered by time: a series' range reads one segment per chunk."""
    done = conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = 'reading_data'"
    ).fetchone()
    if not (done and done[0]):
        conn.execute(
            "ALTER TABLE reading_data SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'series_id', timescaledb.compress_orderby = 'ts')"
        )
    conn.execute("SELECT remove_compression_policy('reading_data', if_exists => true)")
    if after_days > 0:
        conn.execute(
            "SELECT add_compression_policy('reading_data', compress_after => %s::interval)",
            (f"{after_days} days",),
        )
    return Run("reading_data", "compression_policy", 0, None)


# -- status ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableStatus:
    table: str
    rows: int | None  # estimated
    bytes: int
    chunks: int | None
    compressed_chunks: int | None
    compression_ratio: float | None


def status(conn: psycopg.Connection[Any], tier: Tier) -> list[TableStatus]:
    with conn.transaction():  # leaves no transaction open behind it
        return _status(conn, tier)


def _status(conn: psycopg.Connection[Any], tier: Tier) -> list[TableStatus]:
    hyper = _hypertables(conn) if tier.timescale else set()
    out = []
    for t in (
        "reading_data",
        "rollup_1m_data",
        "rollup_1h_data",
        "district_rollup_1m_data",
        "district_rollup_1h_data",
        "quarantine",
        "alerts",
        "alert_events",
        "derived_info",
    ):
        if t in hyper:
            size = conn.execute("SELECT hypertable_size(%s::regclass)", (t,)).fetchone()
            chunks = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE is_compressed)"
                " FROM timescaledb_information.chunks WHERE hypertable_name = %s",
                (t,),
            ).fetchone()
            ratio = None
            if tier.name == TIMESCALE_COMMUNITY:
                stats = conn.execute(
                    "SELECT sum(before_compression_total_bytes), sum(after_compression_total_bytes)"
                    " FROM chunk_compression_stats(%s::regclass)",
                    (t,),
                ).fetchone()
                if stats and stats[0] and stats[1]:
                    ratio = float(stats[0]) / float(stats[1])
            rows = conn.execute(
                "SELECT sum(c.reltuples)::bigint FROM timescaledb_information.chunks ch"
                " JOIN pg_class c ON c.relname = ch.chunk_name"
                " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = ch.chunk_schema"
                " WHERE ch.hypertable_name = %s",
                (t,),
            ).fetchone()
            out.append(
                TableStatus(
                    t,
                    rows[0] if rows else None,
                    int(size[0] or 0) if size else 0,
                    chunks[0] if chunks else None,
                    chunks[1] if chunks else None,
                    ratio,
                )
            )
        else:
            row = conn.execute(
                "SELECT c.reltuples::bigint, pg_total_relation_size(c.oid) FROM pg_class c"
                " WHERE c.oid = to_regclass(%s)",
                (t,),
            ).fetchone()
            if row is not None:
                out.append(TableStatus(t, max(int(row[0]), 0), int(row[1]), None, None, None))
    return out


def last_runs(conn: psycopg.Connection[Any], limit: int = 10) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT at, table_name, method, removed, cutoff FROM maintenance_runs"
        " ORDER BY at DESC, id DESC LIMIT %s",
        (limit,),
    ).fetchall()
