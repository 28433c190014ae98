"""Gateway self-descriptions (`meta`, retained) and availability (`status`, the last will)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from ingest.records import BAD_META, BAD_STATUS, MALFORMED_JSON, Rejection
from store.writer import SensorMeta

_TEXT_FIELDS = ("domain", "district", "name")
_KNOWN = {"id", "sensor", "lat", "lon", "quantities", "units", *_TEXT_FIELDS}
MAX_FREE_FLOW_KMH = 200.0  # above this a street's free-flow speed is a unit mistake (m/s, mph)


def _free_flow(entry: dict[str, Any]) -> dict[str, Any]:
    """`free_flow_speed` (km/h, a traffic loop's speed without traffic), checked when given."""
    v = entry.get("free_flow_speed")
    if v is None:
        return {}
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError("free_flow_speed must be a number (km/h)")
    if not 0 < v <= MAX_FREE_FLOW_KMH:
        raise ValueError(f"free_flow_speed {v} km/h is outside (0, {MAX_FREE_FLOW_KMH:g}]")
    return {"free_flow_speed": float(v)}


def _coordinate(entry: dict[str, Any], key: str, limit: float) -> float | None:
    v = entry.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{key} must be a number")
    if abs(v) > limit:
        raise ValueError(f"{key} {v} is outside [-{limit:g}, {limit:g}]")
    return float(v)


def _sensor(entry: object, gateway: str) -> SensorMeta:
    if not isinstance(entry, dict):
        raise ValueError("a sensor entry must be an object")
    sid = entry.get("id", entry.get("sensor"))
    if not isinstance(sid, str) or not sid.strip():
        raise ValueError("a sensor entry needs a non-empty string `id`")
    text: dict[str, str | None] = {}
    for key in _TEXT_FIELDS:
        v = entry.get(key)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{key} must be a string")
        text[key] = v
    quantities = entry.get("quantities", [])
    if not isinstance(quantities, list) or not all(isinstance(q, str) for q in quantities):
        raise ValueError("quantities must be a list of strings")
    units = entry.get("units", {})
    if not isinstance(units, dict) or not all(isinstance(u, str) for u in units.values()):
        raise ValueError("units must map quantity names to unit strings")
    return SensorMeta(
        sensor_id=sid,
        gateway=gateway,
        domain=text["domain"],
        district=text["district"],
        name=text["name"],
        lat=_coordinate(entry, "lat", 90),
        lon=_coordinate(entry, "lon", 180),
        quantities=tuple(quantities),
        units=dict(units),
        attributes={k: v for k, v in entry.items() if k not in _KNOWN} | _free_flow(entry),
    )


def parse_meta(payload: bytes, gateway: str) -> tuple[list[SensorMeta], list[Rejection]]:
    """Sensors described by a `meta` message: `{"sensors": [...]}` or a bare list of sensors."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        return [], [Rejection(MALFORMED_JSON, f"meta is not JSON: {e}")]
    entries = doc.get("sensors") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        return [], [Rejection(BAD_META, 'meta must be a list of sensors or {"sensors": [...]}')]
    sensors: list[SensorMeta] = []
    rejections: list[Rejection] = []
    for i, entry in enumerate(entries):
        try:
            sensors.append(_sensor(entry, gateway))
        except ValueError as e:
            rejections.append(Rejection(BAD_META, f"sensor {i}: {e}", i))
    return sensors, rejections


MAX_OWNER = 200


@dataclass(frozen=True)
class Status:
    """A gateway's availability as one of its publishers says it; owner "" is the gateway."""

    status: str  # online | offline
    owner: str = ""


def parse_status(payload: bytes) -> Status | Rejection:
    """`online` or `offline`, as plain text or `{"status": "...", "owner": "..."}`.

    The owner names the publisher speaking (its last will says `offline` for it alone): a gateway
    stays online while any owner's last word is `online`, so a second publisher of the same
    gateway that ends does not take it offline.
    """
    text = payload.strip().decode("utf-8", errors="replace").lower()
    owner: object = ""
    if text.startswith("{"):
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            return Rejection(MALFORMED_JSON, f"status is not JSON: {e}")
        value = doc.get("status") if isinstance(doc, dict) else None
        text = value.lower() if isinstance(value, str) else ""
        owner = doc.get("owner", "") if isinstance(doc, dict) else ""
    if text not in ("online", "offline"):
        return Rejection(BAD_STATUS, "status must be `online` or `offline`")
    if not isinstance(owner, str) or len(owner) > MAX_OWNER:
        return Rejection(BAD_STATUS, f"owner must be a string of at most {MAX_OWNER} characters")
    return Status(text, owner)
