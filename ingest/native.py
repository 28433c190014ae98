"""Pusat's native compact JSON -> candidate readings.

One object ``{"sensor": "...", "ts": ..., "values": {"pm25": 12.1, ...}}`` or a JSON array of them
(a batch). ``ts`` is RFC 3339 or epoch seconds; absent, it means "now". Values are numbers already
in the quantity's canonical unit, so candidates carry unit None.

What becomes a rejection (reason, scope):

- bytes that are not JSON ................................. malformed_json, whole message
- JSON that is neither an object nor an array ............. bad_payload, whole message
- an object of the wrong shape (sensor, values) ........... bad_payload, that object
- a ts that is not a time ................................. bad_time, that object
- a value that is not a number ............................ non_numeric, that quantity only

Record indices are array positions in a batch; a single object is the whole message (None).
"""

from __future__ import annotations

import orjson

from ingest.records import (
    BAD_PAYLOAD,
    BAD_TIME,
    MALFORMED_JSON,
    NON_NUMERIC,
    Candidate,
    Decoded,
    clip,
    json_kind,
)
from ingest.timeparse import parse_time


def decode(payload: bytes, now: float) -> Decoded:
    """Candidate readings and rejections from one native message; never raises on input."""
    out = Decoded()
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        out.reject(MALFORMED_JSON, f"not JSON: {err}")
        return out
    if type(doc) is dict:
        _object(doc, None, now, out)
    elif type(doc) is list:
        for i, obj in enumerate(doc):
            _object(obj, i, now, out)
    else:
        out.reject(BAD_PAYLOAD, f"expected an object or an array of objects, not {json_kind(doc)}")
    return out


def _object(obj: object, record: int | None, now: float, out: Decoded) -> None:
    """Append the readings of one native object, or its rejections."""
    if type(obj) is not dict:
        what = json_kind(obj)
        out.reject(BAD_PAYLOAD, f"expected an object with sensor and values, not {what}", record)
        return
    sensor = obj.get("sensor")
    if type(sensor) is not str or not sensor:
        out.reject(
            BAD_PAYLOAD, f"sensor must be a non-empty string, not {json_kind(sensor)}", record
        )
        return
    values = obj.get("values")
    if type(values) is not dict or not values:
        what = "an empty object" if type(values) is dict else json_kind(values)
        out.reject(BAD_PAYLOAD, f"values must be an object of quantity: number, not {what}", record)
        return
    ts = now
    if "ts" in obj:
        try:
            ts = parse_time(obj["ts"])
        except ValueError as err:
            out.reject(BAD_TIME, f"ts: {err}", record)
            return
    for quantity, value in values.items():
        # `type(x) is` rather than isinstance: bool is an int subclass, never a reading.
        if type(value) is float or type(value) is int:
            if quantity:
                out.readings.append(Candidate(sensor, quantity, ts, float(value), None))
            else:
                out.reject(BAD_PAYLOAD, "a value has an empty quantity name", record)
        else:
            detail = f"{quantity[:60]}: {clip(value)} is {json_kind(value)}, not a number"
            out.reject(NON_NUMERIC, detail, record)
