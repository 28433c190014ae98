"""What the models produce and the gateways send: readings, and messages made of them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity from one sensor at one event time, in the canonical unit."""

    sensor: str
    quantity: str
    ts: float  # event time, seconds since the Unix epoch
    value: float
    unit: str | None = None  # the unit label the gateway writes; None: the quantity's own
    faults: tuple[int, ...] = ()  # ids of the injected faults that changed it


@dataclass(slots=True)
class Message:
    """One MQTT publication: ``kind`` is the topic's last level (senml, sdm, meta, status).

    ``due`` is the simulated time at which the gateway sends it; faults move it (late readings,
    bursts) or change ``payload`` (malformed), and ``readings`` is what it carries, for the
    manifest (empty when a fault made the payload unreadable).
    """

    gateway: str
    kind: str
    payload: bytes
    due: float
    readings: list[Reading] = field(default_factory=list)
    retain: bool = False
    seq: int = 0  # tie-breaker keeping publication order stable for equal due times
    faults: tuple[int, ...] = ()  # ids of the injected message faults that changed it
    duplicate: bool = False  # a repeat of a message already sent
    corrupt: bool = False  # garbled: ingest cannot read its readings
