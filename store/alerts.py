"""The alarm lifecycle in the database: raise, clear, acknowledge, shelve, close, with an audit
trail of every transition in `alert_events` (who, when, why).

States: active (raised, unacknowledged) -> acknowledged -> closed when the condition clears;
active -> cleared (back to normal, still unacknowledged) -> closed when acknowledged; shelved
(suppressed until an expiry) and flapping (changing too often to re-raise) return to active or
closed by `settle`, from the tick. An operator's `clear` closes an alarm at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from store import outbox

Cursor = psycopg.Cursor[Any]
OPEN = ("active", "acknowledged", "cleared", "shelved", "flapping")
SYSTEM = "system"


class AlertError(ValueError):
    """An operator action that does not apply (unknown alert, wrong state): a 4xx, not a 5xx."""


@dataclass(frozen=True)
class Transition:
    """A condition change found by the engine, for one rule and one series or sensor."""

    rule: str  # the rule's key
    kind: str
    severity: str
    message: str
    sensor_id: str
    quantity: str | None  # None for sensor-level rules (stale)
    series_id: int | None
    ts_us: int  # event time
    value: float
    raised: bool
    flap_count: int
    flap_window_us: int


def _at(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us / 1e6, UTC)


def _event(
    cur: Cursor,
    alert_id: int,
    event: str,
    before: str | None,
    after: str,
    actor: str = SYSTEM,
    comment: str = "",
    value: float | None = None,
    event_time: datetime | None = None,
) -> None:
    row = cur.execute(
        "INSERT INTO alert_events (alert_id, event, from_state, to_state, actor, comment, value,"
        " event_time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (alert_id, event, before, after, actor, comment, value, event_time),
    ).fetchone()
    assert row is not None
    # Same transaction: the notification is durable exactly when the transition is.
    outbox.enqueue(cur, row[0])


def _set(cur: Cursor, alert_id: int, state: str, **columns: object) -> None:
    sets = ", ".join(f"{c} = %s" for c in columns)
    cur.execute(
        f"UPDATE alerts SET state = %s, updated_at = now(){', ' + sets if sets else ''}"
        " WHERE id = %s",
        (state, *columns.values(), alert_id),
    )


def _open(cur: Cursor, t: Transition) -> tuple[int, str] | None:
    row = cur.execute(
        "SELECT id, state FROM alerts WHERE sensor_id = %s AND coalesce(quantity, '') = %s"
        " AND rule = %s AND state <> 'closed' FOR UPDATE",
        (t.sensor_id, t.quantity or "", t.rule),
    ).fetchone()
    return None if row is None else (row[0], row[1])


# The system's condition changes of one series and rule since a moment; it reads that series'
# alarms through alerts_series_rule (migration 0011), never the whole table.
FLAP_SQL = (
    "SELECT count(*) FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
    " WHERE a.sensor_id = %s AND coalesce(a.quantity, '') = %s AND a.rule = %s"
    " AND e.event IN ('raise', 'reraise', 'clear') AND e.actor = 'system'"
    " AND e.event_time > %s"
)


def _flapping(cur: Cursor, t: Transition) -> bool:
    """Too many condition changes of this rule on this series within its flap window."""
    row = cur.execute(
        FLAP_SQL,
        (t.sensor_id, t.quantity or "", t.rule, _at(t.ts_us - t.flap_window_us)),
    ).fetchone()
    return row is not None and row[0] + 1 >= t.flap_count


def apply(cur: Cursor, transitions: list[Transition]) -> set[tuple[str, str]]:
    """Apply the engine's transitions; returns the (sensor, severity) pairs whose alarms changed."""
    touched: set[tuple[str, str]] = set()
    for t in transitions:
        at = _at(t.ts_us)
        current = _open(cur, t)
        if t.raised:
            flap = _flapping(cur, t)
            if current is None:
                state = "flapping" if flap else "active"
                # ON CONFLICT: another worker may raise the same alarm at the same moment.
                row = cur.execute(
                    "INSERT INTO alerts (sensor_id, quantity, series_id, rule, kind, severity,"
                    " state, message, value, raised_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
                    " %s, %s) ON CONFLICT (sensor_id, coalesce(quantity, ''), rule)"
                    " WHERE state <> 'closed' DO NOTHING RETURNING id",
                    (
                        t.sensor_id,
                        t.quantity,
                        t.series_id,
                        t.rule,
                        t.kind,
                        t.severity,
                        state,
                        t.message,
                        t.value,
                        at,
                    ),
                ).fetchone()
                if row is not None:
                    _event(cur, row[0], "raise", None, state, value=t.value, event_time=at)
                    touched.add((t.sensor_id, t.severity))
                    continue
                current = _open(cur, t)
                assert current is not None  # the conflicting row is committed and open
            alert_id, state = current
            if state == "cleared":
                after = "flapping" if flap else "active"
                _set(cur, alert_id, after, value=t.value, cleared_at=None)
                _event(cur, alert_id, "reraise", state, after, value=t.value, event_time=at)
            elif flap and state in ("active", "acknowledged"):
                _set(cur, alert_id, "flapping", value=t.value)
                _event(cur, alert_id, "flap", state, "flapping", value=t.value, event_time=at)
            else:  # already raised, shelved or flapping: recorded, nothing re-raised
                _event(cur, alert_id, "raise", state, state, value=t.value, event_time=at)
        elif current is not None:
            alert_id, state = current
            if state == "active":
                _set(cur, alert_id, "cleared", cleared_at=at)
                _event(cur, alert_id, "clear", state, "cleared", value=t.value, event_time=at)
            elif state == "acknowledged":
                _set(cur, alert_id, "closed", cleared_at=at, closed_at=at)
                _event(cur, alert_id, "clear", state, "closed", value=t.value, event_time=at)
            elif state in ("shelved", "flapping"):
                _set(cur, alert_id, state, cleared_at=at)
                _event(cur, alert_id, "clear", state, state, value=t.value, event_time=at)
        touched.add((t.sensor_id, t.severity))
    return touched


