"""LoRaWAN network-server uplinks (ChirpStack v4, The Things Stack v3) -> candidate readings.

Each application is described by a mapping file (TOML, one per application, listed in
PUSAT_LORAWAN_MAPPINGS)::

    network = "chirpstack"            # or "tts"
    application = "17c82e96-..."      # as in the topic: ChirpStack's id, TTS's "app@tenant"
    gateway = "lora-presint8"         # the gateway id Pusat records (default: the application)
    decoder = "network"               # the network server's codec (object / decoded_payload),
                                      # or "cayenne_lpp": Pusat decodes data / frm_payload
    [devices]                         # devEui (ChirpStack) or device id (TTS) -> sensor id;
    "0101010101010101" = "AQ-LORA-1"  # an unlisted device is its devEui / device id
    [fields.temperature]              # a decoded field -> quantity, unit (catalogue rules)
    quantity = "temperature"
    unit = "Cel"
    scale = 1.0                       # optional, applied before the unit conversion

A decoded field without an entry is read as the quantity of its own name in canonical units
(like the native JSON form), so it is stored (or quarantined in strict mode), never dropped.

Topics: ChirpStack ``application/<id>/device/<devEui>/event/<up|status|join|ack>``, The Things
Stack ``v3/<app>@<tenant>/devices/<device>/<up|join|down/ack>``. Event time is the uplink's
(ChirpStack ``time``; TTS ``uplink_message.received_at``, the network server's), so an uplink
delivered twice is stored once. Radio metadata become health readings of the same sensor at the
same event time: ``rssi`` and ``snr`` (best gateway), ``rx_gateways``, ``f_cnt``; a status event
gives ``battery`` (%). Joins and acks say the application's gateway is online.

What becomes a rejection (reason, scope), besides those of native decoding:

- bytes that are not JSON .......................... malformed_json, whole message
- an uplink without a time or device ............... bad_payload, whole message
- an uplink without a decoded object ............... no_decoded_object, whole message
- a Cayenne LPP frame that does not parse .......... bad_payload, whole message
- a field that is not a number ..................... non_numeric, that field only
"""

from __future__ import annotations

import base64
import binascii
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson

from ingest import cayenne
from ingest.records import (
    BAD_PAYLOAD,
    BAD_TIME,
    MALFORMED_JSON,
    NO_DECODED_OBJECT,
    NON_NUMERIC,
    Candidate,
    Decoded,
    clip,
    json_kind,
)
from ingest.timeparse import parse_time

Network = Literal["chirpstack", "tts"]
# The events subscribed to, per network (the last topic levels).
EVENTS: dict[str, tuple[str, ...]] = {
    "chirpstack": ("up", "status", "join", "ack"),
    "tts": ("up", "join", "down/ack"),
}


class FieldMap(NamedTuple):
    quantity: str
    unit: str | None
    scale: float


@dataclass(frozen=True)
class Application:
    """One mapping file: a network server application and how its devices' fields read."""

    network: Network
    application: str
    gateway: str
    decoder: Literal["network", "cayenne_lpp"]
    devices: dict[str, str] = field(default_factory=dict)
    fields: dict[str, FieldMap] = field(default_factory=dict)

    def sensor(self, device: str) -> str:
        return self.devices.get(device, device)

    def subscriptions(self) -> list[str]:
        if self.network == "chirpstack":
            base = f"application/{self.application}/device/+/event/"
        else:
            base = f"v3/{self.application}/devices/+/"
        return [base + e for e in EVENTS[self.network]]


class Route(NamedTuple):
    app: Application
    device: str  # as in the topic: devEui or device id
    event: str  # up, status, join, ack, down/ack


@dataclass(frozen=True)
class Mappings:
    """Every configured application, found by (network, application id) from a topic."""

    apps: dict[tuple[str, str], Application] = field(default_factory=dict)

    def subscriptions(self) -> list[str]:
        return [s for app in self.apps.values() for s in app.subscriptions()]

    def route(self, topic: str) -> Route | None:
        """The application, device and event of a LoRaWAN topic; None when it is not one of
        a configured application."""
        parts = topic.split("/")
        if len(parts) == 6 and parts[0] == "application" and parts[2] == "device":
            if parts[4] != "event" or not parts[3]:
                return None
            network, app_id, device, event = "chirpstack", parts[1], parts[3], parts[5]
        elif len(parts) in (5, 6) and parts[0] == "v3" and parts[2] == "devices" and parts[3]:
            network, app_id, device, event = "tts", parts[1], parts[3], "/".join(parts[4:])
        else:
            return None
        app = self.apps.get((network, app_id))
        if app is None or event not in EVENTS[network]:
            return None
        return Route(app, device, event)


