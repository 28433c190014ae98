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

Long packs of the usual shape (a head record with the base fields, then records of n, u, v, t
only) are resolved column by column (``_fast``); any pack that path is unsure of is resolved
record by record (``_general``), which is the reference: both give the same answer.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import permutations, repeat
from typing import cast

import orjson

from ingest.records import (
    BAD_SENML,
    BAD_TIME,
    MALFORMED_JSON,
    MUST_UNDERSTAND,
    NON_NUMERIC,
    NOT_FINITE,
    Candidate,
    Columns,
    Decoded,
    Rejection,
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
    pack = _load(payload)
    if isinstance(pack, Rejection):
        return Decoded(rejections=[pack])
    cols = Columns()
    if len(pack) >= FAST_MIN_RECORDS and _fast(pack, now, cols):
        return Decoded(cols.rows())
    return _general(pack, now)


def decode_into(payload: bytes, now: float, out: Columns) -> list[Rejection]:
    """``decode`` for the pipeline: the readings are appended to ``out`` column by column (no
    object per reading on the common path); answers the rejections."""
    pack = _load(payload)
    if isinstance(pack, Rejection):
        return [pack]
    if len(pack) >= FAST_MIN_RECORDS and _fast(pack, now, out):
        return []
    decoded = _general(pack, now)
    out.extend_rows(decoded.readings)
    return decoded.rejections


def _load(payload: bytes) -> list[object] | Rejection:
    """The pack's records, or why the message as a whole is not a pack."""
    try:
        pack = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        return Rejection(MALFORMED_JSON, f"not JSON: {err}")
    if type(pack) is not list:
        hint = "; wrap a single record in [ ]" if type(pack) is dict else ""
        return Rejection(
            BAD_SENML, f"a SenML pack is a JSON array of records, not {json_kind(pack)}{hint}"
        )
    return pack


def _general(pack: list[object], now: float) -> Decoded:
    """Every record resolved one by one by the full RFC 8428 rules, with every rejection."""
    out = Decoded()
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


# -- the fast path ------------------------------------------------------------------------------
# Most packs are one sensor's: a head record with bn (bt, bu) and maybe a reading, then plain
# records of n, u, v and t. Those are resolved column by column, with list operations rather than
# a function call per field. Anything else, or anything the general path would reject, is left to
# the general path, so the result is always the general path's.

# Below this many records the column machinery costs more than resolving record by record.
FAST_MIN_RECORDS = 8
_HEAD_FIELDS = frozenset({"bn", "bt", "bu", "bver", "n", "u", "v", "t"})
_PLAIN_FIELDS = ("n", "u", "t", "v")  # the fields a plain record may hold
_NUMBERS = frozenset({int, float})
_FLOATS = frozenset({float})
_DICTS = frozenset({dict})
# A getter for each way a plain record may list its fields (two or more, v among them), keyed by
# that order, so that a record's own key order finds it.
_GETTERS = {
    fields: operator.itemgetter(*fields)
    for size in range(2, len(_PLAIN_FIELDS) + 1)
    for fields in permutations(_PLAIN_FIELDS, size)
    if "v" in fields
}


class _Missing:
    """Marks a field a record does not hold, in a column of values of several records."""


_MISSING = _Missing()

Column = Sequence[object]  # one field's values, record by record (_MISSING where absent)
# Resolved plain records: sensor, quantity, ts, value and unit columns, ready to append.
_Rest = tuple[Iterable[str], Iterable[str], Iterable[float], Iterable[float], Iterable[str | None]]


def _fast(pack: list[object], now: float, out: Columns) -> bool:
    """Append the pack's readings to ``out``, resolved column-wise, if it is of the common shape
    with nothing to reject in it; else False, ``out`` untouched."""
    if not pack:
        return False
    head = pack[0]
    if type(head) is not dict or not head.keys() <= _HEAD_FIELDS:
        return False
    if "bver" in head and _pack_problem([head]) is not None:  # an unusable version
        return False
    base = _Base()
    _apply_base(base, head, 0)
    if base.broken:
        return False
    first: list[Candidate] = []
    if _BASE_FIELDS.isdisjoint(head) or not _RECORD_FIELDS.isdisjoint(head):  # not a header
        try:
            first.append(_resolve(base, head, now))
        except _Reject:
            return False
    rest = None
    if len(pack) > 1:
        cols = _plain_columns(pack[1:])
        rest = None if cols is None else _resolve_columns(base, cols, len(pack) - 1, now)
        if rest is None:
            return False
    out.extend_rows(first)
    if rest is not None:
        out.extend_columns(*rest)
    return True


def _plain_columns(rest: list[object]) -> dict[str, Column] | None:
    """Field -> its values, when every record is an object of plain fields only; else None."""
    first = rest[0]
    if type(first) is not dict:
        return None
    fields = tuple(first)
    getter = _GETTERS.get(fields)
    if getter is not None:
        # Records shaped like the first: one C-level getter call per record, then transposed.
        # The getter checks they are objects: anything else raises TypeError.
        records = cast("list[dict[str, object]]", rest)
        try:
            rows = list(map(getter, records))
        except (KeyError, TypeError):  # a record lacks a field, or is not an object
            rows = None
        if rows is not None and sum(map(len, records)) == len(fields) * len(records):
            return dict(zip(fields, zip(*rows, strict=True), strict=True))
    return _mixed_columns(rest)


def _mixed_columns(rest: list[object]) -> dict[str, Column] | None:
    """Like _plain_columns, for records that hold different plain fields."""
    if set(map(type, rest)) != _DICTS:
        return None
    records = cast("list[dict[str, object]]", rest)
    cols: dict[str, Column] = {}
    held = 0
    for f in _PLAIN_FIELDS:
        col = [r.get(f, _MISSING) for r in records]
        absent = col.count(_MISSING)
        if absent < len(col):
            cols[f] = col
            held += len(col) - absent
    if held != sum(map(len, records)):  # some record holds another field
        return None
    return cols


def _resolve_columns(base: _Base, cols: dict[str, Column], count: int, now: float) -> _Rest | None:
    """The readings of ``count`` plain records, column by column (lazily: nothing that remains
    to be done can fail); None when one of them needs the general path."""
    if "v" not in cols:
        return None
    values = _values(cols["v"])
    times = _times(cols.get("t"), count, base.time, now)
    names = _names(cols.get("n"), count, base.name)
    units = _units(cols.get("u"), count, base.unit)
    if values is None or times is None or names is None or units is None:
        return None
    return names[0], names[1], times, values, units


def _values(col: Column) -> Iterable[float] | None:
    """v as floats: bv is not in force here, so the value is v itself (finite: orjson refuses
    NaN and Infinity, and its integers fit a float)."""
    types = set(map(type, col))
    if not types <= _NUMBERS:  # a string, boolean, null, ... or a record without v
        return None
    numbers = cast("Sequence[float]", col)
    return numbers if types == _FLOATS else map(float, numbers)


def _times(col: Column | None, count: int, bt: float, now: float) -> Iterable[float] | None:
    """Resolved event times, by the same operations as _time: bt + t, then + now if relative."""
    if col is None:
        col = (0.0,) * count  # as _time: no t means 0
    types = set(map(type, col))
    if not types <= _NUMBERS:
        if not types - _NUMBERS <= {_Missing}:
            return None
        col = [0.0 if t is _MISSING else t for t in col]
    ts = cast("Sequence[float]", col)
    # Rounded additions never decrease as t grows: the extreme t give the extreme times.
    # (Sums of finite numbers are never NaN, so the comparisons below are meaningful.)
    low, high = bt + min(ts), bt + max(ts)
    if low >= RELATIVE_LIMIT:  # all absolute
        return None if high > EPOCH_MAX else map(bt.__add__, ts)  # t + bt: addition commutes
    if high < RELATIVE_LIMIT:  # all relative to now (RFC 8428 section 4.5.3)
        if low + now < EPOCH_MIN or high + now > EPOCH_MAX:
            return None
        return [bt + t + now for t in ts]
    mixed = [t + now if t < RELATIVE_LIMIT else t for t in map(bt.__add__, ts)]
    return None if min(mixed) < EPOCH_MIN or max(mixed) > EPOCH_MAX else mixed


def _names(col: Column | None, count: int, bn: str) -> tuple[Iterable[str], Iterable[str]] | None:
    """(sensors, quantities) from bn + n, each distinct n split once."""
    if col is None:
        col = ("",) * count  # no n anywhere: bn names every record
    first = col[0]
    if type(first) is str and col.count(first) == count:  # one name for all (no hashing)
        parts = _split(bn + first)
        return None if parts is None else (repeat(parts[0], count), repeat(parts[1], count))
    try:
        distinct = set(col)
    except TypeError:  # an array or object: not a name
        return None
    sensors: dict[object, str] = {}
    quantities: dict[object, str] = {}
    for n in distinct:
        if n is _MISSING:
            parts = _split(bn)
        elif type(n) is str:
            parts = _split(bn + n)
        else:
            return None
        if parts is None:
            return None
        sensors[n], quantities[n] = parts
    return _spread(sensors, col, count), _spread(quantities, col, count)


def _spread(by_key: dict[object, str], keys: Column, count: int) -> Iterable[str]:
    """by_key[k] for each k of ``keys``."""
    distinct = set(by_key.values())
    if len(distinct) == 1:  # one sensor, or one quantity, for the whole column
        return repeat(distinct.pop(), count)
    return map(by_key.__getitem__, keys)


def _units(col: Column | None, count: int, bu: str | None) -> Iterable[str | None] | None:
    """u, else bu, per record."""
    if col is None:
        return repeat(bu, count)
    first = col[0]
    if type(first) is str and col.count(first) == count:  # one unit for all
        return repeat(first, count)  # one object: later equality checks are identity checks
    try:
        distinct = set(col)
    except TypeError:
        return None
    if not all(type(u) is str or u is _MISSING for u in distinct):
        return None
    if _MISSING in distinct:
        return [bu if u is _MISSING else cast(str, u) for u in col]
    return cast("Sequence[str]", col)


# -- the general path ---------------------------------------------------------------------------


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
