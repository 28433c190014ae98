"""GET /api/v1/live: server-sent events for new and changed alarms and for latest values.

Events: ``hello`` once (server time, who), ``latest`` (a list of new latest values), ``alert``
(one alarm, as GET /api/v1/alerts/{id} shows it, on every change), ``tick`` every few seconds
(server time, for freshness clocks; also keeps proxies from closing the stream) and ``resync``
before the server ends the stream (the client fell behind, or the server is stopping): reload
and reconnect. EventSource reconnects by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.auth import Viewer
from api.errors import responses
from api.params import csv_list
from api.state import ApiState, get_state

router = APIRouter(prefix="/api/v1", tags=["live"])

TICK_S = 5.0


class Kind(StrEnum):
    latest = "latest"
    alerts = "alerts"


@router.get(
    "/live",
    response_class=EventSourceResponse,
    summary="Server-sent events: latest values and alarm changes, filterable by domain",
    responses=responses(401, 403),
)
async def live(
    principal: Viewer,
    state: Annotated[ApiState, Depends(get_state)],
    domain: Annotated[
        list[str] | None, Query(description="only these domains (traffic, air, water)")
    ] = None,
    kind: Annotated[list[Kind] | None, Query(description="latest, alerts (default both)")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """`new EventSource("/api/v1/live?domain=air&token=...")`; listen for `latest`, `alert`,
    `tick` and `resync` events."""
    kinds = [k.value for k in (kind or list(Kind))]
    hub = state.hub
    sub = hub.subscribe(csv_list(domain) or None, kinds)
    try:
        yield ServerSentEvent(
            event="hello",
            data={
                "now": datetime.now(UTC).isoformat(),
                "name": principal.name,
                "role": principal.role,
                "kinds": kinds,
            },
            retry=2000,
        )
        while not hub.closing.is_set():
            try:
                event = await asyncio.wait_for(sub.queue.get(), timeout=TICK_S)
            except TimeoutError:
                yield ServerSentEvent(
                    event="tick",
                    data={
                        "now": datetime.now(UTC).isoformat(),
                        "listening": hub.listening.is_set(),
                    },
                )
                continue
            if event is None:
                break
            yield ServerSentEvent(event=event[0], raw_data=event[1])
        yield ServerSentEvent(event="resync", data={"now": datetime.now(UTC).isoformat()})
    finally:
        hub.unsubscribe(sub)
