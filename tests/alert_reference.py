"""The per-reading reference of the alert engine: the semantics, written the simple way."""

from __future__ import annotations

from dataclasses import dataclass, field

from processing.alerts import NONE
from processing.rules import Rule


@dataclass
class _State:
    active: bool = False
    run_start: int = NONE
    last_ts: int = NONE
    last_value: float = float("nan")


@dataclass
class Reference:
    rules: list[Rule]
    applies: dict[int, list[int]]  # series -> rule indices
    watermark: dict[int, int] = field(default_factory=dict)
    state: dict[tuple[int, int], _State] = field(default_factory=dict)

    def feed(self, s: int, t: int, v: float) -> list[tuple[int, int, int, float, bool]]:
        """Transitions (rule, series, ts, value, raised) caused by one reading."""
        if t <= self.watermark.get(s, NONE):
            return []  # late: history and rollups only
        self.watermark[s] = t
        out = []
        for r in self.applies.get(s, []):
            rule = self.rules[r]
            st = self.state.setdefault((r, s), _State())
            sets, clears = self._conditions(rule, t, v, st)
            if sets:
                if st.run_start == NONE:
                    st.run_start = st.last_ts if rule.kind == "flatline" else t
            else:
                st.run_start = NONE
            if sets and t - st.run_start >= rule.for_us and not st.active:
                st.active = True
                out.append((r, s, t, v, True))
            elif clears and st.active:
                st.active = False
                out.append((r, s, t, v, False))
            st.last_ts, st.last_value = t, v
        return out

    @staticmethod
    def _conditions(rule: Rule, t: int, v: float, st: _State) -> tuple[bool, bool]:
        if rule.kind in ("threshold", "index"):
            x = v
        else:
            if st.last_ts == NONE:
                return False, False
            dt = t - st.last_ts
            if rule.max_gap_us and dt > rule.max_gap_us:
                return False, False
            if rule.kind == "flatline":
                same = abs(v - st.last_value) <= rule.tolerance
                return same, not same
            x = (v - st.last_value) * float(rule.per_us) / dt
        if rule.above is not None:
            clear = rule.above if rule.clear is None else rule.clear
            return x > rule.above, x < clear
        assert rule.below is not None
        clear = rule.below if rule.clear is None else rule.clear
        return x < rule.below, x > clear
