"""GET /healthz (database tier, broker, ingest lag, read replica lag) and GET /metrics.

Both answer without a token: load balancers and Prometheus scrape them. /healthz is 503 only
when the database cannot be reached (the API is useless without it); a broker that cannot be
reached makes it ``degraded`` (reads still work, replay does not).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
import psycopg_pool
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from api.state import ApiState, get_state
from pusat.settings import MqttTarget
from store import outbox

router = APIRouter(tags=["health"])

BROKER_TIMEOUT_S = 2.0


class DatabaseHealth(BaseModel):
    ok: bool
    tier: str | None = Field(None, examples=["postgresql"])
    server_version: str | None = Field(None, examples=["15.10"])
    timescaledb: str | None = None
    error: str | None = None


class BrokerHealth(BaseModel):
    ok: bool | None = Field(description="null when no broker is configured")
    address: str | None = Field(None, examples=["127.0.0.1:1883"])
    error: str | None = None


class IngestHealth(BaseModel):
    last_received_at: datetime | None = None
    last_event_at: datetime | None = None
    lag_s: float | None = Field(None, description="now - newest received_at in latest")
    event_lag_s: float | None = Field(None, description="now - newest event time in latest")
    series: int = 0


class ReplicaHealth(BaseModel):
    configured: bool = Field(description="PUSAT_READ_DATABASE_URL is set: reads go to it")
    ok: bool | None = Field(None, description="null when no replica is configured")
    lag_s: float | None = Field(
        None, description="how far behind the primary its replay is, in time (0 when caught up)"
    )
    lag_bytes: int | None = Field(None, description="WAL the primary has that it has not replayed")
    error: str | None = None


class Health(BaseModel):
    status: str = Field(examples=["ok"], description="ok, degraded or down")
    database: DatabaseHealth
    broker: BrokerHealth
    ingest: IngestHealth
    replica: ReplicaHealth
    live_clients: int


# On the replica: the time of the last transaction replayed, and whether everything received
# has been replayed (an idle primary sends nothing, so the replay time alone would grow).
_REPLAY = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
    " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
)


async def _replica(state: ApiState) -> ReplicaHealth:
    if not state.reads_replica():
        return ReplicaHealth(configured=False)
    try:
        async with state.pool.connection(timeout=5) as conn:
            cur = await conn.execute("SELECT pg_current_wal_lsn()::text")
            primary_row = await cur.fetchone()
        async with state.read_pool.connection(timeout=5) as conn:
            cur = await conn.execute(_REPLAY)
            replica_row = await cur.fetchone()
            assert primary_row is not None and replica_row is not None
            recovering, replayed, since = replica_row
            if not recovering:
                return ReplicaHealth(
                    configured=True, ok=False, error="PUSAT_READ_DATABASE_URL is not a replica"
                )
            cur = await conn.execute(
                "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint",
                (primary_row[0], replayed),
            )
            diff_row = await cur.fetchone()
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as e:
        return ReplicaHealth(configured=True, ok=False, error=str(e))
    assert diff_row is not None
    behind = max(0, int(diff_row[0]))
    lag = 0.0 if behind == 0 or since is None else round(max(0.0, since), 3)
    state.metrics.replica_lag.set(lag)
    state.metrics.replica_lag_bytes.set(behind)
    return ReplicaHealth(configured=True, ok=True, lag_s=lag, lag_bytes=behind)


async def _broker(target: MqttTarget | None) -> BrokerHealth:
    if target is None:
        return BrokerHealth(ok=None)
    address = f"{target.host}:{target.port}"
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port), BROKER_TIMEOUT_S
        )
    except (OSError, TimeoutError) as e:
        return BrokerHealth(ok=False, address=address, error=str(e) or type(e).__name__)
    writer.close()
    await writer.wait_closed()
    return BrokerHealth(ok=True, address=address)


@router.get(
    "/healthz",
    response_model=Health,
    summary="Database tier, broker reachability, ingest lag",
    responses={503: {"model": Health, "description": "the database cannot be reached"}},
)
async def healthz(state: Annotated[ApiState, Depends(get_state)]) -> Any:
    s = state.settings
    target = s.mqtt() if s.mqtt_url is not None else None
    broker = await _broker(target)
    ingest = IngestHealth()
    try:
        t = await state.tier()
        async with state.pool.connection(timeout=5) as conn:
            cur = await conn.execute("SELECT max(received_at), max(ts), count(*) FROM latest_data")
            row = await cur.fetchone()
        database = DatabaseHealth(
            ok=True,
            tier=t.name,
            server_version=t.server_version,
            timescaledb=t.timescaledb_version,
        )
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as e:
        database = DatabaseHealth(ok=False, error=str(e))
        row = None
    if row is not None:
        now = datetime.now(UTC)
        received, event, n = row
        ingest = IngestHealth(
            last_received_at=received,
            last_event_at=event,
            lag_s=None if received is None else round((now - received).total_seconds(), 3),
            event_lag_s=None if event is None else round((now - event).total_seconds(), 3),
            series=n,
        )
        if ingest.lag_s is not None:
            state.metrics.ingest_lag.set(ingest.lag_s)
        if ingest.event_lag_s is not None:
            state.metrics.event_lag.set(ingest.event_lag_s)
    replica = await _replica(state)
    status = "down" if not database.ok else ("degraded" if broker.ok is False else "ok")
    if status == "ok" and replica.ok is False:
        status = "degraded"  # reads fail (or are wrong) while writes work
    health = Health(
        status=status,
        database=database,
        broker=broker,
        ingest=ingest,
        replica=replica,
        live_clients=len(state.hub.subscribers),
    )
    return JSONResponse(
        health.model_dump(mode="json"), status_code=503 if status == "down" else 200
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics of this API process",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text format",
        }
    },
)
async def metrics(state: Annotated[ApiState, Depends(get_state)]) -> Response:
    await _alarm_delivery(state)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _alarm_delivery(state: ApiState) -> None:
    """The alarm outbox's backlog per receiver, from the database (left as it was when the
    database cannot be reached: /healthz says so)."""
    try:
        async with state.pool.connection(timeout=5) as conn:
            cur = await conn.execute(outbox.BACKLOG_SQL)
            rows = await cur.fetchall()
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout):
        return
    m = state.metrics
    m.alarm_pending.clear()  # receivers no longer configured leave the table
    m.alarm_receiver_failures.clear()
    for receiver, pending, failures, _ in rows:
        m.alarm_pending.labels(receiver).set(pending)
        m.alarm_receiver_failures.labels(receiver).set(failures)
    m.alarm_outbox_age.set(max((float(r[3]) for r in rows), default=0.0))
