"""A property-based run of the OpenAPI schema (schemathesis) against a real server: whatever
it sends, the API answers with no 5xx.

Bounded: a fixed seed and a few dozen examples per operation (a few hundred requests, well under
two minutes). The live stream is left out: it never ends by design (tested in test_api.py).
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from store.writer import QuarantineRow
from tests.test_api_support import US, Api, raise_alert, sensor, us, write

pytest_plugins = ["tests.test_api_support"]

EXAMPLES = 30

# schemathesis' command line, run with one guard: when urllib3-future (a dependency of niquests,
# which grafana-client brings) has replaced urllib3 in the environment, its pool container has no
# keys(), which schemathesis reads only to decide whether to resend on a dropped keep-alive
# connection. Counting zero there keeps that one resend and nothing else changes.
RUN = """
import sys
import schemathesis.transport.requests as transport
count = transport._count_opened_connections
def guarded(session):
    try:
        return count(session)
    except AttributeError:
        return 0
transport._count_opened_connections = guarded
from schemathesis.cli import schemathesis
sys.argv[0] = "schemathesis"
sys.exit(schemathesis())
"""


def test_schema_fuzzing_finds_no_server_error(api: Api, tmp_path: Path) -> None:
    url = api.settings.database_url or ""
    t = us(datetime.now(UTC))
    write(
        url,
        [("AQ-P8-01", "pm25", t - np.arange(0, 7200, 60)[::-1] * US, np.linspace(5, 50, 120))],
        sensors=[sensor("AQ-P8-01", "air", "Presint 8", 2.926, 101.696, ("pm25",))],
        quarantine=[
            QuarantineRow(time.time(), "pusat/v1/gw/json", "gw", "bad_payload", "t", None, b"{}")
        ],
    )
    for i in range(5):
        raise_alert(url, "AQ-P8-01", rule=f"fuzz-{i}")
    started = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN,
            "run",
            f"{api.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "20261127",
            # one worker: the coverage phase walks schemas it also amends (examples pushed
            # down into shared components), and two workers doing so at once once failed CI
            # with an internal error of schemathesis' own (4.32.5), not an answer of ours
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "30",
            "--exclude-path",
            "/api/v1/live",
            "--header",
            f"Authorization: Bearer {api.tokens['admin']}",
            "--suppress-health-check",
            "all",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # its caches and reports stay out of the checkout
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert out.returncode == 0, _failure(out.stdout) + out.stderr[-2000:]
    assert "generated" in out.stdout and "passed" in out.stdout, out.stdout[-3000:]
    assert elapsed < 240, f"the property run took {elapsed:.0f}s; keep it bounded"


def _failure(stdout: str) -> str:
    """The start of the run's error section (the exception's own line comes first, before
    tracebacks long enough to push it out of any tail), then the tail with the summary."""
    at = stdout.find("ERRORS")
    head = stdout[at : at + 4000] if at >= 0 else ""
    return head + "\n[...]\n" + stdout[-4000:]
