"""The simulators without a broker: determinism, physics that hang together, faults, payloads."""

from __future__ import annotations

import importlib.util
import math
import threading
from collections import defaultdict
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import sdm as sdm_decoder
from ingest import senml as senml_decoder
from processing import catalogue as catalogue_mod
from processing import rules as rules_mod
from processing.alerts import NONE
from pusat.settings import Settings
from simulators import payloads, scenario
from simulators.air import AirModel
from simulators.city import AIR_QUANTITIES, Sensor
from simulators.clock import Pacer
from simulators.faults import FaultError, FaultSpec, garble, plan
from simulators.manifest import Limits, evaluate, verdict
from simulators.publisher import ListSink, is_loopback
from simulators.readings import Message, Reading
from simulators.runner import Options, Result, Simulation
from simulators.scenario import ScenarioError
from simulators.weather import Met
from tests.alert_reference import Reference

HAVE_SIM = (
    importlib.util.find_spec("libsumo") is not None
    and importlib.util.find_spec("pyswmm") is not None
)
needs_sim = pytest.mark.skipif(not HAVE_SIM, reason="the sim extra (SUMO, SWMM) is not installed")
CAT = catalogue_mod.load()
START = datetime.fromisoformat("2026-11-27T07:30:00+08:00").timestamp()


def dry_run(what: str, **options: object) -> tuple[Result, ListSink]:
    sink = ListSink()
    opts = Options(what=what, speed=math.inf, start=START, **options)  # type: ignore[arg-type]
    return Simulation(Settings(), opts, sink).run(threading.Event()), sink


def series(sink: ListSink) -> dict[tuple[str, str], list[tuple[float, float]]]:
    out: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for m, _ in sink.sent:
        for r in m.readings:
            out[(r.sensor, r.quantity)].append((r.ts, r.value))
    return out


@needs_sim
def test_same_seed_same_readings_other_seed_others() -> None:
    a, sink_a = dry_run("city", duration=15 * 60.0, seed=5)
    _, sink_b = dry_run("city", duration=15 * 60.0, seed=5)
    _, sink_c = dry_run("city", duration=15 * 60.0, seed=6)
    payloads_a = [(m.gateway, m.kind, m.payload) for m, _ in sink_a.sent]
    assert payloads_a == [(m.gateway, m.kind, m.payload) for m, _ in sink_b.sent]
    assert sink_a.opened == sink_b.opened == sink_c.opened  # the city itself does not change
    assert payloads_a != [(m.gateway, m.kind, m.payload) for m, _ in sink_c.sent]
    # 15 minutes: 15 messages from each of the 20 district gateways, 3 from the wetland
    assert a.messages == 15 * 20 + 3
    domains = {q for _, q in series(sink_a)}
    assert {
        "vehicle_count",
        "flow",
        "occupancy",
        "speed",
        *AIR_QUANTITIES,
        "water_level",
    } <= domains
    kinds = {m.kind for m, _ in sink_a.sent}
    assert kinds == {"senml", "sdm"}


@needs_sim
def test_traffic_loops_declare_their_streets_free_flow_speed() -> None:
    """The city's streets are 60 km/h (SUMO's network): each loop's meta says so, in the form
    ingest accepts, so its level of service is not judged against the 50 km/h default."""
    from ingest.meta import parse_meta

    _, sink = dry_run("city", duration=60.0)
    declared = {}
    for gw, payload in sink.opened.items():
        sensors, rejected = parse_meta(payload, gw)
        assert rejected == []
        declared |= {s.sensor_id: s.attributes.get("free_flow_speed") for s in sensors}
    loops = {s: v for s, v in declared.items() if s.startswith("TF-")}
    assert loops and set(loops.values()) == {60.0}
    assert all(v is None for s, v in declared.items() if not s.startswith("TF-"))


