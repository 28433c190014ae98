"""Running a simulation: the models stepped minute by minute, faults applied, messages paced
out to a sink (the broker, or a list), progress reported, the manifest written at the end.

Order within one simulated minute: traffic (SUMO, 60 one-second steps) -> loop readings and
emissions; weather; air (from the emissions and the weather); every fifth minute the wetland
(SWMM, with the scenario's rain). Readings carry the end of their period as event time. Then
value faults, one message per gateway (message faults split their sensor out), and every
message whose time has come is published once the pacer allows. A run that is stopped sends
nothing that is not due yet.
"""

from __future__ import annotations

import heapq
import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processing import catalogue as catalogue_mod
from processing import rules as rules_mod
from simulators import city as city_mod
from simulators import payloads
from simulators.air import AirModel
from simulators.clock import Pacer
from simulators.faults import FaultSpec, Injector, plan
from simulators.manifest import Limits, Recorder, write
from simulators.publisher import MqttSink, Sink
from simulators.readings import Message, Reading
from simulators.scenario import Scenario
from simulators.scenario import load as load_scenario
from simulators.traffic import PERIOD_S, Emissions, TrafficModel, daily_profile
from simulators.weather import Weather, local_hour
from simulators.wetland import PERIOD_S as WATER_PERIOD_S
from simulators.wetland import WetlandModel

if TYPE_CHECKING:
    from pusat.settings import Settings

WHAT = ("traffic", "air", "wetland", "city")
LIVE_SPEED = 2.0  # at or below this, simulated time is the wall clock ("live" manifests)
DEFAULT_SEED = 1
DEFAULT_BACKFILL_S = 6 * 3600.0  # fast runs without a duration start this long ago


@dataclass(frozen=True)
class Options:
    what: str = "city"
    speed: float = 1.0
    start: float | None = None  # epoch seconds; None: now (live) or now - duration (fast)
    duration: float | None = None  # simulated seconds; None: until stopped
    seed: int | None = None
    scenario: Scenario | Path | str | None = None
    faults: tuple[FaultSpec, ...] = ()
    manifest: Path | None = None
    owner: str | None = None  # who speaks for the gateways' status; None: a name for this run


@dataclass
class Progress:
    sim_time: float  # epoch seconds of the simulated clock
    start: float
    wall_s: float  # seconds since the run began
    messages: int
    readings: int
    msg_rate: float  # messages per wall second over the last interval
    vehicles: int
    done: bool = False

    @property
    def sim_speed(self) -> float:
        """Simulated seconds per wall second, since the start."""
        return (self.sim_time - self.start) / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Result:
    start: float
    end: float  # simulated end (epoch seconds)
    wall_s: float
    messages: int
    readings: int
    build_s: float  # starting the models and connecting, before the first simulated minute
    manifest: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def sim_speed(self) -> float:
        run = self.wall_s - self.build_s
        return (self.end - self.start) / run if run > 0 else math.inf


def resolve_scenario(s: Scenario | Path | str | None) -> Scenario:
    if s is None:
        return Scenario()
    if isinstance(s, Scenario):
        return s
    return load_scenario(s)


def plan_times(options: Options, scenario: Scenario, now: float) -> tuple[float, float | None]:
    """(start, duration): explicit options first, then the scenario, then the defaults."""
    duration = options.duration if options.duration is not None else scenario.duration
    if duration is not None and not math.isfinite(duration):
        duration = None
    start = options.start
    if start is None and options.speed > LIVE_SPEED:
        start = scenario.start_time(now, duration)
        if start is None:
            start = now - (duration if duration is not None else DEFAULT_BACKFILL_S)
    if start is None:
        start = now - PERIOD_S  # live: the first minute is already over, its readings go now
    return math.floor(start / PERIOD_S) * PERIOD_S, duration


