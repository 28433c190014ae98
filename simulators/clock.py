"""Pacing: the simulated clock against the wall clock.

``speed`` simulated seconds pass per wall second (1: real time, 600: ten minutes per second,
infinity: as fast as the models run). Whatever the speed, the simulated clock never runs ahead of
the wall clock: a reading stamped in the future would be refused by ingest (``bad_time`` beyond
PUSAT_MAX_SKEW_S), so a fast run that starts in the past catches up with the present and then
carries on in real time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class Pacer:
    def __init__(
        self,
        start: float,
        speed: float,
        catch_up: bool = False,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``catch_up``: simulated time already past on the wall clock when the run begins is
        due at once, and the pacing at ``speed`` starts from the present (a live run that
        starts a little in the past shows data at once instead of lagging behind for ever)."""
        if not speed > 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.wall = wall
        self.monotonic = monotonic
        self.began = monotonic()
        self.origin = max(start, wall()) if catch_up else start

    def delay(self, sim_t: float) -> float:
        """Seconds to wait before simulated time ``sim_t`` may be published."""
        paced = 0.0
        if math.isfinite(self.speed):
            paced = self.began + (sim_t - self.origin) / self.speed - self.monotonic()
        return max(paced, sim_t - self.wall(), 0.0)

    def now(self) -> float:
        """The simulated time it is now: everything up to it is due, nothing after it."""
        wall = self.wall()
        if not math.isfinite(self.speed):
            return wall
        return min(self.origin + (self.monotonic() - self.began) * self.speed, wall)

    def wait(self, sim_t: float, stop: threading.Event) -> bool:
        """Sleep until ``sim_t`` is due; False when ``stop`` was set meanwhile."""
        while True:
            d = self.delay(sim_t)
            if d <= 0:
                return not stop.is_set()
            if stop.wait(min(d, 0.5)):
                return False