@needs_sim
def test_monsoon_storm_raises_the_wetland_and_spoils_its_water() -> None:
    sc = scenario.load("monsoon-storm")
    _, sink = dry_run("wetland", scenario=sc, duration=5 * 3600.0, seed=1)
    s = series(sink)
    storm_start = START + 3600  # the storm begins an hour in and lasts two

    def before(q: str, sensor: str = "WQ-WET-03") -> float:
        return max(v for t, v in s[(sensor, q)] if t <= storm_start)

    def during(q: str, sensor: str = "WQ-WET-03", pick: object = max) -> float:
        vals = [v for t, v in s[(sensor, q)] if storm_start < t <= storm_start + 4 * 3600]
        return pick(vals)  # type: ignore[operator,no-any-return]

    assert during("water_level") > before("water_level") + 0.5
    assert during("water_flow") > 10 * before("water_flow")
    assert during("turbidity") > 3 * before("turbidity")
    assert during("tss") > 3 * before("tss")
    assert during("bod") > 2 * before("bod")
    assert during("do", pick=min) < min(v for t, v in s[("WQ-WET-03", "do")] if t <= storm_start)
    assert during("conductivity", pick=min) < before("conductivity") * 0.9
    # the wetland cleans: the lake sees far less of the storm's sediment than the first cell
    assert during("tss", "WQ-LAKE-01") < 0.5 * during("tss", "WQ-WET-01")


@needs_sim
def test_an_incident_slows_the_street_and_fills_the_loop() -> None:
    sc = scenario.parse(
        """
        duration = "25m"
        [[event]]
        kind = "incident"
        at = "5m"
        for = "15m"
        station = "TF-P08-01"
        """,
        "incident.toml",
    )
    _, sink = dry_run("traffic", scenario=sc, seed=3)
    speed = series(sink)[("TF-P08-01", "speed")]
    calm = [v for t, v in speed if t <= START + 5 * 60 or t > START + 21 * 60]
    blocked = [v for t, v in speed if START + 8 * 60 < t <= START + 20 * 60]
    assert min(calm) > 35 and max(blocked) < 20


def test_haze_and_rain_in_the_air() -> None:
    stations = [
        Sensor(f"AQ-{i}", "air", "Presint 1", 100.0 * i, 0.0, AIR_QUANTITIES, "gw", "senml")
        for i in range(3)
    ]
    met = Met(temperature=30.0, humidity=70.0, wind_speed=2.0, wind_direction=225.0, rain=0.0)

    def pm25(haze: float, rain: float = 0.0) -> float:
        model = AirModel(stations, None, seed=1)
        m = Met(met.temperature, met.humidity, met.wind_speed, met.wind_direction, rain)
        values = [
            r.value
            for k in range(60)
            for r in model.readings(START + 60 * k, m, None, 0.5, haze)
            if r.quantity == "pm25"
        ]
        return sum(values) / len(values)

    clear = pm25(0.0)
    assert 5 < clear < 40
    assert pm25(110.0) > clear + 90
    assert pm25(0.0, rain=40.0) < clear * 0.5


def test_payloads_decode_back_to_the_same_readings() -> None:
    sensors = {
        "AQ-1": Sensor("AQ-1", "air", "Presint 1", 0, 0, AIR_QUANTITIES, "gw", "sdm"),
        "TF-1": Sensor(
            "TF-1",
            "traffic",
            "Presint 1",
            0,
            0,
            ("vehicle_count", "flow", "occupancy", "speed"),
            "gw",
            "sdm",
        ),
    }
    ts = 1_795_000_000.0
    air = [
        Reading("AQ-1", q, ts, v)
        for q, v in zip(
            AIR_QUANTITIES, (12.3, 30.1, 21.5, 40.2, 0.61, 1.8, 29.4, 71.0), strict=True
        )
    ]
    traffic = [
        Reading("TF-1", "vehicle_count", ts, 9.0),
        Reading("TF-1", "flow", ts, 540.0),
        Reading("TF-1", "occupancy", ts, 3.5),
        Reading("TF-1", "speed", ts, 48.2),
    ]
    want = {(r.sensor, r.quantity): r.value for r in air + traffic}
    for raw, decode in (
        (payloads.sdm(CAT, sensors, air + traffic, 60), sdm_decoder.decode),
        (payloads.senml(CAT, air + traffic), senml_decoder.decode),
    ):
        decoded = decode(raw, ts)
        assert decoded.rejections == []
        got = {}
        for c in decoded.readings:
            conv = CAT.conversion(c.quantity, c.unit)
            assert conv is not None, (c.quantity, c.unit)
            got[(c.sensor, c.quantity)] = c.value * conv[0] + conv[1]
            assert c.ts == ts
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-9), k


