"""Alarms: list and filter, one alarm, its audit trail, and the operator's actions on it.

The actions call store.alerts (acknowledge, shelve, unshelve, close) inside one transaction with the
token's name as the actor; a state an action does not apply to is a 409, an unknown alarm a
404, each with store.alerts' message. Each action sends NOTIFY so live walls update at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api import paging
from api.auth import Operator, Viewer
from api.errors import ApiError, bad_request, responses
from api.params import DURATION_PATTERN, aware, csv_list, duration_s
from api.quarantine import publish
from api.rows import ALERT_COLUMNS
from api.state import ApiState, get_state
from ingest.alarms import retained
from store import alerts as lifecycle
from store import db, outbox
from store.writer import CHANNEL

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the alarm's id", examples=[1])]


class State(StrEnum):
    open = "open"  # every state but closed
    active = "active"
    acknowledged = "acknowledged"
    cleared = "cleared"
    shelved = "shelved"
    flapping = "flapping"
    closed = "closed"
    all = "all"


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"


class Alert(BaseModel):
    id: int = Field(examples=[42])
    sensor_id: str = Field(examples=["AQ-P08"])
    quantity: str | None = Field(None, examples=["pm25"])
    rule: str = Field(examples=["pm25:threshold:warning"])
    kind: str = Field(examples=["threshold"])
    severity: str = Field(examples=["warning"])
    state: str = Field(
        examples=["active"],
        description="active, acknowledged, cleared, shelved, flapping or closed",
    )
    message: str = Field(examples=["PM2.5 unhealthy"])
    value: float | None = Field(None, examples=[61.2])
    raised_at: datetime = Field(description="event time of the reading that raised it")
    raised_seen_at: datetime = Field(description="when the platform raised it")
    acked_at: datetime | None = None
    acked_by: str | None = None
    cleared_at: datetime | None = None
    closed_at: datetime | None = None
    shelved_until: datetime | None = None
    shelved_by: str | None = Field(
        None,
        examples=["operator-ana"],
        description="who shelved it, while shelved: a token's name, or alertmanager:<createdBy>"
        " for a silence made in Alertmanager",
    )
    updated_at: datetime
    domain: str | None = Field(None, examples=["air"])
    district: str | None = Field(None, examples=["Presint 8"])


class Delivery(BaseModel):
    receiver: str = Field(examples=["alertmanager"], description="alertmanager or webhook <url>")
    event: str = Field(examples=["raise"], description="the transition delivered")
    at: datetime = Field(description="when the transition happened")
    delivered_at: datetime
    attempts: int = Field(examples=[1], description="attempts it took (retries after failures)")


class PendingDelivery(BaseModel):
    receiver: str = Field(examples=["webhook https://hooks.example.org/pusat"])
    event: str = Field(examples=["ack"])
    at: datetime = Field(description="when the transition happened")
    failures: int = Field(description="the receiver's consecutive failed attempts")
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(None, description="its next retry, when failing")


class AlertDetail(Alert):
    deliveries: list[Delivery] = Field(
        description="where and when each transition was delivered (Alertmanager, webhooks)"
    )
    pending: list[PendingDelivery] = Field(
        description="transitions a configured receiver has not got yet, with its retry state"
    )


class AlertEvent(BaseModel):
    id: int
    at: datetime
    event: str = Field(examples=["ack"], description="raise, ack, shelve, clear, close, ...")
    from_state: str | None = None
    to_state: str
    actor: str = Field(examples=["operator-ana"], description="'system' or the token's name")
    comment: str = ""
    value: float | None = None
    event_time: datetime | None = None


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = Field("", max_length=2000, examples=["crew dispatched to Presint 8"])


class ShelveIn(ActionIn):
    until: datetime | None = Field(None, description="shelved until this time (RFC 3339)")
    duration: str | None = Field(
        None,
        pattern=DURATION_PATTERN,
        description="or for this long: 30m, 2h, 1d",
        examples=["2h"],
    )

    @model_validator(mode="after")
    def _one_expiry(self) -> ShelveIn:
        if (self.until is None) == (self.duration is None):
            raise ValueError("give exactly one of until or duration")
        return self


async def _fetch(conn: psycopg.AsyncConnection[Any], alert_id: int) -> dict[str, Any]:
    cur = await conn.execute(
        f"SELECT {ALERT_COLUMNS} FROM alerts a LEFT JOIN sensors s USING (sensor_id)"
        " WHERE a.id = %s",
        (alert_id,),
    )
    names = [d.name for d in cur.description or ()]
    row = await cur.fetchone()
    if row is None:
        raise ApiError(404, f"no alert {alert_id}")
    return dict(zip(names, row, strict=True))


@router.get(
    "/alerts",
    response_model=list[Alert],
    summary="Alarms, filtered (open ones by default), most severe and newest first",
    responses=responses(400, 401, 403, 503),
)
async def list_alerts(
    principal: Viewer,
    state: Annotated[ApiState, Depends(get_state)],
    request: Request,
    response: Response,
    status: Annotated[
        list[State] | None,
        Query(alias="state", description="open (default: every state but closed), all, or states"),
    ] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    sensor: Annotated[list[str] | None, Query()] = None,
    quantity: Annotated[list[str] | None, Query()] = None,
    domain: Annotated[str | None, Query(examples=["air"])] = None,
    district: Annotated[str | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="raised at or after (RFC 3339)")] = None,
    until: Annotated[datetime | None, Query(description="raised before (RFC 3339)")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 500,
    cursor: Annotated[str | None, Query(description=paging.CURSOR_DESCRIPTION)] = None,
    offset: Annotated[
        int, Query(ge=0, le=10_000_000, description="rows to skip (the cursor is better)")
    ] = 0,
) -> list[dict[str, Any]]:
    """`limit` at a time; the next page's cursor in the `Link` (rel=next) and
    `X-Pusat-Next-Cursor` headers."""
    paging.check(cursor, offset)
    states = set(status or [State.open])
    where: list[str] = []
    params: list[Any] = []
    if State.all not in states:
        wanted = {s.value for s in states if s is not State.open}
        if State.open in states:
            wanted |= set(lifecycle.OPEN)
        where.append("a.state = ANY(%s)")
        params.append(sorted(wanted))
    if severity:
        where.append("a.severity = ANY(%s)")
        params.append([s.value for s in severity])
    if sensor:
        where.append("a.sensor_id = ANY(%s)")
        params.append(csv_list(sensor))
    if quantity:
        where.append("a.quantity = ANY(%s)")
        params.append(csv_list(quantity))
    if domain is not None:
        where.append("s.domain = %s")
        params.append(domain)
    if district is not None:
        where.append("s.district = %s")
        params.append(district)
    s, u = aware(since, "since"), aware(until, "until")
    if s is not None:
        where.append("a.raised_at >= %s")
        params.append(s)
    if u is not None:
        where.append("a.raised_at < %s")
        params.append(u)
    if cursor is not None:
        # After the cursor's row in (rank ascending, raised_at descending, id descending).
        rank, raised, last = paging.decode("alerts", cursor, (int, datetime, int))
        where.append(f"({_RANK} > %s OR ({_RANK} = %s AND (a.raised_at, a.id) < (%s, %s)))")
        params += [rank, rank, raised, last]
    sql = f"SELECT {ALERT_COLUMNS} FROM alerts a LEFT JOIN sensors s USING (sensor_id)"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {_RANK}, a.raised_at DESC, a.id DESC LIMIT %s OFFSET %s"
    async with state.read_pool.connection() as conn:
        cur = await conn.execute(sql, [*params, limit + 1, offset])
        names = [d.name for d in cur.description or ()]
        rows = await cur.fetchall()
    found = [dict(zip(names, r, strict=True)) for r in rows]
    return paging.page(found, limit, "alerts", _sort_key, request, response)


# Most severe first: the order of the list and of its cursor's key.
_RANK = "CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END"


def _sort_key(row: dict[str, Any]) -> tuple[int, datetime, int]:
    rank = {"critical": 0, "warning": 1}.get(row["severity"], 2)
    return rank, row["raised_at"], row["id"]


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertDetail,
    summary="One alarm, with where and when its notifications were delivered",
    responses=responses(401, 403, 404, 503),
)
async def get_alert(
    alert_id: AlertId, principal: Viewer, state: Annotated[ApiState, Depends(get_state)]
) -> dict[str, Any]:
    async with state.read_pool.connection() as conn:
        found = await _fetch(conn, alert_id)
        for key, query in (("deliveries", outbox.DELIVERIES_SQL), ("pending", outbox.PENDING_SQL)):
            cur = await conn.execute(query, (alert_id,))
            names = [d.name for d in cur.description or ()]
            found[key] = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
    return found


@router.get(
    "/alerts/{alert_id}/events",
    response_model=list[AlertEvent],
    summary="The audit trail of one alarm: every transition, who made it and why",
    responses=responses(401, 403, 404, 503),
)
async def alert_events(
    alert_id: AlertId, principal: Viewer, state: Annotated[ApiState, Depends(get_state)]
) -> list[dict[str, Any]]:
    async with state.read_pool.connection() as conn:
        await _fetch(conn, alert_id)
        cur = await conn.execute(
            "SELECT id, at, event, from_state, to_state, actor, comment, value, event_time"
            " FROM alert_events WHERE alert_id = %s ORDER BY at, id",
            (alert_id,),
        )
        names = [d.name for d in cur.description or ()]
        rows = await cur.fetchall()
    return [dict(zip(names, r, strict=True)) for r in rows]


Action = Callable[[psycopg.Cursor[Any]], str]


async def _act(state: ApiState, alert_id: int, action: str, apply: Action) -> dict[str, Any]:
    """Run one store.alerts action and its NOTIFY in one transaction.

    store.alerts is synchronous (ingest calls it too), so the action runs in a worker thread on
    a connection of its own; operator actions are rare enough for the connection cost.
    """
    url = state.settings.database_url
    assert url is not None

    def run() -> tuple[str, bytes] | None:
        with (
            db.connect(url, application="pusat-api") as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            apply(cur)
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"alarms": 1})))
            row = cur.execute(
                "SELECT sensor_id, severity FROM alerts WHERE id = %s", (alert_id,)
            ).fetchone()
            if row is None or state.settings.mqtt_url is None:
                return None
            return retained(cur, state.settings.topic_root, row[0], row[1])

    message = await asyncio.to_thread(run)
    if message is not None:
        # Sirens and SMS gateways follow the retained alarm topic: it changes with the action.
        try:
            await asyncio.to_thread(publish, state.settings.mqtt(), [message], True)
        except ApiError as e:
            # The action itself is committed; ingest republishes the topic on the next change.
            log.warning("alarm %s: its MQTT topic was not updated: %s", alert_id, e)
    state.metrics.alert_actions.labels(action).inc()
    async with state.pool.connection() as conn:
        return await _fetch(conn, alert_id)


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=Alert,
    summary="Acknowledge an alarm",
    responses=responses(401, 403, 404, 409, 503),
)
async def ack(
    alert_id: AlertId,
    principal: Operator,
    state: Annotated[ApiState, Depends(get_state)],
    body: ActionIn | None = None,
) -> dict[str, Any]:
    """An active alarm becomes acknowledged; a cleared one (back to normal, unacknowledged)
    closes."""
    comment = body.comment if body else ""
    return await _act(
        state,
        alert_id,
        "ack",
        lambda cur: lifecycle.acknowledge(cur, alert_id, principal.name, comment),
    )


@router.post(
    "/alerts/{alert_id}/shelve",
    response_model=Alert,
    summary="Shelve an alarm until an expiry",
    responses=responses(400, 401, 403, 404, 409, 503),
)
async def shelve(
    alert_id: AlertId,
    body: ShelveIn,
    principal: Operator,
    state: Annotated[ApiState, Depends(get_state)],
) -> dict[str, Any]:
    """Suppress an alarm until `until` (or for `duration`); at the expiry it returns to active
    if its condition still holds, or closes."""
    if body.duration is not None:
        until = datetime.now(UTC) + timedelta(seconds=duration_s(body.duration, "duration"))
    else:
        checked = aware(body.until, "until")
        assert checked is not None
        until = checked
    if until <= datetime.now(UTC):
        raise bad_request("shelving needs an expiry in the future")
    return await _act(
        state,
        alert_id,
        "shelve",
        lambda cur: lifecycle.shelve(cur, alert_id, until, principal.name, body.comment),
    )


@router.post(
    "/alerts/{alert_id}/unshelve",
    response_model=Alert,
    summary="End an alarm's shelving before its expiry",
    responses=responses(401, 403, 404, 409, 503),
)
async def unshelve(
    alert_id: AlertId,
    principal: Operator,
    state: Annotated[ApiState, Depends(get_state)],
    body: ActionIn | None = None,
) -> dict[str, Any]:
    """A shelved alarm returns to active if its condition still holds, or closes, as at its
    expiry (the notifier expires the Alertmanager silence made for the shelving)."""
    comment = body.comment if body else ""
    return await _act(
        state,
        alert_id,
        "unshelve",
        lambda cur: lifecycle.unshelve(cur, alert_id, principal.name, comment),
    )


@router.post(
    "/alerts/{alert_id}/clear",
    response_model=Alert,
    summary="Clear (close) an alarm",
    responses=responses(401, 403, 404, 409, 503),
)
async def clear(
    alert_id: AlertId,
    principal: Operator,
    state: Annotated[ApiState, Depends(get_state)],
    body: ActionIn | None = None,
) -> dict[str, Any]:
    """The operator declares the alarm over, whatever its state."""
    comment = body.comment if body else ""
    return await _act(
        state,
        alert_id,
        "clear",
        lambda cur: lifecycle.close(cur, alert_id, principal.name, comment),
    )
