"""SenML JSON packs (RFC 8428) -> candidate readings.

Pusat's naming convention: the resolved name (``bn`` + ``n``) is ``<sensor_id>:<quantity>`` or
``<sensor_id>/<quantity>``, split at the last ``:`` or ``/`` (so ``urn:dev:ow:10e2:temp`` is
sensor ``urn:dev:ow:10e2``). Units are passed on as the gateway wrote them; conversion happens
later, against the quantity catalogue.

What becomes a rejection (reason, scope):

- bytes that are not JSON (orjson refuses NaN/Infinity too) .... malformed_json, whole message
- JSON that is not an array ................................... bad_senml, whole message
- a label ending in ``_`` anywhere (must-understand) .......... must_understand, whole message
- ``bver`` not an integer in 1..10 ............................ bad_senml, whole message
- a base field of the wrong type .............................. bad_senml, that record and every
  following one until the field is validly redefined (their resolution depends on it)
- an element that is not an object, a field of the wrong type,
  a name breaking RFC 8428's rules or our convention,
  several value fields, no value at all ....................... bad_senml, that record
- only ``vs``/``vb``/``vd``, or only a sum .................... non_numeric, that record
- a resolved time outside the years 0001-9999 ................. bad_time, that record
- ``bv`` + ``v`` overflowing to infinity ...................... not_finite, that record

A record carrying only base fields (RFC 8428's own examples open a pack with ``{"bn": ...}``)
sets context and yields no reading and no rejection.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

import orjson

from ingest.records import (
    BAD_SENML,
    BAD_TIME,
    MALFORMED_JSON,
    MUST_UNDERSTAND,
    NON_NUMERIC,
    NOT_FINITE,
    Candidate,
    Decoded,
    clip,
    json_kind,
)
from ingest.timeparse import EPOCH_MAX, EPOCH_MIN

RELATIVE_LIMIT = 2.0**28  # resolved times below this are seconds relative to "now"
MAX_VERSION = 10  # the SenML version RFC 8428 defines; a newer one may change meanings

_BASE_FIELDS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})
_RECORD_FIELDS = frozenset({"n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"})
_KNOWN = _BASE_FIELDS | _RECORD_FIELDS
_OTHER_VALUES = frozenset({"vs", "vb", "vd"})

# RFC 8428 section 4.5.1: names start with a letter or digit, then A-Z a-z 0-9 - : . / _
_NAME = re.compile(r"[A-Za-z0-9][-A-Za-z0-9:./_]*")
# The same rules and our convention in one match: the greedy sensor part backtracks to the last
# ':' or '/', after which the quantity has neither (linear: no nested repetition).
_SENSOR_QUANTITY = re.compile(r"([A-Za-z0-9][-A-Za-z0-9:./_]*)[:/]([-A-Za-z0-9._]+)")


class _Reject(Exception):
    """Raised inside record resolution: the record becomes one rejection."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Base:
    """Base fields in force at the current record."""

    name: str = ""
    time: float = 0.0
    unit: str | None = None
    value: float | None = None  # None: no bv, so a record without v has no value
    # Base fields that were set to a value of the wrong type, with why: while one is in force
    # the records it applies to cannot be resolved.
    broken: dict[str, str] = field(default_factory=dict)


def decode(payload: bytes, now: float) -> Decoded:
    """Candidate readings and rejections from one SenML JSON pack; never raises on input."""
    out = Decoded()
    try:
        pack = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        out.reject(MALFORMED_JSON, f"not JSON: {err}")
        return out
    if type(pack) is not list:
        hint = "; wrap a single record in [ ]" if type(pack) is dict else ""
        out.reject(
            BAD_SENML, f"a SenML pack is a JSON array of records, not {json_kind(pack)}{hint}"
        )
        return out
    problem = _pack_problem(pack)
    if problem is not None:
        out.reject(*problem)
        return out
    base = _Base()
    readings = out.readings
    for i, rec in enumerate(pack):
        try:
            if type(rec) is not dict:
                raise _Reject(BAD_SENML, f"a record must be an object, not {json_kind(rec)}")
            if not _BASE_FIELDS.isdisjoint(rec):
                _apply_base(base, rec, i)
                if _RECORD_FIELDS.isdisjoint(rec) and "bv" not in rec and not base.broken:
                    continue  # a header record: context only, no reading
            readings.append(_resolve(base, rec, now))
        except _Reject as bad:
            out.reject(bad.reason, bad.detail, i)
    return out


def _pack_problem(pack: list[object]) -> tuple[str, str] | None:
    """A reason to reject the whole pack: a must-understand label, else an unusable version."""
    must: set[str] = set()
    version: tuple[str, str] | None = None
    for i, rec in enumerate(pack):
        if type(rec) is not dict or rec.keys() <= _RECORD_FIELDS:
            continue  # the common case: a plain record, nothing to look at
        if not rec.keys() <= _KNOWN:
            must.update(k for k in rec if k.endswith("_"))
        if version is None and "bver" in rec:
            v = rec["bver"]
            if type(v) is not int or not 1 <= v <= MAX_VERSION:
                detail = (
                    f"record {i}: bver {clip(v)} is not a SenML version Pusat reads "
                    f"(an integer from 1 to {MAX_VERSION})"
                )
                version = (BAD_SENML, detail)
    if must:
        return MUST_UNDERSTAND, (
            f"the pack uses must-understand label(s) {', '.join(map(repr, sorted(must)))} "
            "that Pusat does not know (RFC 8428 section 4.4)"
        )
    return version