def test_garbled_payloads_are_what_ingest_rejects() -> None:
    pack = payloads.senml(CAT, [Reading("AQ-1", "pm25", 1_795_000_000.0, 12.0)])
    assert senml_decoder.decode(garble(pack, "json"), 0).rejections[0].reason == "malformed_json"
    assert senml_decoder.decode(garble(pack, "senml"), 0).rejections[0].reason == "bad_senml"
    assert sdm_decoder.decode(garble(pack, "payload"), 0).rejections[0].reason == "bad_payload"


def test_verdict_follows_ingest() -> None:
    limits = Limits(max_skew_s=300, horizon_s=90 * 86400)
    now = 1_795_000_000.0
    r = Reading("AQ-1", "pm25", now - 60, 12.0)
    assert verdict(CAT, limits, r, now) is None
    assert verdict(CAT, limits, Reading("AQ-1", "pm25", now, 12.0, "ppm"), now) == "unknown_unit"
    assert verdict(CAT, limits, Reading("AQ-1", "pm25", now, 1e6), now) == "out_of_range"
    assert verdict(CAT, limits, Reading("AQ-1", "pm25", now + 301, 12.0), now) == "bad_time"
    assert verdict(CAT, limits, Reading("AQ-1", "pm25", now - 91 * 86400, 1.0), now) == "bad_time"
    assert verdict(CAT, limits, Reading("AQ-1", "novel", now, 1.0), now) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-120, 600), st.sampled_from([10.0, 50.0, 56.0, 60.0, 200.0])),
        max_size=40,
    )
)
def test_manifest_evaluation_agrees_with_the_engine_reference(
    steps: list[tuple[int, float]],
) -> None:
    """The manifest's own rule evaluation raises exactly where the engine's reference does."""
    rules = [r for r in rules_mod.load(None) if r.quantity == "pm25"]
    ts = 1_795_000_000
    readings = []
    for dt, v in steps:
        ts += dt
        readings.append((float(ts), v))
    ref = Reference(rules, {0: list(range(len(rules)))})
    want = [
        (r, t)
        for t_s, v in readings
        for r, _, t, _, raised in ref.feed(0, int(t_s * 1e6), v)
        if raised
    ]
    got = [(r, int(t * 1e6)) for r, t in evaluate(rules, readings)]
    assert sorted(got) == sorted(want)
    assert NONE < 0


def test_pacer_keeps_speed_and_never_passes_the_wall_clock() -> None:
    wall = [1000.0]
    mono = [0.0]
    p = Pacer(start=400.0, speed=60.0, wall=lambda: wall[0], monotonic=lambda: mono[0])
    assert p.delay(460.0) == pytest.approx(1.0)  # a simulated minute per second
    mono[0] = 10.0
    assert p.delay(460.0) == 0.0
    assert p.delay(1030.0) == pytest.approx(30.0)  # paced to 10.5 s, but the wall is at 1000
    live = Pacer(
        start=940.0, speed=1.0, catch_up=True, wall=lambda: wall[0], monotonic=lambda: mono[0]
    )
    assert live.delay(1000.0) == 0.0  # already past: at once
    assert live.delay(1060.0) == pytest.approx(60.0)


