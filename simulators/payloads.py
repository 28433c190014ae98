"""What gateways write: SenML packs, FIWARE Smart Data Models key-values, `meta` descriptions.

Values come in canonical units (the catalogue's) and leave in the unit each form expects: SenML
carries a unit label per record (the canonical one unless a fault says otherwise), Smart Data
Models follow the models' conventions (gases in ug/m3, CO in mg/m3, humidity and occupancy as
fractions), converted with the catalogue's own factors so that ingest gets the value back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

from processing.catalogue import Catalogue
from simulators.city import Gateway, Sensor
from simulators.readings import Reading

SDM_TYPES = {
    "air": "AirQualityObserved",
    "traffic": "TrafficFlowObserved",
    "water": "WaterQualityObserved",
}

# quantity -> (attribute, the unit the model's convention states) per Smart Data Model.
SDM_ATTRIBUTES: dict[str, dict[str, tuple[str, str]]] = {
    "air": {
        "pm25": ("pm25", "ug/m3"),
        "pm10": ("pm10", "ug/m3"),
        "no2": ("no2", "ug/m3"),
        "o3": ("o3", "ug/m3"),
        "so2": ("so2", "ug/m3"),
        "co": ("co", "mg/m3"),
        "temperature": ("temperature", "Cel"),
        "humidity": ("relativeHumidity", "/"),
        "wind_speed": ("windSpeed", "m/s"),
        "wind_direction": ("windDirection", "deg"),
        "rain": ("precipitation", "mm/h"),
    },
    "traffic": {
        "vehicle_count": ("intensity", "count"),
        "occupancy": ("occupancy", "/"),
        "speed": ("averageVehicleSpeed", "km/h"),
        # flow is not sent: ingest derives it from the intensity over the observed interval
    },
    "water": {
        "water_temperature": ("temperature", "Cel"),
        "ph": ("pH", "pH"),
        "do": ("O2", "mg/l"),
        "tss": ("tss", "mg/l"),
        "turbidity": ("turbidity", "NTU"),
        "conductivity": ("conductivity", "S/m"),
        "bod": ("BOD", "mg/l"),
        "cod": ("COD", "mg/l"),
    },
}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def from_canonical(catalogue: Catalogue, quantity: str, value: float, unit: str) -> float:
    """``value`` in the canonical unit, expressed in ``unit`` (inverse of ingest's conversion)."""
    q = catalogue.get(quantity)
    if q is None or unit == q.unit:
        return value
    scale, offset = q.units[unit]
    return (value - offset) / scale


def senml(catalogue: Catalogue, readings: Sequence[Reading]) -> bytes:
    """One pack; base name and base time set per sensor, ``t`` for readings at other times."""
    records: list[dict[str, object]] = []
    current: tuple[str, float] | None = None
    for r in readings:
        q = catalogue.get(r.quantity)
        unit = r.unit or (q.unit if q else None)
        rec: dict[str, object] = {}
        if current is None or current[0] != r.sensor:
            current = (r.sensor, r.ts)
            rec["bn"] = f"{r.sensor}:"
            rec["bt"] = r.ts
        rec["n"] = r.quantity
        if unit is not None:
            rec["u"] = unit
        rec["v"] = r.value
        if r.ts != current[1]:
            rec["t"] = r.ts - current[1]
        records.append(rec)
    return orjson.dumps(records)


def sdm(
    catalogue: Catalogue, sensors: dict[str, Sensor], readings: Sequence[Reading], period: float
) -> bytes:
    """An array of entities, one per sensor and event time."""
    groups: dict[tuple[str, float], list[Reading]] = {}
    for r in readings:
        groups.setdefault((r.sensor, r.ts), []).append(r)
    entities = []
    for (sid, ts), rs in groups.items():
        s = sensors[sid]
        model = SDM_TYPES[s.domain]
        lat, lon = s.latlon
        ent: dict[str, object] = {
            "id": f"urn:ngsi-ld:{model}:{sid}",
            "type": model,
            "refDevice": sid,
            "location": {"type": "Point", "coordinates": [lon, lat]},
        }
        if s.domain == "traffic":
            ent["dateObserved"] = f"{iso(ts - period)}/{iso(ts)}"
        else:
            ent["dateObserved"] = iso(ts)
        table = SDM_ATTRIBUTES[s.domain]
        for r in rs:
            if r.quantity not in table:
                continue
            attr, unit = table[r.quantity]
            ent[attr] = from_canonical(catalogue, r.quantity, r.value, unit)
        entities.append(ent)
    return orjson.dumps(entities)


def meta(catalogue: Catalogue, gateway: Gateway) -> bytes:
    sensors = []
    for s in gateway.sensors:
        lat, lon = s.latlon
        units = {}
        for q in s.quantities:
            c = catalogue.get(q)
            if c is not None:
                units[q] = c.unit
        entry: dict[str, object] = {
            "id": s.id,
            "domain": s.domain,
            "district": s.district,
            "lat": lat,
            "lon": lon,
            "quantities": list(s.quantities),
            "units": units,
            "name": f"{s.district} {s.domain} {s.id}",
            "simulated": True,
        }
        if s.free_flow_speed is not None:
            entry["free_flow_speed"] = s.free_flow_speed
        sensors.append(entry)
    return orjson.dumps({"sensors": sensors})
