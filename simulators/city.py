"""The simulated city: districts named after Putrajaya's precincts, its sensors and gateways.

Positions are a stylised layout around the real city centre (2.92 N, 101.69 E): twenty districts
(Presint 1 to 20) on a 5 x 4 grid of cells about 1.6 km by 2 km, the SUMO street grid over the
middle, the wetland cells north-west of the centre draining to the lake. They are approximate,
not survey positions of the precincts.

One gateway per district carries its air station and traffic loop stations; the wetland has its
own gateway. Most gateways speak SenML; those of ``SDM_DISTRICTS`` speak FIWARE Smart Data Models
so that both ingest paths run. Sensor ids and positions do not depend on the seed.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from simulators.traffic import (
    LoopStation,
    RoadNetwork,
    generate_network,
    read_network,
    station_edges,
)

if TYPE_CHECKING:
    from pusat.settings import Settings
    from simulators.runner import Progress

CENTRE_LAT = 2.92
CENTRE_LON = 101.69
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(CENTRE_LAT))

COLUMNS, ROWS = 5, 4
CELL_X, CELL_Y = 1600.0, 2000.0  # metres

SDM_DISTRICTS = (4, 9, 15)
MET_DISTRICTS = (2, 8, 13, 19)  # air stations that also measure wind and rain
TRAFFIC_STATIONS = 16

AIR_QUANTITIES = ("pm25", "pm10", "no2", "o3", "co", "so2", "temperature", "humidity")
MET_QUANTITIES = ("wind_speed", "wind_direction", "rain")
TRAFFIC_QUANTITIES = ("vehicle_count", "flow", "occupancy", "speed")
WATER_QUANTITIES = (
    "water_level",
    "water_flow",
    "tss",
    "bod",
    "cod",
    "an",
    "do",
    "do_saturation",
    "ph",
    "water_temperature",
    "turbidity",
    "conductivity",
)

# The wetland chain, upstream first, and the lake it drains to: (SWMM node, sensor, x, y).
WETLAND_NODES = (
    ("C1", "WQ-WET-01", -2600.0, 3400.0),
    ("C2", "WQ-WET-02", -2000.0, 2800.0),
    ("C3", "WQ-WET-03", -1400.0, 2300.0),
    ("C4", "WQ-WET-04", -900.0, 1700.0),
    ("C5", "WQ-WET-05", -500.0, 1100.0),
    ("LAKE", "WQ-LAKE-01", 100.0, 300.0),
)

DOMAINS: dict[str, tuple[str, ...]] = {
    "traffic": ("traffic",),
    "air": ("air",),
    "wetland": ("water",),
    "city": ("traffic", "air", "water"),
}


def to_latlon(x: float, y: float) -> tuple[float, float]:
    return (
        round(CENTRE_LAT + y / M_PER_DEG_LAT, 6),
        round(CENTRE_LON + x / M_PER_DEG_LON, 6),
    )


@dataclass(frozen=True)
class District:
    number: int
    x: float
    y: float

    @property
    def name(self) -> str:
        return f"Presint {self.number}"


@dataclass(frozen=True)
class Sensor:
    id: str
    domain: str  # traffic | air | water
    district: str
    x: float
    y: float
    quantities: tuple[str, ...]
    gateway: str
    form: str  # senml | sdm: how its gateway writes it
    ref: str = ""  # the model object behind it: SUMO edge, SWMM node
    free_flow_speed: float | None = None  # km/h, traffic loops: their street's speed limit

    @property
    def latlon(self) -> tuple[float, float]:
        return to_latlon(self.x, self.y)


@dataclass(frozen=True)
class Gateway:
    id: str
    district: str
    form: str
    sensors: tuple[Sensor, ...]


@dataclass(frozen=True)
class City:
    districts: tuple[District, ...]
    sensors: tuple[Sensor, ...]
    network: RoadNetwork
    stations: tuple[LoopStation, ...]

    def sensor(self, sensor_id: str) -> Sensor:
        for s in self.sensors:
            if s.id == sensor_id:
                return s
        raise KeyError(sensor_id)

    def gateways(self, domains: tuple[str, ...]) -> list[Gateway]:
        """Gateways with their sensors of ``domains`` (gateways left with none are omitted)."""
        by_gateway: dict[str, list[Sensor]] = {}
        for s in self.sensors:
            if s.domain in domains:
                by_gateway.setdefault(s.gateway, []).append(s)
        out = []
        for gw, sensors in sorted(by_gateway.items()):
            out.append(Gateway(gw, sensors[0].district, sensors[0].form, tuple(sensors)))
        return out


def districts() -> tuple[District, ...]:
    out = []
    for row in range(ROWS):
        for col in range(COLUMNS):
            out.append(
                District(
                    row * COLUMNS + col + 1,
                    (col - (COLUMNS - 1) / 2) * CELL_X,
                    ((ROWS - 1) / 2 - row) * CELL_Y,
                )
            )
    return tuple(out)


def district_at(all_districts: tuple[District, ...], x: float, y: float) -> District:
    return min(all_districts, key=lambda d: (d.x - x) ** 2 + (d.y - y) ** 2)


def _gateway_of(d: District) -> tuple[str, str]:
    return f"gw-p{d.number:02d}", "sdm" if d.number in SDM_DISTRICTS else "senml"


def build(folder: Path) -> City:
    """The city, with its SUMO network generated into ``folder`` (about 0.3 s)."""
    ds = districts()
    network = read_network(generate_network(folder))
    sensors: list[Sensor] = []
    for d in ds:
        gw, form = _gateway_of(d)
        quantities = AIR_QUANTITIES + (MET_QUANTITIES if d.number in MET_DISTRICTS else ())
        sensors.append(
            Sensor(f"AQ-P{d.number:02d}", "air", d.name, d.x + 150, d.y - 120, quantities, gw, form)
        )
    stations = []
    per_district: dict[int, int] = {}
    for edge in station_edges(network, TRAFFIC_STATIONS):
        x, y = edge.middle
        d = district_at(ds, x, y)
        per_district[d.number] = per_district.get(d.number, 0) + 1
        sid = f"TF-P{d.number:02d}-{per_district[d.number]:02d}"
        gw, form = _gateway_of(d)
        stations.append(LoopStation(sid, edge))
        sensors.append(
            Sensor(
                sid, "traffic", d.name, x, y, TRAFFIC_QUANTITIES, gw, form, edge.id, edge.speed_kmh
            )
        )
    for node, sid, x, y in WETLAND_NODES:
        d = district_at(ds, x, y)
        sensors.append(
            Sensor(sid, "water", d.name, x, y, WATER_QUANTITIES, "gw-wetland", "senml", node)
        )
    return City(ds, tuple(sensors), network, tuple(stations))


def up_owner(home: Path) -> str:
    """The status owner of `pusat up`'s city: the same across restarts of one PUSAT_HOME, so
    that a restart takes over (and ends) the claim of the run before it, even one killed with
    its broker, and differs from any other publisher of the same gateways."""
    return "up-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]


def run(
    settings: Settings,
    stop: threading.Event,
    speed: float = 1.0,
    seed: int | None = None,
    scenario: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> None:
    """Run the whole simulated city, publishing to ``settings``' broker under its topic root,
    in real time (``speed`` 1) from now, until ``stop`` is set. For `pusat up`.

    Blocks; call it in a thread of its own. Starting takes about a second (street network, SUMO,
    SWMM spin-up, one MQTT connection per gateway) before the first readings, which come at the
    end of the first simulated minute.

    Its gateways' status has one owner per PUSAT_HOME (see ``up_owner``).
    """
    from simulators.runner import Options, simulate

    simulate(
        settings,
        Options(
            what="city", speed=speed, seed=seed, scenario=scenario, owner=up_owner(settings.home)
        ),
        stop,
        on_progress,
    )
