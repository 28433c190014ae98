"""Fault injection: what goes wrong with real sensors and gateways, on purpose and on record.

A fault hits one sensor (and for value faults one of its quantities) over a window of simulated
time. Kinds, and what the platform is expected to do (the manifest works it out per fault):

| kind | what the gateway does | expected |
|---|---|---|
| offline | sends nothing for the sensor | stale alert when the silence outlasts 5 periods |
| stuck | repeats the value it had when the fault began | flatline alert where a rule exists |
| drift | adds ``rate`` per hour since the fault began | threshold/rate alerts once crossed |
| spike | one reading far off (beyond the possible range by default) | out_of_range, or alerts |
| late | one message ``delay`` late, after newer ones | stored, no alert |
| out_of_order | one message swapped with the next | stored, no alert |
| duplicate | one message sent ``copies`` times | stored once |
| skew | the sensor's clock ``offset`` ahead (or behind) | bad_time beyond PUSAT_MAX_SKEW_S |
| malformed | one message garbled (``variant``: json, senml, payload) | malformed_json, |
|  |  | bad_senml, bad_payload |
| wrong_unit | the quantity labelled with a unit it is not in | unknown_unit |
| burst | the sensor's messages held for ``hold`` then sent at once | stored, no alert |

Value faults happen to readings before they are encoded; message faults split the sensor's
readings out of its gateway's message into a message of their own and then delay, repeat or
garble it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from processing.catalogue import Catalogue
from processing.rules import Rule
from simulators.city import Sensor
from simulators.readings import Message, Reading

KINDS = (
    "offline",
    "stuck",
    "drift",
    "spike",
    "late",
    "out_of_order",
    "duplicate",
    "skew",
    "malformed",
    "wrong_unit",
    "burst",
)
VALUE_KINDS = ("stuck", "drift", "spike", "wrong_unit")
MESSAGE_KINDS = ("late", "out_of_order", "duplicate", "malformed")

# Drift per hour that takes a quantity past its default alarm within an hour or two.
DRIFT_PER_HOUR = {
    "pm25": 40.0,
    "pm10": 150.0,
    "no2": 250.0,
    "o3": 60.0,
    "co": 8.0,
    "occupancy": 45.0,
    "water_level": 0.6,
    "do": -3.0,
    "ph": -1.8,
    "turbidity": 90.0,
    "an": 0.8,
}
# Units a confused gateway might write that the catalogue does not accept for the quantity.
WRONG_UNITS = {
    "temperature": "degC",
    "water_temperature": "degC",
    "pm25": "ppm",
    "pm10": "ppm",
    "no2": "%",
    "speed": "kmh",
    "flow": "veh",
    "water_level": "ft",
    "do": "ppm",
    "humidity": "RH",
}


class FaultError(ValueError):
    """A fault that cannot be placed (unknown kind or sensor, bad parameter)."""


@dataclass(frozen=True)
class FaultSpec:
    """A fault as asked for: anything left None is chosen from the seed."""

    kind: str
    sensor: str | None = None
    quantity: str | None = None
    at: float | None = None  # seconds after the start
    duration: float | None = None  # seconds; math.inf: until the end of the run
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    id: int
    kind: str
    sensor: Sensor
    quantity: str | None
    start: float  # epoch seconds, simulated time
    end: float  # epoch seconds (inf: to the end of the run)
    params: dict[str, Any]

    def active(self, ts: float) -> bool:
        return self.start <= ts < self.end


def _period(sensor: Sensor, catalogue: Catalogue) -> float:
    periods = [q.period for n in sensor.quantities if (q := catalogue.get(n)) is not None]
    return min(periods) if periods else 60.0


def _defaults(kind: str, period: float) -> tuple[float, dict[str, Any]]:
    """Default duration and parameters per kind, in terms of the sensor's period."""
    if kind == "offline":
        return 8 * period, {}
    if kind == "stuck":
        return 45 * 60.0, {}
    if kind == "drift":
        return 90 * 60.0, {}
    if kind == "spike":
        return period, {"mode": "out_of_range"}
    if kind == "late":
        return period, {"delay": 10 * 60.0}
    if kind == "out_of_order":
        return period, {"delay": 1.5 * period}
    if kind == "duplicate":
        return period, {"copies": 2}
    if kind == "skew":
        return 3 * period, {"offset": 86400.0}
    if kind == "malformed":
        return period, {"variant": "json"}
    if kind == "wrong_unit":
        return 3 * period, {}
    if kind == "burst":
        return 3 * period, {}
    raise FaultError(f"unknown fault kind {kind!r}; one of {', '.join(KINDS)}")


