"""Sparkplug B (Eclipse Sparkplug 3.0) edge nodes -> candidate readings, availability, rebirths.

Each Sparkplug group is described by a mapping file (TOML, one per group, listed in
PUSAT_SPARKPLUG_MAPPINGS)::

    group = "Putrajaya"                 # the group id in the topics
    [gateways]                          # edge node id -> Pusat gateway id (default: the node id)
    "PS-Presint9" = "ps-presint9"
    [sensors]                           # "<node>" or "<node>/<device>" -> sensor id; default:
    "PS-Presint9/WetWell" = "WL-PS9-1"  # the node id, or "<node>.<device>"
    [metrics."Level"]                   # a metric name -> quantity, unit (catalogue rules)
    quantity = "water_level"
    unit = "m"                          # optional: else the metric's engUnit property, else
    scale = 1.0                         # the canonical unit; scale applied before conversion

A numeric or Boolean metric (Boolean as 1/0) without an entry is read as the quantity of its own
name in the unit its birth certificate gave (``engUnit``), so it is stored (or quarantined in
strict mode), never dropped. String, Text, UUID, DateTime, Bytes, File, DataSet, Template and
array metrics describe a node rather than measure: they are not readings unless the mapping
names them (then non_numeric). ``bdSeq`` and the ``Node Control/`` and ``Device Control/``
metrics are the protocol's own.

Topics ``spBv1.0/<group>/{NBIRTH,NDATA,NDEATH}/<node>`` and
``spBv1.0/<group>/{DBIRTH,DDATA,DDEATH}/<node>/<device>``. An edge node is a Pusat gateway; each
of its devices is a gateway ``<node gateway>.<device>`` too, so births say online and deaths
offline per node and per device (an NDEATH ends its devices with it), and freshness is per
device. Event time is the metric's timestamp, else the payload's (milliseconds, UTC).

State per edge node lives in a ``Host`` across batches: the birth certificates' aliases,
datatypes and units, the session's ``bdSeq`` and the last ``seq``. A data message before any
birth, a ``seq`` that skips, or an alias no birth declared makes the host ask the node for a
rebirth: an NCMD ``Node Control/Rebirth`` that the worker publishes between batches (never from
the MQTT callback), at most once per node every REBIRTH_EVERY_S. A message whose ``seq`` skips is
still read (its aliases are known). An NDEATH whose ``bdSeq`` is not the live session's is an old
session's last will and changes nothing. The state is kept in memory: after a restart the first
data of each node is quarantined (no_birth) until the rebirth it asks for arrives; replaying the
quarantine then stores it.

What becomes a rejection (reason, scope), besides those of unit conversion and validation:

- bytes that are not a Sparkplug B payload ......... bad_payload, whole message
- a message without a timestamp ................... bad_payload, whole message
- data from a node or device with no birth yet .... no_birth, whole message
- a metric alias no birth declared ................ unknown_alias, that metric only
- a birth certificate's metric without a name ...... bad_payload, that metric only
- a mapped metric that is not a number ............ non_numeric, that metric only
- a metric value that is NaN or infinite .......... not_finite, that metric only
- a timestamp past the year 9999 .................. bad_time, that metric only
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError

from ingest.records import (
    BAD_PAYLOAD,
    BAD_TIME,
    NO_BIRTH,
    NON_NUMERIC,
    NOT_FINITE,
    UNKNOWN_ALIAS,
    Columns,
    Decoded,
)
from ingest.sparkplug_proto.sparkplug_b_pb2 import Payload
from ingest.timeparse import EPOCH_MAX

NAMESPACE = "spBv1.0"
NODE_TYPES = ("NBIRTH", "NDATA", "NDEATH")
DEVICE_TYPES = ("DBIRTH", "DDATA", "DDEATH")
REBIRTH = "Node Control/Rebirth"
REBIRTH_EVERY_S = 5.0  # a node still out of step after this is asked again

# Sparkplug datatypes (the specification's DataType enumeration): integers by bit width and
# signedness, then the other readable ones.
SIGNED_BITS = {1: 8, 2: 16, 3: 32, 4: 64}  # Int8, Int16, Int32, Int64
UNSIGNED = frozenset({5, 6, 7, 8})  # UInt8 .. UInt64
FLOAT, DOUBLE, BOOLEAN = 9, 10, 11
DATATYPE_NAMES = {
    0: "Unknown", 1: "Int8", 2: "Int16", 3: "Int32", 4: "Int64", 5: "UInt8", 6: "UInt16",
    7: "UInt32", 8: "UInt64", 9: "Float", 10: "Double", 11: "Boolean", 12: "String",
    13: "DateTime", 14: "Text", 15: "UUID", 16: "DataSet", 17: "Bytes", 18: "File",
    19: "Template", 20: "PropertySet", 21: "PropertySetList",
}  # fmt: skip
READABLE = frozenset({*SIGNED_BITS, *UNSIGNED, FLOAT, DOUBLE, BOOLEAN})
PROTOCOL_PREFIXES = ("Node Control/", "Device Control/")
MAX_MS = int(EPOCH_MAX * 1000)


class MetricMap(NamedTuple):
    quantity: str
    unit: str | None
    scale: float


@dataclass(frozen=True)
class Group:
    """One mapping file: a Sparkplug group, its nodes' gateways, sensors and metrics."""

    group: str
    gateways: dict[str, str] = field(default_factory=dict)
    sensors: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, MetricMap] = field(default_factory=dict)

    def gateway(self, node: str, device: str | None = None) -> str:
        gw = self.gateways.get(node, node)
        return gw if device is None else f"{gw}.{device}"

    def sensor(self, node: str, device: str | None) -> str:
        if device is None:
            return self.sensors.get(node, node)
        return self.sensors.get(f"{node}/{device}", f"{node}.{device}")

    def subscriptions(self) -> list[str]:
        base = f"{NAMESPACE}/{self.group}/"
        return [base + t + "/+" for t in NODE_TYPES] + [base + t + "/+/+" for t in DEVICE_TYPES]


