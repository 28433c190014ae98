"""From MQTT messages to a store batch: route by topic, decode, convert units, validate.

Messages are added one by one as the worker pulls them (decoding is the per-message cost), and the
accumulated batch is finished into columnar arrays, validated in one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ingest import lorawan, native, records, sdm, senml, sparkplug, topics
from ingest.meta import parse_meta, parse_status
from ingest.records import Columns, Decoded, Rejection
from processing import validate
from processing.catalogue import UNKNOWN, Catalogue
from store.writer import Batch, GatewayStatus, QuarantineRow, Readings, SensorMeta

DECODERS: dict[str, Callable[[bytes, float], Decoded]] = {
    "senml": senml.decode,
    "json": native.decode,
    "sdm": sdm.decode,
}
# Decoders that append readings to columns themselves, used instead of DECODERS' (same answer).
COLUMN_DECODERS: dict[str, Callable[[bytes, float, Columns], list[Rejection]]] = {
    "senml": senml.decode_into,
}
# A quarantined payload is kept whole up to this size; beyond it the head is kept and the detail
# says how large the message was, so one hostile message cannot fill the database.
QUARANTINE_KEEP_BYTES = 1024 * 1024


class Message(NamedTuple):
    """One MQTT message as the callback saw it (a tuple: made once per message, cheaply)."""

    topic: str
    payload: bytes
    received_at: float  # Unix seconds, when the MQTT callback saw it
    qos: int = 0
    mid: int = 0
    generation: int = 0  # which broker connection delivered it (acks only go back on that one)


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int
    max_skew_s: float
    horizon_s: float
    strict: bool
    # LoRaWAN applications: their topics are read too (PUSAT_LORAWAN_MAPPINGS)
    lorawan: lorawan.Mappings = field(default_factory=lorawan.Mappings)
    # Sparkplug B edge nodes (PUSAT_SPARKPLUG_MAPPINGS): the host's state of every node (births,
    # aliases, sequence numbers) lives across batches, so it is shared by each batch's accumulator
    sparkplug: sparkplug.Host | None = None


# (quantity index, scale, offset, canonical unit) for one (quantity, unit) pair
Conversion = tuple[int, float, float, str | None]


class _Conversions(NamedTuple):
    """Per reading: whether its (quantity, unit) can be stored, and how."""

    known: npt.NDArray[np.bool_]
    qidx: npt.NDArray[np.int32]
    scale: npt.NDArray[np.float64]
    offset: npt.NDArray[np.float64]
    unit: npt.NDArray[np.object_]  # the unit stored: canonical, or as given if unknown


def quarantine_row(m: Message, gateway: str | None, rej: Rejection) -> QuarantineRow:
    payload, detail = m.payload, rej.detail
    if len(payload) > QUARANTINE_KEEP_BYTES:
        detail += f" (payload of {len(payload)} bytes, first {QUARANTINE_KEEP_BYTES} kept)"
        payload = payload[:QUARANTINE_KEEP_BYTES]
    return QuarantineRow(m.received_at, m.topic, gateway, rej.reason, detail, rej.record, payload)


@dataclass
class Accumulator:
    """Readings and rejections of the messages added so far, awaiting one write."""

    topic_root: str
    catalogue: Catalogue
    limits: Limits
    messages: list[Message] = field(default_factory=list)
    _cols: Columns = field(default_factory=Columns)
    # Distinct (quantity, unit) pairs so far, numbered in order: converted once each in finish.
    _kinds: dict[tuple[str, str | None], int] = field(default_factory=dict)
    # Runs of consecutive readings of one message and one kind (a SenML pack of one quantity is
    # one run), so that per-reading message, gateway and kind are spread by NumPy in finish.
    _run_message: list[int] = field(default_factory=list)
    _run_gateway: list[str | None] = field(default_factory=list)
    _run_kind: list[int] = field(default_factory=list)
    _run_length: list[int] = field(default_factory=list)
    _mixes: dict[tuple[tuple[str, ...], tuple[str | None, ...]], list[int]] = field(
        default_factory=dict
    )
    quarantine: list[QuarantineRow] = field(default_factory=list)
    sensors: list[SensorMeta] = field(default_factory=list)
    statuses: list[GatewayStatus] = field(default_factory=list)
    gateways_seen: dict[str, float] = field(default_factory=dict)

    @property
    def readings(self) -> int:
        return len(self._cols.sensor)  # asked after every message: no Python-level __len__

    def _reject(self, m: Message, gateway: str | None, rej: Rejection) -> None:
        self.quarantine.append(quarantine_row(m, gateway, rej))

    def add(self, m: Message) -> None:
        self.messages.append(m)
        t = topics.parse(self.topic_root, m.topic)
        if t is None and (route := self.limits.lorawan.route(m.topic)) is not None:
            self._lorawan(route, m)
            return
        host = self.limits.sparkplug
        if t is None and host is not None and (spb := host.mappings.route(m.topic)) is not None:
            self._sparkplug(host, spb, m)
            return
        if t is None:
            self._reject(
                m, None, Rejection(records.BAD_TOPIC, f"topic {m.topic!r} breaks the contract")
            )
            return
        gw = t.gateway
        self.gateways_seen[gw] = max(self.gateways_seen.get(gw, 0.0), m.received_at)
        if len(m.payload) > self.limits.max_payload_bytes:
            self._reject(
                m,
                gw,
                Rejection(
                    records.TOO_LARGE,
                    f"{len(m.payload)} bytes exceeds the limit of {self.limits.max_payload_bytes}",
                ),
            )
            return
        if t.kind in ("meta", "status") and not m.payload:
            return  # an empty retained message only clears the retained one: nothing to record
        if t.kind == "meta":
            metas, rejections = parse_meta(m.payload, gw)
            self.sensors.extend(metas)
        elif t.kind == "status":
            status = parse_status(m.payload)
            if not isinstance(status, Rejection):
                self.statuses.append(GatewayStatus(gw, status.status, m.received_at, status.owner))
                return
            rejections = [status]
        else:
            rejections = self._decode(t.kind, m, gw)
        for rej in rejections:
            self._reject(m, gw, rej)

    def _lorawan(self, route: lorawan.Route, m: Message) -> None:
        """A LoRaWAN network server's event: readings under the application's gateway."""
        gw = route.app.gateway
        self.gateways_seen[gw] = max(self.gateways_seen.get(gw, 0.0), m.received_at)
        if len(m.payload) > self.limits.max_payload_bytes:
            size = f"{len(m.payload)} bytes exceeds the limit of {self.limits.max_payload_bytes}"
            self._reject(m, gw, Rejection(records.TOO_LARGE, size))
            return
        event = lorawan.decode(route, m.payload, m.received_at)
        if event.online:
            self.statuses.append(GatewayStatus(gw, "online", m.received_at))
        cols = self._cols
        before = len(cols.sensor)
        cols.extend_rows(event.decoded.readings)
        if len(cols.sensor) > before:
            self._add_runs(len(self.messages) - 1, gw, before, len(cols.sensor) - before)
        for rej in event.decoded.rejections:
            self._reject(m, gw, rej)

    def _sparkplug(self, host: sparkplug.Host, route: sparkplug.Route, m: Message) -> None:
        """A Sparkplug B message: readings under the node's (or device's) gateway."""
        gw = route.group.gateway(route.node, route.device)
        self.gateways_seen[gw] = max(self.gateways_seen.get(gw, 0.0), m.received_at)
        if len(m.payload) > self.limits.max_payload_bytes:
            size = f"{len(m.payload)} bytes exceeds the limit of {self.limits.max_payload_bytes}"
            self._reject(m, gw, Rejection(records.TOO_LARGE, size))
            return
        cols = self._cols
        before = len(cols.sensor)
        event = host.decode(route, m.payload, m.received_at, cols)
        self.statuses += [GatewayStatus(s.gateway, s.status, m.received_at) for s in event.statuses]
        if len(cols.sensor) > before:
            self._add_runs(len(self.messages) - 1, gw, before, len(cols.sensor) - before)
        for rej in event.decoded.rejections:
            self._reject(m, gw, rej)

    def _decode(self, kind: str, m: Message, gateway: str) -> list[Rejection]:
        """Decode a readings message into the columns; its rejections."""
        cols = self._cols
        before = len(cols.sensor)
        columnar = COLUMN_DECODERS.get(kind)
        if columnar is None:
            decoded = DECODERS[kind](m.payload, m.received_at)
            cols.extend_rows(decoded.readings)
            rejections = decoded.rejections
        else:  # no object per reading
            rejections = columnar(m.payload, m.received_at, cols)
        count = len(cols.sensor) - before
        if count:
            self._add_runs(len(self.messages) - 1, gateway, before, count)
        return rejections

    def _add_runs(self, message: int, gateway: str, start: int, count: int) -> None:
        """Note message, gateway and kind of the readings from ``start`` on, in as few runs as
        is cheap: one for readings of one kind (the usual message), else one per reading."""
        kinds, cols = self._kinds, self._cols
        if count == 1:
            pair = (cols.quantity[start], cols.unit[start])
        else:
            quantity, unit = cols.quantity[start:], cols.unit[start:]
            if quantity.count(quantity[0]) == count and unit.count(unit[0]) == count:
                pair = (quantity[0], unit[0])
            else:
                # A Sparkplug device's DDATA repeats the same mix of quantities message after
                # message: their kinds are looked up once per mix.
                mix = (tuple(quantity), tuple(unit))
                known = self._mixes.get(mix)
                if known is None:
                    pairs = zip(quantity, unit, strict=True)
                    known = self._mixes[mix] = [kinds.setdefault(p, len(kinds)) for p in pairs]
                self._run_kind += known
                self._run_length += [1] * count
                self._run_message += [message] * count
                self._run_gateway += [gateway] * count
                return
        self._run_kind.append(kinds.setdefault(pair, len(kinds)))
        self._run_length.append(count)
        self._run_message.append(message)
        self._run_gateway.append(gateway)

    def finish(self, provisioned: Callable[[set[str]], set[str]], now: float) -> Batch:
        """Convert units and validate everything added; ``provisioned`` answers strict mode.

        Safe to call again after a failure (for example the database answering ``provisioned``
        went away): it changes nothing in the accumulator.
        """
        cols = self._cols
        runs = np.array(self._run_length, dtype=np.intp)
        origin = np.repeat(np.array(self._run_message, dtype=np.intp), runs)
        gateway = np.repeat(np.array(self._run_gateway, dtype=object), runs)
        out = list(self.quarantine)

        def reject(i: int, rej: Rejection) -> None:
            out.append(quarantine_row(self.messages[origin[i]], gateway[i], rej))

        units = self._units(np.repeat(np.array(self._run_kind, dtype=np.intp), runs))
        keep = units.known.copy()
        if self.limits.strict and len(cols):
            allowed = provisioned(set(cols.sensor))
            unprovisioned = [s not in allowed for s in cols.sensor]
            keep &= ~np.array(unprovisioned, dtype=bool)
        else:
            unprovisioned = None
        for i in np.flatnonzero(~keep).tolist():
            gone = unprovisioned is not None and unprovisioned[i]
            reject(i, self._refusal(cols.sensor[i], cols.quantity[i], cols.unit[i], gone))
        qidx = np.where(keep, units.qidx, UNKNOWN).astype(np.int32)
        with np.errstate(over="ignore", invalid="ignore"):  # inf is caught as not_finite below
            value = np.fromiter(cols.value, np.float64, len(cols)) * units.scale + units.offset
        value[~keep] = 0.0
        ts = np.where(keep, np.fromiter(cols.ts, np.float64, len(cols)), 0.0)
        ts_us, code = self._check(qidx, value, ts, keep, now)
        for i in np.flatnonzero((code != validate.OK) & keep).tolist():
            reject(i, self._invalid(i, int(code[i]), int(qidx[i]), float(value[i]), units.unit[i]))
            keep[i] = False
        sel = np.flatnonzero(keep)
        every = len(sel) == len(cols)
        received = np.array([m.received_at for m in self.messages], dtype=np.float64)
        readings = Readings(
            sensor=_pick(cols.sensor, sel),
            quantity=_pick(cols.quantity, sel),
            unit=(units.unit if every else units.unit[sel]).tolist(),
            gateway=(gateway if every else gateway[sel]).tolist(),
            ts_us=ts_us[sel],
            value=value[sel],
            received_us=np.round(received[origin[sel]] * 1e6).astype(np.int64),
        )
        return Batch(
            readings=readings,
            quarantine=out,
            sensors=self.sensors,
            statuses=self.statuses,
            gateways_seen=self.gateways_seen,
        )

    def _check(
        self,
        qidx: npt.NDArray[np.int32],
        value: npt.NDArray[np.float64],
        ts: npt.NDArray[np.float64],
        keep: npt.NDArray[np.bool_],
        now: float,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
        """(event times in microseconds, validation code) per reading."""
        finite_ts = np.isfinite(ts)
        ts_us = np.where(finite_ts, np.round(np.where(finite_ts, ts, 0.0) * 1e6), 0).astype(
            np.int64
        )
        code = validate.check(
            self.catalogue,
            qidx,
            value,
            ts_us,
            now_us=int(now * 1e6),
            max_skew_us=int(self.limits.max_skew_s * 1e6),
            horizon_us=int(self.limits.horizon_s * 1e6),
        )
        code[~finite_ts & keep] = validate.TOO_OLD
        return ts_us, code

    def _invalid(self, i: int, code: int, qidx: int, value: float, unit: str | None) -> Rejection:
        """The rejection of reading ``i``, converted, that validation gave ``code``."""
        cols = self._cols
        q = self.catalogue.quantities[qidx] if qidx != UNKNOWN else None
        detail = validate.describe(
            code,
            cols.quantity[i],
            value,
            unit or "",
            q.min if q else -np.inf,
            q.max if q else np.inf,
        )
        return Rejection(validate.REASONS[code], f"{cols.sensor[i]}: {detail}")

    def _refusal(
        self, sensor: str, quantity: str, unit: str | None, unprovisioned: bool
    ) -> Rejection:
        if unprovisioned:
            reason, detail = records.UNKNOWN_SENSOR, "sensor is not provisioned"
        elif (q := self.catalogue.get(quantity)) is None:
            reason, detail = records.UNKNOWN_QUANTITY, f"{quantity!r} is not in the catalogue"
        else:
            reason = records.UNKNOWN_UNIT
            detail = (
                f"{quantity}: unit {unit!r} is not accepted"
                f" (accepted: {', '.join(sorted(q.units))})"
            )
        return Rejection(reason, f"{sensor}: {detail}")

    def _units(self, kind: npt.NDArray[np.intp]) -> _Conversions:
        """Unit conversion per reading of each ``kind``, looked up once per kind."""
        convs = [self._conversion(q, u) for q, u in self._kinds]
        return _Conversions(
            known=np.array([c is not None for c in convs], dtype=bool)[kind],
            qidx=np.array([c[0] if c else UNKNOWN for c in convs], dtype=np.int32)[kind],
            scale=np.array([c[1] if c else 1.0 for c in convs], dtype=np.float64)[kind],
            offset=np.array([c[2] if c else 0.0 for c in convs], dtype=np.float64)[kind],
            unit=np.array([c[3] if c else None for c in convs], dtype=object)[kind],
        )

    def _conversion(self, quantity: str, unit: str | None) -> Conversion | None:
        """(quantity index, scale, offset, canonical unit), or None when it cannot be stored."""
        cat = self.catalogue
        q = cat.get(quantity)
        if q is None:
            # Unknown quantities are stored as given unless strict mode forbids them.
            return None if self.limits.strict else (UNKNOWN, 1.0, 0.0, unit)
        conv = cat.conversion(quantity, unit)
        if conv is None:
            return None
        return cat.index[quantity], conv[0], conv[1], q.unit


def _pick(column: list[str], sel: npt.NDArray[np.intp]) -> list[str]:
    """column[i] for i in sel (a copy)."""
    if len(sel) == len(column):
        return list(column)
    return [column[i] for i in sel.tolist()]
