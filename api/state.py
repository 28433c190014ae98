"""What one running app holds: its settings, connection pool, live hub, metrics and caches.

Built by the app's lifespan and kept on ``app.state.pusat``; routers reach it through the
``get_state`` dependency, so nothing lives at module level.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from api.builder import Builder
from api.metrics import ApiMetrics
from api.series import GroupCache
from api.snapshot import Snapshots
from processing.catalogue import Catalogue
from pusat.settings import Settings
from store import db
from store import tier as tiers

if TYPE_CHECKING:
    from api.auth import TokenCache
    from api.hub import Hub


@dataclass
class ApiState:
    settings: Settings
    pool: AsyncConnectionPool[Any]  # the primary: writes, tokens, the live stream
    read_pool: AsyncConnectionPool[Any]  # PUSAT_READ_DATABASE_URL's replica, else ``pool``
    catalogue: Catalogue
    metrics: ApiMetrics
    tokens: TokenCache
    hub: Hub
    snapshots: Snapshots
    builder: Builder
    district_groups: GroupCache
    _tier: tiers.Tier | None = field(default=None, repr=False)
    _tier_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def tier(self) -> tiers.Tier:
        """The database tier, detected once (by store.tier on its own short connection)."""
        async with self._tier_lock:
            if self._tier is None:
                self._tier = await asyncio.to_thread(self._detect)
            return self._tier

    def reads_replica(self) -> bool:
        return self.read_pool is not self.pool

    def _detect(self) -> tiers.Tier:
        assert self.settings.database_url is not None
        with db.connect(self.settings.database_url, application="pusat-api") as conn:
            return tiers.detect(conn)


def get_state(request: Request) -> ApiState:
    state = request.app.state.pusat
    assert isinstance(state, ApiState), "the app's lifespan has not run"
    return state
