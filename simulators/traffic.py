"""Traffic: Eclipse SUMO (libsumo) on a generated street grid with signalised junctions.

The network comes from SUMO's own `netgenerate` (a grid of two-lane streets with fixed-time
traffic lights); demand is drawn every second as a Poisson process whose rate follows the time of
day (two rush hours) and the scenario, between random fringe entries and exits on routes SUMO
computes. Each loop station is an induction loop per lane, mid-block, reporting per minute the
vehicle count, occupancy (%) and mean speed; flow is the count per hour. Per-edge emissions
(PMx, NOx, CO, in mg per step) are sampled for the air model.

libsumo is one simulation per process, driven from the thread that started it.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PERIOD_S = 60  # loop aggregation period, seconds (the catalogue's period for traffic)
EMISSION_SAMPLE_S = 5  # emissions are read every this many steps and scaled up


class SumoMissing(RuntimeError):
    """SUMO is not installed: `pip install 'pusat[sim]'`."""


@dataclass(frozen=True)
class Edge:
    id: str
    lanes: int
    length: float
    shape: tuple[tuple[float, float], ...]  # city metres (x east, y north)
    source: bool  # starts at the network's fringe: vehicles enter here
    sink: bool  # ends at the fringe: vehicles leave here
    speed_kmh: float = 50.0  # the street's speed limit: its free-flow speed

    @property
    def middle(self) -> tuple[float, float]:
        xs, ys = zip(*self.shape, strict=True)
        return (sum(xs) / len(xs), sum(ys) / len(ys))


@dataclass(frozen=True)
class RoadNetwork:
    path: Path
    edges: tuple[Edge, ...]


def sumo_home() -> Path:
    try:
        import sumo  # type: ignore[import-untyped]
    except ImportError as e:
        raise SumoMissing("Eclipse SUMO is not installed: pip install 'pusat[sim]'") from e
    return Path(sumo.SUMO_HOME)


def generate_network(folder: Path) -> Path:
    """Write the street grid with SUMO's netgenerate (deterministic: no random options)."""
    home = sumo_home()
    path = folder / "city.net.xml"
    binary = home / "bin" / "netgenerate"
    args = [
        str(binary),
        "--grid",
        "--grid.x-number=6",
        "--grid.y-number=5",
        "--grid.x-length=600",
        "--grid.y-length=500",
        "--grid.attach-length=150",
        "--default.lanenumber=2",
        "--default.speed=16.67",  # 60 km/h streets
        "--default-junction-type=traffic_light",
        "--tls.default-type=static",
        "--no-turnarounds=true",
        "--no-warnings=true",
        "--seed=1",
        f"--output-file={path}",
    ]
    env = {**os.environ, "SUMO_HOME": str(home)}  # SUMO's tools look it up; nothing of ours does
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"netgenerate failed ({out.returncode}): {out.stderr.strip()}")
    return path


def read_network(path: Path) -> RoadNetwork:
    """Edges of a SUMO network in city metres, centred on the network's middle."""
    import sumolib  # type: ignore[import-untyped]

    net = sumolib.net.readNet(str(path))
    (x0, y0), (x1, y1) = net.getBBoxXY()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    edges = []
    for e in sorted(net.getEdges(), key=lambda e: e.getID()):
        if e.getFunction() == "internal":
            continue
        edges.append(
            Edge(
                id=e.getID(),
                lanes=e.getLaneNumber(),
                length=float(e.getLength()),
                shape=tuple((float(x) - cx, float(y) - cy) for x, y in e.getShape()),
                source=e.getFromNode().getType() == "dead_end",
                sink=e.getToNode().getType() == "dead_end",
                speed_kmh=round(float(e.getSpeed()) * 3.6, 1),  # SUMO gives m/s
            )
        )
    return RoadNetwork(path, tuple(edges))


@dataclass(frozen=True)
class LoopStation:
    """A counting station: one induction loop per lane of an edge, mid-block."""

    id: str
    edge: Edge

    def loop_ids(self) -> list[str]:
        return [f"{self.id}_{i}" for i in range(self.edge.lanes)]


