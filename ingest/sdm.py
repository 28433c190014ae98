"""FIWARE Smart Data Models, key-values form -> candidate readings.

Models read: AirQualityObserved, TrafficFlowObserved, WaterQualityObserved; one entity or a JSON
array of them. The key-values form carries no units, so each model's documented conventions are
data here (``AIR_QUALITY``, ``TRAFFIC_FLOW``, ``WATER_QUALITY``): attribute -> (quantity, unit as
the model states it, scale). Conversion to canonical units happens later, against the catalogue.

- Sensor: ``refDevice`` (a string, or a one-element list of one), else ``id`` without a leading
  ``urn:ngsi-ld:<type>:``.
- Event time: ``dateObserved``, an instant or an interval ``start/end`` (the end is the event time,
  the length is the period). TrafficFlowObserved's own ``dateObservedFrom``/``dateObservedTo``
  stand in when ``dateObserved`` is missing or unreadable (the model's example writes a naive
  interval next to well-formed From/To), and give the period of an instant ``dateObserved``.
- An attribute not in the model's table and not descriptive, with a number: a candidate under its
  own name, unit None (the pipeline decides whether an unknown quantity is stored).
- ``measurand``: "name, value, unitCode, text" strings with UN/CEFACT unit codes. An attribute of
  the same quantity wins over a measurand entry (the models' examples repeat one in the other).

What becomes a rejection (reason, scope; scope is the entity, or the message for a single one):

- bytes that are not JSON ......................................... malformed_json, message
- not an object or an array of objects, unknown ``type``,
  no usable sensor id, a malformed measurand ...................... bad_payload, that entity
- no readable ``dateObserved`` .................................... bad_time, that entity
- a reading attribute or measurand value that is not a number,
  or an unknown attribute holding a number as a string ("12") ..... non_numeric, that attribute
- a measurand unit code not in ``UNIT_CODES`` ..................... unknown_unit, that entry
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import orjson

from ingest.records import (
    BAD_PAYLOAD,
    BAD_TIME,
    MALFORMED_JSON,
    NON_NUMERIC,
    NOT_FINITE,
    UNKNOWN_UNIT,
    Candidate,
    Decoded,
    clip,
    json_kind,
)
from ingest.timeparse import parse_interval, parse_time


class Attribute(NamedTuple):
    quantity: str
    unit: str | None  # as the model states it; None: already canonical
    scale: float = 1.0  # applied to the value before the unit conversion


AIR_QUALITY: dict[str, Attribute] = {
    "pm25": Attribute("pm25", "ug/m3"),
    "pm10": Attribute("pm10", "ug/m3"),
    "no2": Attribute("no2", "ug/m3"),
    "o3": Attribute("o3", "ug/m3"),
    "so2": Attribute("so2", "ug/m3"),
    "co": Attribute("co", "mg/m3"),
    "temperature": Attribute("temperature", "Cel"),
    "relativeHumidity": Attribute("humidity", "/"),  # a fraction 0-1; the catalogue makes it %RH
    "windSpeed": Attribute("wind_speed", "m/s"),
    "windDirection": Attribute("wind_direction", "deg"),
    "precipitation": Attribute("rain", "mm/h"),
}

TRAFFIC_FLOW: dict[str, Attribute] = {
    "intensity": Attribute("vehicle_count", "count"),  # vehicles in the observed period
    "occupancy": Attribute("occupancy", "/"),  # a fraction 0-1; the catalogue makes it %
    "averageVehicleSpeed": Attribute("speed", "km/h"),
}

# Ammonium is reported as the NH4+ ion, the catalogue's `an` as ammoniacal nitrogen (NH4-N):
# scale by the mass of N in NH4+, 14.007 / 18.038 g/mol.
NH4_AS_N = 14.007 / 18.038

WATER_QUALITY: dict[str, Attribute] = {
    "temperature": Attribute("water_temperature", "Cel"),
    "pH": Attribute("ph", "pH"),
    "O2": Attribute("do", "mg/l"),
    "tss": Attribute("tss", "mg/l"),
    "turbidity": Attribute("turbidity", "NTU"),
    "conductivity": Attribute("conductivity", "S/m"),
    "NH4": Attribute("an", "mg/l", NH4_AS_N),
    "BOD": Attribute("bod", "mg/l"),
    "COD": Attribute("cod", "mg/l"),
}

MODELS: dict[str, dict[str, Attribute]] = {
    "AirQualityObserved": AIR_QUALITY,
    "TrafficFlowObserved": TRAFFIC_FLOW,
    "WaterQualityObserved": WATER_QUALITY,
}

# A count per observed period also yields a rate: (attribute, quantity, unit) per model.
RATES: dict[str, tuple[str, str, str]] = {
    "TrafficFlowObserved": ("intensity", "flow", "veh/h"),
}

# UN/CEFACT Recommendation 20 codes, as used by `measurand` and NGSI `unitCode`.
UNIT_CODES: dict[str, str] = {
    "GQ": "ug/m3",
    "GP": "mg/m3",
    "59": "ppm",
    "61": "ppb",
    "CEL": "Cel",
    "P1": "%",
    "KMH": "km/h",
    "M1": "mg/l",
    "MTR": "m",
    "MQS": "m3/s",
}

# Attributes that describe the observation rather than measure something.
DESCRIPTIVE = frozenset(
    {
        "id",
        "type",
        "@context",
        "dateObserved",
        "dateObservedFrom",
        "dateObservedTo",
        "location",
        "address",
        "name",
        "description",
        "refDevice",
        "refPointOfInterest",
        "source",
        "dataProvider",
        "laneId",
        "laneDirection",
        "congested",
        "reliability",
        "typeofLocation",
        "typeOfLocation",
        "areaServed",
        "airQualityLevel",
        "airQualityIndex",
        "averageVehicleLength",
        "averageGapDistance",
        "averageHeadwayTime",
        "vehicleType",
        "vehicleSubType",
        "dateCreated",
        "dateModified",
        "seeAlso",
        "owner",
        "alternateName",
        "measurand",
    }
)

# Measurand names are written freely ("CO", "NH4"): matched to the tables without case.
_FOLDED: dict[str, dict[str, Attribute]] = {
    model: {k.lower(): a for k, a in table.items()} for model, table in MODELS.items()
}

_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def decode(payload: bytes, now: float) -> Decoded:
    """Candidate readings and rejections from SDM key-values entities; never raises on input.

    ``now`` is not used: an SDM observation without a date is rejected, not stamped "now".
    """
    out = Decoded()
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        out.reject(MALFORMED_JSON, f"not JSON: {err}")
        return out
    if type(doc) is dict:
        _entity(doc, None, out)
    elif type(doc) is list:
        for i, ent in enumerate(doc):
            _entity(ent, i, out)
    else:
        out.reject(BAD_PAYLOAD, f"expected an entity or an array of entities, not {json_kind(doc)}")
    return out


def _entity(ent: object, record: int | None, out: Decoded) -> None:
    """Append the readings of one entity, or its rejections."""
    if type(ent) is not dict:
        out.reject(BAD_PAYLOAD, f"an entity must be an object, not {json_kind(ent)}", record)
        return
    model = ent.get("type")
    if type(model) is not str or model not in MODELS:
        known = ", ".join(MODELS)
        out.reject(BAD_PAYLOAD, f"type {clip(model)} is not one of {known}", record)
        return
    table = MODELS[model]
    sensor = _sensor(ent, model)
    if sensor is None:
        out.reject(BAD_PAYLOAD, "no sensor: refDevice or id must be a non-empty string", record)
        return
    try:
        ts, period = _observed(ent)
    except ValueError as err:
        out.reject(BAD_TIME, f"dateObserved: {err}", record)
        return
    emit = _Emitter(sensor, ts, record, out)
    for attr, raw in ent.items():
        if attr in DESCRIPTIVE:
            continue
        spec = table.get(attr)
        if spec is not None:
            emit.known(attr, raw, spec)
        else:
            emit.unknown(attr, raw)
    rate = RATES.get(model)
    if rate is not None and period and rate[0] in ent:
        emit.rate(ent[rate[0]], rate[1], rate[2], period)
    if "measurand" in ent:
        emit.measurands(ent["measurand"], _FOLDED[model])


def _sensor(ent: dict[str, object], model: str) -> str | None:
    ref = ent.get("refDevice")
    if type(ref) is list and len(ref) == 1:
        ref = ref[0]
    if type(ref) is str and ref:
        return ref
    ident = ent.get("id")
    if type(ident) is not str:
        return None
    prefix = f"urn:ngsi-ld:{model}:"
    if ident.startswith(prefix):
        ident = ident[len(prefix) :]
    return ident or None


def _observed(ent: dict[str, object]) -> tuple[float, float | None]:
    """(event time, period or None) in seconds; raises ValueError."""
    try:
        if "dateObserved" not in ent:
            raise ValueError("missing")
        raw = ent["dateObserved"]
        if type(raw) is str and "/" in raw:
            start, end = parse_interval(raw)
            return end, end - start
        instant = parse_time(raw)
    except ValueError:
        span = _from_to(ent)
        if span is None:
            raise
        return span[1], span[1] - span[0]
    span = _from_to(ent)
    return instant, None if span is None else span[1] - span[0]


def _from_to(ent: dict[str, object]) -> tuple[float, float] | None:
    """TrafficFlowObserved's dateObservedFrom/To, when both are there and make an interval."""
    if "dateObservedFrom" not in ent or "dateObservedTo" not in ent:
        return None
    try:
        start, end = parse_time(ent["dateObservedFrom"]), parse_time(ent["dateObservedTo"])
    except ValueError:
        return None
    return (start, end) if end >= start else None


