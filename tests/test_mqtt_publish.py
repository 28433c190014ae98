"""PUBLISH packets read the short way (ingest.mqtt.parse_publish): the same topic, packet id and
payload as sent, whatever MQTT 5 properties come with them; anything odd goes paho's way."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.mqtt import parse_publish
from pusat.settings import Settings
from tests.conftest import RunningWorker
from tests.helpers import rows, wait_for


def properties(user: list[tuple[str, str]], content_type: str | None, expiry: int | None) -> bytes:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if user:
        props.UserProperty = user
    if content_type is not None:
        props.ContentType = content_type
    if expiry is not None:
        props.MessageExpiryInterval = expiry
    return bytes(props.pack())  # type: ignore[no-untyped-call]


def variable_header(topic: str, qos: int, mid: int, props: bytes) -> bytes:
    name = topic.encode()
    return len(name).to_bytes(2, "big") + name + (mid.to_bytes(2, "big") if qos else b"") + props


texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    topic=texts,
    qos=st.sampled_from([0, 1]),
    mid=st.integers(1, 65535),
    user=st.lists(st.tuples(texts, texts), max_size=4),
    content_type=st.none() | texts,
    expiry=st.none() | st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=300),
)
def test_topic_packet_id_and_payload_come_back(
    topic: str,
    qos: int,
    mid: int,
    user: list[tuple[str, str]],
    content_type: str | None,
    expiry: int | None,
    payload: bytes,
) -> None:
    packet = variable_header(topic, qos, mid, properties(user, content_type, expiry)) + payload
    assert parse_publish(bytearray(packet), qos) == (topic, mid if qos else 0, payload)


@settings(max_examples=300, deadline=None)
@given(packet=st.binary(max_size=60), qos=st.sampled_from([0, 1]))
def test_any_bytes_parse_or_decline(packet: bytes, qos: int) -> None:
    parsed = parse_publish(packet, qos)
    if parsed is not None:
        topic, mid, payload = parsed
        assert topic.encode() == packet[2 : 2 + int.from_bytes(packet[:2], "big")]
        assert packet.endswith(payload) and 0 <= mid <= 65535


def test_lengths_past_the_packet_and_bad_utf8_decline() -> None:
    assert parse_publish(b"\x00\x05ab", 0) is None  # the topic runs past the end
    assert parse_publish(b"\x00\x01a\x00\x01\x05\x00", 1) is None  # properties past the end
    assert parse_publish(b"\x00\x01a\xff\xff\xff\xff\x01", 0) is None  # a five-byte length
    assert parse_publish(b"\x00\x02\xc3\x28\x00x", 0) is None  # not UTF-8


@pytest.mark.tiers
def test_every_qos_and_properties_reach_the_store(
    worker: RunningWorker, settings: Settings
) -> None:
    """QoS 0 and 1 take the short way, QoS 2 paho's; user properties, a content type and a
    gateway name beyond ASCII change nothing."""
    url = settings.database_url
    assert url
    host, port = settings.mqtt().host, settings.mqtt().port
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="props-pub", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.connect(host, port)
    client.loop_start()
    try:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = [("site", "Presint 1"), ("fw", "2.4")]
        props.ContentType = "application/json"
        now = time.time()
        for qos in (0, 1, 2):
            doc = {"sensor": f"PQ-{qos}", "ts": now, "values": {"pm25": 10 + qos}}
            info = client.publish(
                f"{settings.topic_root}/gerbang-ü/json", json.dumps(doc), qos=qos, properties=props
            )
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    query = "SELECT sensor_id, value FROM readings ORDER BY sensor_id"
    wait_for(lambda: len(rows(url, query)) == 3, what="three readings")
    assert rows(url, query) == [("PQ-0", 10.0), ("PQ-1", 11.0), ("PQ-2", 12.0)]
    gateways = rows(url, "SELECT gateway_id FROM sensors WHERE sensor_id ^@ %s", ("PQ-",))
    assert {g for (g,) in gateways} == {"gerbang-ü"}
