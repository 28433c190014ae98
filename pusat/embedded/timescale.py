"""A throwaway TimescaleDB (Apache edition) from a Debian 13 root, for the TimescaleDB test tier
and the benchmarks: PostgreSQL 17 and `postgresql-17-timescaledb` run chrooted (they need a newer
glibc than this Debian 12 machine has) and listen on 127.0.0.1, like any local server.

`deploy/timescaledb-root.sh` builds the root; this module starts and stops clusters inside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

from pusat.embedded.ports import free_port

VERSION = "17"
_BIN = f"/usr/lib/postgresql/{VERSION}/bin"
_TIMEOUT_S = 60


def default_root() -> Path:
    """Where the root is kept between runs (outside any checkout, so clean clones reuse it)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "pusat" / "tsdb-root"


def root_ready(root: Path) -> bool:
    lib = root / "usr" / "lib" / "postgresql" / VERSION / "lib"
    return (root / _BIN.lstrip("/") / "postgres").exists() and any(lib.glob("timescaledb*.so"))


def build_root(root: Path, script: Path) -> None:
    """Build the root with ``script`` (deploy/timescaledb-root.sh); raises with its output."""
    done = subprocess.run(
        ["sh", str(script), str(root)], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0 or not root_ready(root):
        raise RuntimeError(f"building the TimescaleDB root failed:\n{done.stdout}{done.stderr}")


def _in_root(
    root: Path, *argv: str, user: str | None = "postgres"
) -> subprocess.CompletedProcess[str]:
    """Run a command inside the root, as its `postgres` user (its uid, not this machine's)."""
    run_as = ["runuser", "-u", user, "--"] if user else []
    command = ["chroot", str(root), *run_as, *argv]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
        start_new_session=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done


def _mount_proc(root: Path) -> bool:
    """Mount /proc in the root unless it is mounted; True when this call mounted it."""
    proc = root / "proc"
    if (proc / "self").exists():
        return False
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    return True


@dataclass
class TimescaleDB:
    url: str
    port: int
    root: Path
    data_dir: str  # inside the root
    _mounted_proc: bool = field(default=False, repr=False)

    def stop(self) -> None:
        try:
            _in_root(self.root, f"{_BIN}/pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root / self.data_dir.lstrip("/"), ignore_errors=True)
            if self._mounted_proc:
                subprocess.run(["umount", str(self.root / "proc")], check=False)
                self._mounted_proc = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_timescaledb(
    root: Path,
    port: int | None = None,
    *,
    background_workers: bool = True,
    durable: bool = False,
) -> TimescaleDB:
    """A fresh cluster with TimescaleDB preloaded, on 127.0.0.1:`port` (free port if None).

    Without background workers no scheduler connects to databases on its own, so a database
    can serve as a template (the test suite clones one per test). ``durable`` keeps fsync and
    synchronous commit on (benchmarks); tests run without them.
    """
    if not root_ready(root):
        raise RuntimeError(f"no TimescaleDB root at {root}: run deploy/timescaledb-root.sh")
    port = port or free_port()
    data_dir = f"/var/lib/pusat-tests/{uuid.uuid4().hex[:12]}"
    _in_root(
        root,
        "sh",
        "-c",
        "mkdir -p /var/lib/pusat-tests && chown postgres:postgres /var/lib/pusat-tests",
        user=None,
    )
    mounted = _mount_proc(root)
    try:
        _in_root(
            root,
            f"{_BIN}/initdb",
            "-D",
            data_dir,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        options = " ".join(
            [
                f"-p {port}",
                "-c listen_addresses=127.0.0.1",
                "-c unix_socket_directories=/tmp",
                "-c shared_preload_libraries=timescaledb",
                "-c timescaledb.telemetry_level=off",
                # no /dev/shm in the root: dynamic shared memory in files instead
                "-c dynamic_shared_memory_type=mmap",
                *(
                    []
                    if durable
                    else ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
                ),
                "-c max_connections=200",
                "-c track_commit_timestamp=on",
                # workers connect to databases by themselves; without them, templates work
                f"-c timescaledb.max_background_workers={16 if background_workers else 0}",
            ]
        )
        _in_root(
            root,
            f"{_BIN}/pg_ctl",
            "-D",
            data_dir,
            "-l",
            f"{data_dir}.log",
            "-w",
            "-t",
            str(_TIMEOUT_S),
            "-o",
            options,
            "start",
        )
    except BaseException:
        if mounted:
            subprocess.run(["umount", str(root / "proc")], check=False)
        raise
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + _TIMEOUT_S
    while True:  # pg_ctl -w waited for the socket; make sure TCP answers too
        try:
            with psycopg.connect(url, connect_timeout=2):
                break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return TimescaleDB(url, port, root, data_dir, mounted)
