"""Shared pieces of the API and wall tests (this module holds no tests of its own).

A real uvicorn server on a free port per test (the app under test, with the suite's throwaway
PostgreSQL and Mosquitto), tokens of every role, and data written through the same commit path
ingest uses (store.writer via ingest.commit), so rollups and latest are what ingest would make.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from api import auth
from api.server import ServerThread
from ingest.commit import commit
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from store import alerts as lifecycle
from store import db
from store.writer import Batch, QuarantineRow, Readings, SensorMeta, Writer

ROLES = ("viewer", "operator", "engineer", "admin")


@dataclass
class Api:
    url: str
    settings: Settings
    tokens: dict[str, str]  # role -> secret
    names: dict[str, str]  # role -> token name

    def client(self, role: str | None = "viewer") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def get(self, path: str, role: str | None = "viewer", **params: object) -> httpx.Response:
        with self.client(role) as c:
            return c.get(path, params=params)  # type: ignore[arg-type]


def make_tokens(database_url: str) -> tuple[dict[str, str], dict[str, str]]:
    tokens, names = {}, {}
    with db.connect(database_url) as conn:
        for role in ROLES:
            info, secret = auth.create_token(conn, role, f"test-{role}")
            tokens[role], names[role] = secret, info.name
    return tokens, names


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.with_(api_port=free_port(), api_token_cache_s=0.0)


@pytest.fixture
def api(api_settings: Settings) -> Iterator[Api]:
    assert api_settings.database_url is not None
    tokens, names = make_tokens(api_settings.database_url)
    server = ServerThread(api_settings).start()
    try:
        yield Api(server.url, api_settings, tokens, names)
    finally:
        server.stop()


# -- data --------------------------------------------------------------------------------------

US = 1_000_000


def us(t: datetime) -> int:
    return int(t.timestamp() * US)


def write(
    database_url: str,
    readings: Sequence[tuple[str, str, npt.NDArray[np.int64], npt.NDArray[np.float64]]] = (),
    sensors: Sequence[SensorMeta] = (),
    quarantine: Sequence[QuarantineRow] = (),
    received_us: int | None = None,
) -> None:
    """Commit readings (sensor, quantity, ts_us, values), sensors and quarantine rows the way
    ingest does, in one batch."""
    from processing import catalogue

    cat = catalogue.load()
    sensor: list[str] = []
    quantity: list[str] = []
    unit: list[str | None] = []
    ts: list[npt.NDArray[np.int64]] = []
    vals: list[npt.NDArray[np.float64]] = []
    for s, q, t, v in readings:
        n = len(t)
        sensor += [s] * n
        quantity += [q] * n
        known = cat.get(q)
        unit += [known.unit if known else None] * n
        ts.append(np.asarray(t, dtype=np.int64))
        vals.append(np.asarray(v, dtype=np.float64))
    ts_us = np.concatenate(ts) if ts else np.empty(0, np.int64)
    received = received_us if received_us is not None else us(datetime.now(UTC))
    r = Readings(
        sensor=sensor,
        quantity=quantity,
        unit=unit,
        gateway=[None] * len(sensor),
        ts_us=ts_us,
        value=np.concatenate(vals) if vals else np.empty(0),
        received_us=np.full(len(sensor), received, dtype=np.int64),
    )
    with db.connect(database_url) as conn:
        commit(Writer(conn), Batch(readings=r, sensors=list(sensors), quarantine=list(quarantine)))


def sensor(
    sid: str,
    domain: str,
    district: str,
    lat: float = 2.92,
    lon: float = 101.69,
    quantities: tuple[str, ...] = (),
) -> SensorMeta:
    return SensorMeta(
        sensor_id=sid,
        gateway="gw-test",
        domain=domain,
        district=district,
        lat=lat,
        lon=lon,
        quantities=quantities,
    )


def raise_alert(
    database_url: str,
    sensor_id: str,
    quantity: str = "pm25",
    severity: str = "warning",
    rule: str | None = None,
    value: float = 80.0,
) -> int:
    """Raise an alarm through store.alerts, as the engine would; returns its id."""
    t = lifecycle.Transition(
        rule=rule or f"{quantity}:threshold:{severity}",
        kind="threshold",
        severity=severity,
        message=f"{quantity} too high",
        sensor_id=sensor_id,
        quantity=quantity,
        series_id=None,
        ts_us=us(datetime.now(UTC)),
        value=value,
        raised=True,
        flap_count=1000,
        flap_window_us=60 * US,
    )
    with db.connect(database_url) as conn, conn.transaction(), conn.cursor() as cur:
        lifecycle.apply(cur, [t])
        row = cur.execute(
            "SELECT id FROM alerts WHERE sensor_id = %s AND rule = %s AND state <> 'closed'",
            (sensor_id, t.rule),
        ).fetchone()
    assert row is not None
    return int(row[0])
