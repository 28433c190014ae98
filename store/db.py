"""Connections: one place that opens them, so every caller gets the same session settings."""

from __future__ import annotations

from typing import Any

import psycopg


def connect(
    url: str, *, autocommit: bool = False, application: str = "pusat"
) -> psycopg.Connection[Any]:
    # A short connect timeout: callers retry with back-off, a hung connect must not stall them.
    return psycopg.connect(
        url, autocommit=autocommit, connect_timeout=5, application_name=application
    )
