"""The fault manifest: every injected fault and what the platform should do about it.

The recorder watches what was actually published for the sensors that have faults (in publish
order, with the wall-clock time of each publication) and works out, from the platform's own
contract (the quantity catalogue, the alert rules in force, PUSAT_MAX_SKEW_S and PUSAT_HORIZON_S):

- which records ingest must quarantine and why (``quarantine``: reason -> count),
- which alerts must be raised (``alerts``: rule keys such as ``speed:flatline:info``), found by
  evaluating the rules over each faulted series the way the engine does (arrival order, late
  readings skipped, `for` measured in event time), and which may be (``maybe``),
- which readings must still be stored (``stored``: late, out of order, repeated, held back) and
  how many repeats must be recognised as duplicates (``duplicates``).

Staleness is judged by the platform's periodic tick against the wall clock, on event times. In a
``live`` run (speed about 1: simulated time is the wall clock) a silence longer than the stale
allowance (5 x the sensor's period) is seen while it lasts. In a ``backfill`` run (faster than
real time, in the past, ending at about now) the simulated clock races the wall clock, and a tick
during the run would find every sensor silent; there the manifest expects stale alerts only for
silences that last until the end of the run, judged right after it (the simulator's test holds
the tick off during the run and lets it run once the run has ended).

Written as JSON lines: a header (``{"manifest": ...}``), one line per fault (``{"fault": id,
...}``), and a summary (``{"summary": ...}``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from processing.catalogue import Catalogue
from processing.rules import Rule, SeriesInfo, applicable, stale_rule
from simulators.faults import Fault
from simulators.payloads import iso
from simulators.readings import Message, Reading

STALE_MARGIN = 0.1  # of the allowance: silences this close to it are "maybe" (tick timing)
BACKFILL_NOTE = (
    "faster than real time: a stale alarm is expected only for a silence lasting to the end of"
    " the run (a platform ticking during the run sees every sensor behind the wall clock)"
)


@dataclass(frozen=True)
class Limits:
    max_skew_s: float
    horizon_s: float


def verdict(catalogue: Catalogue, limits: Limits, r: Reading, wall: float) -> str | None:
    """The quarantine reason ingest gives ``r`` arriving at ``wall``, or None when stored.

    The same precedence as ingest: an unaccepted unit first, then not finite over bad time over
    out of range.
    """
    q = catalogue.get(r.quantity)
    if q is None:
        return None  # an unknown quantity is stored (outside strict mode)
    conv = catalogue.conversion(r.quantity, r.unit)
    if conv is None:
        return "unknown_unit"
    value = r.value  # readings are in canonical units whatever the label says
    if not math.isfinite(value):
        return "not_finite"
    if r.ts > wall + limits.max_skew_s or r.ts < wall - limits.horizon_s:
        return "bad_time"
    if value < q.min or value > q.max:
        return "out_of_range"
    return None


@dataclass
class _Series:
    """Accepted readings of one series in arrival order: (ts, value)."""

    readings: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class _Outcome:
    quarantine: Counter[str] = field(default_factory=Counter)
    stored: list[tuple[str, str, float]] = field(default_factory=list)
    duplicates: int = 0
    alerts: set[str] = field(default_factory=set)
    maybe: set[str] = field(default_factory=set)


def evaluate(
    rules: Sequence[Rule], readings: Sequence[tuple[float, float]]
) -> list[tuple[int, float]]:
    """(rule index, event time) of every raise the rules give over one series' readings in
    arrival order: a reading not newer than the newest seen is late and skipped; a run of
    readings meeting the condition raises once it has lasted the rule's `for`; a reading past
    the clear level clears. The engine's semantics, written the simple way."""
    raised: list[tuple[int, float]] = []
    for r, rule in enumerate(rules):
        active = False
        run_start: float | None = None
        last: tuple[float, float] | None = None
        newest = -math.inf
        for ts, v in readings:
            if ts <= newest:
                continue
            newest = ts
            sets, clears = _conditions(rule, ts, v, last)
            if sets:
                if run_start is None:
                    run_start = last[0] if rule.kind == "flatline" and last else ts
            else:
                run_start = None
            if sets and run_start is not None and ts - run_start >= rule.for_us / 1e6:
                if not active:
                    active = True
                    raised.append((r, ts))
            elif clears and active:
                active = False
            last = (ts, v)
    return raised