class _Emitter:
    """Turns the attributes of one entity into candidates or rejections."""

    __slots__ = ("out", "record", "sensor", "taken", "ts")

    def __init__(self, sensor: str, ts: float, record: int | None, out: Decoded) -> None:
        self.sensor = sensor
        self.ts = ts
        self.record = record
        self.out = out
        self.taken: set[str] = set()  # quantities already given by attributes

    def add(self, quantity: str, value: float, unit: str | None) -> None:
        if math.isfinite(value):
            self.out.readings.append(Candidate(self.sensor, quantity, self.ts, value, unit))
            self.taken.add(quantity)
        else:
            self.out.reject(NOT_FINITE, f"{quantity}: {value!r} after scaling", self.record)

    def known(self, attr: str, raw: object, spec: Attribute) -> None:
        if type(raw) is float or type(raw) is int:
            self.add(spec.quantity, float(raw) * spec.scale, spec.unit)
        else:
            self.non_numeric(attr, raw)

    def unknown(self, attr: str, raw: object) -> None:
        if type(raw) is float or type(raw) is int:
            if attr:
                self.add(attr, float(raw), None)
            else:
                self.out.reject(BAD_PAYLOAD, "an attribute has an empty name", self.record)
        elif type(raw) is str and _NUMBER_TEXT.fullmatch(raw.strip()):
            self.non_numeric(attr, raw)  # a number sent as text: say so rather than drop it

    def rate(self, raw: object, quantity: str, unit: str, period: float) -> None:
        # Non-numbers were already rejected by known(); a count per period -> per hour.
        if type(raw) is float or type(raw) is int:
            self.add(quantity, float(raw) * 3600.0 / period, unit)

    def non_numeric(self, attr: str, raw: object) -> None:
        detail = f"{attr[:60]}: {clip(raw)} is {json_kind(raw)}, not a number"
        self.out.reject(NON_NUMERIC, detail, self.record)

    def measurands(self, raw: object, table: dict[str, Attribute]) -> None:
        if type(raw) is not list:
            detail = f"measurand must be an array of strings, not {json_kind(raw)}"
            self.out.reject(BAD_PAYLOAD, detail, self.record)
            return
        for j, entry in enumerate(raw):
            self.measurand(j, entry, table)

    def measurand(self, j: int, entry: object, table: dict[str, Attribute]) -> None:
        """One "name, value, unitCode, text" entry."""
        parts = entry.split(",", 3) if type(entry) is str else []
        if len(parts) < 3 or not parts[0].strip():
            detail = f"measurand {j}: {clip(entry)} is not 'name, value, unitCode, text'"
            self.out.reject(BAD_PAYLOAD, detail, self.record)
            return
        name, text, code = (p.strip() for p in parts[:3])
        spec = table.get(name.lower(), Attribute(name, None))
        if spec.quantity in self.taken:
            return  # the same quantity came as an attribute
        where = f"measurand {j} ({name[:40]})"
        if not _NUMBER_TEXT.fullmatch(text):
            self.out.reject(NON_NUMERIC, f"{where}: {clip(text)} is not a number", self.record)
            return
        unit = UNIT_CODES.get(code) if code else spec.unit  # no code: the model's convention
        if code and unit is None:
            detail = f"{where}: unit code {clip(code)} is not one of {', '.join(UNIT_CODES)}"
            self.out.reject(UNKNOWN_UNIT, detail, self.record)
            return
        self.add(spec.quantity, float(text) * spec.scale, unit)
