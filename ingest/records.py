"""What decoders return: candidate readings and per-record rejections.

Decoders never raise on input. A whole message that cannot be read becomes one rejection; a bad
record becomes one rejection while the good records of the same message are still returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple


class Candidate(NamedTuple):
    """One reading as a gateway stated it, before unit conversion and validation."""

    sensor: str
    quantity: str
    ts: float  # event time, seconds since the Unix epoch (UTC)
    value: float
    unit: str | None  # None: already in the quantity's canonical unit


class Rejection(NamedTuple):
    reason: str  # a reason code: malformed_json, bad_senml, unknown_unit, ...
    detail: str  # for people: what was wrong, naming the field
    record: int | None = None  # index of the record inside the message, None for the whole message


@dataclass
class Decoded:
    readings: list[Candidate] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def reject(self, reason: str, detail: str, record: int | None = None) -> None:
        self.rejections.append(Rejection(reason, detail, record))


@dataclass(slots=True)
class Columns:
    """Candidate readings column by column, in order: what the pipeline accumulates.

    Cheaper than one Candidate per reading: a pack's columns are built by list operations, and
    lists of strings and floats give the garbage collector nothing to track.
    """

    sensor: list[str] = field(default_factory=list)
    quantity: list[str] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    unit: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sensor)

    def rows(self) -> list[Candidate]:
        return list(map(Candidate, self.sensor, self.quantity, self.ts, self.value, self.unit))

    def extend_columns(
        self,
        sensor: Iterable[str],
        quantity: Iterable[str],
        ts: Iterable[float],
        value: Iterable[float],
        unit: Iterable[str | None],
    ) -> None:
        """Append columns of equal length."""
        self.sensor += sensor
        self.quantity += quantity
        self.ts += ts
        self.value += value
        self.unit += unit

    def extend_rows(self, rows: list[Candidate]) -> None:
        if len(rows) == 1:  # the common native message: one reading, no transposing
            sensor, quantity, ts, value, unit = rows[0]
            self.sensor.append(sensor)
            self.quantity.append(quantity)
            self.ts.append(ts)
            self.value.append(value)
            self.unit.append(unit)
        elif rows:
            sensors, quantities, times, values, units = zip(*rows, strict=True)
            self.sensor += sensors
            self.quantity += quantities
            self.ts += times
            self.value += values
            self.unit += units


_JSON_KINDS: dict[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def json_kind(x: object) -> str:
    """What a decoded JSON value is, for rejection details ("an array", "a string", ...)."""
    return _JSON_KINDS.get(type(x), type(x).__name__)


def clip(x: object) -> str:
    """A short repr of an offending value for a rejection detail."""
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


# Reason codes, in one place so that docs, metrics and tests agree.
MALFORMED_JSON = "malformed_json"
BAD_SENML = "bad_senml"
BAD_PAYLOAD = "bad_payload"  # valid JSON of the wrong shape for the native or SDM forms
MUST_UNDERSTAND = "must_understand"
NON_NUMERIC = "non_numeric"
UNKNOWN_UNIT = "unknown_unit"
UNKNOWN_QUANTITY = "unknown_quantity"
UNKNOWN_SENSOR = "unknown_sensor"
OUT_OF_RANGE = "out_of_range"
NOT_FINITE = "not_finite"
BAD_TIME = "bad_time"
TOO_LARGE = "too_large"
BAD_TOPIC = "bad_topic"
BAD_META = "bad_meta"
BAD_STATUS = "bad_status"
NO_DECODED_OBJECT = "no_decoded_object"  # a LoRaWAN uplink with nothing decoded to read
NO_BIRTH = "no_birth"  # Sparkplug data from a node or device whose birth was not seen
UNKNOWN_ALIAS = "unknown_alias"  # a Sparkplug metric alias that no birth certificate declared

REASONS = (
    MALFORMED_JSON,
    BAD_SENML,
    BAD_PAYLOAD,
    MUST_UNDERSTAND,
    NON_NUMERIC,
    UNKNOWN_UNIT,
    UNKNOWN_QUANTITY,
    UNKNOWN_SENSOR,
    OUT_OF_RANGE,
    NOT_FINITE,
    BAD_TIME,
    TOO_LARGE,
    BAD_TOPIC,
    BAD_META,
    BAD_STATUS,
    NO_DECODED_OBJECT,
    NO_BIRTH,
    UNKNOWN_ALIAS,
)
