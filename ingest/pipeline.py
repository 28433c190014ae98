"""From MQTT messages to a store batch: route by topic, decode, convert units, validate.

Messages are added one by one as the worker pulls them (decoding is the per-message cost), and the
accumulated batch is finished into columnar arrays, validated in one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ingest import native, records, sdm, senml, topics
from ingest.meta import parse_meta, parse_status
from ingest.records import Candidate, Decoded, Rejection
from processing import validate
from processing.catalogue import UNKNOWN, Catalogue
from store.writer import Batch, GatewayStatus, QuarantineRow, Readings, SensorMeta

DECODERS: dict[str, Callable[[bytes, float], Decoded]] = {
    "senml": senml.decode,
    "json": native.decode,
    "sdm": sdm.decode,
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


# (quantity index, scale, offset, canonical unit) for one (quantity, unit) pair
Conversion = tuple[int, float, float, str | None]


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
    _cand: list[Candidate] = field(default_factory=list)
    _origin: list[int] = field(default_factory=list)  # message index per candidate
    _gateway: list[str | None] = field(default_factory=list)
    quarantine: list[QuarantineRow] = field(default_factory=list)
    sensors: list[SensorMeta] = field(default_factory=list)
    statuses: list[GatewayStatus] = field(default_factory=list)
    gateways_seen: dict[str, float] = field(default_factory=dict)

    @property
    def readings(self) -> int:
        return len(self._cand)

    def _reject(self, m: Message, gateway: str | None, rej: Rejection) -> None:
        self.quarantine.append(quarantine_row(m, gateway, rej))

    def add(self, m: Message) -> None:
        self.messages.append(m)
        t = topics.parse(self.topic_root, m.topic)
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
            if isinstance(status, str):
                self.statuses.append(GatewayStatus(gw, status, m.received_at))
                return
            rejections = [status]
        else:
            decoded = DECODERS[t.kind](m.payload, m.received_at)
            index = len(self.messages) - 1
            self._cand.extend(decoded.readings)
            self._origin.extend([index] * len(decoded.readings))
            self._gateway.extend([gw] * len(decoded.readings))
            rejections = decoded.rejections
        for rej in rejections:
            self._reject(m, gw, rej)

    def finish(self, provisioned: Callable[[set[str]], set[str]], now: float) -> Batch:
        """Convert units and validate everything added; ``provisioned`` answers strict mode.

        Safe to call again after a failure (for example the database answering ``provisioned``
        went away): it changes nothing in the accumulator.
        """
        cat = self.catalogue
        out = list(self.quarantine)
        n = len(self._cand)
        # Per-candidate work is plain lists (cheaper than NumPy scalar writes); arrays come after.
        qidx_l: list[int] = [UNKNOWN] * n
        value_l: list[float] = [0.0] * n
        ts_l: list[float] = [0.0] * n
        unit: list[str | None] = [None] * n
        keep_l: list[bool] = [True] * n
        conversions: dict[tuple[str, str | None], Conversion | None] = {}
        strict = self.limits.strict
        allowed = provisioned({c.sensor for c in self._cand}) if strict and n else set()
        for i, c in enumerate(self._cand):
            key = (c.quantity, c.unit)
            if key in conversions:
                conv = conversions[key]
            else:
                conv = conversions[key] = self._conversion(c.quantity, c.unit)
            if conv is not None and not (strict and c.sensor not in allowed):
                qidx_l[i], scale, offset, unit[i] = conv
                value_l[i] = c.value * scale + offset
                ts_l[i] = c.ts
                continue
            keep_l[i] = False
            m = self.messages[self._origin[i]]
            rej = self._refusal(c, strict and c.sensor not in allowed)
            out.append(quarantine_row(m, self._gateway[i], rej))
        qidx = np.array(qidx_l, dtype=np.int32)
        value = np.array(value_l, dtype=np.float64)
        ts = np.array(ts_l, dtype=np.float64)
        keep = np.array(keep_l, dtype=bool)
        finite_ts = np.isfinite(ts)
        ts_us = np.where(finite_ts, np.round(np.where(finite_ts, ts, 0.0) * 1e6), 0).astype(
            np.int64
        )
        code = validate.check(
            cat,
            qidx,
            value,
            ts_us,
            now_us=int(now * 1e6),
            max_skew_us=int(self.limits.max_skew_s * 1e6),
            horizon_us=int(self.limits.horizon_s * 1e6),
        )
        code[~finite_ts & keep] = validate.TOO_OLD
        for i in np.flatnonzero((code != validate.OK) & keep).tolist():
            c = self._cand[i]
            q = cat.quantities[qidx[i]] if qidx[i] != UNKNOWN else None
            detail = validate.describe(
                int(code[i]),
                c.quantity,
                float(value[i]),
                unit[i] or "",
                q.min if q else -np.inf,
                q.max if q else np.inf,
            )
            m = self.messages[self._origin[i]]
            out.append(
                quarantine_row(
                    m,
                    self._gateway[i],
                    Rejection(validate.REASONS[int(code[i])], f"{c.sensor}: {detail}"),
                )
            )
            keep[i] = False
        sel = np.flatnonzero(keep)
        chosen = sel.tolist()
        received = np.array([self.messages[o].received_at for o in self._origin], dtype=np.float64)
        readings = Readings(
            sensor=[self._cand[i].sensor for i in chosen],
            quantity=[self._cand[i].quantity for i in chosen],
            unit=[unit[i] for i in chosen],
            gateway=[self._gateway[i] for i in chosen],
            ts_us=ts_us[sel],
            value=value[sel],
            received_us=np.round(received[sel] * 1e6).astype(np.int64)
            if n
            else np.empty(0, np.int64),
        )
        return Batch(
            readings=readings,
            quarantine=out,
            sensors=self.sensors,
            statuses=self.statuses,
            gateways_seen=self.gateways_seen,
        )

    def _refusal(self, c: Candidate, unprovisioned: bool) -> Rejection:
        if unprovisioned:
            reason, detail = records.UNKNOWN_SENSOR, "sensor is not provisioned"
        elif (q := self.catalogue.get(c.quantity)) is None:
            reason, detail = records.UNKNOWN_QUANTITY, f"{c.quantity!r} is not in the catalogue"
        else:
            reason = records.UNKNOWN_UNIT
            detail = (
                f"{c.quantity}: unit {c.unit!r} is not accepted"
                f" (accepted: {', '.join(sorted(q.units))})"
            )
        return Rejection(reason, f"{c.sensor}: {detail}")

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
