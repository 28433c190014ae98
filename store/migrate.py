"""Versioned SQL migrations, applied in order, recorded in `schema_migrations`, safe to repeat."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every Pusat process sharing a database.
_LOCK_KEY = 0x50555341


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("store").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def upgrade(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Apply what is missing; returns the migrations applied now. One transaction each."""
    applied_now: list[Migration] = []
    with conn.transaction():
        # Several workers may start at once: the advisory lock makes them take turns.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for mig in available():
            if mig.version in done:
                continue
            with conn.transaction():
                conn.execute(mig.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (mig.version, mig.name),
                )
            log.info("applied migration %04d_%s", mig.version, mig.name)
            applied_now.append(mig)
    return applied_now


def current(conn: psycopg.Connection[Any]) -> int | None:
    """The newest applied migration, None on an empty database."""
    with conn.transaction():  # leaves no transaction open behind it
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return None if row is None else row[0]
