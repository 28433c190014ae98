"""Debian's nginx with the deployment recipe (deploy/nginx/pusat.conf) in front of a running
``pusat api``, as a child process: for the public burst benchmark and the tests.

`render` fills in the recipe's ``${NGINX_*}`` placeholders as envsubst would;
`start_nginx` wraps the result in a minimal main configuration (no daemon, its pid file, logs
and temporary files in `work_dir`) and returns once nginx accepts connections.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pusat.embedded.ports import LOOPBACK, free_port

RECIPE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "pusat.conf"
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


def binary() -> Path | None:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/bin")
    return Path(found) if found else None


def render(
    *, listen: str, upstream: str, cache: Path, rate: int, burst: int, recipe: Path = RECIPE
) -> str:
    """The recipe with its placeholders filled in; ValueError if it has others."""
    values = {
        "LISTEN": listen,
        "UPSTREAM": upstream,
        "CACHE": str(cache),
        "RATE": str(rate),
        "BURST": str(burst),
    }
    text = recipe.read_text()
    out = re.sub(r"\$\{NGINX_(\w+)\}", lambda m: values.get(m[1], m[0]), text)
    left = re.findall(r"\$\{[^}]*\}", out)
    if left:
        raise ValueError(f"{recipe} has placeholders nothing fills in: {sorted(set(left))}")
    return out


@dataclass
class Nginx:
    url: str  # http://127.0.0.1:<port>
    port: int
    work_dir: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Stop nginx (a fast shutdown) and wait for it; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return _tail(self.work_dir / "error.log")


def start_nginx(
    work_dir: Path,
    upstream: str,
    *,
    rate: int = 20,
    burst: int = 60,
    port: int | None = None,
    workers: int = 1,
    priority: int = 0,
) -> Nginx:
    """nginx on 127.0.0.1:`port` (a free one when None) with the recipe in front of
    `upstream` (host:port of a ``pusat api``), its `workers` at nice `priority`.
    RuntimeError without nginx or if it fails."""
    exe = binary()
    if exe is None:
        raise RuntimeError("no nginx binary found (apt-get install nginx)")
    work_dir = work_dir.expanduser().absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    site = render(
        listen=f"{LOOPBACK}:{port}",
        upstream=upstream,
        cache=work_dir / "cache",
        rate=rate,
        burst=burst,
    )
    (work_dir / "pusat.conf").write_text(site)
    temp = {k: work_dir / "tmp" / k for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for d in temp.values():
        d.mkdir(parents=True, exist_ok=True)
    main = [
        "daemon off;",
        f"worker_processes {workers};",
        f"worker_priority {priority};",
        f"pid {work_dir / 'nginx.pid'};",
        f"error_log {work_dir / 'error.log'} warn;",
        # Otherwise a root master runs its workers as nobody, who cannot enter work_dir.
        *(["user root;"] if os.geteuid() == 0 else []),
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        *(f"    {k}_temp_path {d};" for k, d in temp.items()),
        f"    include {work_dir / 'pusat.conf'};",
        "}",
    ]
    conf = work_dir / "nginx.conf"
    conf.write_text("\n".join(main) + "\n")
    with (work_dir / "error.log").open("ab") as output:
        process = subprocess.Popen(
            [str(exe), "-p", str(work_dir), "-c", str(conf), "-e", str(work_dir / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Nginx(f"http://{LOOPBACK}:{port}", port, work_dir, process)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0):
                return server
        except OSError:
            pass
        try:
            code = process.wait(0.02)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"nginx did not listen on {port} within {_START_TIMEOUT_S} s\n{server.log()}"
                ) from None
            continue
        raise RuntimeError(f"nginx exited with code {code}\n{server.log()}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