class Route(NamedTuple):
    group: Group
    kind: str  # NBIRTH, NDATA, NDEATH, DBIRTH, DDATA, DDEATH
    node: str
    device: str | None


@dataclass(frozen=True)
class Mappings:
    groups: dict[str, Group] = field(default_factory=dict)

    def subscriptions(self) -> list[str]:
        return [s for g in self.groups.values() for s in g.subscriptions()]

    def route(self, topic: str) -> Route | None:
        """The group, message type, node and device of a Sparkplug topic of a configured group;
        None for any other topic (our own NCMDs included)."""
        if not topic.startswith(NAMESPACE + "/"):
            return None
        parts = topic.split("/")
        group = self.groups.get(parts[1]) if len(parts) > 1 else None
        if group is None or not all(parts):
            return None
        if len(parts) == 4 and parts[2] in NODE_TYPES:
            return Route(group, parts[2], parts[3], None)
        if len(parts) == 5 and parts[2] in DEVICE_TYPES:
            return Route(group, parts[2], parts[3], parts[4])
        return None


def _metric_map(name: str, raw: object, where: str) -> MetricMap:
    if not isinstance(raw, dict) or not isinstance(raw.get("quantity"), str):
        raise ValueError(f"{where}: metrics.{name} needs a quantity (a string)")
    unit = raw.get("unit")
    scale = raw.get("scale", 1.0)
    if unit is not None and not isinstance(unit, str):
        raise ValueError(f"{where}: metrics.{name}.unit must be a string")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise ValueError(f"{where}: metrics.{name}.scale must be a number")
    unknown = set(raw) - {"quantity", "unit", "scale"}
    if unknown:
        raise ValueError(f"{where}: metrics.{name}: unknown keys {', '.join(sorted(unknown))}")
    return MetricMap(raw["quantity"], unit, float(scale))


def _strings(doc: dict[str, Any], key: str, where: str) -> dict[str, str]:
    table = doc.get(key, {})
    if not isinstance(table, dict) or not all(isinstance(v, str) and v for v in table.values()):
        raise ValueError(f"{where}: {key} must map ids to non-empty strings")
    return dict(table)


