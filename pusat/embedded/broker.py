"""Start MQTT 5 brokers from Python: Debian's Mosquitto, else the `iotcore` wheel.

- ``mosquitto``: Debian's ``mosquitto`` (2.0.x), a child process with its own config file, log
  and pid file in `work_dir`. MQTT 3.1.1 and 5 on one port, shared subscriptions, persistence.
- ``iotcore``: the PyPI wheel ``iotcore`` (rumqttd 0.20 compiled into it), run in a child
  process by ``iotcore.Broker`` (the child exits when we do). It speaks MQTT 5 only on a
  ``[v5]`` listener of its own TOML config; rumqttd serves one protocol version per listener,
  so MQTT 3.1.1 clients cannot use this port. Checked here with paho-mqtt 2.x: MQTT 5 connect
  with clean_start=False, QoS 1 with manual acks, ``$share/<group>/...`` subscriptions and a
  resumed session (session_present). It keeps everything in memory: no persistence.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from pusat.embedded.ports import LOOPBACK, free_port, port_is_free

log = logging.getLogger(__name__)

KINDS = ("mosquitto", "iotcore")
PREFER = ("auto", "system", "pip")

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
# rumqttd rejects publishes above its max_payload_size (20 KiB in its sample config); allow what
# Mosquitto allows by default, the MQTT maximum, so big SenML packs behave the same on both.
_IOTCORE_MAX_PAYLOAD = 268_435_455


@dataclass
class Broker:
    """A running MQTT broker; `stop()` (or leaving the `with` block) shuts it down."""

    url: str  # mqtt://127.0.0.1:<port>
    port: int
    kind: str  # "mosquitto" or "iotcore"
    _: KW_ONLY
    work_dir: Path = field(repr=False)
    stopper: Callable[[], None] = field(repr=False, compare=False)

    def stop(self) -> None:
        """Stop the broker and wait until it has exited; safe to call twice."""
        self.stopper()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_broker(
    work_dir: Path,
    port: int | None = None,
    *,
    prefer: str = "auto",
    persistence: bool = False,
    extra_config: str = "",
) -> Broker:
    """Start an MQTT 5 broker on 127.0.0.1:`port` (a free port when None).

    `work_dir` holds its config, log and (with `persistence`) its session database; use one
    work dir per broker. `prefer`: "auto" (Mosquitto when installed, else iotcore), "system"
    (Mosquitto only) or "pip" (iotcore only). `extra_config` is Mosquitto configuration appended
    to the generated file; iotcore cannot apply it and raises ValueError. A Mosquitto left
    running on the same `work_dir` by a killed process is stopped first.
    Raises RuntimeError when no broker is available, the port is taken or it fails to start.
    """
    if prefer not in PREFER:
        raise ValueError(f"prefer must be one of {PREFER}, not {prefer!r}")
    work_dir = work_dir.expanduser().absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    mosquitto = _mosquitto_binary() if prefer != "pip" else None
    if prefer == "system" and mosquitto is None:
        raise RuntimeError("no mosquitto binary found (apt-get install mosquitto)")
    if mosquitto is not None:
        _stop_leftover_mosquitto(work_dir)

    if port is None:
        port = free_port()
    elif not port_is_free(port):
        raise RuntimeError(
            f"cannot start an MQTT broker on {LOOPBACK}:{port}: "
            f"port {port} is in use by another process"
        )

    if mosquitto is not None:
        return _start_mosquitto(mosquitto, work_dir, port, persistence, extra_config)
    return _start_iotcore(work_dir, port, persistence, extra_config)


def _mosquitto_binary() -> Path | None:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    return Path(found) if found else None


def _start_mosquitto(
    binary: Path, work_dir: Path, port: int, persistence: bool, extra_config: str
) -> Broker:
    config_file = work_dir / "mosquitto.conf"
    log_file = work_dir / "mosquitto.log"
    lines = [
        f"listener {port} {LOOPBACK}",
        "allow_anonymous true",
        f"persistence {'true' if persistence else 'false'}",
    ]
    if persistence:
        lines.append(f"persistence_location {work_dir}/")
    lines += [
        # The default (1000 per client) silently drops further QoS 1 messages queued for a
        # disconnected persistent session: at-least-once ingest must not lose them.
        "max_queued_messages 1000000",
        f"log_dest file {log_file}",
        f"pid_file {work_dir / 'mosquitto.pid'}",
    ]
    if os.geteuid() == 0:
        # Otherwise Mosquitto drops to user `mosquitto`, which cannot write into work_dir.
        lines.append("user root")
    config_file.write_text("\n".join(lines) + "\n" + extra_config + "\n")

    # stdout/stderr catch what Mosquitto prints before it opens its log (config errors).
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            [str(binary), "-c", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches `pusat up` only, which then
            # stops the broker after ingest has drained.
            start_new_session=True,
        )

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    try:
        _wait_until_listening(process, port, log_file)
    except BaseException:
        stop()
        raise
    return Broker(
        url=f"mqtt://{LOOPBACK}:{port}",
        port=port,
        kind="mosquitto",
        work_dir=work_dir,
        stopper=stop,
    )


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    """Return once `port` accepts TCP connections; RuntimeError if the process exits first."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0):
                return
        except OSError:
            pass
        try:
            code = process.wait(0.02)  # doubles as the pause between attempts
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mosquitto did not listen on port {port} within {_START_TIMEOUT_S} s\n"
                    f"--- tail of {log_file} ---\n{_tail(log_file)}"
                ) from None
            continue
        raise RuntimeError(
            f"mosquitto exited with code {code} while starting on port {port}\n"
            f"--- tail of {log_file} ---\n{_tail(log_file)}"
        )


