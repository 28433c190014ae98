"""Throwaway RabbitMQ clusters from Debian's rabbitmq-server (3.10), for tests and benchmarks.

Each node is a child process (its own process group) with its own config, Erlang cookie, data
and log folder under a work folder, on free ports, with the MQTT and consistent-hash exchange
plugins enabled. The nodes join by the classic peer-discovery list: the first node boots alone,
the others boot knowing it and join. A node can run inside a network namespace (``netns``) on
that namespace's address, as a host of its own; otherwise on 127.0.0.1 with short node names.
Nothing of the machine's own RabbitMQ service (its ports, data or cookie) is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from pusat.embedded.ports import LOOPBACK, free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
PLUGINS = "[rabbitmq_mqtt,rabbitmq_consistent_hash_exchange]."
_START_TIMEOUT_S = 90.0  # an Erlang VM boot on two busy cores; seen up to ~20 s


def available() -> str | None:
    """None when Debian's rabbitmq-server is installed, else why not."""
    if not SERVER.exists() or not CTL.exists():
        return f"Debian's rabbitmq-server is not installed ({SERVER} missing)"
    return None


@dataclass
class Node:
    name: str  # Erlang node name, e.g. pt-a@localhost
    host: str  # the address its listeners bind
    amqp_port: int
    mqtt_port: int
    dist_port: int
    home: Path
    netns: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.amqp_port}/%2F"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://guest:guest@{self.host}:{self.mqtt_port}"

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.home),
            RABBITMQ_CONF_ENV_FILE=str(self.home / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_USE_LONGNAME="true" if self.netns else "false",
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(self.home / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.home / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.home / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.home / "log"),
        )
        return env

    def start(self) -> None:
        with (self.home / "server.out").open("ab") as out:
            self.process = subprocess.Popen(
                [*self._prefix(), str(SERVER)],
                env=self.env(),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """rabbitmqctl against this node (inside its namespace); its output."""
        argv = [*self._prefix(), str(CTL), "-n", self.name, *args]
        done = subprocess.run(
            argv, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.name}: {done.stderr}")
        return done.stdout

    def listening(self) -> bool:
        for port in (self.amqp_port, self.mqtt_port):
            try:
                with socket.create_connection((self.host, port), timeout=0.5):
                    pass
            except OSError:
                return False
        return True

    def wait_ready(self, timeout: float = _START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not self.listening():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited while starting:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not listening within {timeout} s:\n{self.tail()}")
            time.sleep(0.2)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the node's whole process group (a crashed host), and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after a while."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        self.kill()

    def tail(self, lines: int = 30) -> str:
        """The end of the node's console output and of its log (which says what boot waits on)."""
        parts = []
        for path in (self.home / "server.out", self.home / "log" / f"{self.name}.log"):
            if path.exists():
                text = path.read_text(errors="replace")
                parts.append(f"--- {path.name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)


@dataclass
class Cluster:
    nodes: list[Node]
    work_dir: Path

    def members(self) -> list[str]:
        """The running members as the first running node sees them."""
        live = next(n for n in self.nodes if n.running())
        status = json.loads(live.ctl("cluster_status", "--formatter", "json"))
        return sorted(status.get("running_nodes", []))

    @property
    def amqp_urls(self) -> list[str]:
        return [n.amqp_url for n in self.nodes]

    def stop(self) -> None:
        for n in self.nodes:
            n.kill()  # throwaway data: no clean shutdown needed, and it is quicker

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _write_node_files(node: Node, cookie: str, peers: list[str], loopback: bool) -> None:
    node.home.mkdir(parents=True, exist_ok=True)
    cookie_file = node.home / ".erlang.cookie"
    cookie_file.write_text(cookie)
    cookie_file.chmod(0o400)
    (node.home / "enabled_plugins").write_text(PLUGINS + "\n")
    # An empty env file: the machine's /etc/rabbitmq/rabbitmq-env.conf pins the node name and
    # the distribution interface of its own service.
    (node.home / "rabbitmq-env.conf").write_text("")
    lines = [
        f"listeners.tcp.default = {node.host}:{node.amqp_port}",
        f"mqtt.listeners.tcp.default = {node.host}:{node.mqtt_port}",
        "loopback_users = none",  # guest from other hosts (throwaway clusters only)
        "mqtt.allow_anonymous = true",
        "mqtt.default_user = guest",
        "mqtt.default_pass = guest",
        "cluster_formation.peer_discovery_backend = classic_config",
        # a node that loses its peers stops serving instead of going on as a split half
        "cluster_partition_handling = pause_minority",
        # a node cut off is declared down after 5 s (+-25%), not the default 60
        "net_ticktime = 5",
        "log.file.level = info",
    ]
    lines += [f"cluster_formation.classic_config.nodes.{i} = {p}" for i, p in enumerate(peers, 1)]
    (node.home / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
    if not loopback:
        # Erlang distribution on the namespace's own address only
        erl_addr = node.host.replace(".", ",")
        (node.home / "rabbitmq-env.conf").write_text(
            f'SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {{{erl_addr}}}"\n'
        )


def start_cluster(
    work_dir: Path, size: int = 3, hosts: list[tuple[str, str]] | None = None
) -> Cluster:
    """Start ``size`` nodes that form one cluster; ``hosts``: (namespace, address) per node,
    else all on 127.0.0.1. Returns once every node listens and all are members."""
    if (why := available()) is not None:
        raise RuntimeError(why)
    cookie = secrets.token_hex(16)
    tag = secrets.token_hex(3)
    nodes: list[Node] = []
    for i in range(size):
        letter = "abcdefghij"[i]
        if hosts is None:
            nodes.append(
                Node(
                    f"pt{tag}-{letter}@localhost",
                    LOOPBACK,
                    free_port(),
                    free_port(),
                    free_port(),
                    work_dir / letter,
                )
            )
        else:
            ns, addr = hosts[i]
            nodes.append(
                Node(f"pusat-{letter}@{addr}", addr, 5672, 1883, 25672, work_dir / letter, ns)
            )
    peers = [n.name for n in nodes]
    for n in nodes:
        _write_node_files(n, cookie, peers, hosts is None)
    cluster = Cluster(nodes, work_dir)
    try:
        # One node at a time: the first founds the cluster, each later one joins it. Two nodes
        # booting together can each wait for the other's Mnesia tables (classic peer discovery
        # has no lock), which hung a CI run's second node for more than 90 s.
        for n in nodes:
            n.start()
            n.wait_ready()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while len(cluster.members()) < size:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not formed: {cluster.members()}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def remove(work_dir: Path) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