class Simulation:
    """One run. Build it, then ``run(stop)``; models live in a temporary folder until then."""

    def __init__(self, settings: Settings, options: Options, sink: Sink | None = None) -> None:
        if options.what not in WHAT:
            raise ValueError(f"what must be one of {WHAT}, not {options.what!r}")
        self.settings = settings
        self.options = options
        self.scenario = resolve_scenario(options.scenario)
        self.seed = next(
            s for s in (options.seed, self.scenario.seed, DEFAULT_SEED) if s is not None
        )
        self.start, self.duration = plan_times(options, self.scenario, time.time())
        self.mode = "live" if options.speed <= LIVE_SPEED else "backfill"
        self.catalogue = catalogue_mod.load()
        self.rules = rules_mod.load(settings.rules)
        self.sink: Sink = (
            sink
            if sink is not None
            else MqttSink(settings.mqtt(), settings.topic_root, options.owner)
        )

    def run(
        self,
        stop: threading.Event,
        on_progress: Callable[[Progress], None] | None = None,
        progress_every_s: float = 0.5,
    ) -> Result:
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="pusat-sim-") as tmp:
            folder = Path(tmp)
            city = city_mod.build(folder)
            domains = city_mod.DOMAINS[self.options.what]
            gateways = city.gateways(domains)
            sensors = {s.id: s for g in gateways for s in g.sensors}
            faults = plan(
                (*self.scenario.faults, *self.options.faults),
                list(sensors.values()),
                self.catalogue,
                self.rules,
                self.start,
                self.duration,
                self.seed,
            )
            recorder = Recorder(
                faults,
                self.catalogue,
                self.rules,
                Limits(self.settings.max_skew_s, self.settings.horizon_s),
                self.mode,
            )
            injector = Injector(faults, self.catalogue)
            models = _Models(self, city, sensors, folder)
            try:
                models.start()
                self.sink.open(
                    [g.id for g in gateways],
                    {g.id: payloads.meta(self.catalogue, g) for g in gateways},
                )
                build_s = time.monotonic() - began
                loop = _Loop(
                    self,
                    models,
                    injector,
                    recorder,
                    sensors,
                    gateways,
                    on_progress,
                    progress_every_s,
                )
                end = loop.run(stop)
            finally:
                models.close()
                self.sink.close()
        recorder.finish(end, time.time())
        lines = recorder.lines()
        summary = {
            "faults": len(faults),
            "messages": loop.messages,
            "readings": loop.readings,
            "unexplained_rejections": dict(recorder.natural),
        }
        if self.options.manifest is not None:
            write(self.options.manifest, self.header(end), lines, summary)
        wall = time.monotonic() - began
        return Result(self.start, end, wall, loop.messages, loop.readings, build_s, lines, summary)

    def header(self, end: float) -> dict[str, Any]:
        return {
            "what": self.options.what,
            "scenario": self.scenario.name,
            "seed": self.seed,
            "start": payloads.iso(self.start),
            "end": payloads.iso(end),
            "speed": self.options.speed if math.isfinite(self.options.speed) else "max",
            "mode": self.mode,
            "topic_root": self.settings.topic_root,
            "max_skew_s": self.settings.max_skew_s,
            "horizon_s": self.settings.horizon_s,
        }


class _Models:
    """The models a run needs, for the sensors it publishes (air needs the traffic too)."""

    def __init__(
        self, sim: Simulation, city: city_mod.City, sensors: dict[str, Any], folder: Path
    ) -> None:
        self.sim = sim
        self.city = city
        domains = {s.domain for s in sensors.values()}
        sc = sim.scenario
        start = sim.start
        self.weather = Weather(sim.seed, sc.wind_from)
        self.traffic: TrafficModel | None = None
        self.air: AirModel | None = None
        self.wetland: WetlandModel | None = None
        self.traffic_sensors = [s for s in sensors.values() if s.domain == "traffic"]
        if domains & {"traffic", "air"}:
            stations = [st for st in city.stations if st.id in sensors or "air" in domains]
            self.traffic = TrafficModel(
                city.network,
                stations,
                sim.seed,
                lambda t: sc.peak_vph * self.demand_share(t),
                folder,
            )
        if "air" in domains:
            aq = [s for s in sensors.values() if s.domain == "air"]
            self.air = AirModel(aq, city.network, sim.seed)
        if "water" in domains:
            water = [s for s in sensors.values() if s.domain == "water"]
            horizon = sim.duration + 3600 if sim.duration is not None else 400 * 86400.0
            self.wetland = WetlandModel(water, sim.seed, start, folder, horizon)

    def demand_share(self, t: float) -> float:
        return daily_profile(local_hour(self.sim.start + t)) * self.sim.scenario.demand(t)

    def start(self) -> None:
        if self.traffic is not None:
            self.traffic.start()
        if self.wetland is not None:
            self.wetland.start()

    def close(self) -> None:
        if self.traffic is not None:
            self.traffic.close()
        if self.wetland is not None:
            self.wetland.close()


