"""The examples a new user copies return data: the README's pandas examples, the pandas example
and the parameter examples of the API's own documentation (`/docs`), run against the real API on a
real PostgreSQL that holds the last hour of the simulated city (published through Mosquitto and
stored by a real ingest worker). Fixed dates or sensors the city does not have would come back
empty or 404."""

from __future__ import annotations

import ast
import math
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from api import auth
from api.server import ServerThread
from pusat.embedded.broker import Broker
from pusat.embedded.ports import free_port
from pusat.settings import Settings
from simulators.runner import Options, simulate
from store import db
from tests.conftest import RunningWorker, Servers
from tests.helpers import rows, scalar, wait_for
from tests.test_sim_cli import needs_sim

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_HOST = "http://127.0.0.1:8080"  # where the examples expect `pusat up`'s API

pytestmark = needs_sim


class City:
    def __init__(self, settings: Settings, server: ServerThread, token: str) -> None:
        self.settings = settings
        self.server = server
        self.token = token


@pytest.fixture(scope="module")
def city(settings: Settings) -> Iterator[City]:
    """The simulated city's last hour, through the broker and ingest, and the API over it."""
    url = settings.database_url
    assert url
    worker = RunningWorker(settings).start()
    try:
        result = simulate(settings, Options(what="city", speed=math.inf, duration=3600.0),
                          threading.Event())  # fmt: skip
        assert result.readings > 0
        wait_for(
            lambda: (
                scalar(
                    url,
                    "SELECT count(*) FROM readings WHERE sensor_id = 'AQ-P08'"
                    " AND quantity = 'pm25'",
                )
                == 60
            ),
            timeout=60,
            what="the hour of PM2.5 of Presint 8's station",
        )
    finally:
        worker.stop()
    with db.connect(url) as conn:
        _, token = auth.create_token(conn, "viewer", "examples")
    server = ServerThread(settings.with_(api_port=free_port())).start()
    try:
        yield City(settings, server, token)
    finally:
        server.stop()


# One database for the module: the settings fixture is per test, so take it once by hand.
@pytest.fixture(scope="module")
def settings(
    servers: Servers, broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    import uuid

    import psycopg
    from psycopg import sql

    from tests.conftest import TEMPLATE

    admin = servers.url("postgresql")
    name = "examples_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    yield Settings(
        database_url=db.with_database(admin, name),
        mqtt_url=broker.url,
        topic_root=f"t{uuid.uuid4().hex[:10]}/v1",
        client_id=f"pusat-test-{uuid.uuid4().hex[:8]}",
        batch_ms=50,
        home=tmp_path_factory.mktemp("home"),
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def run_example(code: str, city: City, namespace: dict[str, Any]) -> list[pd.DataFrame]:
    """Run one example statement by statement, as pasted into a notebook; every data frame it
    makes, in order."""
    code = code.replace(EXAMPLE_HOST, city.server.url).replace("token=...", f"token={city.token}")
    frames: list[pd.DataFrame] = []
    for stmt in ast.parse(code).body:
        exec(compile(ast.Module([stmt], []), "<example>", "exec"), namespace)
        if isinstance(stmt, ast.Assign | ast.Expr):
            value = namespace.get("df") if isinstance(stmt, ast.Assign) else None
            if isinstance(stmt, ast.Expr):
                value = eval(compile(ast.Expression(stmt.value), "<example>", "eval"), namespace)
            if isinstance(value, pd.DataFrame):
                frames.append(value)
    return frames


def has_data(df: pd.DataFrame) -> bool:
    values = df.drop(columns=[c for c in ("ts", "sensor_id", "quantity", "unit", "filled",
                                          "received_at") if c in df.columns])  # fmt: skip
    return len(df) > 0 and bool(values.notna().to_numpy().any())


def test_readme_pandas_examples_return_the_citys_data(city: City) -> None:
    blocks = python_blocks((ROOT / "README.md").read_text("utf-8"))
    assert len(blocks) >= 2
    namespace: dict[str, Any] = {"token": city.token}
    for code in blocks:
        assert EXAMPLE_HOST in code
        frames = run_example(code, city, namespace)
        assert frames, code
        for df in frames:
            assert has_data(df), (code, df)


def test_the_docs_examples_return_the_citys_data(city: City) -> None:
    base = city.server.url
    headers = {"Authorization": f"Bearer {city.token}"}
    spec = httpx.get(f"{base}/openapi.json", timeout=30).json()
    # The pandas example in the page's description.
    (code,) = python_blocks(spec["info"]["description"])
    frames = run_example("import pandas as pd\n" + code, city, {})
    assert len(frames) == 3 and all(has_data(df) for df in frames), frames
    # Every read whose parameters the page fills in for "Try it out".
    tried: dict[str, int] = {}
    for path, ops in spec["paths"].items():
        op = ops.get("get")
        if op is None or not path.startswith("/api/v1") or path == "/api/v1/live":
            continue
        params: dict[str, Any] = {}
        url_path = path
        for p in op.get("parameters", []):
            examples = p.get("examples") or p.get("schema", {}).get("examples")
            example = examples[0] if isinstance(examples, list) and examples else None
            if example is None and "example" in p:
                example = p["example"]
            if p["in"] == "path":
                if not isinstance(example, str):
                    url_path = ""  # ids of alarms or records: whatever a database holds
                    break
                url_path = url_path.replace("{" + p["name"] + "}", example)
            elif p["in"] == "query" and example is not None:
                params[p["name"]] = example
        if not url_path or (not params and "{" not in path):
            continue
        r = httpx.get(f"{base}{url_path}", params=params, headers=headers, timeout=30)
        assert r.status_code == 200, (path, params, r.text)
        tried[path] = len(r.content)
        if path in ("/api/v1/sensors", "/api/v1/sensors/{sensor_id}", "/api/v1/latest"):
            assert r.json(), (path, params)
        if path == "/api/v1/readings":
            assert any(row.get("value") is not None or row.get("mean") is not None
                       for row in r.json()["data"]), (path, params)  # fmt: skip
    assert {"/api/v1/sensors/{sensor_id}", "/api/v1/readings", "/api/v1/latest"} <= set(tried)


def test_every_sensor_the_examples_query_is_one_of_the_citys(city: City) -> None:
    url = city.settings.database_url
    assert url
    known = {r[0] for r in rows(url, "SELECT sensor_id FROM sensors")}
    spec = httpx.get(f"{city.server.url}/openapi.json", timeout=30).text
    readme = (ROOT / "README.md").read_text("utf-8")
    queried = re.findall(r"sensor=([A-Z]{2}-[A-Z0-9-]+)", readme + spec)
    queried += re.findall(r'"sensor_id",\s*"in":\s*"path".*?"examples":\s*\["([^"]+)"', spec)
    assert queried and set(queried) <= known, set(queried) - known