def _eligible_quantities(kind: str, sensor: Sensor, rules: Sequence[Rule]) -> list[str]:
    """Quantities a fault of ``kind`` is best shown on (one with a matching alarm rule)."""
    qs = list(sensor.quantities)
    if sensor.form == "sdm" and sensor.domain == "traffic":
        qs.remove("flow")  # derived by ingest from the SDM intensity: not sent on its own
    if kind == "stuck":
        ruled = {r.quantity for r in rules if r.kind == "flatline"}
    elif kind == "drift":
        ruled = {r.quantity for r in rules if r.kind == "threshold"} & set(DRIFT_PER_HOUR)
    elif kind == "wrong_unit":
        ruled = set(WRONG_UNITS)
    else:
        return qs
    return [q for q in qs if q in ruled]


def plan(
    specs: Sequence[FaultSpec],
    sensors: Sequence[Sensor],
    catalogue: Catalogue,
    rules: Sequence[Rule],
    start: float,
    duration: float | None,
    seed: int,
) -> list[Fault]:
    """Place every fault: pick sensors, quantities and times the spec left open, from the seed."""
    rng = np.random.default_rng([seed, 5])
    by_id = {s.id: s for s in sensors}
    span = duration if duration is not None else 3600.0
    out = []
    for i, spec in enumerate(specs):
        if spec.kind not in KINDS:
            raise FaultError(f"unknown fault kind {spec.kind!r}; one of {', '.join(KINDS)}")
        if spec.sensor is not None:
            if spec.sensor not in by_id:
                raise FaultError(f"fault {i + 1} ({spec.kind}): no sensor {spec.sensor!r} here")
            candidates = [by_id[spec.sensor]]
        else:
            candidates = [
                s
                for s in sensors
                if (spec.kind not in VALUE_KINDS or _eligible_quantities(spec.kind, s, rules))
                and (spec.kind not in ("wrong_unit", "malformed") or s.form == "senml")
            ]
            if not candidates:
                raise FaultError(f"fault {i + 1} ({spec.kind}): no sensor it can be shown on")
        sensor = candidates[int(rng.integers(len(candidates)))]
        period = _period(sensor, catalogue)
        default_len, params = _defaults(spec.kind, period)
        params = {**params, **spec.params}
        quantity = spec.quantity
        if spec.kind in VALUE_KINDS:
            if quantity is None:
                options = _eligible_quantities(spec.kind, sensor, rules) or list(sensor.quantities)
                quantity = options[int(rng.integers(len(options)))]
            elif quantity not in sensor.quantities:
                raise FaultError(f"fault {i + 1}: {sensor.id} does not measure {quantity!r}")
            if spec.kind == "wrong_unit" and sensor.form != "senml":
                raise FaultError(f"fault {i + 1}: {sensor.id} speaks SDM, which has no units")
        if spec.kind == "malformed" and params.get("variant") == "senml" and sensor.form != "senml":
            params["variant"] = "payload"
        at = spec.at
        if at is None:
            at = float(rng.uniform(0.1, 0.5)) * span
        at = math.floor(at / period) * period + period / 2  # between two readings
        length = spec.duration if spec.duration is not None else default_len
        out.append(
            Fault(i + 1, spec.kind, sensor, quantity, start + at, start + at + length, params)
        )
    return out


@dataclass
class _ValueState:
    frozen: dict[int, float] = field(default_factory=dict)  # stuck: fault id -> value


