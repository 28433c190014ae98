"""Sparkplug B: the host's decoding and state on its own, then Eclipse Tahu's edge-node client
(npm sparkplug-client, run by Node.js) through a real Mosquitto into PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from api.quarantine import publish
from ingest import sparkplug
from ingest.records import BAD_PAYLOAD, NO_BIRTH, NON_NUMERIC, UNKNOWN_ALIAS, UNKNOWN_UNIT
from ingest.sparkplug_proto.sparkplug_b_pb2 import Payload
from pusat.settings import Settings
from tests.conftest import RunningWorker
from tests.helpers import rows, wait_for

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "deploy" / "sparkplug-client" / "install.sh"

MAPPING = """
group = "{group}"
[gateways]
"PS-Presint9" = "ps-presint9"
[sensors]
"PS-Presint9" = "PS9-NODE"
"PS-Presint9/WetWell" = "WL-PS9-1"
[metrics."Level"]
quantity = "water_level"
[metrics."Inflow"]
quantity = "water_flow"
unit = "{inflow_unit}"
[metrics."Pump/Running"]
quantity = "pump_running"
[metrics."Firmware"]
quantity = "firmware"
"""


def group_mapping(tmp_path: Path, group: str, inflow_unit: str = "l/s") -> Path:
    path = tmp_path / f"{group}.toml"
    path.write_text(MAPPING.format(group=group, inflow_unit=inflow_unit))
    return path


def payload(ts_ms: int, seq: int | None, *metrics: dict[str, Any]) -> bytes:
    p = Payload(timestamp=ts_ms)
    if seq is not None:
        p.seq = seq
    for m in metrics:
        props = m.pop("props", None)
        metric = p.metrics.add(**m)
        if props:
            for k, v in props.items():
                metric.properties.keys.append(k)
                metric.properties.values.add(type=12, string_value=v)
    return p.SerializeToString()


def host_for(tmp_path: Path, group: str = "G") -> tuple[sparkplug.Host, sparkplug.Group]:
    mappings = sparkplug.load([group_mapping(tmp_path, group)])
    return sparkplug.Host(mappings), mappings.groups[group]


def route(g: sparkplug.Group, topic: str) -> sparkplug.Route:
    r = sparkplug.Mappings({g.group: g}).route(f"spBv1.0/{g.group}/{topic}")
    assert r is not None
    return r


# -- the host on its own ----------------------------------------------------------------------


def test_births_declare_aliases_datatypes_and_units_that_data_then_uses(tmp_path: Path) -> None:
    host, g = host_for(tmp_path)
    t0 = 1_764_252_000_000
    nbirth = payload(
        t0,
        0,
        {"name": "bdSeq", "datatype": 8, "long_value": 3},
        {"name": "Node Control/Rebirth", "datatype": 11, "boolean_value": False},
        {"name": "Supply Voltage", "alias": 1, "datatype": 9, "float_value": 24.5,
         "props": {"engUnit": "V"}},
    )  # fmt: skip
    ev = host.decode(route(g, "NBIRTH/PS-Presint9"), nbirth, 0.0)
    assert ev.statuses == [sparkplug.Status("ps-presint9", "online")]
    assert ev.decoded.readings == [("PS9-NODE", "Supply Voltage", t0 / 1000, 24.5, "V")]
    dbirth = payload(
        t0,
        1,
        {"name": "Level", "alias": 10, "datatype": 10, "double_value": 1.25,
         "props": {"engUnit": "cm"}},
        {"name": "Temperature", "alias": 11, "datatype": 1, "int_value": (-5) & 0xFFFFFFFF},
        {"name": "Pump/Running", "alias": 12, "datatype": 11, "boolean_value": True},
        {"name": "Serial", "alias": 13, "datatype": 12, "string_value": "A-17"},
        {"name": "Firmware", "alias": 14, "datatype": 12, "string_value": "v2"},
    )  # fmt: skip
    ev = host.decode(route(g, "DBIRTH/PS-Presint9/WetWell"), dbirth, 0.0)
    assert ev.statuses == [sparkplug.Status("ps-presint9.WetWell", "online")]
    assert ev.decoded.readings == [
        ("WL-PS9-1", "water_level", t0 / 1000, 1.25, "cm"),  # the birth's engUnit
        ("WL-PS9-1", "Temperature", t0 / 1000, -5.0, None),  # Int8 in two's complement
        ("WL-PS9-1", "pump_running", t0 / 1000, 1.0, None),
    ]
    # a string metric is no reading; one the mapping names as a quantity is a rejection
    assert [(r.reason, r.record) for r in ev.decoded.rejections] == [(NON_NUMERIC, 4)]
    ddata = payload(
        t0 + 60_000,
        2,
        {"alias": 10, "double_value": 131.0},
        {"alias": 12, "boolean_value": False, "timestamp": t0 + 59_000},
        {"alias": 99, "double_value": 1.0},
    )
    ev = host.decode(route(g, "DDATA/PS-Presint9/WetWell"), ddata, 0.0)
    assert ev.decoded.readings == [
        ("WL-PS9-1", "water_level", t0 / 1000 + 60, 131.0, "cm"),
        ("WL-PS9-1", "pump_running", t0 / 1000 + 59, 0.0, None),
    ]
    assert [(r.reason, r.record) for r in ev.decoded.rejections] == [(UNKNOWN_ALIAS, 2)]
    # the unknown alias asks for a rebirth, once, as an NCMD the worker publishes
    ((topic, body),) = host.rebirths(10.0)
    assert topic == "spBv1.0/G/NCMD/PS-Presint9"
    (m,) = Payload.FromString(body).metrics
    assert (m.name, m.datatype, m.boolean_value) == ("Node Control/Rebirth", 11, True)
    assert host.rebirths(11.0) == []


def test_a_seq_gap_asks_for_a_rebirth_and_the_data_still_counts(tmp_path: Path) -> None:
    host, g = host_for(tmp_path)
    t0 = 1_764_252_000_000
    host.decode(route(g, "NBIRTH/PS-Presint9"), payload(t0, 0, {"name": "bdSeq", "datatype": 8,
                "long_value": 0}, {"name": "Uptime", "alias": 1, "datatype": 7,
                "int_value": 5}), 0.0)  # fmt: skip
    ev = host.decode(route(g, "NDATA/PS-Presint9"), payload(t0 + 1, 1, {"alias": 1,
                     "int_value": 6}), 1.0)  # fmt: skip
    assert [r.value for r in ev.decoded.readings] == [6.0] and host.rebirths(1.0) == []
    ev = host.decode(route(g, "NDATA/PS-Presint9"), payload(t0 + 2, 3, {"alias": 1,
                     "int_value": 8}), 2.0)  # fmt: skip
    assert [r.value for r in ev.decoded.readings] == [8.0]
    assert [t for t, _ in host.rebirths(2.0)] == ["spBv1.0/G/NCMD/PS-Presint9"]
    # seq wraps from 255 to 0 without a gap
    host.sessions[("G", "PS-Presint9")].seq = 255
    host.decode(route(g, "NDATA/PS-Presint9"), payload(t0 + 3, 0, {"alias": 1, "int_value": 9}),
                20.0)  # fmt: skip
    assert host.rebirths(20.0) == [] and host.gaps == 1


def test_deaths_end_sessions_unless_they_are_an_old_sessions_will(tmp_path: Path) -> None:
    host, g = host_for(tmp_path)
    t0 = 1_764_252_000_000
    bd = {"name": "bdSeq", "datatype": 8, "long_value": 4}
    host.decode(route(g, "NBIRTH/PS-Presint9"), payload(t0, 0, bd), 0.0)
    host.decode(route(g, "DBIRTH/PS-Presint9/WetWell"), payload(t0, 1), 0.0)
    old = payload(t0, None, {"name": "bdSeq", "datatype": 8, "long_value": 3})
    assert host.decode(route(g, "NDEATH/PS-Presint9"), old, 0.0).statuses == []
    ev = host.decode(route(g, "DDEATH/PS-Presint9/WetWell"), payload(t0, 2), 0.0)
    assert ev.statuses == [sparkplug.Status("ps-presint9.WetWell", "offline")]
    ev = host.decode(route(g, "DDATA/PS-Presint9/WetWell"), payload(t0, 3), 0.0)
    assert [r.reason for r in ev.decoded.rejections] == [NO_BIRTH]
    host.decode(route(g, "DBIRTH/PS-Presint9/WetWell"), payload(t0, 4), 0.0)
    bd_now = payload(t0, None, {"name": "bdSeq", "datatype": 8, "long_value": 4})
    ev = host.decode(route(g, "NDEATH/PS-Presint9"), bd_now, 0.0)
    assert ev.statuses == [
        sparkplug.Status("ps-presint9", "offline"),
        sparkplug.Status("ps-presint9.WetWell", "offline"),
    ]
    ev = host.decode(route(g, "NDATA/PS-Presint9"), payload(t0, 5), 30.0)
    assert [r.reason for r in ev.decoded.rejections] == [NO_BIRTH]
    assert "no NBIRTH" in ev.decoded.rejections[0].detail
    assert (
        host.decode(route(g, "NDATA/PS-Presint9"), b"\xff\xff", 0.0).decoded.rejections[0].reason
        == BAD_PAYLOAD
    )


def test_a_nameless_birth_metric_is_rejected_not_stored(tmp_path: Path) -> None:
    # found by the fuzzer: it became a reading of the quantity ""
    host, g = host_for(tmp_path)
    ev = host.decode(route(g, "NBIRTH/n"), payload(1, 0, {"datatype": 3, "int_value": 1}), 0.0)
    assert ev.decoded.readings == []
    assert [(r.reason, r.record) for r in ev.decoded.rejections] == [(BAD_PAYLOAD, 0)]


def test_routes_only_configured_groups_and_never_commands(tmp_path: Path) -> None:
    m = sparkplug.load([group_mapping(tmp_path, "G")])
    assert m.route("spBv1.0/G/DDATA/n/d") == sparkplug.Route(m.groups["G"], "DDATA", "n", "d")
    assert m.route("spBv1.0/G/NCMD/n") is None
    assert m.route("spBv1.0/H/NDATA/n") is None
    assert m.route("spBv1.0/G/NDATA/n/d") is None
    assert "spBv1.0/G/DDATA/+/+" in m.subscriptions()
    bad = tmp_path / "bad.toml"
    bad.write_text('group = "G"\n[metrics.Level]\nunit = "m"\n')
    with pytest.raises(ValueError, match=r"bad\.toml: metrics\.Level needs a quantity"):
        sparkplug.load([bad])


# -- Eclipse Tahu's client through Mosquitto into PostgreSQL ----------------------------------


@pytest.fixture(scope="session")
def tahu() -> Path:
    """Eclipse Tahu's Sparkplug client, installed with npm (deploy/sparkplug-client)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    where = cache / "pusat" / "sparkplug-client"
    if not (where / "node_modules" / "sparkplug-client").is_dir():
        if shutil.which("npm") is None or shutil.which("node") is None:
            pytest.skip("Sparkplug client test skipped: no npm/node for Eclipse Tahu's client")
        subprocess.run(["sh", str(INSTALL), str(where)], check=True, timeout=300)
    # the scenario player may be newer than the install
    shutil.copy(INSTALL.parent / "edge.js", where / "edge.js")
    return where


