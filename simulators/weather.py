"""Weather over the city: one field for all stations, stepped once per simulated minute.

Shapes of a humid tropical inland city: nights near 25 C and saturated, afternoons near 33 C and
60 % humidity, light winds that pick up in the day, rain only when a scenario brings a storm
(which cools, moistens and gusts). Slow random wanderings (AR(1) processes) keep it from being a
clean sine. Illustrative, not a forecast model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UTC_OFFSET_S = 8 * 3600  # Malaysia time, UTC+8: the city's daily rhythm follows local hours


def local_hour(ts: float) -> float:
    return ((ts + UTC_OFFSET_S) % 86400.0) / 3600.0


def daylight(hour: float) -> float:
    """0 at night, rising to 1 at solar noon (sunrise about 07:00, sunset about 19:15)."""
    return max(0.0, math.sin(math.pi * (hour - 7.0) / 12.25))


@dataclass(frozen=True)
class Met:
    temperature: float  # Cel
    humidity: float  # %RH
    wind_speed: float  # m/s
    wind_direction: float  # degrees, where the wind comes from
    rain: float  # mm/h


class AR1:
    """x' = phi x + sigma sqrt(1 - phi^2) e: a stationary wander of standard deviation sigma."""

    def __init__(self, rng: np.random.Generator, phi: float, sigma: float) -> None:
        self.rng = rng
        self.phi = phi
        self.scale = sigma * math.sqrt(1 - phi * phi)
        self.x = float(rng.normal(0.0, sigma))

    def step(self) -> float:
        self.x = self.phi * self.x + self.scale * float(self.rng.normal())
        return self.x


class Weather:
    def __init__(self, seed: int, wind_from: float = 225.0) -> None:
        rng = np.random.default_rng([seed, 2])
        self.t_noise = AR1(rng, 0.97, 0.5)
        self.rh_noise = AR1(rng, 0.95, 2.0)
        self.ws_noise = AR1(rng, 0.9, 0.35)
        self.wd_noise = AR1(rng, 0.98, 35.0)
        self.wind_from = wind_from  # the south-west monsoon by default

    def step(self, ts: float, rain: float) -> Met:
        """The weather at ``ts`` (call once per minute, in time order) with ``rain`` in mm/h."""
        h = local_hour(ts)
        day = daylight(h - 1.0)  # the afternoon peak lags the sun
        wet = rain / (rain + 10.0)
        temp = 24.8 + 8.2 * day**1.2 - 3.5 * wet + self.t_noise.step()
        rh = 92.0 - 3.6 * (temp - 24.8) + 12.0 * wet + self.rh_noise.step()
        ws = 0.9 + 1.8 * daylight(h) + 6.0 * wet + self.ws_noise.step()
        wd = (self.wind_from + self.wd_noise.step()) % 360.0
        return Met(
            temperature=temp,
            humidity=min(100.0, max(30.0, rh)),
            wind_speed=max(0.1, ws),
            wind_direction=wd,
            rain=max(0.0, rain),
        )
