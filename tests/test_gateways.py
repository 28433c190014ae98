"""`pusat gateway add` on a real Mosquitto: the password file and ACL it writes let a gateway
publish under its own topics only; a wrong password and an anonymous client are refused; ingest's
account reads every gateway (as a shared-subscription group too) and writes the alarm topics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from pusat import gateways
from pusat.embedded.broker import Broker, start_broker
from pusat.settings import Settings
from tests.conftest import RunningWorker
from tests.helpers import scalar, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSAT_")}
    env.update(extra)
    return env


def gateway_add(files: Path, root: str, gateway: str, password: str | None = None) -> str:
    """Run `pusat gateway add`; returns the password (the generated one from its last line)."""
    cmd = [sys.executable, "-m", "pusat", "gateway", "add", gateway]
    if password is not None:
        cmd.append("--password-stdin")
    out = subprocess.run(
        cmd,
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        env=_env(
            PUSAT_TOPIC_ROOT=root,
            PUSAT_MOSQUITTO_PASSWORD_FILE=str(files / "passwd"),
            PUSAT_MOSQUITTO_ACL_FILE=str(files / "acl"),
        ),
        cwd=files,
    )
    assert out.returncode == 0, out.stderr
    return password if password is not None else out.stdout.strip().splitlines()[-1]


# -- the hash -------------------------------------------------------------------------------------


def test_hash_is_mosquitto_passwd_format() -> None:
    hashed = gateways.hash_password("s3cret")
    assert hashed.startswith("$7$101$") and len(hashed.split("$")) == 5
    assert gateways.check_password("s3cret", hashed)
    assert not gateways.check_password("s3cret ", hashed)
    assert gateways.hash_password("s3cret") != hashed  # salted


def test_hash_agrees_with_debians_mosquitto_passwd(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto_passwd") or shutil.which(
        "mosquitto_passwd", path="/usr/sbin:/usr/bin"
    )
    if binary is None:
        pytest.skip("no mosquitto_passwd (Debian's mosquitto package)")
    path = tmp_path / "passwd"
    subprocess.run([binary, "-c", "-b", str(path), "gw-x", "pa:ss w0rd"], check=True)
    theirs = path.read_text().strip().split(":", 1)[1]
    assert gateways.check_password("pa:ss w0rd", theirs)
    salt = __import__("base64").b64decode(theirs.split("$")[3])
    assert gateways.hash_password("pa:ss w0rd", salt) == theirs


def test_committed_acl_is_the_service_block() -> None:
    """deploy/mosquitto/acl is what `render_acl` makes for the default root and its gateways."""
    text = (ROOT / "deploy" / "mosquitto" / "acl").read_text()
    assert text == gateways.render_acl("pusat/v1", gateways.acl_gateways(text))


@pytest.mark.parametrize("bad", ["alerts", "a/b", "gw+", "gw#", "$sys", "pusat-ingest", "a b", ""])
def test_bad_gateway_ids_are_refused(tmp_path: Path, bad: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pusat", "gateway", "add", bad],
        capture_output=True,
        text=True,
        env=_env(PUSAT_MOSQUITTO_ACL_FILE=str(tmp_path / "acl")),
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stdout
    assert not (tmp_path / "acl").exists()


def test_re_adding_a_gateway_replaces_its_password(tmp_path: Path) -> None:
    first = gateway_add(tmp_path, "pusat/v1", "gw-a")
    gateway_add(tmp_path, "pusat/v1", "gw-b")
    second = gateway_add(tmp_path, "pusat/v1", "gw-a", "chosen one")
    assert first != second
    lines = (tmp_path / "passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["gw-b", "gw-a"]
    assert gateways.check_password("chosen one", lines[1].split(":", 1)[1])
    acl = (tmp_path / "acl").read_text()
    assert acl.count("user gw-a\n") == 1 and "topic write pusat/v1/gw-b/#" in acl
    assert (tmp_path / "passwd").stat().st_mode & 0o077 == 0  # hashes: owner only


# -- on a real Mosquitto --------------------------------------------------------------------------


@dataclass
class Client:
    client: mqtt.Client
    refused: ReasonCode | None
    received: list[tuple[str, bytes]]
    arrived: threading.Condition

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def subscribe(self, pattern: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(pattern, qos=1)
        assert done.wait(10)

    def wait_for(self, topic: str, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """Everything received up to and including the first message on ``topic``."""
        with self.arrived:
            ok = self.arrived.wait_for(lambda: any(t == topic for t, _ in self.received), timeout)
            assert ok, f"nothing arrived on {topic}; got {self.received}"
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(broker: Broker, user: str | None, password: str | None = None) -> Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"t-{user}-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if user is not None:
        c.username_pw_set(user, password)
    done = threading.Event()
    result: dict[str, ReasonCode] = {}
    arrived = threading.Condition()
    received: list[tuple[str, bytes]] = []

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                   props: Any) -> None:  # fmt: skip
        result["reason"] = reason
        done.set()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with arrived:
            received.append((msg.topic, bytes(msg.payload)))
            arrived.notify_all()

    c.on_connect = on_connect
    c.on_message = on_message
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    assert done.wait(10), "no CONNACK"
    reason = result["reason"]
    return Client(c, reason if reason.is_failure else None, received, arrived)


@pytest.fixture
def secured(tmp_path: Path, topic_root: str) -> Iterator[tuple[Broker, dict[str, str], Path]]:
    """A Mosquitto with the password file and ACL that `pusat gateway add` writes, plus the
    service accounts (added as the compose stack's entrypoint adds them)."""
    files = tmp_path / "mosquitto"
    files.mkdir()
    passwords = {g: gateway_add(files, topic_root, g) for g in ("gw-a", "gw-b")}
    for user in (gateways.INGEST_USER, "siren"):
        passwords[user] = gateways.new_password()
        gateways.set_password(files / "passwd", user, passwords[user])
    with (files / "acl").open("a") as acl:  # a test-only listener on the alarm topics
        acl.write(f"\nuser siren\ntopic read {topic_root}/alerts/#\n")
    # start_broker writes `allow_anonymous true` for its embedded use; Mosquitto takes the last
    # value of a global option, so the lines appended here switch it off again.
    broker = start_broker(
        tmp_path / "broker",
        prefer="system",
        extra_config=(
            f"allow_anonymous false\npassword_file {files / 'passwd'}\nacl_file {files / 'acl'}\n"
        ),
    )
    yield broker, passwords, files
    broker.stop()


def test_wrong_password_and_anonymous_are_refused(
    secured: tuple[Broker, dict[str, str], Path],
) -> None:
    broker, passwords, _ = secured
    wrong = connect(broker, "gw-a", passwords["gw-a"] + "x")
    other = connect(broker, "gw-a", passwords["gw-b"])
    anonymous = connect(broker, None)
    unknown = connect(broker, "gw-c", "anything")
    right = connect(broker, "gw-a", passwords["gw-a"])
    try:
        for c in (wrong, other, anonymous, unknown):
            assert c.refused is not None and c.refused.getName() in (
                "Not authorized", "Bad user name or password"
            )  # fmt: skip
        assert right.refused is None
    finally:
        for c in (wrong, other, anonymous, unknown, right):
            c.close()


def test_a_gateway_publishes_only_under_its_own_topics(
    secured: tuple[Broker, dict[str, str], Path], topic_root: str
) -> None:
    broker, passwords, _ = secured
    ingest = connect(broker, gateways.INGEST_USER, passwords[gateways.INGEST_USER])
    a = connect(broker, "gw-a", passwords["gw-a"])
    try:
        ingest.subscribe(f"$share/pusat/{topic_root}/+/+")
        # Mosquitto drops a publish the ACL denies (and still acknowledges it), so delivery is
        # proven by a control message published after it: QoS 1 from one client arrives in order.
        a.publish(f"{topic_root}/gw-b/json", b'{"sensor": "B-1", "values": {"pm25": 1}}')
        a.publish(f"{topic_root}/alerts", b"forged")
        a.publish(f"{topic_root}/gw-a/json", b"control")
        got = ingest.wait_for(f"{topic_root}/gw-a/json")
        assert got == [(f"{topic_root}/gw-a/json", b"control")]
    finally:
        ingest.close()
        a.close()


def test_ingest_writes_alarms_and_cannot_pose_as_a_gateway(
    secured: tuple[Broker, dict[str, str], Path], topic_root: str
) -> None:
    broker, passwords, _ = secured
    ingest = connect(broker, gateways.INGEST_USER, passwords[gateways.INGEST_USER])
    siren = connect(broker, "siren", passwords["siren"])
    b = connect(broker, "gw-b", passwords["gw-b"])
    try:
        siren.subscribe(f"{topic_root}/alerts/#")
        ingest.subscribe(f"{topic_root}/+/+")
        ingest.publish(f"{topic_root}/gw-b/json", b"forged by ingest")
        b.publish(f"{topic_root}/gw-b/json", b"control")
        assert ingest.wait_for(f"{topic_root}/gw-b/json") == [
            (f"{topic_root}/gw-b/json", b"control")
        ]
        ingest.publish(f"{topic_root}/alerts/warning/AQ-1", b'{"alerts": []}')
        assert siren.wait_for(f"{topic_root}/alerts/warning/AQ-1")
    finally:
        for c in (ingest, siren, b):
            c.close()


def test_ingest_worker_runs_on_the_secured_broker(
    secured: tuple[Broker, dict[str, str], Path], settings: Settings, topic_root: str
) -> None:
    """A real worker in a shared-subscription group, with the ingest account's credentials:
    its subscriptions ($share, retained meta and status) are all allowed."""
    broker, passwords, _ = secured
    url = f"mqtt://{gateways.INGEST_USER}:{passwords[gateways.INGEST_USER]}@127.0.0.1:{broker.port}"
    worker = RunningWorker(settings.with_(mqtt_url=url, group="pusat")).start()
    a = connect(broker, "gw-a", passwords["gw-a"])
    try:
        meta = {"sensors": [{"id": "GW-A-1", "domain": "air", "district": "Presint 1"}]}
        a.publish(f"{topic_root}/gw-a/meta", json.dumps(meta).encode())
        a.publish(f"{topic_root}/gw-a/json", b'{"sensor": "GW-A-1", "values": {"pm25": 12.5}}')
        assert settings.database_url
        db = settings.database_url
        wait_for(
            lambda: scalar(db, "SELECT count(*) FROM readings WHERE sensor_id = 'GW-A-1'") == 1,
            what="gw-a's reading through the secured broker",
        )
        assert scalar(db, "SELECT provisioned FROM sensors WHERE sensor_id = 'GW-A-1'") is True
    finally:
        a.close()
        worker.stop()