class _Loop:
    def __init__(
        self,
        sim: Simulation,
        models: _Models,
        injector: Injector,
        recorder: Recorder,
        sensors: dict[str, Any],
        gateways: list[city_mod.Gateway],
        on_progress: Callable[[Progress], None] | None,
        progress_every_s: float,
    ) -> None:
        self.sim = sim
        self.models = models
        self.injector = injector
        self.recorder = recorder
        self.sensors = sensors
        self.gateways = gateways
        self.on_progress = on_progress
        self.progress_every_s = progress_every_s
        self.queue: list[tuple[float, int, Message]] = []
        self.seq = 0
        self.messages = 0
        self.readings = 0
        self.incidents_on: set[tuple[str, int]] = set()
        self.began = time.monotonic()
        self._last_progress = (self.began, 0)

    # -- one simulated minute -------------------------------------------------------------

    def _incidents(self, t: float) -> None:
        traffic = self.models.traffic
        if traffic is None:
            return
        wanted: dict[tuple[str, int], float] = {}
        for e in self.sim.scenario.incidents(t):
            station = str(e.params.get("station", self.models.city.stations[0].id))
            edge = next((s.edge.id for s in self.models.city.stations if s.id == station), station)
            wanted[(edge, int(e.params.get("lane", 0)))] = float(e.params.get("speed", 15.0))
        for edge, lane in wanted.keys() - self.incidents_on:
            traffic.set_incident(edge, lane, True, wanted[(edge, lane)])
        for edge, lane in self.incidents_on - wanted.keys():
            traffic.set_incident(edge, lane, False)
        self.incidents_on = set(wanted)

    def _minute(self, t: float) -> list[Reading]:
        """Readings at the end of the simulated minute that began ``t`` seconds after start."""
        sc = self.sim.scenario
        m = self.models
        end = t + PERIOD_S
        ts = self.sim.start + end
        self._incidents(t)
        emissions: Emissions | None = None
        out: list[Reading] = []
        if m.traffic is not None:
            m.traffic.advance(int(end))
            emissions = m.traffic.emissions()
            for sid, v in m.traffic.loops().items():
                if sid not in self.sensors:
                    continue
                out.append(Reading(sid, "vehicle_count", ts, float(v.count)))
                out.append(Reading(sid, "flow", ts, float(v.count * 3600 // PERIOD_S)))
                out.append(Reading(sid, "occupancy", ts, round(v.occupancy, 2)))
                if v.speed is not None:
                    out.append(Reading(sid, "speed", ts, round(v.speed, 1)))
        met = m.weather.step(ts, sc.rain(t + PERIOD_S / 2))
        if m.air is not None:
            out.extend(m.air.readings(ts, met, emissions, m.demand_share(t), sc.haze(t)))
        if m.wetland is not None and end % WATER_PERIOD_S == 0:
            m.wetland.advance(ts, sc.rain(end - WATER_PERIOD_S / 2))
            out.extend(m.wetland.readings(ts, met))
        return out

    def _messages(self, readings: list[Reading], ts: float) -> None:
        by_gateway: dict[str, list[Reading]] = {}
        for r in readings:
            by_gateway.setdefault(self.sensors[r.sensor].gateway, []).append(r)
        for g in self.gateways:
            rs = by_gateway.get(g.id)
            if not rs:
                continue
            if g.form == "sdm":
                rs = _sdm_flow(rs, self.sensors)
            main: list[Reading] = []
            split: dict[str, list[Reading]] = {}
            for r in rs:
                (
                    split.setdefault(r.sensor, []) if self.injector.split(r.ts, r.sensor) else main
                ).append(r)
            if main:
                self._push(Message(g.id, g.form, self._encode(g.form, main), ts, main))
            for sid, own in split.items():
                m = Message(g.id, g.form, self._encode(g.form, own), ts, own)
                for out in self.injector.message(m, self.injector.split(own[0].ts, sid), PERIOD_S):
                    self._push(out)

    def _encode(self, form: str, rs: list[Reading]) -> bytes:
        if form == "sdm":
            return payloads.sdm(self.sim.catalogue, self.sensors, rs, PERIOD_S)
        return payloads.senml(self.sim.catalogue, rs)

    def _push(self, m: Message) -> None:
        self.seq += 1
        m.seq = self.seq
        heapq.heappush(self.queue, (m.due, m.seq, m))

    def _publish_due(self, upto: float, clock: float) -> None:
        """Publish what is due by ``upto``; ``clock`` is the simulated time now."""
        while self.queue and self.queue[0][0] <= upto:
            _, _, m = heapq.heappop(self.queue)
            self.sim.sink.send(m)
            self.recorder.published(m, time.time(), clock)
            self.messages += 1
            self.readings += 0 if m.corrupt or m.duplicate else len(m.readings)

    def _progress(self, sim_time: float, done: bool = False) -> None:
        now = time.monotonic()
        last_t, last_n = self._last_progress
        if self.on_progress is None or (not done and now - last_t < self.progress_every_s):
            return
        rate = (self.messages - last_n) / (now - last_t) if now > last_t else 0.0
        self._last_progress = (now, self.messages)
        traffic = self.models.traffic
        self.on_progress(
            Progress(
                sim_time,
                self.sim.start,
                now - self.began,
                self.messages,
                self.readings,
                rate,
                traffic.vehicles() if traffic else 0,
                done,
            )
        )

    def run(self, stop: threading.Event) -> float:
        """Simulate until the duration is reached or ``stop`` is set; the simulated end."""
        pacer = Pacer(self.sim.start, self.sim.options.speed, catch_up=self.sim.mode == "live")
        self.began = time.monotonic()
        self._last_progress = (self.began, 0)
        t = 0.0
        duration = self.sim.duration
        while (duration is None or t < duration) and not stop.is_set():
            ts = self.sim.start + t + PERIOD_S
            readings = self.injector.readings(self._minute(t))
            self._messages(readings, ts)
            if not pacer.wait(ts, stop):
                break
            self._publish_due(ts, ts)
            t += PERIOD_S
            self._progress(ts)
        end = self.sim.start + t
        if stop.is_set():
            # Stopped early: only what is due by now goes out. The minute being waited for, and
            # backlogs that faults hold beyond now, are never sent: a reading from the future
            # would be stored partly now and its complete minute refused as a duplicate later.
            self._publish_due(pacer.now(), end)
        else:
            # The end was reached: what faults held back (late, bursts) still goes out, as a
            # gateway that comes back sends its backlog; all of it is from the past by now.
            self._publish_due(math.inf, end)
        self._progress(end, done=True)
        return end


def _sdm_flow(rs: list[Reading], sensors: dict[str, Any]) -> list[Reading]:
    """SDM traffic carries the count, not the flow: the flow ingest derives is count per hour."""
    counts = {(r.sensor, r.ts): r for r in rs if r.quantity == "vehicle_count"}
    out = []
    for r in rs:
        if r.quantity == "flow" and sensors[r.sensor].domain == "traffic":
            c = counts.get((r.sensor, r.ts))
            if c is None:
                continue
            r = replace(r, value=c.value * 3600 / PERIOD_S, faults=c.faults)
        out.append(r)
    return out


def simulate(
    settings: Settings,
    options: Options,
    stop: threading.Event,
    on_progress: Callable[[Progress], None] | None = None,
    sink: Sink | None = None,
) -> Result:
    """Build and run a simulation (see ``Simulation``)."""
    return Simulation(settings, options, sink).run(stop, on_progress)
