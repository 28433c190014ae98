"""Scenarios: TOML files of events (rush hour, monsoon storm, haze, incident) and faults.

```toml
name = "monsoon storm"
description = "An afternoon cloudburst over the wetland catchment."
start = "14:00"          # local time of day (UTC+8) for faster-than-real-time runs, or RFC 3339
duration = "6h"
seed = 7                 # optional
peak_vph = 10000         # optional: vehicles per hour entering the grid at the peak

[[event]]
kind = "storm"           # rain over the city: peak mm/h, rising and falling over the window
at = "30m"               # after the start
for = "2h"
peak = 80

[[event]]
kind = "rush_hour"       # demand times `factor`
at = "0m"
for = "2h"
factor = 1.5

[[event]]
kind = "haze"            # regional smoke: PM2.5 added at the height of the episode
at = "1h"
for = "8h"
pm25 = 90

[[event]]
kind = "incident"        # a lane closed at a traffic station's street, the rest slowed
at = "45m"
for = "40m"
station = "TF-P08-01"    # optional: the first traffic station otherwise
lane = 0
speed = 15               # km/h past the incident

[[fault]]                # see simulators/faults.py; sensor, quantity, at, for are optional
kind = "stuck"
sensor = "TF-P08-01"
quantity = "speed"
at = "20m"
for = "45m"              # or "end": until the end of the run
```
Durations: "90s", "2m", "1h30m", or seconds as a number.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from simulators.faults import KINDS as FAULT_KINDS
from simulators.faults import FaultSpec

EVENT_KINDS = ("rush_hour", "storm", "haze", "incident")
LOCAL = timezone(timedelta(hours=8))
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ScenarioError(ValueError):
    """A scenario file that cannot be used, naming the file and the field."""


def duration_s(raw: object, where: str) -> float:
    """Seconds from "90s", "2m", "1h30m", a number of seconds, or "end" (infinity)."""
    if isinstance(raw, bool):
        raise ScenarioError(f"{where}: {raw!r} is not a duration")
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        text = raw.strip().replace(" ", "")
        if text == "end":
            return math.inf
        parts = _PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_S[u] for n, u in parts)
    raise ScenarioError(f"{where}: {raw!r} is not a duration like '90s', '2m', '1h30m'")


@dataclass(frozen=True)
class Event:
    kind: str
    at: float  # seconds after the start
    duration: float
    params: dict[str, Any]

    def phase(self, t: float) -> float | None:
        """Where ``t`` falls in the event, 0..1, or None outside it."""
        if self.duration <= 0 or not (self.at <= t < self.at + self.duration):
            return None
        return (t - self.at) / self.duration


def _trapezoid(x: float, ramp: float) -> float:
    return min(1.0, x / ramp, (1.0 - x) / ramp) if ramp > 0 else 1.0


@dataclass(frozen=True)
class Scenario:
    name: str = "a normal day"
    description: str = ""
    start: str | None = None  # "HH:MM" local, or RFC 3339
    duration: float | None = None
    seed: int | None = None
    peak_vph: float = 10000.0
    wind_from: float = 225.0
    events: tuple[Event, ...] = ()
    faults: tuple[FaultSpec, ...] = field(default_factory=tuple)

    def rain(self, t: float) -> float:
        """mm/h: a storm rises and falls as sin^2 over its window."""
        total = 0.0
        for e in self.events:
            x = e.phase(t) if e.kind == "storm" else None
            if x is not None:
                total += float(e.params.get("peak", 60.0)) * math.sin(math.pi * x) ** 2
        return total

    def haze(self, t: float) -> float:
        total = 0.0
        for e in self.events:
            x = e.phase(t) if e.kind == "haze" else None
            if x is not None:
                total += float(e.params.get("pm25", 80.0)) * _trapezoid(x, 0.2)
        return total

    def demand(self, t: float) -> float:
        factor = 1.0
        for e in self.events:
            x = e.phase(t) if e.kind == "rush_hour" else None
            if x is not None:
                ramp = min(0.5, 900.0 / e.duration)  # a quarter of an hour to build and fade
                factor *= 1.0 + (float(e.params.get("factor", 1.5)) - 1.0) * _trapezoid(x, ramp)
        return factor

    def incidents(self, t: float) -> list[Event]:
        return [e for e in self.events if e.kind == "incident" and e.phase(t) is not None]

    def start_time(self, now: float, duration: float | None) -> float | None:
        """The start the scenario asks for, as epoch seconds; "HH:MM" is the latest such local
        time at which the run (of ``duration``) ends by ``now``."""
        if self.start is None:
            return None
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", self.start.strip())
        if m is None:
            try:
                dt = datetime.fromisoformat(self.start)
            except ValueError as e:
                raise ScenarioError(f"start: {self.start!r} is not HH:MM or RFC 3339") from e
            return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        latest_end = now - (duration if duration is not None and math.isfinite(duration) else 0)
        day = datetime.fromtimestamp(latest_end, LOCAL).replace(
            hour=int(m.group(1)), minute=int(m.group(2)), second=0, microsecond=0
        )
        if day.timestamp() > latest_end:
            day -= timedelta(days=1)
        return day.timestamp()


def _table(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a table")
    return raw


def parse(text: str, origin: str) -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{origin}: not valid TOML: {e}") from e
    known = {
        "name",
        "description",
        "start",
        "duration",
        "seed",
        "peak_vph",
        "wind_from",
        "event",
        "fault",
    }
    unknown = set(doc) - known
    if unknown:
        raise ScenarioError(f"{origin}: unknown field(s) {sorted(unknown)}")
    events = []
    for i, raw in enumerate(doc.get("event", [])):
        where = f"{origin} event {i + 1}"
        ev = dict(_table(raw, where))
        kind = ev.pop("kind", None)
        if kind not in EVENT_KINDS:
            raise ScenarioError(f"{where}: kind must be one of {EVENT_KINDS}, not {kind!r}")
        at = duration_s(ev.pop("at", 0), f"{where}: at")
        length = duration_s(ev.pop("for", "1h"), f"{where}: for")
        events.append(Event(kind, at, length, ev))
    faults = []
    for i, raw in enumerate(doc.get("fault", [])):
        where = f"{origin} fault {i + 1}"
        f = dict(_table(raw, where))
        kind = f.pop("kind", None)
        if kind not in FAULT_KINDS:
            raise ScenarioError(f"{where}: kind must be one of {FAULT_KINDS}, not {kind!r}")
        sensor = f.pop("sensor", None)
        quantity = f.pop("quantity", None)
        fault_at = duration_s(f.pop("at"), f"{where}: at") if "at" in f else None
        fault_len = duration_s(f.pop("for"), f"{where}: for") if "for" in f else None
        faults.append(FaultSpec(kind, sensor, quantity, fault_at, fault_len, f))
    duration = doc.get("duration")
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ScenarioError(f"{origin}: seed must be an integer")
    start = doc.get("start")
    if start is not None and not isinstance(start, str):
        start = start.isoformat() if isinstance(start, datetime) else str(start)
    return Scenario(
        name=str(doc.get("name", Path(origin).stem)),
        description=str(doc.get("description", "")),
        start=start,
        duration=None if duration is None else duration_s(duration, f"{origin}: duration"),
        seed=seed,
        peak_vph=float(doc.get("peak_vph", 10000.0)),
        wind_from=float(doc.get("wind_from", 225.0)),
        events=tuple(events),
        faults=tuple(faults),
    )


def bundled() -> list[str]:
    """Names of the scenarios shipped with Pusat (simulators/scenarios/*.toml)."""
    folder = resources.files("simulators").joinpath("scenarios")
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load(name_or_path: str | Path) -> Scenario:
    """A scenario file, or the name of a bundled one (``monsoon-storm``)."""
    path = Path(name_or_path)
    if path.is_file():
        return parse(path.read_text("utf-8"), str(path))
    name = str(name_or_path).removesuffix(".toml")
    if name in bundled():
        text = (
            resources.files("simulators").joinpath("scenarios", f"{name}.toml").read_text("utf-8")
        )
        return parse(text, f"{name}.toml")
    raise ScenarioError(
        f"no scenario file {str(name_or_path)!r}; bundled ones: {', '.join(bundled())}"
    )
