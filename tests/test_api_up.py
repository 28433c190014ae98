"""`pusat up` serves the API and the wall, prints their URLs, and stops them with the rest."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_for
from tests.test_cli import env_without_pusat

pytestmark = pytest.mark.slow


def test_pusat_up_serves_the_api_and_a_working_wall_url(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "up.log"
    env = env_without_pusat(PUSAT_HOME=str(home), PUSAT_EMBEDDED="system", PUSAT_BATCH_MS="50")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pusat", "up", "--no-city"],
        cwd=tmp_path,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        found = wait_for(
            lambda: re.search(r"wall: (http://\S+/wall\?token=\S+)", log.read_text()),
            timeout=60,
            what=f"the wall URL in {log}",
        )
        wall = found.group(1)
        api = re.search(r"API: (http://[^/\s]+)/api/v1", log.read_text())
        assert api is not None
        r = httpx.get(wall, timeout=10)
        assert r.status_code == 200 and "PUSAT" in r.text
        token = wall.split("token=", 1)[1]
        me = httpx.get(f"{api.group(1)}/api/v1/whoami", params={"token": token}, timeout=10)
        assert me.json()["role"] == "operator"
        health = httpx.get(f"{api.group(1)}/healthz", timeout=10).json()
        assert health["database"]["ok"] and health["broker"]["ok"]
        assert (home / "wall-token").stat().st_mode & 0o077 == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{api.group(1)}/healthz", timeout=2)
    finally:
        if proc.poll() is None:  # a failed assertion: stop it cleanly, or its servers stay up
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