def _field(name: str, raw: object, where: str) -> FieldMap:
    if not isinstance(raw, dict) or not isinstance(raw.get("quantity"), str):
        raise ValueError(f"{where}: fields.{name} needs a quantity (a string)")
    unit = raw.get("unit")
    scale = raw.get("scale", 1.0)
    if unit is not None and not isinstance(unit, str):
        raise ValueError(f"{where}: fields.{name}.unit must be a string")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise ValueError(f"{where}: fields.{name}.scale must be a number")
    return FieldMap(raw["quantity"], unit, float(scale))


def parse_application(doc: dict[str, Any], where: str) -> Application:
    """An application from a mapping file's contents; ValueError naming what is wrong."""
    network = doc.get("network")
    if network not in EVENTS:
        raise ValueError(f"{where}: network must be one of {', '.join(EVENTS)}")
    app_id = doc.get("application")
    if not isinstance(app_id, str) or not app_id or any(c in app_id for c in "/+#"):
        raise ValueError(f"{where}: application must be the id in the topic (no / + #)")
    gateway = doc.get("gateway", app_id)
    decoder = doc.get("decoder", "network")
    if not isinstance(gateway, str) or not gateway:
        raise ValueError(f"{where}: gateway must be a non-empty string")
    if decoder not in ("network", "cayenne_lpp"):
        raise ValueError(f"{where}: decoder must be network or cayenne_lpp")
    devices = doc.get("devices", {})
    if not isinstance(devices, dict) or not all(isinstance(v, str) and v for v in devices.values()):
        raise ValueError(f"{where}: devices must map device ids to sensor ids (strings)")
    fields = doc.get("fields", {})
    if not isinstance(fields, dict):
        raise ValueError(f"{where}: fields must be a table of field tables")
    unknown = set(doc) - {"network", "application", "gateway", "decoder", "devices", "fields"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    return Application(
        network=network,
        application=app_id,
        gateway=gateway,
        decoder=decoder,
        devices=dict(devices),
        fields={k: _field(k, v, where) for k, v in fields.items()},
    )


def load(paths: list[Path]) -> Mappings:
    """The mapping files at ``paths``; ValueError (naming the file) for a bad one."""
    apps: dict[tuple[str, str], Application] = {}
    for path in paths:
        try:
            doc = tomllib.loads(path.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"LoRaWAN mapping {path}: {e}") from e
        app = parse_application(doc, f"LoRaWAN mapping {path}")
        key = (app.network, app.application)
        if key in apps:
            raise ValueError(f"LoRaWAN mapping {path}: application {app.application} twice")
        apps[key] = app
    return Mappings(apps)


class Event(NamedTuple):
    """What one LoRaWAN message gave: readings and rejections, and whether it shows the
    application online (a join or an ack)."""

    decoded: Decoded
    online: bool = False


def decode(route: Route, payload: bytes, now: float) -> Event:
    """Decode one LoRaWAN message; never raises on input."""
    out = Decoded()
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        out.reject(MALFORMED_JSON, f"not JSON: {err}")
        return Event(out)
    if type(doc) is not dict:
        out.reject(BAD_PAYLOAD, f"expected an event object, not {json_kind(doc)}")
        return Event(out)
    if route.event in ("join", "ack", "down/ack"):
        return Event(out, online=True)
    if route.app.network == "chirpstack":
        _chirpstack(route, doc, now, out)
    else:
        _tts(route, doc, now, out)
    return Event(out)


def _time(value: object, what: str, out: Decoded) -> float | None:
    if value is None:
        out.reject(BAD_PAYLOAD, f"{what} is missing")
        return None
    try:
        return parse_time(value)
    except ValueError as err:
        out.reject(BAD_TIME, f"{what}: {err}")
        return None


def _chirpstack(route: Route, doc: dict[str, Any], now: float, out: Decoded) -> None:
    ts = _time(doc.get("time"), "time", out)
    if ts is None:
        return
    sensor = route.app.sensor(route.device)
    if route.event == "status":
        level = doc.get("batteryLevel")
        if type(level) is float or type(level) is int:
            out.readings.append(Candidate(sensor, "battery", ts, float(level), "%"))
        elif doc.get("batteryLevelUnavailable") or doc.get("externalPowerSource"):
            pass  # nothing to read: the device cannot tell, or is mains powered
        else:
            out.reject(NON_NUMERIC, f"batteryLevel: {clip(level)} is {json_kind(level)}")
        return
    rx = doc.get("rxInfo")
    _fields(route, sensor, ts, doc.get("object"), doc.get("data"), "object", out)
    _radio(sensor, ts, rx if type(rx) is list else [], doc.get("fCnt", 0), out)


def _tts(route: Route, doc: dict[str, Any], now: float, out: Decoded) -> None:
    up = doc.get("uplink_message")
    if type(up) is not dict:
        out.reject(BAD_PAYLOAD, f"uplink_message must be an object, not {json_kind(up)}")
        return
    ts = _time(up.get("received_at", doc.get("received_at")), "uplink_message.received_at", out)
    if ts is None:
        return
    sensor = route.app.sensor(route.device)
    rx = up.get("rx_metadata")
    _fields(
        route, sensor, ts, up.get("decoded_payload"), up.get("frm_payload"), "decoded_payload", out
    )
    _radio(sensor, ts, rx if type(rx) is list else [], up.get("f_cnt", 0), out)
    battery = up.get("last_battery_percentage")
    if type(battery) is dict and type(battery.get("value")) in (int, float):
        out.readings.append(Candidate(sensor, "battery", ts, float(battery["value"]), "%"))


def _fields(
    route: Route,
    sensor: str,
    ts: float,
    obj: object,
    frame: object,
    name: str,
    out: Decoded,
) -> None:
    """The readings of the decoded fields (the network's object, or Cayenne LPP from the
    frame)."""
    app = route.app
    values: dict[str, tuple[object, str | None]]
    if app.decoder == "cayenne_lpp":
        try:
            raw = base64.b64decode(frame, validate=True) if type(frame) is str else b""
            lpp = cayenne.decode(raw) if raw else None
        except (binascii.Error, ValueError) as err:
            out.reject(BAD_PAYLOAD, f"Cayenne LPP: {err}")
            return
        if not lpp:
            out.reject(NO_DECODED_OBJECT, "no frame payload to decode as Cayenne LPP")
            return
        values = dict(lpp.items())
    else:
        if type(obj) is not dict or not obj:
            out.reject(
                NO_DECODED_OBJECT,
                f"no {name}: give the device profile a codec, or name a decoder in the mapping",
            )
            return
        values = {}
        _flatten(obj, "", values)
    for key, (value, native_unit) in values.items():
        if not key:
            out.reject(BAD_PAYLOAD, f"{name} has a field with an empty name")
            continue
        if type(value) is not float and type(value) is not int:
            out.reject(NON_NUMERIC, f"{key[:60]}: {clip(value)} is {json_kind(value)}")
            continue
        m = app.fields.get(key)
        if m is None:
            out.readings.append(Candidate(sensor, key, ts, float(value), None))
        else:
            unit = m.unit if m.unit is not None else native_unit
            out.readings.append(Candidate(sensor, m.quantity, ts, float(value) * m.scale, unit))


def _flatten(obj: dict[str, Any], prefix: str, into: dict[str, tuple[object, str | None]]) -> None:
    """Nested objects of a codec's output as dotted field names (``gps.latitude``)."""
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if type(v) is dict:
            _flatten(v, key + ".", into)
        else:
            into[key] = (v, None)


def _radio(sensor: str, ts: float, rx: list[object], f_cnt: object, out: Decoded) -> None:
    """Health readings of an uplink: best RSSI and SNR, how many gateways heard it, f_cnt."""
    meta = [r for r in rx if type(r) is dict]
    rssi = [r["rssi"] for r in meta if type(r.get("rssi")) in (int, float)]
    snr = [r["snr"] for r in meta if type(r.get("snr")) in (int, float)]
    if rssi:
        out.readings.append(Candidate(sensor, "rssi", ts, float(max(rssi)), "dBm"))
    if snr:
        out.readings.append(Candidate(sensor, "snr", ts, float(max(snr)), "dB"))
    out.readings.append(Candidate(sensor, "rx_gateways", ts, float(len(meta)), "count"))
    # proto3 JSON leaves a zero frame counter out: absent is 0
    if type(f_cnt) is int and not isinstance(f_cnt, bool):
        out.readings.append(Candidate(sensor, "f_cnt", ts, float(f_cnt), "count"))
