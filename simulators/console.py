"""What `pusat simulate` needs on the command line: reading its flags, the live progress line."""

from __future__ import annotations

import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from simulators.faults import KINDS, FaultSpec
from simulators.runner import Options, Progress, Result
from simulators.scenario import LOCAL, duration_s


def parse_speed(text: str) -> float:
    """A positive number, or "max" for as fast as the models run."""
    if text.strip().lower() in ("max", "inf"):
        return math.inf
    try:
        speed = float(text)
    except ValueError as e:
        raise ValueError(f"--speed: {text!r} is not a number or 'max'") from e
    if not speed > 0:
        raise ValueError("--speed must be positive")
    return speed


def parse_start(text: str, now: float) -> float:
    """RFC 3339 (a time without an offset is UTC+8, the city's), "now", or "-2h" (ago)."""
    t = text.strip()
    if t == "now":
        return now
    if t.startswith("-"):
        return now - duration_s(t[1:], "--start")
    try:
        dt = datetime.fromisoformat(t)
    except ValueError as e:
        raise ValueError(f"--start: {text!r} is not RFC 3339, 'now' or '-2h'") from e
    return (dt if dt.tzinfo else dt.replace(tzinfo=LOCAL)).timestamp()


def parse_fault(text: str) -> FaultSpec:
    """KIND, KIND:SENSOR or KIND:SENSOR:QUANTITY."""
    parts = text.split(":")
    if parts[0] not in KINDS or len(parts) > 3:
        raise ValueError(
            f"--fault: {text!r} is not KIND[:SENSOR[:QUANTITY]]; kinds: {', '.join(KINDS)}"
        )
    sensor = parts[1] if len(parts) > 1 and parts[1] else None
    quantity = parts[2] if len(parts) > 2 and parts[2] else None
    return FaultSpec(parts[0], sensor, quantity)


def options(
    what: str,
    speed: str,
    start: str | None,
    duration: str | None,
    seed: int | None,
    scenario: str | None,
    faults: list[str],
    all_faults: bool,
    manifest: Path | None,
) -> Options:
    now = time.time()
    specs = [parse_fault(f) for f in faults]
    if all_faults:
        specs.extend(FaultSpec(k) for k in KINDS)
    span = duration_s(duration, "--duration") if duration is not None else None
    return Options(
        what=what,
        speed=parse_speed(speed),
        start=parse_start(start, now) if start is not None else None,
        duration=span,
        seed=seed,
        scenario=scenario,
        faults=tuple(specs),
        manifest=manifest,
    )


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, LOCAL).strftime("%Y-%m-%d %H:%M")


class ProgressLine:
    """One line, rewritten in place: simulated clock, speed, messages, messages/s."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_plain = 0.0

    def __call__(self, p: Progress) -> None:
        elapsed = int(p.sim_time - p.start)
        line = (
            f"sim {_clock(p.sim_time)} (+{elapsed // 3600}:{elapsed % 3600 // 60:02d})"
            f"  {p.sim_speed:,.0f}x  messages {p.messages:,}  {p.msg_rate:,.0f} msg/s"
            f"  readings {p.readings:,}  vehicles {p.vehicles:,}"
        )
        if self.tty:
            self.out.write("\r\x1b[K" + line + ("\n" if p.done else ""))
        elif p.done or time.monotonic() - self._last_plain >= 10:
            self._last_plain = time.monotonic()  # a log file gets a line every 10 s, not 2/s
            self.out.write(line + "\n")
        self.out.flush()


def summary(result: Result, manifest: Path | None) -> str:
    start = datetime.fromtimestamp(result.start, UTC).isoformat()
    end = datetime.fromtimestamp(result.end, UTC).isoformat()
    lines = [
        f"simulated {start} .. {end}: {result.messages:,} messages, {result.readings:,} readings"
        f" in {result.wall_s:.1f} s ({result.sim_speed:,.0f} simulated s per s)",
    ]
    if manifest is not None:
        lines.append(f"manifest: {manifest} ({result.summary.get('faults', 0)} faults)")
    return "\n".join(lines)
