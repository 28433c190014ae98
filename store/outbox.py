"""The alarm outbox: every lifecycle transition, written in the transaction that made it, and
how far each receiver has got through it.

`enqueue` runs inside the caller's transaction (ingest's batch, the API's action), so a
transition and its notification commit together and nobody waits for a receiver. The notifier
then numbers committed rows (`sequence`) and each receiver follows that numbering (`pending`,
`delivered`, `failed`), so a receiver that was down gets everything it missed, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

Cursor = psycopg.Cursor[Any]

# The alarm as receivers see it: the row, its sensor's domain and district, and its unit.
_ALARM_JSON = (
    "jsonb_build_object('id', a.id, 'sensor_id', a.sensor_id, 'quantity', a.quantity,"
    " 'rule', a.rule, 'kind', a.kind, 'severity', a.severity, 'state', a.state,"
    " 'message', a.message, 'value', a.value, 'unit', se.unit, 'raised_at', a.raised_at,"
    " 'acked_at', a.acked_at, 'acked_by', a.acked_by, 'cleared_at', a.cleared_at,"
    " 'closed_at', a.closed_at, 'shelved_until', a.shelved_until,"
    " 'escalated_at', a.escalated_at, 'domain', s.domain, 'district', s.district)"
)
ALARM_FROM = (
    "alerts a LEFT JOIN sensors s ON s.sensor_id = a.sensor_id"
    " LEFT JOIN series se ON se.series_id = a.series_id"
)


def enqueue(cur: Cursor, event_id: int) -> None:
    """One transition (an `alert_events` row) into the outbox, with the alarm as it is now."""
    cur.execute(
        "INSERT INTO alarm_outbox (alert_id, event_id, event, payload)"
        " SELECT a.id, e.id, e.event, jsonb_build_object('event', e.event, 'at', e.at,"
        "  'from_state', e.from_state, 'to_state', e.to_state, 'actor', e.actor,"
        f"  'comment', e.comment, 'event_time', e.event_time, 'alert', {_ALARM_JSON})"
        f" FROM alert_events e JOIN {ALARM_FROM} ON a.id = e.alert_id WHERE e.id = %s",
        (event_id,),
    )


def sequence(cur: Cursor) -> int:
    """Number the committed rows not yet numbered, in id order; returns how many.

    Only one notifier numbers at a time (the advisory lock in `claim`), so max(seq) + n is safe.
    """
    cur.execute(
        "WITH base AS (SELECT coalesce(max(seq), 0) AS b FROM alarm_outbox),"
        " todo AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM alarm_outbox"
        "  WHERE seq IS NULL)"
        " UPDATE alarm_outbox o SET seq = base.b + todo.n FROM todo, base WHERE o.id = todo.id"
    )
    return cur.rowcount


# Any constant works; it only has to be the same for every notifier sharing a database.
_NOTIFIER_LOCK = 0x50555359


def claim(cur: Cursor) -> bool:
    """Become the one notifier of this database (a session lock, released on disconnect)."""
    row = cur.execute("SELECT pg_try_advisory_lock(%s)", (_NOTIFIER_LOCK,)).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class Entry:
    id: int
    seq: int
    alert_id: int
    event: str
    created_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class Receiver:
    name: str
    delivered_seq: int
    failures: int
    next_attempt_at: datetime | None


def receiver(cur: Cursor, name: str) -> Receiver:
    """A receiver's progress; a new receiver starts at the current end of the outbox (it gets
    what happens from now on, not the whole history)."""
    cur.execute(
        "INSERT INTO alarm_receivers (receiver, delivered_seq)"
        " SELECT %s, coalesce(max(seq), 0) FROM alarm_outbox ON CONFLICT (receiver) DO NOTHING",
        (name,),
    )
    row = cur.execute(
        "SELECT delivered_seq, failures, next_attempt_at FROM alarm_receivers WHERE receiver = %s",
        (name,),
    ).fetchone()
    assert row is not None
    return Receiver(name, row[0], row[1], row[2])


def pending(cur: Cursor, after_seq: int, limit: int) -> list[Entry]:
    rows = cur.execute(
        "SELECT id, seq, alert_id, event, created_at, payload FROM alarm_outbox"
        " WHERE seq > %s ORDER BY seq LIMIT %s",
        (after_seq, limit),
    ).fetchall()
    return [Entry(*r) for r in rows]


def delivered(cur: Cursor, name: str, entry: Entry, attempts: int) -> None:
    cur.execute(
        "UPDATE alarm_receivers SET delivered_seq = %s, failures = 0, next_attempt_at = NULL,"
        " updated_at = now() WHERE receiver = %s",
        (entry.seq, name),
    )
    cur.execute(
        "INSERT INTO alarm_deliveries (receiver, outbox_id, alert_id, attempts)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (name, entry.id, entry.alert_id, attempts),
    )


def failed(cur: Cursor, name: str, error: str, retry_at: datetime) -> None:
    cur.execute(
        "UPDATE alarm_receivers SET failures = failures + 1, next_attempt_at = %s,"
        " last_error = %s, last_error_at = now(), updated_at = now() WHERE receiver = %s",
        (retry_at, error[:2000], name),
    )


def oldest_undelivered_age_s(cur: Cursor, names: list[str]) -> float:
    """Seconds since the oldest transition some receiver still has to get (0: none waiting)."""
    row = cur.execute(
        "SELECT extract(epoch FROM now() - min(o.created_at)) FROM alarm_outbox o"
        " WHERE o.seq IS NULL OR o.seq > (SELECT coalesce(min(delivered_seq), 0)"
        "  FROM alarm_receivers WHERE receiver = ANY(%s))",
        (names,),
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


# Where and when each transition of one alarm was delivered (the API runs these too, async).
DELIVERIES_SQL = (
    "SELECT d.receiver, o.event, o.created_at AS at, d.delivered_at, d.attempts"
    " FROM alarm_deliveries d JOIN alarm_outbox o ON o.id = d.outbox_id"
    " WHERE d.alert_id = %s ORDER BY d.delivered_at, o.seq, d.receiver"
)
# Its transitions some receiver has not got yet, with that receiver's retry state.
PENDING_SQL = (
    "SELECT r.receiver, o.event, o.created_at AS at, r.failures, r.last_error,"
    " r.next_attempt_at FROM alarm_outbox o JOIN alarm_receivers r"
    " ON o.seq IS NULL OR o.seq > r.delivered_seq"
    " WHERE o.alert_id = %s ORDER BY o.id, r.receiver"
)
# Per receiver: transitions waiting, consecutive failures, seconds since the oldest waiting one.
BACKLOG_SQL = (
    "SELECT r.receiver, count(o.id), r.failures,"
    " coalesce(extract(epoch FROM now() - min(o.created_at)), 0)"
    " FROM alarm_receivers r LEFT JOIN alarm_outbox o"
    " ON o.seq IS NULL OR o.seq > r.delivered_seq GROUP BY r.receiver, r.failures"
    " ORDER BY r.receiver"
)


def deliveries(cur: Cursor, alert_id: int) -> list[dict[str, Any]]:
    rows = cur.execute(DELIVERIES_SQL, (alert_id,)).fetchall()
    names = ("receiver", "event", "at", "delivered_at", "attempts")
    return [dict(zip(names, r, strict=True)) for r in rows]


def forget_receivers(cur: Cursor, keep: list[str]) -> list[str]:
    """Drop the progress of receivers no longer configured, so they count in no backlog (one
    configured again starts afresh, from the current end, like any new receiver)."""
    rows = cur.execute(
        "DELETE FROM alarm_receivers WHERE NOT receiver = ANY(%s) RETURNING receiver", (keep,)
    ).fetchall()
    return [r[0] for r in rows]


# -- what Alertmanager needs: the alarms as they are now, and their silences -------------------

ALARM_COLUMNS = (
    "a.id, a.sensor_id, a.quantity, a.rule, a.kind, a.severity, a.state, a.message, a.value,"
    " se.unit, a.raised_at, a.acked_at, a.acked_by, a.cleared_at, a.closed_at, a.shelved_until,"
    " a.escalated_at, s.domain, s.district"
)
_NAMES = tuple(c.strip().split(".")[1] for c in ALARM_COLUMNS.split(","))


def alarms(cur: Cursor, where: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    rows = cur.execute(f"SELECT {ALARM_COLUMNS} FROM {ALARM_FROM} WHERE {where}", params)
    return [dict(zip(_NAMES, r, strict=True)) for r in rows.fetchall()]


def live_silences(cur: Cursor, alert_id: int) -> list[tuple[str, str, datetime]]:
    """(silence id, origin, end) of the silences still tied to an alarm."""
    rows = cur.execute(
        "SELECT silence_id, origin, ends_at FROM alarm_silences WHERE alert_id = %s"
        " AND expired_at IS NULL AND ends_at > now() ORDER BY created_at",
        (alert_id,),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def add_silence(
    cur: Cursor, silence_id: str, alert_id: int, origin: str, created_by: str, ends_at: datetime
) -> None:
    cur.execute(
        "INSERT INTO alarm_silences (silence_id, alert_id, origin, created_by, ends_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (silence_id, alert_id, origin, created_by, ends_at),
    )


def expire_silence(cur: Cursor, silence_id: str, alert_id: int | None = None) -> None:
    cur.execute(
        "UPDATE alarm_silences SET expired_at = now() WHERE silence_id = %s"
        " AND (%s::bigint IS NULL OR alert_id = %s) AND expired_at IS NULL",
        (silence_id, alert_id, alert_id),
    )


def silences_by_origin(cur: Cursor, origin: str) -> dict[str, list[tuple[int, datetime]]]:
    """Live silences of one origin: silence id -> the alarms it is tied to, with its end."""
    found: dict[str, list[tuple[int, datetime]]] = {}
    for sid, alert_id, ends_at in cur.execute(
        "SELECT silence_id, alert_id, ends_at FROM alarm_silences WHERE origin = %s"
        " AND expired_at IS NULL ORDER BY alert_id",
        (origin,),
    ):
        found.setdefault(sid, []).append((alert_id, ends_at))
    return found


def silence_ids(cur: Cursor, origin: str) -> set[str]:
    """Every silence of one origin ever tied to an alarm, live or not."""
    rows = cur.execute("SELECT silence_id FROM alarm_silences WHERE origin = %s", (origin,))
    return {r[0] for r in rows.fetchall()}


def known_silences(cur: Cursor) -> set[tuple[str, int]]:
    return {(r[0], r[1]) for r in cur.execute("SELECT silence_id, alert_id FROM alarm_silences")}
