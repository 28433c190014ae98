"""The topic contract: `<root>/<gateway>/<kind>` with kind senml, json, sdm, meta or status."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import NamedTuple

KINDS = ("senml", "json", "sdm", "meta", "status")


class Topic(NamedTuple):
    gateway: str
    kind: str


def subscriptions(root: str, group: str | None, extra: Sequence[str] = ()) -> list[str]:
    """What a worker subscribes to; a shared-subscription group splits the load between workers.

    Brokers send no retained messages to shared subscriptions (MQTT 5, 4.8.2), so a worker in a
    group also subscribes on its own to the retained `meta` and `status` topics; those are few
    and their writes idempotent, so every worker handling them is harmless. A worker of a
    partition subscribes to everything and keeps its own share (``partition_of``). ``extra``:
    topics of other contracts read as well (LoRaWAN network servers), shared like readings.
    """
    patterns = [f"{root}/+/+", *extra]
    if not group:
        return patterns
    return [f"$share/{group}/{p}" for p in patterns] + [f"{root}/+/meta", f"{root}/+/status"]


def partition_of(root: str, topic: str, partitions: int) -> int:
    """The partition (1 to ``partitions``) whose worker handles ``topic``: the CRC-32 of its
    gateway modulo ``partitions``, plus one. A gateway's topics, and so its sensors' readings
    and alarm state, all go to one worker. A topic that breaks the contract is hashed whole,
    so exactly one worker quarantines it.
    """
    t = parse(root, topic)
    if t is None and topic.startswith("spBv1.0/"):
        # a Sparkplug edge node's births, data and deaths (and its devices') stay together
        return gateway_partition("/".join(topic.split("/")[1:4:2]), partitions)
    return gateway_partition(t.gateway if t is not None else topic, partitions)


def gateway_partition(gateway: str | None, partitions: int) -> int:
    """The partition of a gateway (see ``partition_of``); partition 1 for no gateway."""
    if gateway is None:
        return 1
    return zlib.crc32(gateway.encode("utf-8", "surrogateescape")) % partitions + 1


def parse(root: str, topic: str) -> Topic | None:
    """The gateway and kind of a topic under ``root``; None when it breaks the contract."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix) :].split("/")
    if len(rest) != 2 or not rest[0] or rest[1] not in KINDS:
        return None
    return Topic(rest[0], rest[1])