def _conditions(
    rule: Rule, ts: float, v: float, last: tuple[float, float] | None
) -> tuple[bool, bool]:
    if rule.kind in ("threshold", "index"):
        x = v
    else:
        if last is None:
            return False, False
        dt = ts - last[0]
        if rule.max_gap_us and dt > rule.max_gap_us / 1e6:
            return False, False
        if rule.kind == "flatline":
            same = abs(v - last[1]) <= rule.tolerance
            return same, not same
        x = (v - last[1]) * (rule.per_us / 1e6) / dt
    if rule.above is not None:
        clear = rule.above if rule.clear is None else rule.clear
        return x > rule.above, x < clear
    assert rule.below is not None
    clear = rule.below if rule.clear is None else rule.clear
    return x < rule.below, x > clear


class Recorder:
    def __init__(
        self,
        faults: Sequence[Fault],
        catalogue: Catalogue,
        rules: Sequence[Rule],
        limits: Limits,
        mode: str,
    ) -> None:
        self.faults = list(faults)
        self.catalogue = catalogue
        self.rules = list(rules)
        self.limits = limits
        self.mode = mode
        self.sensors = {f.sensor.id: f.sensor for f in faults}
        self.outcomes = {f.id: _Outcome() for f in faults}
        self.series: dict[tuple[str, str], _Series] = {}
        self.seen: set[tuple[str, str, float]] = set()
        self.last_ts: dict[str, float] = {}  # sensor -> newest accepted event time
        self.silence: dict[str, list[tuple[float, float]]] = {}  # sensor -> (silence, at ts)
        self.natural: Counter[str] = Counter()  # rejections no fault explains (a model bug)

    def published(self, m: Message, wall: float, sim: float) -> None:
        """Account for one publication at ``wall`` (``sim`` is the simulated clock then)."""
        if m.kind not in ("senml", "sdm") or not (
            set(self.sensors) & {r.sensor for r in m.readings}
        ):
            return
        if m.corrupt:
            reason = (
                "malformed_json"
                if m.payload[:1] not in (b"{", b'"')
                else ("bad_senml" if m.kind == "senml" else "bad_payload")
            )
            for fid in m.faults:
                self.outcomes[fid].quarantine[reason] += 1
            return
        now = wall if self.mode == "live" else sim
        for r in m.readings:
            if r.sensor not in self.sensors:
                continue
            rejected = verdict(self.catalogue, self.limits, r, wall)
            tags = set(r.faults) | set(m.faults)
            if rejected is not None:
                for fid in tags:
                    self.outcomes[fid].quarantine[rejected] += 1
                if not tags:
                    self.natural[rejected] += 1
                continue
            key = (r.sensor, r.quantity, r.ts)
            if key in self.seen:
                for fid in m.faults:
                    self.outcomes[fid].duplicates += 1
                continue
            self.seen.add(key)
            for fid in m.faults:
                self.outcomes[fid].stored.append(key)
            self.series.setdefault((r.sensor, r.quantity), _Series()).readings.append(
                (r.ts, r.value)
            )
            last = self.last_ts.get(r.sensor)
            if last is not None:
                self.silence.setdefault(r.sensor, []).append((now - last, r.ts))
            self.last_ts[r.sensor] = max(last if last is not None else -math.inf, r.ts)

    def _attribute(
        self, sensor: str, quantity: str | None, ts: float, kinds: tuple[str, ...]
    ) -> int:
        mine = [
            f
            for f in self.faults
            if f.sensor.id == sensor and (quantity is None or f.quantity in (quantity, None))
        ]
        preferred = [f for f in mine if f.kind in kinds] or mine
        during = [f for f in preferred if f.start <= ts <= f.end + 600]
        before = [f for f in preferred if f.start <= ts]
        pick = during or before or preferred
        return max(pick, key=lambda f: f.start).id

    def finish(self, end_sim: float, end_wall: float) -> None:
        """Work out the alerts, once the run is over."""
        for (sensor, quantity), series in self.series.items():
            s = self.sensors[sensor]
            info = SeriesInfo(sensor, quantity, s.district, s.domain)
            idx = applicable(self.rules, info)
            rules = [self.rules[i] for i in idx]
            for r, ts in evaluate(rules, series.readings):
                fid = self._attribute(sensor, quantity, ts, ())
                self.outcomes[fid].alerts.add(rules[r].key)
        for sensor, s in self.sensors.items():
            info = SeriesInfo(sensor, s.quantities[0], s.district, s.domain)
            i = stale_rule(self.rules, info)
            if i is None:
                continue
            rule = self.rules[i]
            periods = [q.period for n in s.quantities if (q := self.catalogue.get(n)) is not None]
            allowance = rule.factor * (min(periods) if periods else 300.0)
            end = end_wall if self.mode == "live" else end_sim
            silences = list(self.silence.get(sensor, [])) if self.mode == "live" else []
            if sensor in self.last_ts:
                silences.append((end - self.last_ts[sensor], end))
            for gap, at in silences:
                if gap > allowance * (1 + STALE_MARGIN):
                    target = self.outcomes[
                        self._attribute(sensor, None, at - gap, ("offline", "skew", "burst"))
                    ]
                    target.alerts.add(rule.key)
                elif gap > allowance * (1 - STALE_MARGIN):
                    target = self.outcomes[
                        self._attribute(sensor, None, at - gap, ("offline", "skew", "burst"))
                    ]
                    target.maybe.add(rule.key)
        for o in self.outcomes.values():
            o.maybe -= o.alerts

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for f in self.faults:
            o = self.outcomes[f.id]
            out.append(
                {
                    "fault": f.id,
                    "kind": f.kind,
                    "sensor": f.sensor.id,
                    "gateway": f.sensor.gateway,
                    "quantity": f.quantity,
                    "start": iso(f.start),
                    "end": iso(f.end) if math.isfinite(f.end) else None,
                    "params": f.params,
                    "expect": {
                        "alerts": sorted(o.alerts),
                        "quarantine": dict(sorted(o.quarantine.items())),
                        "stored": [[s, q, t] for s, q, t in o.stored],
                        "duplicates": o.duplicates,
                    },
                    "maybe": {"alerts": sorted(o.maybe)},
                    **({"note": BACKFILL_NOTE} if self._silent(f) else {}),
                }
            )
        return out

    def _silent(self, f: Fault) -> bool:
        """A fault that silences its sensor for a while, in a run too fast to judge that."""
        return self.mode == "backfill" and f.kind in ("offline", "skew", "burst", "late")


def write(
    path: Path, header: dict[str, Any], lines: Sequence[dict[str, Any]], summary: dict[str, Any]
) -> None:
    with path.open("wb") as f:
        f.write(orjson.dumps({"manifest": "pusat-simulator", "version": 1, **header}) + b"\n")
        for line in lines:
            f.write(orjson.dumps(line) + b"\n")
        f.write(orjson.dumps({"summary": summary}) + b"\n")


def read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(header, fault lines, summary) of a manifest file."""
    header: dict[str, Any] = {}
    faults: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for raw in path.read_bytes().splitlines():
        doc = orjson.loads(raw)
        if "manifest" in doc:
            header = doc
        elif "summary" in doc:
            summary = doc["summary"]
        else:
            faults.append(doc)
    return header, faults, summary