def _stop_leftover_mosquitto(work_dir: Path) -> None:
    """Stop a Mosquitto still running on `work_dir`'s config (its parent was killed).

    It would hold the port, and with persistence overwrite the session database on exit.
    """
    try:
        pid = int((work_dir / "mosquitto.pid").read_text().split()[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return  # no pid file, or its process is gone
    if str(work_dir / "mosquitto.conf").encode() not in command:
        return  # the pid was reused by an unrelated process
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            signal.pidfd_send_signal(pidfd, sig)
            exited, _, _ = select.select([pidfd], [], [], _STOP_TIMEOUT_S)
            if exited:
                return
    except ProcessLookupError:
        return
    finally:
        os.close(pidfd)


def _start_iotcore(work_dir: Path, port: int, persistence: bool, extra_config: str) -> Broker:
    if extra_config:
        # Silently dropping it could mean dropping authentication: refuse instead.
        raise ValueError(
            "extra_config is Mosquitto configuration; the iotcore broker cannot use it"
        )
    try:
        from iotcore import Broker as IotcoreBroker
    except ImportError as exc:
        raise RuntimeError(
            "no MQTT broker available: install Debian's mosquitto (apt-get install mosquitto) "
            "or the iotcore wheel (pip install 'pusat[embedded]')"
        ) from exc
    if persistence:
        log.warning("the iotcore broker keeps sessions in memory only; they end with it")

    # Measured: rumqttd sends a client at most 100 unacknowledged QoS 1 messages whatever
    # max_inflight_count or the client's Receive Maximum say (Mosquitto: Receive Maximum, else
    # 20), so an ingest batch waiting for acks holds at most 100 messages per worker here.
    config_file = work_dir / "iotcore.toml"
    config_file.write_text(
        f"""\
# rumqttd configuration written by pusat.embedded.broker: one MQTT 5 listener.
id = 0

[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v5.1]
name = "v5-1"
listen = "{LOOPBACK}:{port}"
next_connection_delay_ms = 1

[v5.1.connections]
connection_timeout_ms = 60000
max_payload_size = {_IOTCORE_MAX_PAYLOAD}
max_inflight_count = 100
"""
    )
    embedded = IotcoreBroker(config_path=str(config_file))
    try:
        embedded.start(timeout=_START_TIMEOUT_S)  # polls until the listener accepts
    except OSError as exc:  # its port check: taken between our check and its bind
        raise RuntimeError(f"cannot start iotcore on {LOOPBACK}:{port}: {exc}") from exc
    return Broker(
        url=f"mqtt://{LOOPBACK}:{port}",
        port=port,
        kind="iotcore",
        work_dir=work_dir,
        stopper=embedded.stop,
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read the log: {exc})"
