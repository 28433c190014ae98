"""The wetland: an EPA SWMM model (pyswmm) of a chain of wetland cells draining to the lake.

Five cells (storage units) in series, each spilling over a weir into the next; the last cell
feeds the lake, which spills over the dam. A river brings a steady base flow with its pollutant
load into the first cell; each cell has its own urban catchment whose runoff washes off built-up
TSS, BOD, COD and ammoniacal nitrogen (NH3-N) when it rains. Pollutants decay in the cells at
first-order rates (settling, breakdown, nitrification): the wetland cleans the water on its way.

SWMM carries level, flow and those pollutants. Dissolved oxygen, pH, water temperature,
turbidity and conductivity come from small stochastic models tied to it: water temperature
follows the air with a lag, oxygen follows saturation and daylight (photosynthesis) and drops
with the organic load and suspended solids a storm brings, turbidity follows TSS, rain dilutes
conductivity. Illustrative numbers, in the ranges of tropical constructed wetlands.

SWMM runs one model per process; it is stepped five simulated minutes at a time, after a
two-day spin-up so that the first readings are not a start-up transient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from simulators.city import WETLAND_NODES, Sensor
from simulators.readings import Reading
from simulators.weather import AR1, Met, daylight, local_hour

PERIOD_S = 300  # the catalogue's period for water quantities
SPIN_UP_S = 2 * 86400
NODES = [n for n, *_ in WETLAND_NODES]
BASE_FLOW = 2.0  # m3/s, the river into the first cell
RIVER = {"TSS": 35.0, "BOD": 4.0, "COD": 20.0, "NH3N": 0.4}  # mg/l in the base flow
AREA_HA = (600, 400, 300, 300, 200, 500)  # catchment of each cell, hectares
SURFACE_M2 = (150_000, 120_000, 100_000, 100_000, 80_000, 4_000_000)
INVERT_M = (20.0, 18.5, 17.0, 15.5, 14.0, 11.0)
CREST_M = 1.2  # weir crest above each cell's bottom: the normal water depth
WEIR_M = (40.0, 40.0, 40.0, 40.0, 40.0, 80.0)  # crest lengths
DECAY_PER_DAY = {"TSS": 1.5, "BOD": 0.3, "COD": 0.15, "NH3N": 0.4}
CONDUCTIVITY = (230.0, 215.0, 200.0, 190.0, 180.0, 160.0)  # uS/cm in dry weather


class SwmmMissing(RuntimeError):
    """pyswmm is not installed: `pip install 'pusat[sim]'`."""


def _steady_depth(flow: float, crest_length: float) -> float:
    """Depth over a sharp-crested weir passing ``flow`` (Q = 1.84 L h^1.5), plus the crest."""
    return CREST_M + float((flow / (1.84 * crest_length)) ** (2 / 3))


def model_text(start: datetime, end: datetime) -> str:
    """The SWMM input file. ``start``/``end`` are naive UTC times (SWMM has no time zones)."""
    d, t = "%m/%d/%Y", "%H:%M:%S"
    sections = [
        "[TITLE]\nPusat simulated Putrajaya wetland (illustrative)",
        "[OPTIONS]\nFLOW_UNITS CMS\nINFILTRATION HORTON\nFLOW_ROUTING DYNWAVE\n"
        "LINK_OFFSETS DEPTH\nALLOW_PONDING NO\n"
        f"START_DATE {start:{d}}\nSTART_TIME {start:{t}}\n"
        f"REPORT_START_DATE {start:{d}}\nREPORT_START_TIME {start:{t}}\n"
        f"END_DATE {end:{d}}\nEND_TIME {end:{t}}\n"
        "DRY_DAYS 3\nREPORT_STEP 06:00:00\nWET_STEP 00:01:00\nDRY_STEP 00:05:00\n"
        "ROUTING_STEP 0:00:10\nVARIABLE_STEP 0.75\nMIN_SURFAREA 1.14\nTHREADS 1",
        "[RAINGAGES]\nRG1 INTENSITY 0:05 1.0 TIMESERIES RAIN",
        "[SUBCATCHMENTS]\n"
        + "\n".join(f"S{i + 1} RG1 {n} {AREA_HA[i]} 45 1500 1.0 0" for i, n in enumerate(NODES)),
        "[SUBAREAS]\n" + "\n".join(f"S{i + 1} 0.015 0.2 2 6 25 OUTLET" for i in range(6)),
        "[INFILTRATION]\n" + "\n".join(f"S{i + 1} 60 8 4 7 0" for i in range(6)),
        "[OUTFALLS]\nDAM 0 FREE NO",
        "[STORAGE]\n"
        + "\n".join(
            f"{n} {INVERT_M[i]} 4.0 {_steady_depth(BASE_FLOW, WEIR_M[i]):.3f} FUNCTIONAL"
            f" 0 0 {SURFACE_M2[i]} 0 0"
            for i, n in enumerate(NODES)
        ),
        "[WEIRS]\n"
        + "\n".join(
            f"W{i + 1} {n} {([*NODES, 'DAM'])[i + 1]} TRANSVERSE {CREST_M} 1.84 NO 0 0 YES"
            for i, n in enumerate(NODES)
        ),
        "[XSECTIONS]\n" + "\n".join(f"W{i + 1} RECT_OPEN 3.0 {WEIR_M[i]} 0 0" for i in range(6)),
        "[POLLUTANTS]\n"
        + "\n".join(f"{p} MG/L 0 0 0 {DECAY_PER_DAY[p]} NO * 0 0 {RIVER[p] * 0.5}" for p in RIVER),
        "[LANDUSES]\nurban 0 0 0",
        "[COVERAGES]\n" + "\n".join(f"S{i + 1} urban 100" for i in range(6)),
        "[BUILDUP]\nurban TSS SAT 50 0 2 AREA\nurban BOD SAT 8 0 2 AREA\n"
        "urban COD SAT 40 0 2 AREA\nurban NH3N SAT 1.0 0 2 AREA",
        "[WASHOFF]\nurban TSS EXP 0.1 1.2 0 0\nurban BOD EXP 0.08 1.1 0 0\n"
        "urban COD EXP 0.08 1.1 0 0\nurban NH3N EXP 0.06 1.0 0 0",
        "[INFLOWS]\n"
        + f'C1 FLOW "" FLOW 1.0 1.0 {BASE_FLOW}\n'
        + "\n".join(f'C1 {p} "" CONCEN 1.0 1.0 {c}' for p, c in RIVER.items()),
        f"[TIMESERIES]\nRAIN {start:{d}} {start:%H:%M} 0",
        "[REPORT]\nINPUT NO\nCONTROLS NO",
    ]
    return "\n\n".join(sections) + "\n"


class WetlandModel:
    def __init__(
        self,
        sensors: Sequence[Sensor],
        seed: int,
        start: float,
        folder: Path,
        horizon_s: float = 400 * 86400.0,
    ) -> None:
        self.sensors = list(sensors)
        self.start_ts = start
        self.folder = folder
        self.horizon_s = horizon_s
        rng = np.random.default_rng([seed, 4])
        self.rng = rng
        n = len(self.sensors)
        self.do_noise = [AR1(rng, 0.9, 0.03) for _ in range(n)]
        self.ph_noise = [AR1(rng, 0.9, 0.04) for _ in range(n)]
        self.turb_noise = [AR1(rng, 0.8, 0.06) for _ in range(n)]
        self.water_t = [28.5 + 0.1 * i for i in range(n)]
        self._sim: Any = None
        self._nodes: Any = None
        self._links: Any = None
        self._gage: Any = None
        self.now = start - SPIN_UP_S

    def start(self) -> None:
        try:
            from pyswmm import (  # type: ignore[import-untyped]
                Links,
                Nodes,
                RainGages,
                Simulation,
            )
        except ImportError as e:
            raise SwmmMissing("pyswmm is not installed: pip install 'pusat[sim]'") from e
        begin = datetime.fromtimestamp(self.now, UTC).replace(tzinfo=None)
        end = begin + timedelta(seconds=SPIN_UP_S + self.horizon_s)
        path = self.folder / "wetland.inp"
        path.write_text(model_text(begin, end))
        sim = Simulation(str(path))
        sim.step_advance(PERIOD_S)
        sim.start()
        self._sim = sim
        self._nodes = Nodes(sim)
        self._links = Links(sim)
        self._gage = RainGages(sim)["RG1"]
        self.advance(self.start_ts, 0.0)

    def close(self) -> None:
        if self._sim is not None:
            self._sim.close()
            self._sim = None

    def advance(self, until: float, rain: float) -> None:
        """Step SWMM to ``until`` (epoch seconds) with ``rain`` mm/h falling meanwhile."""
        self._gage.total_precip = rain  # stays in force until set again
        while self.now + PERIOD_S <= until + 1e-6:
            next(self._sim)
            self.now += PERIOD_S

    def readings(self, ts: float, met: Met) -> list[Reading]:
        h = local_hour(ts)
        light = daylight(h - 1.5)  # oxygen lags the sun by the plants' and the water's inertia
        out: list[Reading] = []
        for i, s in enumerate(self.sensors):
            idx = NODES.index(s.ref)
            node = self._nodes[s.ref]
            quality = node.pollut_quality
            tss, bod, cod, nh3n = (float(quality[p]) for p in ("TSS", "BOD", "COD", "NH3N"))
            depth = float(node.depth)
            flow = float(self._links[f"W{idx + 1}"].flow)
            lag_h = 12.0 if s.ref == "LAKE" else 6.0
            self.water_t[i] += (met.temperature - 1.0 - self.water_t[i]) * (PERIOD_S / 3600) / lag_h
            wt = self.water_t[i]
            sat = 14.652 - 0.41022 * wt + 0.0079910 * wt**2 - 0.000077774 * wt**3
            frac = (
                0.80
                + 0.22 * light
                - 0.035 * max(0.0, bod - 3.0)
                - 0.002 * max(0.0, tss - 25.0)
                + self.do_noise[i].step()
            )
            do = max(0.3, sat * frac)
            ph = (
                7.0
                + 0.35 * light
                - 0.004 * max(0.0, tss - 25.0)
                - 0.15 * met.rain / (met.rain + 20.0)
                + self.ph_noise[i].step()
            )
            turbidity = (2.0 + 0.85 * tss) * math.exp(self.turb_noise[i].step())
            dilution = max(0.0, flow - BASE_FLOW) / (abs(flow) + 5.0)
            conductivity = CONDUCTIVITY[idx] * (1.0 - 0.4 * dilution)
            noise = self.rng.normal(0.0, 1.0, 8)
            values = {
                "water_level": round(depth + 0.003 * noise[0], 3),
                "water_flow": round(flow * (1 + 0.01 * noise[1]), 3),
                "tss": round(max(0.0, tss * (1 + 0.03 * noise[2])), 1),
                "bod": round(max(0.0, bod * (1 + 0.03 * noise[3])), 2),
                "cod": round(max(0.0, cod * (1 + 0.03 * noise[4])), 1),
                "an": round(max(0.0, nh3n * (1 + 0.03 * noise[5])), 3),
                "do": round(do, 2),
                "do_saturation": round(100.0 * do / sat, 1),
                "ph": round(ph, 2),
                "water_temperature": round(wt + 0.05 * noise[6], 2),
                "turbidity": round(turbidity, 1),
                "conductivity": round(conductivity * (1 + 0.01 * noise[7]), 0),
            }
            out.extend(Reading(s.id, q, ts, float(values[q])) for q in s.quantities)
        return out