def station_edges(network: RoadNetwork, count: int) -> list[Edge]:
    """Edges for ``count`` stations spread over the grid (the inner streets nearest to points of
    a lattice, so the choice is fixed for a given network)."""
    inner = [e for e in network.edges if not e.source and not e.sink]
    xs = [p[0] for e in inner for p in e.shape]
    ys = [p[1] for e in inner for p in e.shape]
    side = math.ceil(math.sqrt(count))
    chosen: list[Edge] = []
    for i in range(count):
        gx = min(xs) + (max(xs) - min(xs)) * ((i % side) + 0.5) / side
        gy = min(ys) + (max(ys) - min(ys)) * ((i // side) + 0.5) / side
        free = [e for e in inner if e not in chosen]
        chosen.append(
            min(free, key=lambda e: (e.middle[0] - gx) ** 2 + (e.middle[1] - gy) ** 2 + len(e.id))
        )
    return chosen


@dataclass(frozen=True)
class LoopValues:
    """One period at a station: vehicles counted, mean occupancy (%), mean speed (km/h)."""

    count: int
    occupancy: float
    speed: float | None  # None: no vehicle passed


@dataclass(frozen=True)
class Emissions:
    """Mean emission rates over the last period per edge (order of ``RoadNetwork.edges``), mg/s."""

    pmx: npt.NDArray[np.float64]
    nox: npt.NDArray[np.float64]
    co: npt.NDArray[np.float64]


Demand = Callable[[float], float]  # simulated seconds since the start -> vehicles per hour


def _libsumo() -> Any:
    try:
        # libsumo prints a pyarrow version warning on import (a parquet feature we do not use);
        # keep it out of the command line's output.
        with contextlib.redirect_stdout(io.StringIO()):
            import libsumo  # type: ignore[import-untyped]
    except ImportError as e:
        raise SumoMissing("libsumo is not installed: pip install 'pusat[sim]'") from e
    return libsumo


class TrafficModel:
    def __init__(
        self,
        network: RoadNetwork,
        stations: Sequence[LoopStation],
        seed: int,
        demand: Demand,
        folder: Path,
    ) -> None:
        self.network = network
        self.stations = list(stations)
        self.seed = seed
        self.demand = demand
        self.folder = folder
        self.rng = np.random.default_rng([seed, 1])
        self.now = 0  # simulated seconds since the start
        self._ls: Any = None
        self._sources = [e.id for e in network.edges if e.source]
        self._sinks = [e.id for e in network.edges if e.sink]
        self._routes: dict[tuple[str, str], str | None] = {}
        self._route_ids = 0
        self._vehicles = 0
        n = len(network.edges)
        self._acc = np.zeros((3, n))
        self._acc_s = 0
        # closed lane -> (classes it allowed, max speed of the other lanes) before the incident
        self._closed: dict[str, tuple[list[str], dict[str, float]]] = {}

    def start(self) -> None:
        ls = _libsumo()
        detectors = self.folder / "loops.add.xml"
        lines = ["<additional>"]
        for st in self.stations:
            pos = st.edge.length / 2
            for i, loop in enumerate(st.loop_ids()):
                lines.append(
                    f'  <inductionLoop id="{loop}" lane="{st.edge.id}_{i}" pos="{pos:.1f}"'
                    f' period="{PERIOD_S}" file="NUL"/>'
                )
        lines.append("</additional>")
        detectors.write_text("\n".join(lines) + "\n")
        ls.start(
            [
                "sumo",
                "--net-file",
                str(self.network.path),
                "--additional-files",
                str(detectors),
                "--step-length",
                "1",
                "--seed",
                str(self.seed % 2**31),
                "--time-to-teleport",
                "300",  # a gridlocked vehicle jumps ahead after 5 minutes, as SUMO's default
                "--no-step-log",
                "true",
                "--no-warnings",
                "true",
                "--duration-log.disable",
                "true",
            ]
        )
        self._ls = ls

    def close(self) -> None:
        if self._ls is not None:
            self._ls.close()
            self._ls = None

    def _route(self, src: str, dst: str) -> str | None:
        key = (src, dst)
        if key not in self._routes:
            found = self._ls.simulation.findRoute(src, dst)
            rid = None
            if found.edges:
                self._route_ids += 1
                rid = f"r{self._route_ids}"
                self._ls.route.add(rid, list(found.edges))
            self._routes[key] = rid
        return self._routes[key]

    def _depart(self) -> None:
        n = int(self.rng.poisson(max(self.demand(self.now), 0.0) / 3600.0))
        for _ in range(n):
            src = self._sources[int(self.rng.integers(len(self._sources)))]
            dst = self._sinks[int(self.rng.integers(len(self._sinks)))]
            rid = self._route(src, dst)
            if rid is None:
                continue
            try:
                self._ls.vehicle.add(
                    f"v{self._vehicles}", rid, departLane="best", departSpeed="max"
                )
            except self._ls.TraCIException:
                # An incident closed a lane that a cached route turns from: route afresh next
                # time; this trip is not made (as a driver who hears of it stays home).
                self._routes.pop((src, dst), None)
                continue
            self._vehicles += 1

    def _sample_emissions(self) -> None:
        edge = self._ls.edge
        for i, e in enumerate(self.network.edges):
            self._acc[0, i] += edge.getPMxEmission(e.id) * EMISSION_SAMPLE_S
            self._acc[1, i] += edge.getNOxEmission(e.id) * EMISSION_SAMPLE_S
            self._acc[2, i] += edge.getCOEmission(e.id) * EMISSION_SAMPLE_S
        self._acc_s += EMISSION_SAMPLE_S

    def advance(self, until: int) -> None:
        """Run SUMO second by second up to ``until`` simulated seconds since the start."""
        if self._ls is None:
            raise RuntimeError("TrafficModel.start() first")
        while self.now < until:
            self._depart()
            self._ls.simulationStep()
            self.now += 1
            if self.now % EMISSION_SAMPLE_S == 0:
                self._sample_emissions()

    def loops(self) -> dict[str, LoopValues]:
        """The last completed period at every station."""
        il = self._ls.inductionloop
        out = {}
        for st in self.stations:
            count = 0
            occ = 0.0
            speed_sum = 0.0
            for loop in st.loop_ids():
                n = int(il.getLastIntervalVehicleNumber(loop))
                count += n
                occ += max(0.0, float(il.getLastIntervalOccupancy(loop)))  # -1: no data yet
                if n > 0:
                    speed_sum += float(il.getLastIntervalMeanSpeed(loop)) * n
            speed = speed_sum / count * 3.6 if count else None  # SUMO gives m/s
            out[st.id] = LoopValues(count, occ / len(st.loop_ids()), speed)
        return out

    def emissions(self) -> Emissions:
        """Mean emission rates since the last call (mg/s per edge), then start afresh."""
        span = max(self._acc_s, 1)
        rates = self._acc / span
        self._acc = np.zeros_like(self._acc)
        self._acc_s = 0
        return Emissions(rates[0], rates[1], rates[2])

    def vehicles(self) -> int:
        return int(self._ls.vehicle.getIDCount()) if self._ls is not None else 0

    def set_incident(self, edge: str, lane: int, on: bool, speed_kmh: float = 15.0) -> None:
        """An incident: a lane closed (only emergency vehicles may use it) and the traffic
        squeezing past on the other lanes slowed to ``speed_kmh``, until it is cleared."""
        key = f"{edge}_{lane}"
        lanes = [e.lanes for e in self.network.edges if e.id == edge]
        others = [f"{edge}_{i}" for i in range(lanes[0] if lanes else 0) if i != lane]
        if on and key not in self._closed:
            self._closed[key] = (
                list(self._ls.lane.getAllowed(key)),
                {o: float(self._ls.lane.getMaxSpeed(o)) for o in others},
            )
            self._ls.lane.setAllowed(key, ["emergency"])
            for o in others:
                self._ls.lane.setMaxSpeed(o, speed_kmh / 3.6)
        elif not on and key in self._closed:
            allowed, speeds = self._closed.pop(key)
            self._ls.lane.setAllowed(key, allowed)  # an empty list allows every class again
            for o, v in speeds.items():
                self._ls.lane.setMaxSpeed(o, v)


def _bump(hour: float, centre: float, width: float) -> float:
    d = (hour - centre + 12) % 24 - 12  # distance on the 24-hour circle
    return math.exp(-0.5 * (d / width) ** 2)


def daily_profile(hour: float) -> float:
    """Share of the peak demand by local hour: quiet nights, a morning rush around 08:00, a
    busy midday and an evening rush around 18:00 (the shape of an office city's weekday)."""
    return min(
        1.0,
        0.08
        + 0.35 * _bump(hour, 13.0, 3.0)
        + 0.85 * _bump(hour, 8.0, 0.9)
        + 0.85 * _bump(hour, 18.0, 1.1),
    )
