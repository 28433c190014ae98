"""Quarantine: list rejected records, and replay selected ones through ingest.

Replay republishes each selected message's stored payload (decoded from base64 when it was
binary) on its original topic with QoS 1 to the broker at PUSAT_MQTT_URL, and marks the records
``replayed_at`` once the broker has every message. The ingest workers then take them like live
data: stored once if now valid (a reading already stored stays a duplicate), quarantined again
with a fresh row if still not.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from datetime import datetime
from typing import Annotated, Any

import paho.mqtt.client as mqtt
from fastapi import APIRouter, Depends, Query, Request, Response
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import BaseModel, ConfigDict, Field

from api import paging
from api.auth import Engineer, Viewer
from api.errors import ApiError, bad_request, responses
from api.params import aware, csv_list
from api.state import ApiState, get_state
from pusat.settings import MqttTarget

router = APIRouter(prefix="/api/v1", tags=["quarantine"])

MAX_REPLAY = 10_000
PUBLISH_TIMEOUT_S = 30.0
WINDOW = 1000  # unacknowledged publishes at once (paho's message ids are 16-bit)


class QuarantineRecord(BaseModel):
    id: int = Field(examples=[1207])
    received_at: datetime
    topic: str = Field(examples=["pusat/v1/gw-p08/senml"])
    gateway_id: str | None = Field(None, examples=["gw-p08"])
    reason: str = Field(examples=["unknown_unit"])
    detail: str = Field(examples=["unit 'mg/L' is not accepted for pm25"])
    record: int | None = Field(None, description="index of the rejected record in the message")
    payload: str = Field(description="the message as received (base64 when payload_encoding is)")
    payload_encoding: str = Field(examples=["utf8"])
    replayed_at: datetime | None = None


class ReplayIn(BaseModel):
    """Which records to replay: their ids, or a filter (at least one of them)."""

    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(
        None, max_length=MAX_REPLAY, examples=[[1207, 1208]]
    )
    reason: str | None = Field(None, examples=["unknown_unit"])
    gateway: str | None = Field(None, examples=["gw-p08"])
    start: datetime | None = Field(None, description="received at or after (RFC 3339)")
    end: datetime | None = Field(None, description="received before (RFC 3339)")
    include_replayed: bool = Field(False, description="also records replayed before")
    limit: int = Field(1000, ge=1, le=MAX_REPLAY)


class ReplayOut(BaseModel):
    selected: int = Field(description="quarantine records selected")
    published: int = Field(description="messages republished (records of one message share it)")
    ids: list[int]


def _where(
    reasons: list[str],
    gateway: str | None,
    start: datetime | None,
    end: datetime | None,
    replayed: bool | None,
    ids: list[int] | None = None,
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if ids is not None:
        where.append("id = ANY(%s)")
        params.append(ids)
    if reasons:
        where.append("reason = ANY(%s)")
        params.append(reasons)
    if gateway is not None:
        where.append("gateway_id = %s")
        params.append(gateway)
    if start is not None:
        where.append("received_at >= %s")
        params.append(start)
    if end is not None:
        where.append("received_at < %s")
        params.append(end)
    if replayed is not None:
        where.append("replayed_at IS NOT NULL" if replayed else "replayed_at IS NULL")
    return where, params


_COLUMNS = (
    "id, received_at, topic, gateway_id, reason, detail, record, payload, payload_encoding,"
    " replayed_at"
)


@router.get(
    "/quarantine",
    response_model=list[QuarantineRecord],
    summary="Rejected records, newest first",
    responses=responses(400, 401, 403, 503),
)
async def list_quarantine(
    principal: Viewer,
    state: Annotated[ApiState, Depends(get_state)],
    request: Request,
    response: Response,
    reason: Annotated[list[str] | None, Query(examples=[["unknown_unit"]])] = None,
    gateway: Annotated[str | None, Query()] = None,
    start: Annotated[datetime | None, Query(description="received at or after")] = None,
    end: Annotated[datetime | None, Query(description="received before")] = None,
    replayed: Annotated[bool | None, Query(description="only (not) replayed records")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    cursor: Annotated[str | None, Query(description=paging.CURSOR_DESCRIPTION)] = None,
    offset: Annotated[
        int, Query(ge=0, le=10_000_000, description="rows to skip (the cursor is better)")
    ] = 0,
) -> list[dict[str, Any]]:
    """`limit` at a time; the next page's cursor in the `Link` (rel=next) and
    `X-Pusat-Next-Cursor` headers."""
    paging.check(cursor, offset)
    where, params = _where(
        csv_list(reason), gateway, aware(start, "start"), aware(end, "end"), replayed
    )
    if cursor is not None:
        received, last = paging.decode("quarantine", cursor, (datetime, int))
        where.append("(received_at, id) < (%s, %s)")
        params += [received, last]
    sql = f"SELECT {_COLUMNS} FROM quarantine"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY received_at DESC, id DESC LIMIT %s OFFSET %s"
    async with state.read_pool.connection() as conn:
        cur = await conn.execute(sql, [*params, limit + 1, offset])
        names = [d.name for d in cur.description or ()]
        rows = await cur.fetchall()
    found = [dict(zip(names, r, strict=True)) for r in rows]
    return paging.page(found, limit, "quarantine", _sort_key, request, response)


def _sort_key(row: dict[str, Any]) -> tuple[datetime, int]:
    return row["received_at"], row["id"]


def publish(target: MqttTarget, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    """Publish with QoS 1 and return once the broker has acknowledged every message."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"pusat-api-replay-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set()
    client.max_inflight_messages_set(WINDOW)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(target.host, target.port, keepalive=30)
    except OSError as e:
        raise ApiError(503, f"the broker at {target.host}:{target.port} is unreachable: {e}") from e
    client.loop_start()
    try:
        if not connected.wait(10) or refused:
            why = refused[0] if refused else "no answer"
            raise ApiError(503, f"the broker at {target.host}:{target.port} refused us: {why}")
        for i in range(0, len(messages), WINDOW):
            infos = [
                client.publish(t, p, qos=1, retain=retain) for t, p in messages[i : i + WINDOW]
            ]
            for info in infos:
                info.wait_for_publish(PUBLISH_TIMEOUT_S)
                if not info.is_published():
                    raise ApiError(503, "the broker did not acknowledge the replayed messages")
    finally:
        client.disconnect()
        client.loop_stop()