def test_scenarios_parse_and_say_what_is_wrong() -> None:
    assert set(scenario.bundled()) >= {"rush-hour", "monsoon-storm", "haze", "incident"}
    for name in scenario.bundled():
        s = scenario.load(name)
        assert s.events and s.duration
    storm = scenario.load("monsoon-storm")
    assert storm.rain(0) == 0 and storm.rain(2 * 3600) == pytest.approx(90.0)
    assert scenario.duration_s("1h30m", "x") == 5400 and scenario.duration_s("end", "x") == math.inf
    with pytest.raises(ScenarioError, match="event 1: kind"):
        scenario.parse('[[event]]\nkind = "flood"', "bad.toml")
    with pytest.raises(ScenarioError, match="not a duration"):
        scenario.parse('duration = "soon"', "bad.toml")
    with pytest.raises(ScenarioError, match="no scenario"):
        scenario.load("no-such-scenario")
    # HH:MM starts are the latest such local time at which the run is over by now
    now = datetime.fromisoformat("2026-11-27T09:00:00+08:00").timestamp()
    s = scenario.parse('start = "06:00"\nduration = "5h"', "t.toml")
    start = s.start_time(now, 5 * 3600)
    assert start == datetime.fromisoformat("2026-11-26T06:00:00+08:00").timestamp()


def test_faults_are_placed_from_the_seed_on_sensors_that_show_them() -> None:
    sensors = [
        Sensor("AQ-1", "air", "Presint 1", 0, 0, AIR_QUANTITIES, "gw-1", "senml"),
        Sensor(
            "TF-1",
            "traffic",
            "Presint 1",
            0,
            0,
            ("vehicle_count", "flow", "occupancy", "speed"),
            "gw-2",
            "sdm",
        ),
    ]
    rules = rules_mod.load(None)
    specs = [FaultSpec("stuck"), FaultSpec("wrong_unit"), FaultSpec("drift"), FaultSpec("offline")]
    a = plan(specs, sensors, CAT, rules, START, 3600.0, seed=4)
    assert a == plan(specs, sensors, CAT, rules, START, 3600.0, seed=4)
    stuck, wrong, drift, _ = a
    assert stuck.quantity in ("pm25", "speed")  # the quantities with a flatline rule
    assert wrong.sensor.id == "AQ-1"  # SDM has no units to get wrong
    assert drift.quantity is not None and drift.quantity != "flow"
    with pytest.raises(FaultError, match="unknown fault kind"):
        plan([FaultSpec("gremlins")], sensors, CAT, rules, START, 3600.0, seed=4)
    with pytest.raises(FaultError, match="no sensor"):
        plan([FaultSpec("stuck", sensor="AQ-9")], sensors, CAT, rules, START, 3600.0, seed=4)


def test_loopback_only() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost")
    assert not is_loopback("192.0.2.1")  # TEST-NET-1: never contacted, only classified


def test_message_defaults() -> None:
    m = Message("gw", "senml", b"[]", 0.0)
    assert not m.corrupt and not m.duplicate and m.faults == ()


class _PacingStop(threading.Event):
    """A stop event that tells when the run is pacing (waiting for a minute not yet due)."""

    def __init__(self) -> None:
        super().__init__()
        self.pacing = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.pacing.set()
        return super().wait(timeout)


@needs_sim
def test_a_stopped_live_run_publishes_nothing_whose_time_has_not_come() -> None:
    """Ctrl-C while the live city waits for its next minute: that minute is not sent early."""
    sink = ListSink()
    stop = _PacingStop()
    sim = Simulation(Settings(), Options(what="city", speed=1.0), sink)
    t = threading.Thread(target=sim.run, args=(stop,))
    t.start()
    try:
        assert stop.pacing.wait(60), "the run never waited for a minute"
        # the first minute is over already and went out at once; the second is still ahead
        assert sink.sent
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive()
    early = [
        (m.gateway, r.sensor, r.ts - sent)
        for m, sent in sink.sent
        for r in m.readings
        if r.ts > sent
    ]
    assert not early, f"{len(early)} readings published ahead of their time, e.g. {early[:3]}"
    assert all(m.due <= sent for m, sent in sink.sent)
