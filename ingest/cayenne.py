"""Cayenne Low Power Payload (LPP) frames -> named numbers.

A frame is a run of (channel byte, type byte, data): each type has a fixed data size and a
resolution (the raw big-endian integer times the resolution is the value). A field is named
``<type>_<channel>`` (``temperature_3``); the GPS type gives three fields,
``gps_<channel>_latitude``, ``_longitude`` and ``_altitude``. The natural unit of each type is in
``UNITS`` so a mapping only needs to say which quantity a field is.
"""

from __future__ import annotations

from typing import NamedTuple


class _Type(NamedTuple):
    name: str
    size: int  # bytes per value
    signed: bool
    resolution: float
    values: int = 1  # values per field (accelerometer, gyrometer, GPS: 3)


# IPSO-derived type codes of the Cayenne LPP specification (v1 and the common v2 additions).
_TYPES: dict[int, _Type] = {
    0: _Type("digital_input", 1, False, 1),
    1: _Type("digital_output", 1, False, 1),
    2: _Type("analog_input", 2, True, 0.01),
    3: _Type("analog_output", 2, True, 0.01),
    100: _Type("generic", 4, False, 1),
    101: _Type("illuminance", 2, False, 1),
    102: _Type("presence", 1, False, 1),
    103: _Type("temperature", 2, True, 0.1),
    104: _Type("humidity", 1, False, 0.5),
    113: _Type("accelerometer", 2, True, 0.001, 3),
    115: _Type("barometer", 2, False, 0.1),
    116: _Type("voltage", 2, False, 0.01),
    117: _Type("current", 2, False, 0.001),
    118: _Type("frequency", 4, False, 1),
    120: _Type("percentage", 1, False, 1),
    121: _Type("altitude", 2, True, 1),
    125: _Type("concentration", 2, False, 1),
    128: _Type("power", 2, False, 1),
    130: _Type("distance", 4, False, 0.001),
    131: _Type("energy", 4, False, 0.001),
    132: _Type("direction", 2, False, 1),
    133: _Type("unixtime", 4, False, 1),
    134: _Type("gyrometer", 2, True, 0.01, 3),
    136: _Type("gps", 3, True, 0.0001, 3),
    142: _Type("switch", 1, False, 1),
}

# The unit each type's values are in (SenML names where the registry has one).
UNITS: dict[str, str] = {
    "analog_input": "1",
    "analog_output": "1",
    "illuminance": "lx",
    "temperature": "Cel",
    "humidity": "%RH",
    "accelerometer": "g",
    "barometer": "hPa",
    "voltage": "V",
    "current": "A",
    "frequency": "Hz",
    "percentage": "%",
    "altitude": "m",
    "concentration": "ppm",
    "power": "W",
    "distance": "m",
    "energy": "kWh",
    "direction": "deg",
    "gyrometer": "deg/s",
}

_AXES = {"accelerometer": ("x", "y", "z"), "gyrometer": ("x", "y", "z")}
_GPS = ("latitude", "longitude", "altitude")


def decode(frame: bytes) -> dict[str, tuple[float, str | None]]:
    """``{field: (value, unit)}`` of a frame; ValueError naming the offset when it is not LPP."""
    out: dict[str, tuple[float, str | None]] = {}
    i = 0
    while i < len(frame):
        if i + 2 > len(frame):
            raise ValueError(f"byte {i}: a channel without a type")
        channel, code = frame[i], frame[i + 1]
        t = _TYPES.get(code)
        if t is None:
            raise ValueError(f"byte {i + 1}: unknown Cayenne LPP type {code}")
        start, end = i + 2, i + 2 + t.size * t.values
        if end > len(frame):
            raise ValueError(f"byte {i}: {t.name} needs {t.size * t.values} data bytes")
        raw = [
            int.from_bytes(frame[k : k + t.size], "big", signed=t.signed)
            for k in range(start, end, t.size)
        ]
        base = f"{t.name}_{channel}"
        if t.name == "gps":
            # latitude and longitude in 0.0001 degrees, altitude in 0.01 m
            out[f"{base}_latitude"] = (raw[0] * 0.0001, "lat")
            out[f"{base}_longitude"] = (raw[1] * 0.0001, "lon")
            out[f"{base}_altitude"] = (raw[2] * 0.01, "m")
        elif t.values == 1:
            out[base] = (raw[0] * t.resolution, UNITS.get(t.name))
        else:
            for axis, value in zip(_AXES[t.name], raw, strict=True):
                out[f"{base}_{axis}"] = (value * t.resolution, UNITS.get(t.name))
        i = end
    return out


def encode(channel: int, type_name: str, *values: float) -> bytes:
    """One LPP record (used by tests and the simulator to build frames)."""
    code, t = next((c, t) for c, t in _TYPES.items() if t.name == type_name)
    scales = (0.0001, 0.0001, 0.01) if type_name == "gps" else (t.resolution,) * t.values
    data = b"".join(
        round(v / s).to_bytes(t.size, "big", signed=t.signed)
        for v, s in zip(values, scales, strict=True)
    )
    return bytes((channel, code)) + data
