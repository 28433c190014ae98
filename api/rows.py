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
# Who shelved a shelved alarm (an operator, or `alertmanager:<createdBy>` for a silence made in
# Alertmanager): the newest shelve event's actor, looked up only for shelved rows.
SHELVED_BY = (
    "CASE WHEN a.state = 'shelved' THEN (SELECT e.actor FROM alert_events e"
    " WHERE e.alert_id = a.id AND e.event = 'shelve' ORDER BY e.at DESC, e.id DESC LIMIT 1)"
    " END AS shelved_by"
)
ALERT_COLUMNS = ", ".join(f"a.{c}" for c in ALERT_FIELDS) + f", {SHELVED_BY}, s.domain, s.district"


def alert_json(row: dict[str, Any]) -> dict[str, Any]:
    """An alarm row as JSON-ready values (times in RFC 3339)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
