"""Some of the city's gateways speak real gateway dialects: LoRaWAN and Sparkplug B.

``GatewaySink`` wraps the usual sink (``pusat simulate city --gateways lorawan,sparkplug``):

- ``lorawan``: every LORAWAN_EVERY-th district gateway (by name) is a ChirpStack v4 application
  ``pusat-sim-<gateway>``; each of its sensors is a device whose uplinks carry the codec's
  ``object`` of the readings in canonical units, on
  ``application/<app>/device/<devEui>/event/up``.
- ``sparkplug``: the wetland gateway is a pumping station's Sparkplug B edge node
  ``PS-Wetland`` in group SPARKPLUG_GROUP; each buoy is a device, born with one metric per
  quantity (alias, Double, ``engUnit`` the canonical unit), then DDATA by alias with the
  reading's event time. An NCMD ``Node Control/Rebirth`` is answered with new births before the
  next data.

The other gateways publish as before, and every gateway keeps its retained ``meta`` and
``status``, so the sensors stay provisioned under the same ids. ``open`` writes the mapping
files ingest needs (``PUSAT_LORAWAN_MAPPINGS``, ``PUSAT_SPARKPLUG_MAPPINGS``) and says where.
A message a fault garbled is sent as it is on the device's topic (quarantined as malformed);
unit faults do not apply to these dialects (their readings are sent in canonical units).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest.sparkplug_proto.sparkplug_b_pb2 import Payload
from pusat.settings import MqttTarget
from simulators.publisher import CONNECT_TIMEOUT_S, PublishError, Sink
from simulators.readings import Message, Reading

log = logging.getLogger(__name__)

KINDS = ("lorawan", "sparkplug")
LORAWAN_EVERY = 4  # one district gateway in this many is a LoRaWAN application
SPARKPLUG_GROUP = "PusatSim"
SPARKPLUG_GATEWAY = "gw-wetland"
SPARKPLUG_NODE = "PS-Wetland"
DOUBLE, UINT64 = 10, 8


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"--gateways takes {', '.join(KINDS)} (comma-separated)")
    return kinds


def lorawan_app(gateway: str) -> str:
    return f"pusat-sim-{gateway}"


def dev_eui(sensor: str) -> str:
    """A stable 64-bit EUI for a sensor id (hex, as ChirpStack writes it)."""
    return uuid.uuid5(uuid.NAMESPACE_OID, sensor).hex[:16]


class _Client:
    def __init__(self, target: MqttTarget, client_id: str) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        if target.username:
            c.username_pw_set(target.username, target.password)
        if target.tls:
            c.tls_set()
        c.max_inflight_messages_set(1000)
        self.connected = threading.Event()
        c.on_connect = lambda *a: self.connected.set()
        self.client = c
        self.target = target

    def start(self) -> None:
        self.client.connect_async(self.target.host, self.target.port)
        self.client.loop_start()
        if not self.connected.wait(CONNECT_TIMEOUT_S):
            self.stop()
            raise PublishError("gateway dialects: no CONNACK from the broker within 10 s")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class GatewaySink:
    """The usual sink, with the chosen gateways speaking LoRaWAN or Sparkplug B instead."""

    def __init__(
        self, inner: Sink, target: MqttTarget, kinds: Sequence[str], mapping_dir: Path
    ) -> None:
        self.inner = inner
        self.target = target
        self.kinds = tuple(kinds)
        self.mapping_dir = mapping_dir
        self.lorawan: set[str] = set()
        self.sparkplug = False
        self.sensors: dict[str, list[str]] = {}  # sensor -> quantities (from the metas)
        self._lora: _Client | None = None
        self._node: _Client | None = None
        self._seq = 0
        self._aliases: dict[tuple[str, str], int] = {}  # (sensor, quantity) -> alias
        self._rebirth = threading.Event()
        self.mapping_files: dict[str, str] = {}  # the PUSAT_* settings ingest needs

    # -- Sink ---------------------------------------------------------------------------------

    def plan(self, gateways: Sequence[str], metas: dict[str, bytes]) -> dict[str, str]:
        """Choose the gateways of each dialect and write ingest's mapping files; the settings
        that name them (``open`` does this first, unless done already)."""
        districts = sorted(g for g in gateways if g.startswith("gw-p"))
        if "lorawan" in self.kinds:
            self.lorawan = set(districts[::LORAWAN_EVERY])
        self.sparkplug = "sparkplug" in self.kinds and SPARKPLUG_GATEWAY in gateways
        for gw in gateways:
            for s in orjson.loads(metas[gw]).get("sensors", []):
                self.sensors[s["id"]] = list(s.get("quantities", []))
        self._write_mappings(gateways, metas)
        return self.mapping_files

    def open(self, gateways: Sequence[str], metas: dict[str, bytes]) -> None:
        if not self.sensors:
            self.plan(gateways, metas)
        self.inner.open(gateways, metas)
        if self.lorawan:
            self._lora = _Client(self.target, f"pusat-sim-chirpstack-{uuid.uuid4().hex[:6]}")
            self._lora.start()
        if self.sparkplug:
            self._start_node(gateways, metas)

    def send(self, m: Message) -> None:
        if m.gateway in self.lorawan and m.kind != "meta" and m.kind != "status":
            self._uplinks(m)
        elif self.sparkplug and m.gateway == SPARKPLUG_GATEWAY and m.kind not in ("meta", "status"):
            self._ddata(m)
        else:
            self.inner.send(m)

    def close(self) -> None:
        try:
            if self._node is not None:
                # a clean stop: the node's death certificate, as its will would say
                self._node.publish(self._topic("NDEATH"), self._death(), qos=0)
                self._node.stop()
            if self._lora is not None:
                self._lora.stop()
        finally:
            self.inner.close()

    # -- LoRaWAN ------------------------------------------------------------------------------

    def _uplinks(self, m: Message) -> None:
        assert self._lora is not None
        if m.corrupt:
            first = m.readings[0].sensor if m.readings else next(iter(self.sensors))
            self._lora.publish(self._up_topic(m.gateway, first), m.payload)
            return
        app = lorawan_app(m.gateway)
        for (sensor, ts), rs in _by_sensor_and_time(m.readings).items():
            doc = {
                "deduplicationId": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{sensor}@{ts}")),
                "time": _iso(ts),
                "deviceInfo": {"applicationId": app, "devEui": dev_eui(sensor)},
                "fPort": 1,
                "object": {r.quantity: r.value for r in rs},
                "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -70, "snr": 7.5}],
            }
            self._lora.publish(self._up_topic(m.gateway, sensor), orjson.dumps(doc))

    @staticmethod
    def _up_topic(gateway: str, sensor: str) -> str:
        return f"application/{lorawan_app(gateway)}/device/{dev_eui(sensor)}/event/up"

    # -- Sparkplug B --------------------------------------------------------------------------

    def _topic(self, kind: str, device: str | None = None) -> str:
        base = f"spBv1.0/{SPARKPLUG_GROUP}/{kind}/{SPARKPLUG_NODE}"
        return base if device is None else f"{base}/{device}"

    def _death(self) -> bytes:
        p = Payload(timestamp=round(time.time() * 1000))
        p.metrics.add(name="bdSeq", datatype=UINT64, long_value=0)
        return p.SerializeToString()

    def _start_node(self, gateways: Sequence[str], metas: dict[str, bytes]) -> None:
        node = _Client(self.target, f"pusat-sim-{SPARKPLUG_NODE}-{uuid.uuid4().hex[:6]}")
        node.client.will_set(self._topic("NDEATH"), self._death(), qos=0)
        node.client.on_message = self._on_command  # only sets a flag: births go out in send()
        node.start()
        node.client.subscribe(f"spBv1.0/{SPARKPLUG_GROUP}/NCMD/{SPARKPLUG_NODE}", qos=0)
        self._node = node
        buoys = [s["id"] for s in orjson.loads(metas[SPARKPLUG_GATEWAY]).get("sensors", [])]
        alias = 0
        for sensor in buoys:
            for q in self.sensors[sensor]:
                alias += 1
                self._aliases[(sensor, q)] = alias
        self._births()

    def _on_command(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._rebirth.set()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _births(self) -> None:
        assert self._node is not None
        now = round(time.time() * 1000)
        nb = Payload(timestamp=now, seq=0)
        self._seq = 0
        nb.metrics.add(name="bdSeq", datatype=UINT64, long_value=0)
        nb.metrics.add(name="Node Control/Rebirth", datatype=11, boolean_value=False)
        self._node.publish(self._topic("NBIRTH"), nb.SerializeToString(), qos=0)
        devices: dict[str, list[tuple[str, int]]] = {}
        for (sensor, q), alias in self._aliases.items():
            devices.setdefault(sensor, []).append((q, alias))
        from processing import catalogue  # the units the births declare

        cat = catalogue.load()
        for sensor, metrics in devices.items():
            db = Payload(timestamp=now, seq=self._next_seq())
            for q, alias in metrics:
                m = db.metrics.add(name=q, alias=alias, datatype=DOUBLE, is_null=True)
                c = cat.get(q)
                if c is not None and c.unit:
                    m.properties.keys.append("engUnit")
                    m.properties.values.add(type=12, string_value=c.unit)
            self._node.publish(self._topic("DBIRTH", sensor), db.SerializeToString(), qos=0)

    def _ddata(self, m: Message) -> None:
        assert self._node is not None
        if self._rebirth.is_set():
            self._rebirth.clear()
            self._births()
        if m.corrupt:
            first = m.readings[0].sensor if m.readings else next(iter(self.sensors))
            self._node.publish(self._topic("DDATA", first), m.payload, qos=0)
            return
        for (sensor, ts), rs in _by_sensor_and_time(m.readings).items():
            p = Payload(timestamp=round(ts * 1000), seq=self._next_seq())
            for r in rs:
                alias = self._aliases.get((sensor, r.quantity))
                if alias is None:
                    p.metrics.add(name=r.quantity, datatype=DOUBLE, double_value=r.value,
                                  timestamp=round(r.ts * 1000))  # fmt: skip
                else:
                    p.metrics.add(alias=alias, double_value=r.value, timestamp=round(r.ts * 1000))
            self._node.publish(self._topic("DDATA", sensor), p.SerializeToString(), qos=0)

    # -- the mapping files ingest reads -------------------------------------------------------

    def _write_mappings(self, gateways: Sequence[str], metas: dict[str, bytes]) -> None:
        self.mapping_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for gw in sorted(self.lorawan):
            lines = [
                'network = "chirpstack"',
                f'application = "{lorawan_app(gw)}"',
                f'gateway = "{gw}"',
                "[devices]",
            ]
            for s in orjson.loads(metas[gw]).get("sensors", []):
                lines.append(f'"{dev_eui(s["id"])}" = "{s["id"]}"')
            path = self.mapping_dir / f"lorawan-{gw}.toml"
            path.write_text("\n".join(lines) + "\n", "utf-8")
            files.append(path)
        if files:
            self.mapping_files["PUSAT_LORAWAN_MAPPINGS"] = ",".join(map(str, files))
        if self.sparkplug:
            lines = [f'group = "{SPARKPLUG_GROUP}"', "[gateways]",
                     f'"{SPARKPLUG_NODE}" = "{SPARKPLUG_GATEWAY}"', "[sensors]"]  # fmt: skip
            for s in orjson.loads(metas[SPARKPLUG_GATEWAY]).get("sensors", []):
                lines.append(f'"{SPARKPLUG_NODE}/{s["id"]}" = "{s["id"]}"')
            path = self.mapping_dir / "sparkplug-sim.toml"
            path.write_text("\n".join(lines) + "\n", "utf-8")
            self.mapping_files["PUSAT_SPARKPLUG_MAPPINGS"] = str(path)
        for var, value in self.mapping_files.items():
            log.warning("gateway dialects: ingest needs %s=%s", var, value)


def _by_sensor_and_time(readings: list[Reading]) -> dict[tuple[str, float], list[Reading]]:
    out: dict[tuple[str, float], list[Reading]] = {}
    for r in readings:
        out.setdefault((r.sensor, r.ts), []).append(r)
    return out


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