def settle(cur: Cursor, now: datetime, flap_windows: dict[str, int]) -> set[tuple[str, str]]:
    """Expired shelving, and flapping alarms quiet for their rule's flap window (microseconds
    by rule key), return to active (the condition still holds) or close (it does not)."""
    rows = cur.execute(
        "SELECT a.id, a.state, a.sensor_id, a.severity, a.rule,"
        " (SELECT e.event FROM alert_events e WHERE e.alert_id = a.id AND e.actor = 'system'"
        "  AND e.event IN ('raise', 'reraise', 'clear', 'flap')"
        "  ORDER BY e.event_time DESC NULLS LAST, e.id DESC LIMIT 1),"
        " (SELECT max(e.at) FROM alert_events e WHERE e.alert_id = a.id AND e.actor = 'system')"
        " FROM alerts a WHERE (a.state = 'shelved' AND a.shelved_until <= %s)"
        " OR a.state = 'flapping' FOR UPDATE OF a",
        (now,),
    ).fetchall()
    touched: set[tuple[str, str]] = set()
    for alert_id, state, sensor, severity, rule, last, last_at in rows:
        window_us = flap_windows.get(rule, 30 * 60_000_000)
        if (
            state == "flapping"
            and last_at is not None
            and (now - last_at).total_seconds() * 1e6 < window_us
        ):
            continue  # still changing
        holding = last in ("raise", "reraise", "flap")
        after = "active" if holding else "closed"
        extra: dict[str, object] = {"shelved_until": None}
        if after == "closed":
            extra["closed_at"] = now
        _set(cur, alert_id, after, **extra)
        _event(cur, alert_id, "settle", state, after)
        touched.add((sensor, severity))
    return touched


# -- operator actions (the API calls these) --------------------------------------------------


def _lock(cur: Cursor, alert_id: int) -> tuple[str, str, str, datetime | None]:
    row = cur.execute(
        "SELECT state, sensor_id, severity, acked_at FROM alerts WHERE id = %s FOR UPDATE",
        (alert_id,),
    ).fetchone()
    if row is None:
        raise AlertError(f"no alert {alert_id}")
    return row[0], row[1], row[2], row[3]


def acknowledge(cur: Cursor, alert_id: int, actor: str, comment: str = "") -> str:
    state, _, _, acked = _lock(cur, alert_id)
    if state == "closed":
        raise AlertError(f"alert {alert_id} is closed")
    if acked is not None and state != "cleared":
        raise AlertError(f"alert {alert_id} is already acknowledged")
    after = {"active": "acknowledged", "cleared": "closed"}.get(state, state)
    extra: dict[str, object] = {"acked_at": datetime.now(UTC), "acked_by": actor}
    if after == "closed":
        extra["closed_at"] = datetime.now(UTC)
    _set(cur, alert_id, after, **extra)
    _event(cur, alert_id, "ack", state, after, actor=actor, comment=comment)
    return after