def _apply_base(base: _Base, rec: dict[str, object], i: int) -> None:
    """Take the base fields of ``rec`` into ``base``; they apply from this record on."""
    for key in ("bn", "bu", "bt", "bv", "bs"):
        if key not in rec:
            continue
        x = rec[key]
        try:
            if key == "bn":
                base.name = _string(x, key)
            elif key == "bu":
                base.unit = _string(x, key)
            elif key == "bt":
                base.time = _number(x, key)
            elif key == "bv":
                base.value = _number(x, key)
            else:
                _number(x, key)  # bs: sums are not stored, only checked
        except _Reject as bad:
            base.broken[key] = f"{bad.detail} (record {i})"
        else:
            base.broken.pop(key, None)


def _resolve(base: _Base, rec: dict[str, object], now: float) -> Candidate:
    """One record resolved against the base fields in force; raises _Reject."""
    if base.broken:
        why = next(iter(base.broken.values()))
        raise _Reject(BAD_SENML, f"base field {why}; the records it applies to cannot be resolved")
    sensor, quantity = _name(base, rec)
    unit = _string(rec["u"], "u") if "u" in rec else base.unit
    return Candidate(sensor, quantity, _time(base, rec, now), _value(base, rec), unit)


def _name(base: _Base, rec: dict[str, object]) -> tuple[str, str]:
    """(sensor, quantity) from bn + n."""
    n = rec.get("n", "")  # absent: "" (bn names the record); null: rejected below
    if type(n) is not str:
        raise _Reject(BAD_SENML, f"n is {json_kind(n)}, not a string")
    name = base.name + n
    parts = _split(name)
    if parts is None:
        raise _Reject(BAD_SENML, _bad_name(name))
    return parts


@functools.lru_cache(maxsize=1 << 16)
def _split(name: str) -> tuple[str, str] | None:
    """(sensor, quantity) of a valid name, else None. Cached: a gateway repeats its names in
    every pack, and the pattern match is the dearest step of resolving a record."""
    m = _SENSOR_QUANTITY.fullmatch(name)
    return None if m is None else (m[1], m[2])


def _bad_name(name: str) -> str:
    """Why ``name`` is not a valid '<sensor_id>:<quantity>' (the slow path, for the detail)."""
    if not name:
        return "the record has no name: neither bn nor n"
    if _NAME.fullmatch(name) is None:
        return (
            f"name {clip(name)} breaks RFC 8428's rules: it must start with a letter or digit "
            "and use only A-Z a-z 0-9 - : . / _"
        )
    cut = max(name.rfind(":"), name.rfind("/"))
    if cut < 0:
        return f"name {clip(name)} is not '<sensor_id>:<quantity>' (no ':' or '/')"
    return f"name {clip(name)} has no quantity after the last ':' or '/'"


def _time(base: _Base, rec: dict[str, object], now: float) -> float:
    """Resolved event time in epoch seconds."""
    t = rec.get("t", 0.0)
    if type(t) is not float and type(t) is not int:  # not isinstance: bool is no number
        raise _Reject(BAD_SENML, f"t is {json_kind(t)}, not a number")
    t += base.time
    if "ut" in rec:
        _number(rec["ut"], "ut")  # update time: checked, not used
    if t < RELATIVE_LIMIT:  # RFC 8428 section 4.5.3: relative to now (0 = now, -5 = 5 s ago)
        t += now
    if not EPOCH_MIN <= t <= EPOCH_MAX:  # also false for inf and NaN
        raise _Reject(BAD_TIME, f"resolved time {t!r} is outside the years 0001-9999")
    return float(t)


def _value(base: _Base, rec: dict[str, object]) -> float:
    """Resolved numeric value: bv + v, or bv alone."""
    if "s" in rec:
        _number(rec["s"], "s")
    others = not _OTHER_VALUES.isdisjoint(rec)
    if "v" in rec:
        if others:
            raise _Reject(BAD_SENML, "the record has more than one of v, vs, vb, vd")
        v = _number(rec["v"], "v")
        value = v if base.value is None else base.value + v
        if not math.isfinite(value):
            raise _Reject(NOT_FINITE, f"bv + v = {value!r}")
        return value
    if others:
        fields = ", ".join(sorted(_OTHER_VALUES.intersection(rec)))
        raise _Reject(NON_NUMERIC, f"string/boolean/data values are not stored ({fields})")
    if "s" in rec:
        raise _Reject(NON_NUMERIC, "the record has only a sum (s); sums are not stored")
    if base.value is None:
        raise _Reject(
            BAD_SENML, "the record has no value: none of v, vs, vb, vd, s, and no bv in force"
        )
    return base.value


def _number(x: object, what: str) -> float:
    # `type(x) is` rather than isinstance: bool is an int subclass but never a number here.
    if type(x) is float:
        return x
    if type(x) is int:
        return float(x)
    raise _Reject(BAD_SENML, f"{what} is {json_kind(x)}, not a number")


def _string(x: object, what: str) -> str:
    if type(x) is str:
        return x
    raise _Reject(BAD_SENML, f"{what} is {json_kind(x)}, not a string")