class Edge:
    """Tahu's edge node running a scenario (deploy/sparkplug-client/edge.js)."""

    def __init__(self, tahu: Path, scenario: dict[str, Any], tmp_path: Path) -> None:
        path = tmp_path / f"scenario-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(scenario))
        self.log = tmp_path / "edge.log"
        self.proc = subprocess.Popen(
            ["node", str(tahu / "edge.js"), str(path)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 30) -> None:
        assert self.proc.wait(timeout) == 0, self.output()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def group() -> str:
    return f"G{uuid.uuid4().hex[:8]}"


def series(url: str, sensor: str) -> list[tuple[str, float, str | None, float]]:
    return [
        (q, v, u, t)
        for q, v, u, t in rows(
            url,
            "SELECT quantity, value, unit, extract(epoch FROM ts)::float8 FROM readings"
            " WHERE sensor_id = %s ORDER BY quantity, ts",
            (sensor,),
        )
    ]


def statuses(url: str) -> dict[str, str]:
    return dict(rows(url, "SELECT gateway_id, status FROM gateways WHERE status IS NOT NULL"))


def eng(unit: str) -> dict[str, Any]:
    return {"engUnit": {"type": "String", "value": unit}}


def test_tahu_edge_node_births_data_rebirth_and_deaths_land(
    settings: Settings, tahu: Path, group: str, tmp_path: Path
) -> None:
    url = settings.database_url
    assert url
    s = settings.with_(sparkplug_mappings=str(group_mapping(tmp_path, group)))
    t0 = (int(time.time()) - 600) * 1000  # ten minutes ago, whole seconds
    dev = "WetWell"
    wet_birth = {
        "timestamp": t0,
        "metrics": [
            {"name": "Level", "alias": 1, "type": "Double", "value": 1.25,
             "properties": eng("m")},
            {"name": "Inflow", "alias": 2, "type": "Float", "value": 120.0},
            {"name": "Pump/Running", "alias": 3, "type": "Boolean", "value": True},
            {"name": "Pump/Starts", "alias": 4, "type": "Int32", "value": -3},
            {"name": "Serial", "alias": 5, "type": "String", "value": "WW-0017"},
        ],
    }  # fmt: skip
    node_birth = {
        "timestamp": t0,
        "metrics": [
            {"name": "Node Control/Rebirth", "type": "Boolean", "value": False},
            {"name": "Supply Voltage", "alias": 100, "type": "Float", "value": 24.0,
             "properties": eng("V")},
        ],
    }  # fmt: skip
    steps: list[dict[str, Any]] = [
        {"do": "nbirth", "payload": node_birth},
        {"do": "dbirth", "device": dev, "payload": wet_birth},
        {"do": "ddata", "device": dev, "payload": {"timestamp": t0 + 60_000, "metrics": [
            {"alias": 1, "type": "Double", "value": 1.5},
            {"alias": 2, "type": "Float", "value": 150.0, "timestamp": t0 + 55_000}]}},
        {"do": "ndata", "payload": {"timestamp": t0 + 60_000, "metrics": [
            {"alias": 100, "type": "Float", "value": 23.5}]}},
        {"do": "skip_seq"},  # a lost message: the host asks for a rebirth
        {"do": "ddata", "device": dev, "payload": {"timestamp": t0 + 120_000, "metrics": [
            {"alias": 1, "type": "Double", "value": 1.75}]}},
        {"do": "await_rebirth"},
        {"do": "nbirth", "payload": {**node_birth, "timestamp": t0 + 180_000}},
        {"do": "dbirth", "device": dev, "payload": {**wet_birth, "timestamp": t0 + 180_000}},
        {"do": "ddata", "device": dev, "payload": {"timestamp": t0 + 240_000, "metrics": [
            {"alias": 3, "type": "Boolean", "value": False}]}},
        {"do": "ddeath", "device": dev, "payload": {"timestamp": t0 + 300_000}},
        {"do": "stop"},
    ]  # fmt: skip
    scenario = {
        "serverUrl": s.mqtt_url,
        "groupId": group,
        "edgeNode": "PS-Presint9",
        "clientId": f"tahu-{group}",
        "steps": steps,
    }
    w = RunningWorker(s).start()
    edge = Edge(tahu, scenario, tmp_path)
    try:
        edge.wait(60)
        assert "ncmd rebirth" in edge.output()
        t = t0 / 1000
        expected = [
            ("Pump/Starts", -3.0, None, t),
            ("Pump/Starts", -3.0, None, t + 180),
            ("pump_running", 1.0, "1", t),
            ("pump_running", 1.0, "1", t + 180),
            ("pump_running", 0.0, "1", t + 240),
            ("water_flow", 0.12, "m3/s", t),  # 120 l/s, mapped
            ("water_flow", 0.15, "m3/s", t + 55),  # the metric's own timestamp
            ("water_flow", 0.12, "m3/s", t + 180),
            ("water_level", 1.25, "m", t),
            ("water_level", 1.5, "m", t + 60),
            ("water_level", 1.75, "m", t + 120),  # after the gap: still stored
            ("water_level", 1.25, "m", t + 180),
        ]
        got = wait_for(
            lambda: (r := series(url, "WL-PS9-1")) and len(r) >= len(expected) and r,
            what="the wet well's readings",
        )
        assert got == [(q, pytest.approx(v), u, pytest.approx(ts)) for q, v, u, ts in expected]
        node = wait_for(lambda: (r := series(url, "PS9-NODE")) and len(r) == 3 and r, what="node")
        assert node == [
            ("Supply Voltage", 24.0, "V", pytest.approx(t)),
            ("Supply Voltage", 23.5, "V", pytest.approx(t + 60)),
            ("Supply Voltage", 24.0, "V", pytest.approx(t + 180)),
        ]
        # the NDEATH at stop ends the node; the DDEATH had ended the device
        assert wait_for(
            lambda: (st := statuses(url)).get("ps-presint9") == "offline" and st,
            what="the node offline",
        ) == {"ps-presint9": "offline", "ps-presint9.WetWell": "offline"}
        assert rows(url, "SELECT reason FROM quarantine") == []
    finally:
        edge.kill()
        w.stop()


def test_data_before_a_birth_is_quarantined_and_replays_after_the_mapping_is_fixed(
    settings: Settings, tahu: Path, group: str, tmp_path: Path
) -> None:
    """Data before any birth (as after a restart of ingest) is quarantined as no_birth and a
    rebirth asked for; a unit the catalogue refuses is quarantined too. After the mapping is
    fixed, ingest restarted and the node born again, the replayed quarantine lands."""
    url = settings.database_url
    assert url
    bad = settings.with_(
        sparkplug_mappings=str(group_mapping(tmp_path, group, inflow_unit="gal/min"))
    )
    t0 = (int(time.time()) - 600) * 1000
    dev = "WetWell"

    def birth(ts: int) -> dict[str, Any]:
        return {"timestamp": ts, "metrics": [
            {"name": "Level", "alias": 1, "type": "Double", "value": 1.25,
             "properties": eng("m")},
            {"name": "Inflow", "alias": 2, "type": "Float", "value": 120.0}]}  # fmt: skip

    def scenario(steps: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "serverUrl": bad.mqtt_url,
            "groupId": group,
            "edgeNode": "PS-Presint9",
            "clientId": f"tahu-{group}",
            "steps": steps,
        }

    first = scenario([
        {"do": "ddata", "device": dev, "payload": {"timestamp": t0 + 30_000, "metrics": [
            {"name": "Level", "type": "Double", "value": 1.4}]}},
        {"do": "await_rebirth"},
        {"do": "nbirth", "payload": {"timestamp": t0, "metrics": []}},
        {"do": "dbirth", "device": dev, "payload": birth(t0)},
        {"do": "stop"},
    ])  # fmt: skip
    w = RunningWorker(bad).start()
    edge = Edge(tahu, first, tmp_path)
    try:
        edge.wait(60)
        got = wait_for(
            lambda: (r := rows(url, "SELECT reason, topic FROM quarantine ORDER BY id"))
            and len(r) == 2 and r,
            what="two rejections",
        )  # fmt: skip
        assert got == [
            (NO_BIRTH, f"spBv1.0/{group}/DDATA/PS-Presint9/{dev}"),
            (UNKNOWN_UNIT, f"spBv1.0/{group}/DBIRTH/PS-Presint9/{dev}"),
        ]
        assert [q for q, *_ in series(url, "WL-PS9-1")] == ["water_level"]
    finally:
        edge.kill()
        w.stop()

    fixed = bad.with_(sparkplug_mappings=str(group_mapping(tmp_path, group)))
    w = RunningWorker(fixed).start()
    # the node connects again: a new session; it stays until the host asks it for a rebirth
    second = scenario([
        {"do": "nbirth", "payload": {"timestamp": t0 + 300_000, "metrics": []}},
        {"do": "dbirth", "device": dev, "payload": birth(t0 + 300_000)},
        {"do": "await_rebirth"},
        {"do": "stop"},
    ])  # fmt: skip
    edge = Edge(tahu, second, tmp_path)
    try:
        t = t0 / 1000
        wait_for(lambda: len(series(url, "WL-PS9-1")) == 3, what="the second session's birth")
        stored = rows(url, "SELECT topic, payload, payload_encoding FROM quarantine ORDER BY id")
        publish(  # what POST /api/v1/quarantine/replay does
            fixed.mqtt(),
            [(tp, base64.b64decode(p) if e == "base64" else p.encode()) for tp, p, e in stored],
        )
        got2 = wait_for(
            lambda: (r := series(url, "WL-PS9-1")) and len(r) == 5 and r, what="replayed"
        )
        assert got2 == [
            ("water_flow", pytest.approx(0.12), "m3/s", pytest.approx(t)),
            ("water_flow", pytest.approx(0.12), "m3/s", pytest.approx(t + 300)),
            ("water_level", 1.25, "m", pytest.approx(t)),
            ("water_level", 1.4, "m", pytest.approx(t + 30)),
            ("water_level", 1.25, "m", pytest.approx(t + 300)),
        ]
        edge.wait(30)  # the replayed messages were out of step: the node was asked to rebirth
        assert rows(url, "SELECT count(*) FROM quarantine") == [(2,)]
    finally:
        edge.kill()
        w.stop()


def test_a_nodes_topics_stay_in_one_partition() -> None:
    from ingest.topics import partition_of

    node = [f"spBv1.0/G/{k}/PS-Presint9" for k in sparkplug.NODE_TYPES] + [
        f"spBv1.0/G/{k}/PS-Presint9/{d}" for k in sparkplug.DEVICE_TYPES for d in "ABCDEFGH"
    ]
    assert len({partition_of("pusat/v1", t, 7) for t in node}) == 1
    # and nodes are spread over the partitions
    nodes = {partition_of("pusat/v1", f"spBv1.0/G/NDATA/node-{i}", 4) for i in range(40)}
    assert nodes == {1, 2, 3, 4}


def test_a_shared_subscription_group_is_refused_with_sparkplug(
    settings: Settings, tmp_path: Path
) -> None:
    from ingest.metrics import IngestMetrics
    from ingest.worker import Worker
    from processing import catalogue

    s = settings.with_(sparkplug_mappings=str(group_mapping(tmp_path, "G")), group="pusat")
    with pytest.raises(ValueError, match="partitions"):
        Worker(s, catalogue.load(), IngestMetrics())


def test_ddata_of_one_mix_of_quantities_converts_each_reading_by_its_own_kind(
    tmp_path: Path,
) -> None:
    """The pipeline looks the kinds of a repeated mix up once: each reading keeps its own."""
    from ingest.pipeline import Accumulator, Limits, Message
    from processing import catalogue

    host, _ = host_for(tmp_path)
    limits = Limits(256 * 1024, 300.0, 90 * 86400.0, False, sparkplug=host)
    acc = Accumulator("pusat/v1", catalogue.load(), limits)
    t = int(time.time()) - 60
    birth = payload(
        t * 1000,
        0,
        {
            "name": "Level",
            "alias": 1,
            "datatype": 10,
            "double_value": 125.0,
            "props": {"engUnit": "cm"},
        },
        {"name": "Inflow", "alias": 2, "datatype": 9, "float_value": 100.0},
        {"name": "Pump/Running", "alias": 3, "datatype": 11, "boolean_value": True},
    )
    acc.add(Message("spBv1.0/G/NBIRTH/PS-Presint9", payload(t * 1000, 0), t))
    acc.add(Message("spBv1.0/G/DBIRTH/PS-Presint9/WetWell", birth, t))  # fmt: skip
    for k in range(1, 4):
        body = payload(
            (t + k) * 1000,
            k,
            {"alias": 1, "double_value": 100.0 + k},
            {"alias": 2, "float_value": 10.0 * k},
            {"alias": 3, "boolean_value": False},
        )
        acc.add(Message("spBv1.0/G/DDATA/PS-Presint9/WetWell", body, t))  # fmt: skip
    r = acc.finish(lambda s: s, time.time()).readings
    seconds = (r.ts_us // 1_000_000).tolist()
    got = sorted(zip(r.quantity, r.unit, seconds, r.value.tolist(), strict=True))
    assert got == sorted(
        [("water_level", "m", t, 1.25), ("water_flow", "m3/s", t, 0.1)]
        + [("pump_running", "1", t, 1.0)]
        + [("water_level", "m", t + k, (100.0 + k) / 100) for k in range(1, 4)]
        + [("water_flow", "m3/s", t + k, 0.01 * k) for k in range(1, 4)]
        + [("pump_running", "1", t + k, 0.0) for k in range(1, 4)]
    )
