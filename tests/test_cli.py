"""The command line: documented, clear errors, and `pusat up` running the centre for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer

from pusat.cli import app
from pusat.settings import Settings
from tests.helpers import Publisher, scalar, wait_for

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text("utf-8")


def command_paths(cmd: object, prefix: str = "pusat") -> list[str]:
    subs = getattr(cmd, "commands", None)  # a group of commands (typer's click-like API)
    if subs:
        return [p for name, sub in subs.items() for p in command_paths(sub, f"{prefix} {name}")]
    return [prefix]


def env_without_pusat(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSAT_")}
    env.update(extra)
    return env


def test_every_command_is_documented_with_help() -> None:
    paths = command_paths(typer.main.get_command(app))
    assert {"pusat up", "pusat db upgrade", "pusat ingest"} <= set(paths)
    for path in paths:
        assert f"`{path}" in README, f"{path} is missing from the README"
        out = subprocess.run(
            [sys.executable, "-m", "pusat", *path.split()[1:], "--help"],
            capture_output=True,
            text=True,
            env=env_without_pusat(),
        )
        assert out.returncode == 0 and "Usage" in out.stdout, (path, out.stderr)


def test_ingest_starts_without_the_benchmarks_modules() -> None:
    """`pusat ingest` does not import bench (whose query benchmark imports FastAPI and the
    API); every other command line still has `pusat bench`."""
    probe = (
        "import sys; sys.argv = [sys.argv[0], {cmd!r}]; import pusat.cli as c; import typer;"
        " print(sorted(m for m in ('bench', 'bench.query', 'fastapi') if m in sys.modules),"
        " 'bench' in typer.main.get_command(c.app).commands)"
    )
    out = {}
    for cmd in ("ingest", "bench"):
        done = subprocess.run(
            [sys.executable, "-c", probe.format(cmd=cmd)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=ROOT,
            env=env_without_pusat(),
        )
        out[cmd] = done.stdout.strip()
    assert out["ingest"] == "[] False"
    assert out["bench"] == "['bench', 'bench.query', 'fastapi'] True"


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`PUSAT_{name.upper()}`" in README, name


def test_commands_without_a_database_say_what_to_do(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "ingest"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env_without_pusat(),
    )
    assert out.returncode == 2
    assert "PUSAT_DATABASE_URL" in out.stderr


def test_notify_without_a_receiver_says_what_to_set(database_url: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "notify"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env_without_pusat(), "PUSAT_DATABASE_URL": database_url},
        timeout=60,
    )
    assert out.returncode == 2
    assert "PUSAT_ALERTMANAGER_URL" in out.stderr and "PUSAT_ALARM_WEBHOOKS" in out.stderr


def test_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "db", "status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env_without_pusat(PUSAT_MQTT_URL="http://nope", PUSAT_BATCH_SIZE="0"),
    )
    assert out.returncode == 2
    assert "batch_size" in out.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--partition", "3/2"], "K/N needs 1 <= K <= N"),
        (["--partition", "half"], "partition"),
        (["--partition", "1/2", "--group", "g"], "or a partition, not both"),
    ],
)
def test_bad_partition_is_a_clear_error(tmp_path: Path, args: list[str], says: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "ingest", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env_without_pusat(COLUMNS="200"),
    )
    assert out.returncode == 2
    assert says in " ".join(out.stderr.split()), out.stderr


def test_db_upgrade_is_safe_to_repeat(database_url: str, tmp_path: Path) -> None:
    env = env_without_pusat(PUSAT_DATABASE_URL=database_url)
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "pusat", "db", "upgrade"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        assert "up to date" in out.stdout and "postgresql" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("embedded", ["system", "pip"])
def test_pusat_up_runs_the_centre_and_stops_cleanly(tmp_path: Path, embedded: str) -> None:
    """Debian's PostgreSQL and Mosquitto, and the pip-only fallbacks for a bare machine."""
    home = tmp_path / "home"
    log = tmp_path / "up.log"
    env = env_without_pusat(PUSAT_HOME=str(home), PUSAT_BATCH_MS="50", PUSAT_EMBEDDED=embedded)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pusat", "up", "--no-city"],
        cwd=tmp_path,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        state_file = home / "state.json"
        wait_for(state_file.exists, timeout=60, what=f"pusat up to start ({log})")
        state = json.loads(state_file.read_text())
        mqtt = urlsplit(state["mqtt_url"])
        assert mqtt.hostname and mqtt.port
        pub = Publisher(mqtt.hostname, mqtt.port)
        try:

            def landed() -> bool:
                pub.publish(
                    "pusat/v1/gw-up/json", json.dumps({"sensor": "UP-1", "values": {"pm25": 9.5}})
                )
                return bool(
                    scalar(
                        state["database_url"],
                        "SELECT count(*) FROM readings WHERE sensor_id = 'UP-1'",
                    )
                )

            # the worker subscribes just after start: publish until a reading lands
            wait_for(landed, timeout=30, interval=0.5, what="a reading through pusat up")
        finally:
            pub.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
        assert not state_file.exists()
        out = log.read_text()
        assert "stopped:" in out
        assert f"database ({'debian' if embedded == 'system' else 'pgserver'})" in out
        assert f"broker ({'mosquitto' if embedded == 'system' else 'iotcore'})" in out
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_pusat_up_runs_the_simulated_city_by_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "up.log"
    env = env_without_pusat(PUSAT_HOME=str(home), PUSAT_BATCH_MS="50", PUSAT_EMBEDDED="system")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pusat", "up"],
        cwd=tmp_path,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        state_file = home / "state.json"
        wait_for(state_file.exists, timeout=60, what=f"pusat up to start ({log})")
        url = json.loads(state_file.read_text())["database_url"]
        # the city's stations describe themselves and publish within seconds of the start
        wait_for(
            lambda: scalar(url, "SELECT count(DISTINCT sensor_id) FROM readings") >= 10,
            timeout=60,
            interval=0.5,
            what=f"readings from the simulated city ({log})",
        )
        assert scalar(url, "SELECT count(*) FROM sensors WHERE provisioned") >= 10
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
        assert "simulated city" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