class Injector:
    """Applies faults to each period's readings and messages, tagging what each fault touched."""

    def __init__(self, faults: Sequence[Fault], catalogue: Catalogue) -> None:
        self.faults = list(faults)
        self.catalogue = catalogue
        self._state = _ValueState()
        self._fired: set[int] = set()  # one-shot message faults already applied
        self._held: dict[int, list[Message]] = {}

    def readings(self, readings: list[Reading]) -> list[Reading]:
        """Value faults, offline and clock skew, reading by reading."""
        if not self.faults:
            return readings
        out = []
        for r in readings:
            keep: Reading | None = r
            for f in self.faults:
                if keep is None or f.sensor.id != r.sensor or not f.active(r.ts):
                    continue
                keep = self._apply(f, keep)
            if keep is not None:
                out.append(keep)
        return out

    def _apply(self, f: Fault, r: Reading) -> Reading | None:
        tag = (*r.faults, f.id)
        if f.kind == "offline":
            return None
        if f.kind == "skew":
            return replace(r, ts=r.ts + float(f.params["offset"]), faults=tag)
        if r.quantity != f.quantity:
            return r
        if f.kind == "stuck":
            value = self._state.frozen.setdefault(f.id, r.value)
            return replace(r, value=value, faults=tag)
        if f.kind == "drift":
            rate = float(f.params.get("rate", DRIFT_PER_HOUR.get(r.quantity, 0.1 * r.value)))
            value = r.value + rate * (r.ts - f.start) / 3600.0
            q = self.catalogue.get(r.quantity)
            if q is not None:  # a drifting sensor still reads within what it can measure
                value = min(max(value, q.min), q.max)
            return replace(r, value=round(value, 3), faults=tag)
        if f.kind == "spike":
            if f.params.get("mode", "out_of_range") == "out_of_range":
                q = self.catalogue.get(r.quantity)
                value = (q.max if q else r.value) * 3 + 1
            else:
                value = r.value * float(f.params.get("factor", 5.0))
            return replace(r, value=value, faults=tag)
        if f.kind == "wrong_unit":
            unit = str(f.params.get("unit", WRONG_UNITS.get(r.quantity, "furlong")))
            return replace(r, unit=unit, faults=tag)
        return r

    def split(self, ts: float, sensor: str) -> list[Fault]:
        """Message faults that take ``sensor``'s readings at ``ts`` into a message of their own."""
        return [
            f
            for f in self.faults
            if f.sensor.id == sensor
            and (
                (f.kind == "burst" and f.active(ts))
                or (f.kind in MESSAGE_KINDS and f.id not in self._fired and ts >= f.start)
            )
        ]

    def message(self, m: Message, faults: list[Fault], period: float) -> list[Message]:
        """Apply message faults to the split-out ``m``; returns what to publish (any due time)."""
        out = [m]
        for f in faults:
            if f.kind == "burst":
                m.faults = (*m.faults, f.id)
                m.due = f.end  # the backlog goes out when the link comes back
                continue
            self._fired.add(f.id)
            m.faults = (*m.faults, f.id)
            if f.kind in ("late", "out_of_order"):
                m.due += float(f.params["delay"])
            elif f.kind == "duplicate":
                copies = int(f.params.get("copies", 2))
                out.extend(
                    Message(
                        m.gateway,
                        m.kind,
                        m.payload,
                        m.due,
                        list(m.readings),
                        faults=m.faults,
                        duplicate=True,
                    )
                    for _ in range(copies - 1)
                )
            elif f.kind == "malformed":
                m.payload = garble(m.payload, str(f.params.get("variant", "json")))
                m.corrupt = True
        return out


def garble(payload: bytes, variant: str) -> bytes:
    """A payload ingest cannot read: cut short (not JSON), or JSON that is not a pack/entity."""
    if variant == "json":
        return payload[: max(1, len(payload) // 2)]
    if variant == "senml":
        return b'{"bn": "garbled:", "n": "x", "v": 1}'  # an object, where a pack is an array
    return b'"garbled"'  # a JSON string, where SDM wants an entity or an array of them
