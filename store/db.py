"""Connections: one place that opens them, so every caller gets the same session settings."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import psycopg.errors

# Errors that leave the connection gone or unusable: an outage, retried on a new connection, as
# against data the database refused. The server ending a transaction left idle too long (25P03)
# also closes the connection; psycopg raises that one as an InternalError.
RETRYABLE: tuple[type[psycopg.Error], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.IdleInTransactionSessionTimeout,
)


def with_database(url: str, name: str) -> str:
    """The same server, another database; keeps the URL form when given a URL."""
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        return urlunsplit(parts._replace(path="/" + quote(name)))
    return psycopg.conninfo.make_conninfo(url, dbname=name)


def connect(
    url: str,
    *,
    autocommit: bool = False,
    application: str = "pusat",
    idle_in_transaction_s: float | None = None,
) -> psycopg.Connection[Any]:
    """``idle_in_transaction_s``: the server ends a transaction left waiting on us longer (a
    client whose host was cut off then holds its locks no longer than that)."""
    # A short connect timeout: callers retry with back-off, a hung connect must not stall them.
    if idle_in_transaction_s is None:
        return psycopg.connect(
            url, autocommit=autocommit, connect_timeout=5, application_name=application
        )
    ms = max(1, round(idle_in_transaction_s * 1000))
    return psycopg.connect(
        url,
        autocommit=autocommit,
        connect_timeout=5,
        application_name=application,
        options=f"-c idle_in_transaction_session_timeout={ms}",
    )
