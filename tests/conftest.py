"""Real services for the tests: a throwaway PostgreSQL and Mosquitto started by the suite.

Each test gets a fresh database cloned from a migrated template, a unique MQTT topic root and a
unique client id, so tests never see each other's data.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from ingest.metrics import IngestMetrics
from ingest.worker import Worker
from processing import catalogue, kernels
from pusat.embedded import timescale
from pusat.embedded.broker import Broker, start_broker
from pusat.embedded.postgres import Postgres, start_postgres
from pusat.embedded.timescale import TimescaleDB
from pusat.settings import Settings
from store import db, migrate
from tests.helpers import Publisher

TEMPLATE = "pusat_template"


TIERS = ("postgresql", "timescaledb")
ROOT_SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "timescaledb-root.sh"


def pytest_configure(config: pytest.Config) -> None:
    # A temp root of this session's own: pytest cleans up old numbered temp dirs when a session
    # starts, which would pull the data directories from under the servers of a session still
    # running beside it (two suites on one machine).
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="pusat-tests-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))
    config.addinivalue_line(
        "markers", "tiers: run on plain PostgreSQL and on a real TimescaleDB (Apache edition)"
    )
    # Compile processing's kernels once, into numba's on-disk cache, before any test starts a
    # worker process: otherwise each process started before the cache exists compiles them.
    kernels.warm()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Tests marked `tiers` that use a database run once per storage tier.
    if "db_tier" in metafunc.fixturenames and metafunc.definition.get_closest_marker("tiers"):
        metafunc.parametrize("db_tier", TIERS, indirect=True, scope="session")


class Servers:
    """Database servers by tier, started when first asked for, each with a migrated template."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.running: dict[str, Postgres | TimescaleDB] = {}

    def url(self, tier: str) -> str:
        if tier not in self.running:
            self.running[tier] = self._start(tier)
            server = self.running[tier]
            with psycopg.connect(server.url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
            with psycopg.connect(db.with_database(server.url, TEMPLATE)) as conn:
                migrate.upgrade(conn)
        return self.running[tier].url

    def _start(self, tier: str) -> Postgres | TimescaleDB:
        if tier == "postgresql":
            return start_postgres(self.base / "pg" / "data", durable=False)
        root = timescale.default_root()
        if not timescale.root_ready(root):
            pytest.skip(
                f"TimescaleDB tier skipped: no root at {root}; `make test` builds it with"
                f" {ROOT_SCRIPT.name} (needs root and Debian's mirror)"
            )
        return timescale.start_timescaledb(root, background_workers=False)

    def stop(self) -> None:
        for server in self.running.values():
            server.stop()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("db"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def db_tier(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "postgresql"))


@pytest.fixture(scope="session")
def pg(servers: Servers) -> Postgres:
    """The plain PostgreSQL server (tests that stop and start servers use their own)."""
    servers.url("postgresql")
    server = servers.running["postgresql"]
    assert isinstance(server, Postgres)
    return server


@pytest.fixture
def database_url(servers: Servers, db_tier: str) -> Iterator[str]:
    admin = servers.url(db_tier)
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    yield db.with_database(admin, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = start_broker(tmp_path_factory.mktemp("mqtt"))
    yield b
    b.stop()


@pytest.fixture
def topic_root() -> str:
    return f"t{uuid.uuid4().hex[:10]}/v1"


@pytest.fixture
def settings(database_url: str, broker: Broker, topic_root: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        topic_root=topic_root,
        client_id=f"pusat-test-{uuid.uuid4().hex[:8]}",
        batch_ms=50,
        home=tmp_path / "home",
    )


class RunningWorker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = IngestMetrics()
        self.worker = Worker(settings, catalogue.load(), self.metrics)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop_event,), daemon=True)

    def start(self) -> RunningWorker:
        self.thread.start()
        assert self.worker.session.subscribed.wait(10), "worker did not subscribe"
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "worker did not stop"


@pytest.fixture
def worker(settings: Settings) -> Iterator[RunningWorker]:
    w = RunningWorker(settings).start()
    yield w
    w.stop()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    parts = urlsplit(broker.url)
    assert parts.hostname and parts.port
    p = Publisher(parts.hostname, parts.port)
    yield p
    p.close()
