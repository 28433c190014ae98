"""Row shapes shared by routers and the live hub (one definition of what an alarm looks like)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

ALERT_FIELDS = (
    "id",
    "sensor_id",
    "quantity",
    "rule",
    "kind",
    "severity",
    "state",
    "message",
    "value",
    "raised_at",
    "raised_seen_at",
    "acked_at",
    "acked_by",
    "cleared_at",
    "closed_at",
    "shelved_until",
    "updated_at",
)
ALERT_COLUMNS = ", ".join(f"a.{c}" for c in ALERT_FIELDS) + ", s.domain, s.district"


def alert_json(row: dict[str, Any]) -> dict[str, Any]:
    """An alarm row as JSON-ready values (times in RFC 3339)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
