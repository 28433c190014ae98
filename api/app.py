"""The application factory: ``create_app(settings)`` builds a FastAPI app around one settings
object. Its lifespan opens the connection pool and the live hub and closes them; nothing is
created at import time, so several apps (the tests, `pusat up`) can live in one process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import (
    alerts,
    districts,
    errors,
    health,
    latest,
    live,
    quarantine,
    readings,
    sensors,
    tokens,
    wall,
)
from api.auth import TokenCache
from api.builder import Builder
from api.city import router as city_router
from api.hub import Hub
from api.metrics import ApiMetrics
from api.open_data import router as open_data_router
from api.public_guard import PublicGuard
from api.series import GroupCache
from api.snapshot import Snapshots
from api.sta import router as sta_router
from api.state import ApiState
from processing import catalogue as catalogue_module
from processing.catalogue import Catalogue
from pusat.settings import Settings

DESCRIPTION = """\
Pusat's HTTP API: sensors, time series at any resolution (JSON, CSV, JSON lines, Parquet;
raw exports of any size streamed), latest values, alarms and their lifecycle, quarantine and
replay, a live event stream, and the `/wall` command-centre page. Lists page by cursor (a
`Link: <...>; rel="next"` header).

**Auth.** Send `Authorization: Bearer <token>` (GET requests may put it in `?token=` instead).
Create tokens with `pusat token create --role viewer|operator|engineer|admin`. Reads need a
viewer token (none when `PUSAT_ANONYMOUS_READ=true`), alarm actions operator, provisioning,
import and replay engineer, token management admin. `/healthz` and `/metrics` are open.

**Errors.** A request that cannot be answered as asked gets a 4xx with `{"detail": "..."}`
saying why (422: a parameter of the wrong form, with FastAPI's usual list of problems).

**pandas.**
```python
# the simulated city's Presint 8 station (`pusat up`), the last 24 hours (the default window)
url = "http://127.0.0.1:8080/api/v1/readings?sensor=AQ-P08&quantity=pm25&step=1h&token=..."
pd.read_json(url, orient="table")
pd.read_csv(url + "&format=csv")
pd.read_parquet(url + "&format=parquet")
```
"""


class Measure:
    """Counts requests by route template and status, and times them to the first byte."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                route = scope.get("route")
                self.metrics.seconds.labels(getattr(route, "path", "unmatched")).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            self.metrics.requests.labels(
                getattr(route, "path", "unmatched"), scope["method"], str(status[0])
            ).inc()


def create_app(settings: Settings, catalogue: Catalogue | None = None) -> FastAPI:
    """The API for one database (PUSAT_DATABASE_URL) and broker (PUSAT_MQTT_URL)."""
    if settings.database_url is None:
        raise ValueError("the API needs a database: set PUSAT_DATABASE_URL or run `pusat up`")
    database_url = settings.database_url
    metrics = ApiMetrics()
    cat = catalogue or catalogue_module.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout_ms = int(settings.api_query_timeout_s * 1000)

        def new_pool(url: str) -> AsyncConnectionPool[Any]:
            return AsyncConnectionPool(
                url,
                min_size=1,
                max_size=settings.api_pool_size,
                open=False,
                timeout=10.0,
                kwargs={
                    "autocommit": True,
                    "application_name": "pusat-api",
                    "options": f"-c statement_timeout={timeout_ms}",
                    "connect_timeout": 5,
                },
            )

        pool = new_pool(database_url)
        read_pool = pool
        if settings.read_database_url is not None:
            read_pool = new_pool(settings.read_database_url)
        # wait=False: the API starts even while the database is away (health says so).
        await pool.open(wait=False)
        if read_pool is not pool:
            await read_pool.open(wait=False)
        hub = Hub(database_url, pool, metrics, cat)
        app.state.pusat = ApiState(
            settings=settings,
            pool=pool,
            read_pool=read_pool,
            catalogue=cat,
            metrics=metrics,
            tokens=TokenCache(settings.api_token_cache_s),
            district_groups=GroupCache(settings.api_group_cache_s),
            hub=hub,
            snapshots=Snapshots(
                settings.api_latest_snapshot_s,
                lambda key: metrics.snapshot_builds.labels(str(key[0])).inc(),
            ),
            builder=Builder(),
        )
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            app.state.pusat.builder.close()
            await pool.close()
            if read_pool is not pool:
                await read_pool.close()

    # Swagger UI from files installed with the package, not from a CDN: a command centre's
    # network often has no way out to the internet. No ReDoc: its page fetches a logo from one.
    app = FastAPIOffline(
        static_url="/docs-assets",
        redoc_url=None,
        title="Pusat API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "readings", "description": "Time series at any resolution"},
            {"name": "latest", "description": "The newest value of every series"},
            {"name": "sensors", "description": "Sensors and their provisioning"},
            {"name": "alerts", "description": "Alarms, their lifecycle and audit trail"},
            {"name": "quarantine", "description": "Rejected records and replay"},
            {"name": "live", "description": "Server-sent events"},
            {"name": "tokens", "description": "API tokens (admin)"},
            {"name": "health", "description": "Health and metrics"},
            {"name": "wall", "description": "The built-in command-centre page"},
            {"name": "public", "description": "The public city page and open data (no token)"},
        ],
    )
    errors.install(app)
    for module in (
        readings,
        latest,
        districts,
        sensors,
        alerts,
        quarantine,
        live,
        tokens,
        health,
        wall,
    ):
        app.include_router(module.router)
    app.include_router(city_router)
    app.include_router(open_data_router)
    app.include_router(sta_router)
    app.add_middleware(PublicGuard, settings=settings)
    app.add_middleware(Measure, metrics=metrics)
    return app
