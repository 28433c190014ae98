"""Hosts on one machine: network namespaces joined by veth pairs to a bridge, for tests and
benchmarks of what crosses a network (``ip netns``, from Debian's iproute2; needs root).

    with Hosts(["b1", "w1"]) as h:      # namespaces pusat-<tag>-b1, ...
        h.address("b1")                # 10.<n>.<m>.11, its own address on the bridge
        h.popen("w1", [...])           # a process on that host
        h.cut("w1"); h.mend("w1")      # its cable pulled and plugged back

The bridge lives in a namespace of its own (the switch). The machine itself joins as the host
``.1`` (``address(None)``), so the test can reach every host and every host it. Leaving the
``with`` block kills every process left in the namespaces and removes them, also on failure.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """None when network namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"pusat-probe-{secrets.token_hex(3)}"
    try:
        made = _ip("netns", "add", name, check=False)
    except FileNotFoundError:
        return "no `ip` command (Debian's iproute2)"
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no route of the machine overlaps."""
    used = []
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(word, strict=False))
    for _ in range(50):
        net = ipaddress.IPv4Network(
            f"10.{200 + secrets.randbelow(8)}.{secrets.randbelow(256)}.0/24"
        )
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.x /24 for the test hosts")


class Hosts:
    def __init__(self, names: Sequence[str]) -> None:
        self.tag = secrets.token_hex(2)
        self.names = list(names)
        self.net = _free_subnet()
        self.switch = f"pusat-{self.tag}-sw"
        self._root_if = f"pu{self.tag}r"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._made: list[str] = []

    def ns(self, name: str) -> str:
        return f"pusat-{self.tag}-{name}"

    def address(self, name: str | None) -> str:
        """The host's address; None: the machine's own (where the test runs)."""
        k = 1 if name is None else 11 + self.names.index(name)
        return str(self.net.network_address + k)

    def _if(self, name: str) -> str:
        return f"pu{self.tag}{self.names.index(name)}"  # its end on the switch (< 16 chars)

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        bits = str(self.net.prefixlen)
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        sw = ["-n", self.switch]
        _ip(*sw, "link", "add", "br0", "type", "bridge")
        _ip(*sw, "link", "set", "br0", "up")
        _ip(*sw, "link", "set", "lo", "up")
        for name in self.names:
            ns = self.ns(name)
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("link", "add", self._if(name), "netns", self.switch, "type", "veth",
                "peer", "name", "eth0", "netns", ns)  # fmt: skip
            _ip(*sw, "link", "set", self._if(name), "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(name)}/{bits}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        # The machine as one more host, through a veth whose other end is on the bridge.
        _ip("link", "add", self._root_if, "type", "veth", "peer", "name", "up0", "netns",
            self.switch)  # fmt: skip
        _ip(*sw, "link", "set", "up0", "master", "br0", "up")
        _ip("addr", "add", f"{self.address(None)}/{bits}", "dev", self._root_if)
        _ip("link", "set", self._root_if, "up")

    def popen(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """A process on host ``name`` (its own process group), output to ``log``."""
        out: IO[bytes] | int = log.open("ab") if log else subprocess.DEVNULL
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(name), *argv],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs.append(p)
        return p

    def run(self, name: str, argv: Sequence[str], timeout: float = 120) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns(name), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} on {name}: {done.stderr.strip()}")
        return done.stdout

    def cut(self, name: str) -> None:
        """Pull the host's cable: its processes run on, unreachable (and reaching nothing)."""
        _ip("-n", self.switch, "link", "set", self._if(name), "down")

    def mend(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self._if(name), "up")

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        for ns in reversed(self._made):
            # whatever still runs in a namespace keeps it alive after `ip netns del`
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        deadline = time.monotonic() + 10
        for ns in reversed(self._made):
            while _ip("netns", "pids", ns, check=False).stdout.split():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self._root_if, check=False)
        self._made.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
