"""Air quality: a regional background plus local traffic, dispersed to each station.

ILLUSTRATIVE, not a regulatory or validated model. It keeps the readings physically consistent
with each other and with the simulated traffic and weather, nothing more:

- Regional background with a daily cycle: particles and NO2 build up in the shallow night-time
  mixing layer and peak with the morning rush, ozone is photochemical (afternoon peak), and a haze
  episode (a scenario event, as from regional biomass burning) adds fine particles and some CO.
- Local traffic: SUMO's per-edge emissions (PMx, NOx, CO; PMx is exhaust only) are treated as
  line sources. Each edge adds ``q / (sqrt(2 pi) sigma_z(d) u)`` at a station ``d`` metres away,
  weighted by how much the station is downwind, cut off beyond ~1 km. ``FLEET_FACTOR`` stands
  for the traffic the simulated grid does not carry (minor roads, through traffic) and
  ``LOCAL_ROADS`` for streets near stations outside the grid. NOx is reported as NO2 with a
  fixed converted share; non-exhaust particles (brakes, tyres, road dust) scale the exhaust PMx.
- Each station has its own slow wander and a little sensor noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from simulators.city import Sensor
from simulators.readings import Reading
from simulators.traffic import Emissions, RoadNetwork
from simulators.weather import AR1, Met, daylight, local_hour

FLEET_FACTOR = 25.0
NO2_SHARE = 0.3  # of NOx mass near roads, as NO2
PM25_NON_EXHAUST = 1.5  # non-exhaust PM2.5 per unit of exhaust PMx
PM10_PER_PMX = 4.0  # PM10 (exhaust + coarse road dust) per unit of exhaust PMx
UGM3_TO_PPB_NO2 = 0.5319  # 25 C, 1 atm
MGM3_TO_PPM_CO = 0.8734
CUTOFF_M = 1000.0
LOCAL_ROADS = {"no2": 6.0, "pm25": 1.5, "co": 0.15}  # added at full demand, ppb / ug/m3 / ppm


def _bump(hour: float, centre: float, width: float) -> float:
    d = (hour - centre + 12) % 24 - 12
    return math.exp(-0.5 * (d / width) ** 2)


def _segment_distance(
    px: npt.NDArray[np.float64],
    py: npt.NDArray[np.float64],
    a: tuple[float, float],
    b: tuple[float, float],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Distance from points to segment ab, and the vector from the nearest point to them."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    length2 = dx * dx + dy * dy or 1e-9
    u = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0.0, 1.0)
    vx, vy = px - (ax + u * dx), py - (ay + u * dy)
    return np.hypot(vx, vy), vx, vy


class AirModel:
    def __init__(self, stations: Sequence[Sensor], network: RoadNetwork | None, seed: int) -> None:
        self.stations = list(stations)
        rng = np.random.default_rng([seed, 3])
        self.rng = rng
        self.bg_pm = AR1(rng, 0.995, 3.0)
        self.bg_no2 = AR1(rng, 0.98, 1.5)
        self.bg_o3 = AR1(rng, 0.98, 3.0)
        self.bg_co = AR1(rng, 0.98, 0.04)
        self.bg_so2 = AR1(rng, 0.98, 0.4)
        n = len(self.stations)
        self.own = [AR1(rng, 0.9, 0.08) for _ in range(n * 4)]  # per station and pollutant
        self.gauge = rng.uniform(0.8, 1.2, n)  # rain varies across the city
        self.local_t = rng.normal(0.0, 0.3, n)  # small siting differences
        self._geometry(network)

    def _geometry(self, network: RoadNetwork | None) -> None:
        """Distance and direction from every edge to every station, once."""
        n = len(self.stations)
        if network is None:
            self.dist = np.full((n, 0), np.inf)
            self.dirx = self.diry = np.zeros((n, 0))
            self.lengths = np.ones(0)
            return
        px = np.array([s.x for s in self.stations])
        py = np.array([s.y for s in self.stations])
        edges = network.edges
        dist = np.full((n, len(edges)), np.inf)
        vx = np.zeros((n, len(edges)))
        vy = np.zeros((n, len(edges)))
        for j, e in enumerate(edges):
            for a, b in zip(e.shape[:-1], e.shape[1:], strict=True):
                d, x, y = _segment_distance(px, py, a, b)
                closer = d < dist[:, j]
                dist[:, j] = np.where(closer, d, dist[:, j])
                vx[:, j] = np.where(closer, x, vx[:, j])
                vy[:, j] = np.where(closer, y, vy[:, j])
        norm = np.maximum(np.hypot(vx, vy), 1e-9)
        self.dist = dist
        self.dirx, self.diry = vx / norm, vy / norm  # unit vectors edge -> station
        self.lengths = np.array([max(e.length, 1.0) for e in edges])

    def _local(self, em: Emissions | None, met: Met) -> npt.NDArray[np.float64]:
        """Local traffic increments (stations x [pmx, nox, co]) in ug/m3 (CO in mg/m3 later)."""
        n = len(self.stations)
        if em is None or self.dist.shape[1] == 0:
            return np.zeros((n, 3))
        d = np.maximum(self.dist, 10.0)
        sigma_z = 4.0 + 0.12 * d
        to = math.radians((met.wind_direction + 180.0) % 360.0)  # where the wind blows to
        wx, wy = math.sin(to), math.cos(to)
        downwind = 0.35 + 0.65 * np.maximum(0.0, self.dirx * wx + self.diry * wy)
        kernel = np.where(
            d < CUTOFF_M,
            downwind
            * np.exp(-0.5 * (d / (CUTOFF_M / 2)) ** 2)
            / (math.sqrt(2 * math.pi) * sigma_z * max(met.wind_speed, 0.5)),
            0.0,
        )  # 1/m2 per (m/s): mg/s/m of line source -> mg/m3
        q = np.stack([em.pmx, em.nox, em.co]) / self.lengths  # mg/s per metre
        mg_m3 = kernel @ q.T * FLEET_FACTOR
        out: npt.NDArray[np.float64] = mg_m3 * 1000.0  # ug/m3
        return out

    def readings(
        self,
        ts: float,
        met: Met,
        emissions: Emissions | None,
        demand_share: float,
        haze_pm25: float = 0.0,
    ) -> list[Reading]:
        h = local_hour(ts)
        day = daylight(h)
        stagnant = 1.0 - day  # shallow mixing layer at night
        wash = 1.0 / (1.0 + met.rain / 8.0)  # rain scavenges particles
        pm_bg = (
            max(2.0, (10.0 + 5.0 * stagnant + 4.0 * _bump(h, 7.5, 1.8) + self.bg_pm.step()) * wash)
            + haze_pm25
        )
        no2_bg = max(0.5, 5.0 + 7.0 * stagnant + self.bg_no2.step())
        o3_bg = max(
            1.0,
            8.0
            + 40.0 * _bump(h, 14.0, 2.6) * (1 - 0.4 * met.rain / (met.rain + 5))
            + self.bg_o3.step(),
        )
        co_bg = max(0.05, 0.3 + 0.15 * stagnant + 0.004 * haze_pm25 + self.bg_co.step())
        so2_bg = max(0.2, 1.5 + self.bg_so2.step())
        local = self._local(emissions, met)
        out: list[Reading] = []
        for i, s in enumerate(self.stations):
            k = 4 * i
            wander = [math.exp(self.own[k + j].step()) for j in range(4)]
            pmx, nox, co_local = local[i]
            no2_local = NO2_SHARE * nox * UGM3_TO_PPB_NO2 + LOCAL_ROADS["no2"] * demand_share
            pm25 = pm_bg + pmx * (1 + PM25_NON_EXHAUST) + LOCAL_ROADS["pm25"] * demand_share
            pm25 *= wander[0]
            pm10 = (pm_bg * 1.6 + pmx * PM10_PER_PMX) * wander[1] * (1.0 + 0.5 * wash)
            no2 = (no2_bg + no2_local) * wander[2]
            o3 = max(2.0, o3_bg - 0.35 * no2_local)  # traffic NO titrates ozone near roads
            co = co_bg + co_local / 1000.0 * MGM3_TO_PPM_CO + LOCAL_ROADS["co"] * demand_share
            co *= wander[3]
            noise = self.rng.normal(0.0, 1.0, 6)
            values = {
                "pm25": round(max(0.0, pm25 + 0.5 * noise[0]), 1),
                "pm10": round(max(0.0, pm10 + 1.0 * noise[1]), 1),
                "no2": round(max(0.0, no2 + 0.4 * noise[2]), 1),
                "o3": round(max(0.0, o3 + 0.5 * noise[3]), 1),
                "co": round(max(0.0, co + 0.01 * noise[4]), 3),
                "so2": round(max(0.0, so2_bg + 0.1 * noise[5]), 1),
                "temperature": round(met.temperature + self.local_t[i], 1),
                "humidity": round(min(100.0, met.humidity - 2.0 * self.local_t[i]), 1),
                "wind_speed": round(met.wind_speed, 1),
                "wind_direction": round(met.wind_direction) % 360,
                "rain": round(met.rain * float(self.gauge[i]), 1),
            }
            out.extend(Reading(s.id, q, ts, float(values[q])) for q in s.quantities)
        return out