def parse_group(doc: dict[str, Any], where: str) -> Group:
    """A group from a mapping file's contents; ValueError naming what is wrong."""
    group = doc.get("group")
    if not isinstance(group, str) or not group or any(c in group for c in "/+#"):
        raise ValueError(f"{where}: group must be the group id in the topics (no / + #)")
    metrics = doc.get("metrics", {})
    if not isinstance(metrics, dict):
        raise ValueError(f"{where}: metrics must be a table of metric tables")
    unknown = set(doc) - {"group", "gateways", "sensors", "metrics"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    return Group(
        group=group,
        gateways=_strings(doc, "gateways", where),
        sensors=_strings(doc, "sensors", where),
        metrics={k: _metric_map(k, v, where) for k, v in metrics.items()},
    )


def load(paths: list[Path]) -> Mappings:
    """The mapping files at ``paths``; ValueError (naming the file) for a bad one."""
    groups: dict[str, Group] = {}
    for path in paths:
        where = f"Sparkplug mapping {path}"
        try:
            doc = tomllib.loads(path.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{where}: {e}") from e
        g = parse_group(doc, where)
        if g.group in groups:
            raise ValueError(f"{where}: group {g.group} twice")
        groups[g.group] = g
    return Mappings(groups)


# -- the host's state -------------------------------------------------------------------------


class Declared(NamedTuple):
    """A metric as a birth certificate declared it, and how its values read (worked out once
    per birth, not per value)."""

    name: str
    datatype: int
    quantity: str | None  # None: not a reading (the protocol's own, or not a number)
    unit: str | None  # the mapping's, else the birth's engUnit
    scale: float
    fields: frozenset[str]  # the value fields that fit the datatype
    bits: int  # a signed integer's width (two's complement in an unsigned field), else 0
    refused: str | None  # why a mapped metric cannot be read (non_numeric), else None


FLOAT_FIELDS = frozenset({"float_value", "double_value"})
BOOLEAN_FIELDS = frozenset({"boolean_value"})
INTEGER_FIELDS = frozenset({"int_value", "long_value"})


def declare(g: Group, name: str, datatype: int, eng_unit: str | None) -> Declared:
    """How metric ``name`` of ``datatype`` reads under the group's mapping."""
    mapped = g.metrics.get(name)
    none = frozenset[str]()
    if name == "bdSeq" or name.startswith(PROTOCOL_PREFIXES):
        return Declared(name, datatype, None, None, 1.0, none, 0, None)
    if datatype not in READABLE:
        kind = DATATYPE_NAMES.get(datatype, f"datatype {datatype}")
        why = f"{name[:60]} is a {kind} metric" if mapped is not None else None
        return Declared(name, datatype, None, None, 1.0, none, 0, why)
    fields = (
        FLOAT_FIELDS
        if datatype in (FLOAT, DOUBLE)
        else BOOLEAN_FIELDS
        if datatype == BOOLEAN
        else INTEGER_FIELDS
    )
    bits = SIGNED_BITS.get(datatype, 0)
    if mapped is None:
        return Declared(name, datatype, name, eng_unit, 1.0, fields, bits, None)
    unit = mapped.unit if mapped.unit is not None else eng_unit
    return Declared(name, datatype, mapped.quantity, unit, mapped.scale, fields, bits, None)


@dataclass
class Session:
    """An edge node's live session: from its NBIRTH to its NDEATH."""

    bd_seq: int | None
    seq: int
    metrics: dict[int, Declared] = field(default_factory=dict)  # node metrics by alias
    by_name: dict[str, Declared] = field(default_factory=dict)
    devices: dict[str, dict[int, Declared]] = field(default_factory=dict)  # by alias
    device_names: dict[str, dict[str, Declared]] = field(default_factory=dict)


class Status(NamedTuple):
    gateway: str
    status: str  # online | offline


class Event(NamedTuple):
    """What one Sparkplug message gave: readings, rejections and availability changes."""

    decoded: Decoded
    statuses: list[Status]


@dataclass
class Host:
    """The host application's view of every edge node (see the module docstring)."""

    mappings: Mappings
    sessions: dict[tuple[str, str], Session] = field(default_factory=dict)
    _wanted: dict[tuple[str, str], float] = field(default_factory=dict)  # rebirths to ask for
    _asked: dict[tuple[str, str], float] = field(default_factory=dict)  # when last asked
    gaps: int = 0  # seq gaps seen, for the logs

    def want_rebirth(self, group: str, node: str, now: float) -> None:
        self._wanted.setdefault((group, node), now)

    def rebirths(self, now: float) -> list[tuple[str, bytes]]:
        """The NCMD messages (topic, payload) to publish now; each node at most once every
        REBIRTH_EVERY_S."""
        out: list[tuple[str, bytes]] = []
        for key in list(self._wanted):
            if now - self._asked.get(key, -math.inf) < REBIRTH_EVERY_S:
                continue
            del self._wanted[key]
            self._asked[key] = now
            group, node = key
            out.append((f"{NAMESPACE}/{group}/NCMD/{node}", rebirth_payload(now)))
        return out

    def decode(
        self, route: Route, payload: bytes, now: float, cols: Columns | None = None
    ) -> Event:
        """Decode one Sparkplug message and update the node's state; never raises on input.
        With ``cols`` the readings are appended there (the pipeline's columns) instead of to
        the event's ``decoded.readings``."""
        out = Decoded()
        statuses: list[Status] = []
        try:
            msg = Payload.FromString(payload)
        except DecodeError as err:
            out.reject(BAD_PAYLOAD, f"not a Sparkplug B payload: {err}")
            return Event(out, statuses)
        g, node, device = route.group, route.node, route.device
        key = (g.group, node)
        session = self.sessions.get(key)
        if route.kind == "NDEATH":
            bd = _bd_seq(msg)
            if session is None or session.bd_seq is None or bd is None or bd == session.bd_seq:
                self._end(route, session, statuses)
            return Event(out, statuses)
        if route.kind == "NBIRTH":
            session = Session(bd_seq=_bd_seq(msg), seq=msg.seq if msg.HasField("seq") else 0)
            self.sessions[key] = session
            self._wanted.pop(key, None)
            statuses.append(Status(g.gateway(node), "online"))
        elif session is None:
            what = f"device {device} of " if device else ""
            out.reject(NO_BIRTH, f"{what}edge node {node}: no NBIRTH seen; rebirth requested")
            self.want_rebirth(g.group, node, now)
            return Event(out, statuses)
        else:
            self._check_seq(route, session, msg, now)
        if not msg.HasField("timestamp"):
            out.reject(BAD_PAYLOAD, f"{route.kind} without a timestamp")
            return Event(out, statuses)
        if route.kind == "DBIRTH":
            assert device is not None
            session.devices[device] = {}
            session.device_names[device] = {}
            statuses.append(Status(g.gateway(node, device), "online"))
        elif route.kind == "DDEATH":
            assert device is not None
            session.devices.pop(device, None)
            session.device_names.pop(device, None)
            statuses.append(Status(g.gateway(node, device), "offline"))
            return Event(out, statuses)
        elif route.kind == "DDATA":
            assert device is not None
            if device not in session.devices:
                out.reject(NO_BIRTH, f"device {device} of edge node {node}: no DBIRTH seen")
                self.want_rebirth(g.group, node, now)
                return Event(out, statuses)
        birth = route.kind in ("NBIRTH", "DBIRTH")
        if device is None:
            aliases, names = session.metrics, session.by_name
        else:
            aliases, names = session.devices[device], session.device_names[device]
        own = cols is None
        target = Columns() if cols is None else cols
        self._metrics(route, msg, birth, aliases, names, out, now, target)
        if own:
            out.readings = target.rows()
        return Event(out, statuses)

    def _check_seq(self, route: Route, session: Session, msg: Payload, now: float) -> None:
        seq = msg.seq if msg.HasField("seq") else None
        expected = (session.seq + 1) % 256
        if seq != expected:
            self.gaps += 1
            self.want_rebirth(route.group.group, route.node, now)
        if seq is not None:
            session.seq = seq % 256

    def _end(self, route: Route, session: Session | None, statuses: list[Status]) -> None:
        g, node = route.group, route.node
        statuses.append(Status(g.gateway(node), "offline"))
        if session is not None:
            statuses.extend(Status(g.gateway(node, d), "offline") for d in session.devices)
        self.sessions.pop((g.group, node), None)

    def _metrics(
        self,
        route: Route,
        msg: Payload,
        birth: bool,
        aliases: dict[int, Declared],
        names: dict[str, Declared],
        out: Decoded,
        now: float,
        cols: Columns,
    ) -> None:
        """The readings of a message's metrics, appended to ``cols`` column by column (the
        per-metric cost is most of a DDATA's: kept to a few lookups)."""
        g = route.group
        sensor = g.sensor(route.node, route.device)
        default_ms = msg.timestamp
        quantities, times, values, units = cols.quantity, cols.ts, cols.value, cols.unit
        before = len(quantities)
        by_name, by_alias = names.get, aliases.get
        for i, m in enumerate(msg.metrics):
            name = m.name
            if birth:
                if not name:
                    out.reject(BAD_PAYLOAD, f"{sensor}: a birth certificate metric has no name", i)
                    continue
                d = declare(g, name, m.datatype, _eng_unit(m))
                if m.HasField("alias"):
                    aliases[m.alias] = d
                names[name] = d
            else:
                # by name when it has one (a metric the birth did not list reads by its own
                # datatype), else by alias
                found = by_name(name) if name else by_alias(m.alias)
                if found is not None:
                    d = found
                elif name:
                    d = declare(g, name, m.datatype, _eng_unit(m))
                else:
                    what = f"alias {m.alias}" if m.HasField("alias") else "a metric with no name"
                    out.reject(UNKNOWN_ALIAS, f"{sensor}: {what} is in no birth certificate", i)
                    self.want_rebirth(g.group, route.node, now)
                    continue
            declared, datatype, quantity, unit, scale, fields, bits, refused = d
            if quantity is None:
                if refused is not None and not m.is_null:
                    out.reject(NON_NUMERIC, f"{sensor}: {refused}", i)
                continue
            which = m.WhichOneof("value")
            if which not in fields:
                if which is not None and not m.is_null:
                    kind = DATATYPE_NAMES.get(datatype, str(datatype))
                    out.reject(NON_NUMERIC, f"{sensor}: {declared[:60]}: {which} for {kind}", i)
                continue  # else no value at this time: nothing was measured
            if m.is_null:
                continue
            raw = getattr(m, which)
            if bits:  # two's complement in the unsigned field
                raw &= (1 << bits) - 1
                if raw >= 1 << (bits - 1):
                    raw -= 1 << bits
            value = raw * scale
            if value - value != 0.0:  # inf or NaN (cheaper than math.isfinite per metric)
                out.reject(NOT_FINITE, f"{sensor}: {declared[:60]} = {value!r}", i)
                continue
            ts_ms = m.timestamp or default_ms
            if ts_ms > MAX_MS:
                out.reject(BAD_TIME, f"{sensor}: {declared[:60]}: timestamp {ts_ms} ms", i)
                continue
            quantities.append(quantity)
            times.append(ts_ms / 1000.0)
            values.append(value)
            units.append(unit)
        cols.sensor += [sensor] * (len(quantities) - before)


def _eng_unit(m: Payload.Metric) -> str | None:
    if not m.HasField("properties"):
        return None
    props = m.properties
    for k, v in zip(props.keys, props.values, strict=False):
        if k == "engUnit" and v.WhichOneof("value") == "string_value":
            return v.string_value or None
    return None


def _bd_seq(msg: Payload) -> int | None:
    for m in msg.metrics:
        if m.name == "bdSeq":
            which = m.WhichOneof("value")
            if which == "long_value":
                return m.long_value
            if which == "int_value":
                return m.int_value
    return None


def rebirth_payload(now: float) -> bytes:
    """An NCMD payload asking for a rebirth: the Boolean metric ``Node Control/Rebirth``."""
    p = Payload(timestamp=round(now * 1000))
    p.metrics.add(name=REBIRTH, datatype=BOOLEAN, boolean_value=True)
    return p.SerializeToString()