def shelve(cur: Cursor, alert_id: int, until: datetime, actor: str, comment: str = "") -> str:
    state, _, _, _ = _lock(cur, alert_id)
    if state == "closed":
        raise AlertError(f"alert {alert_id} is closed")
    if until <= datetime.now(UTC):
        raise AlertError("shelving needs an expiry in the future")
    _set(cur, alert_id, "shelved", shelved_until=until)
    _event(
        cur,
        alert_id,
        "shelve",
        state,
        "shelved",
        actor=actor,
        comment=comment or f"until {until.isoformat()}",
    )
    return "shelved"


def _holding(cur: Cursor, alert_id: int) -> bool:
    """Whether the alarm's condition still holds: its newest system transition raised it."""
    row = cur.execute(
        "SELECT e.event FROM alert_events e WHERE e.alert_id = %s AND e.actor = 'system'"
        " AND e.event IN ('raise', 'reraise', 'clear', 'flap')"
        " ORDER BY e.event_time DESC NULLS LAST, e.id DESC LIMIT 1",
        (alert_id,),
    ).fetchone()
    return row is not None and row[0] in ("raise", "reraise", "flap")


def unshelve(cur: Cursor, alert_id: int, actor: str, comment: str = "") -> str:
    """End shelving before its expiry (a silence expired in Alertmanager): back to active if
    the condition still holds, else closed, as `settle` does at the expiry."""
    state, _, _, _ = _lock(cur, alert_id)
    if state != "shelved":
        raise AlertError(f"alert {alert_id} is not shelved")
    after = "active" if _holding(cur, alert_id) else "closed"
    extra: dict[str, object] = {"shelved_until": None}
    if after == "closed":
        extra["closed_at"] = datetime.now(UTC)
    _set(cur, alert_id, after, **extra)
    _event(cur, alert_id, "unshelve", state, after, actor=actor, comment=comment)
    return after


def escalate(cur: Cursor, after_s: dict[str, float], now: datetime) -> list[int]:
    """Alarms still active (nobody acknowledged them) longer than their rule's
    `escalate_after` (seconds by rule key) are escalated, once each; returns their ids."""
    if not after_s:
        return []
    rows = cur.execute(
        "SELECT a.id FROM alerts a JOIN unnest(%s::text[], %s::float8[]) AS r(rule, after_s)"
        " ON r.rule = a.rule WHERE a.state = 'active' AND a.acked_at IS NULL"
        " AND a.escalated_at IS NULL"
        " AND a.raised_seen_at + r.after_s * interval '1 second' <= %s"
        " ORDER BY a.id FOR UPDATE OF a SKIP LOCKED",
        (list(after_s), list(after_s.values()), now),
    ).fetchall()
    for (alert_id,) in rows:
        _set(cur, alert_id, "active", escalated_at=now)
        _event(cur, alert_id, "escalate", "active", "active", comment="not acknowledged in time")
    return [r[0] for r in rows]


def close(cur: Cursor, alert_id: int, actor: str, comment: str = "") -> str:
    """An operator's clear: the alarm is over, whatever its state."""
    state, _, _, _ = _lock(cur, alert_id)
    if state == "closed":
        raise AlertError(f"alert {alert_id} is already closed")
    now = datetime.now(UTC)
    _set(cur, alert_id, "closed", closed_at=now, shelved_until=None)
    _event(cur, alert_id, "close", state, "closed", actor=actor, comment=comment)
    return "closed"


def open_for(cur: Cursor, sensor_id: str, severity: str) -> list[dict[str, Any]]:
    """The open alarms of one sensor at one severity, as published on MQTT."""
    rows = cur.execute(
        "SELECT id, quantity, rule, kind, state, message, value, raised_at FROM alerts"
        " WHERE sensor_id = %s AND severity = %s AND state <> 'closed' ORDER BY id",
        (sensor_id, severity),
    ).fetchall()
    return [
        {
            "id": r[0],
            "quantity": r[1],
            "rule": r[2],
            "kind": r[3],
            "state": r[4],
            "message": r[5],
            "value": r[6],
            "raised_at": r[7].isoformat(),
        }
        for r in rows
    ]
