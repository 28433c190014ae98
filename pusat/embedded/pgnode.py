"""A PostgreSQL primary and its streaming replica from Debian's binaries, on a given address
(optionally inside a network namespace), for tests and benchmarks of reads off the primary.

The primary allows replication connections (trust: throwaway clusters only); the replica is made
with ``pg_basebackup -R`` (it writes ``standby.signal`` and the primary's address), streams WAL
over a physical replication slot and answers read-only queries (hot standby). Both run as the
``postgres`` user when we are root, in the foreground of a child process that we own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from pusat.embedded.postgres import _debian_installs

_START_TIMEOUT_S = 60.0


def bin_dir() -> Path | None:
    installs = _debian_installs()
    return installs[max(installs)] if installs else None


def _user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return "postgres"


@dataclass
class PgNode:
    data_dir: Path
    host: str
    port: int
    netns: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _argv(self, *argv: str) -> list[str]:
        user = _user()
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, *(["runuser", "-u", user, "--"] if user else []), *argv]

    def start(self) -> None:
        b = bin_dir()
        assert b is not None
        log = (self.data_dir.parent / f"{self.data_dir.name}.log").open("ab")
        self.process = subprocess.Popen(
            self._argv(
                str(b / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                # beside PGDATA, not in it: pg_basebackup would copy the socket's lock file
                f"unix_socket_directories={self.data_dir.parent}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "wal_level=replica",
                "-c",
                "max_wal_senders=5",
                "-c",
                "max_replication_slots=5",
                "-c",
                "hot_standby=on",
                "-c",
                "hot_standby_feedback=on",
                "-c",
                "max_connections=200",
            ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2, autocommit=True):
                    return
            except psycopg.OperationalError as e:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL on {self.host}:{self.port}: {e}") from e
                time.sleep(0.1)

    def stop(self) -> None:
        p = self.process
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGINT)  # fast shutdown
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def _folder() -> Path:
    """A folder the postgres user can reach (pytest's temp folders are root's, 0700)."""
    d = Path(tempfile.mkdtemp(prefix="pusat-pg-"))
    d.chmod(0o755)
    return d


def _own(path: Path) -> None:
    user = _user()
    if user is not None:
        shutil.chown(path, user, user)


def start_primary(host: str, port: int, netns: str | None = None) -> PgNode:
    b = bin_dir()
    if b is None:
        raise RuntimeError("Debian's PostgreSQL is not installed")
    folder = _folder()
    _own(folder)
    data = folder / "primary"
    data.mkdir(mode=0o700)
    _own(data)
    node = PgNode(data, host, port, netns)
    subprocess.run(
        node._argv(
            str(b / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ),
        check=True,
        capture_output=True,
    )
    with (data / "pg_hba.conf").open("a") as f:
        f.write("host all all 0.0.0.0/0 trust\nhost replication all 0.0.0.0/0 trust\n")
    node.start()
    return node


def start_replica(primary: PgNode, host: str, port: int, netns: str | None = None) -> PgNode:
    """A hot standby of ``primary``, streaming from it over the slot ``pusat_replica``."""
    b = bin_dir()
    assert b is not None
    with psycopg.connect(primary.url, autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot('pusat_replica')")
    folder = _folder()
    _own(folder)
    data = folder / "replica"
    node = PgNode(data, host, port, netns)
    subprocess.run(
        node._argv(
            str(b / "pg_basebackup"),
            "-h",
            primary.host,
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(data),
            "-R",
            "-X",
            "stream",
            "-S",
            "pusat_replica",
        ),
        check=True,
        capture_output=True,
    )
    node.start()
    return node


def remove(node: PgNode) -> None:
    node.stop()
    shutil.rmtree(node.data_dir.parent, ignore_errors=True)