@router.post(
    "/quarantine/replay",
    response_model=ReplayOut,
    summary="Replay selected records through ingest",
    responses=responses(400, 401, 403, 503),
)
async def replay(
    body: ReplayIn, principal: Engineer, state: Annotated[ApiState, Depends(get_state)]
) -> ReplayOut:
    """Republish the selected records' messages on their original topics (QoS 1) for ingest
    to take again, after a fix (a sensor provisioned, a rule or catalogue corrected)."""
    if body.ids is None and not (body.reason or body.gateway or body.start or body.end):
        raise bad_request("select the records to replay: ids, or a reason, gateway or time filter")
    if state.settings.mqtt_url is None:
        raise ApiError(503, "no broker configured (PUSAT_MQTT_URL): cannot replay")
    target = state.settings.mqtt()
    where, params = _where(
        [body.reason] if body.reason else [],
        body.gateway,
        aware(body.start, "start"),
        aware(body.end, "end"),
        None if body.include_replayed else False,
        list(dict.fromkeys(body.ids)) if body.ids is not None else None,
    )
    sql = (
        f"SELECT id, received_at, topic, payload, payload_encoding FROM quarantine"
        f" WHERE {' AND '.join(where)} ORDER BY received_at, id LIMIT %s"
    )
    async with state.pool.connection() as conn:
        cur = await conn.execute(sql, [*params, body.limit])
        rows = await cur.fetchall()
    # Records of one message (one bad record each) share its payload: publish it once.
    messages: dict[tuple[datetime, str, str], bytes] = {}
    for _, received, topic, payload, encoding in rows:
        if not topic or "+" in topic or "#" in topic:
            continue  # not a topic anyone can publish on (it was quarantined as bad_topic)
        data = base64.b64decode(payload) if encoding == "base64" else payload.encode("utf-8")
        messages.setdefault((received, topic, payload), data)
    ids = [r[0] for r in rows]
    if messages:
        await asyncio.to_thread(publish, target, [(k[1], v) for k, v in messages.items()])
        async with state.pool.connection() as conn:
            await conn.execute(
                "UPDATE quarantine SET replayed_at = now() WHERE id = ANY(%s)", (ids,)
            )
        state.metrics.replayed.inc(len(messages))
    return ReplayOut(selected=len(ids), published=len(messages), ids=ids)
