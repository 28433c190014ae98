"""Which kind of database this is: plain PostgreSQL, TimescaleDB Apache or community edition."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

log = logging.getLogger(__name__)

POSTGRESQL = "postgresql"
TIMESCALE_APACHE = "timescaledb-apache"
TIMESCALE_COMMUNITY = "timescaledb-community"


@dataclass(frozen=True)
class Tier:
    name: str
    server_version: str
    timescaledb_version: str | None

    @property
    def timescale(self) -> bool:
        return self.name != POSTGRESQL

    @property
    def bucket_function(self) -> str:
        """The SQL function that buckets time on this tier."""
        return "time_bucket" if self.timescale else "date_bin"


def detect(conn: psycopg.Connection[Any]) -> Tier:
    # In a transaction block of its own: a bare query on a connection that is not in autocommit
    # would leave a transaction open, and every later `transaction()` would only be a savepoint.
    with conn.transaction():
        row = conn.execute(
            "SELECT current_setting('server_version'),"
            " (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),"
            " current_setting('timescaledb.license', true)"
        ).fetchone()
    assert row is not None
    version, ts_version, license_ = row
    if ts_version is None:
        name = POSTGRESQL
    elif license_ == "timescale":
        name = TIMESCALE_COMMUNITY
    else:
        name = TIMESCALE_APACHE
    tier = Tier(name=name, server_version=str(version), timescaledb_version=ts_version)
    log.info("database tier: %s (PostgreSQL %s, TimescaleDB %s)", name, version, ts_version)
    return tier
