"""The vectorised alert engine against the per-reading reference, on random streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processing.alerts import NONE, Engine
from processing.rules import Rule, SeriesInfo, applicable, stale_rule
from tests.alert_reference import Reference

S = 1_000_000  # one second in microseconds

RULES = [
    Rule("a", "threshold", "warning", above=50, clear=40, for_us=30 * S),
    Rule("a", "threshold", "critical", above=80),
    Rule("b", "threshold", "warning", below=10, clear=15, for_us=10 * S),
    Rule("b", "rate", "warning", above=2.0, per_us=60 * S, max_gap_us=300 * S),
    Rule("c", "flatline", "info", tolerance=0.5, for_us=60 * S),
    Rule("c", "rate", "critical", below=-5.0, clear=-1.0, per_us=S),
    Rule(None, "stale", "warning", factor=3),
]
QUANTITY = {0: "a", 1: "a", 2: "b", 3: "c", 4: "b", 5: "c"}


def engine_and_reference() -> tuple[Engine, Reference]:
    engine = Engine(RULES, capacity=2)  # small: growing the arrays is exercised too
    applies: dict[int, list[int]] = {}
    for series, q in QUANTITY.items():
        info = SeriesInfo(f"S{series}", q, None, None)
        engine.register(series, info, period_s=60)
        applies[series] = [i for i in range(len(RULES)) if engine.applies[i, series]]
    return engine, Reference(RULES, applies)


reading = st.tuples(
    st.sampled_from(sorted(QUANTITY)),
    st.integers(0, 40),  # time step: small, so out-of-order and equal times happen
    st.sampled_from([0.0, 5.0, 9.0, 12.0, 16.0, 39.0, 45.0, 51.0, 79.0, 90.0, 90.2]),
)


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(reading, max_size=120), st.lists(st.integers(1, 40), max_size=8))
def test_engine_equals_reference_over_any_batching(
    stream: list[tuple[int, int, float]], cuts: list[int]
) -> None:
    engine, ref = engine_and_reference()
    events = [(s, step * 10 * S, v) for s, step, v in stream]
    expected = [tr for e in events for tr in ref.feed(*e)]
    got = []
    start = 0
    bounds = sorted({min(c, len(events)) for c in cuts} | {len(events)})
    for end in bounds:
        chunk = events[start:end]
        start = end
        if not chunk:
            continue
        tr, _ = engine.evaluate(
            np.array([e[0] for e in chunk], dtype=np.int32),
            np.array([e[1] for e in chunk], dtype=np.int64),
            np.array([e[2] for e in chunk], dtype=np.float64),
        )
        got += [(r, s, t, v, up) for r, s, _, t, v, up in tr.rows()]
    key = lambda x: (x[1], x[2], x[0])  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)


def test_threshold_needs_its_duration_and_clears_with_hysteresis() -> None:
    engine, _ = engine_and_reference()

    def feed(*readings: tuple[int, float]) -> list[tuple[int, int, bool]]:
        tr, _ = engine.evaluate(
            np.zeros(len(readings), dtype=np.int32),
            np.array([t * S for t, _ in readings], dtype=np.int64),
            np.array([v for _, v in readings]),
        )
        return [(r, t // S, up) for r, _, _, t, _, up in tr.rows()]

    assert feed((0, 60), (20, 60)) == []  # above 50 for 20 s of the 30 needed
    assert feed((30, 55)) == [(0, 30, True)]  # 30 s: raised
    assert feed((40, 45), (50, 42)) == []  # in the hysteresis band: still active
    assert feed((60, 39)) == [(0, 60, False)]  # below clear: cleared
    assert feed((55, 99)) == []  # late (older than 60 s): not evaluated
    assert feed((70, 85)) == [(1, 70, True)]  # critical has no duration


def test_stale_sensor_raised_by_tick_and_cleared_by_data() -> None:
    engine, _ = engine_and_reference()
    engine.evaluate(np.array([3], dtype=np.int32), np.array([0], dtype=np.int64), np.array([1.0]))
    assert len(engine.tick(150 * S)) == 0  # 150 s of a 3 x 60 s allowance
    tr = engine.tick(181 * S)
    assert [(r, k, up) for r, _, k, _, _, up in tr.rows()] == [(6, engine.sensor("S3"), True)]
    assert len(engine.tick(300 * S)) == 0  # raised once
    tr, _ = engine.evaluate(
        np.array([5], dtype=np.int32), np.array([310 * S], dtype=np.int64), np.array([1.0])
    )  # another series of the same sensor? no: S5 is its own sensor
    assert all(up for *_, up in tr.rows())
    tr, _ = engine.evaluate(
        np.array([3], dtype=np.int32), np.array([320 * S], dtype=np.int64), np.array([2.0])
    )
    assert [(r, up) for r, _, _, _, _, up in tr.rows()] == [(6, False)]


def test_state_rows_restore_a_new_engine() -> None:
    engine, _ = engine_and_reference()
    ts = np.array([0, 20 * S], dtype=np.int64)
    _, state = engine.evaluate(np.zeros(2, dtype=np.int32), ts, np.array([60.0, 60.0]))
    fresh, _ = engine_and_reference()
    for row in zip(*(getattr(state, f).tolist() for f in state.__dataclass_fields__), strict=True):
        fresh.restore(*row)
    fresh.restore_watermark(0, 20 * S)
    tr, _ = fresh.evaluate(
        np.zeros(1, dtype=np.int32), np.array([30 * S], dtype=np.int64), np.array([60.0])
    )
    assert [(r, t // S, up) for r, _, _, t, _, up in tr.rows()] == [(0, 30, True)]


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_tiny_batches(n: int) -> None:
    engine, _ = engine_and_reference()
    tr, state = engine.evaluate(
        np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int64), np.full(n, 60.0)
    )
    assert len(tr) == 0 and len(state.rule) == 2 * n


SCOPED = [
    Rule("a", "threshold", "warning", above=50),
    Rule("a", "threshold", "warning", above=40, scope_kind="district", scope_value="D1"),
    Rule("a", "threshold", "warning", above=30, scope_kind="sensor", scope_value="S3"),
    Rule("b", "rate", "critical", above=2.0, per_us=60 * S, scope_kind="domain", scope_value="air"),
    Rule(None, "stale", "warning", factor=3),
    Rule(None, "stale", "critical", factor=10, scope_kind="district", scope_value="D2"),
    Rule(None, "stale", "info", factor=2, scope_kind="sensor", scope_value="S1"),
]

series_info = st.tuples(
    st.sampled_from([f"S{i}" for i in range(6)]),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([None, "D1", "D2"]),
    st.sampled_from([None, "air", "water"]),
    st.sampled_from([30.0, 60.0, 300.0]),
)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(series_info, max_size=40), st.integers(1, 5))
def test_registering_many_at_once_matches_the_rules_one_by_one(
    described: list[tuple[str, str, str | None, str | None, float]], chunks: int
) -> None:
    """A worker's start registers every series in one call: the rules that apply to each
    series, each sensor's stale rule (its last registration's) and its shortest period are
    what the rules say for each series alone."""
    # A sensor keeps one district and domain; its series are registered in any chunking.
    home: dict[str, tuple[str | None, str | None]] = {}
    infos = []
    for sensor, q, district, domain, period in described:
        district, domain = home.setdefault(sensor, (district, domain))
        infos.append((SeriesInfo(sensor, q, district, domain), period))
    engine = Engine(SCOPED, capacity=2)
    size = max(1, len(infos) // chunks)
    for start in range(0, len(infos), size):
        part = infos[start : start + size]
        engine.register_many(
            list(range(start, start + len(part))), [i for i, _ in part], [p for _, p in part]
        )
    for series, (info, _) in enumerate(infos):
        got = [r for r in range(len(SCOPED)) if engine.applies[r, series]]
        assert got == applicable(SCOPED, info)
        k = engine.sensor(info.sensor)
        assert k is not None and int(engine.sensor_of[series]) == k
        expected = stale_rule(SCOPED, info)
        assert int(engine.sensor_stale_rule[k]) == (-1 if expected is None else expected)
    for sensor in {i.sensor for i, _ in infos}:
        k = engine.sensor(sensor)
        assert k is not None
        shortest = min(p for i, p in infos if i.sensor == sensor)
        assert int(engine.sensor_period_us[k]) == int(shortest * 1e6)


def test_restored_watermarks_only_move_forward() -> None:
    engine = Engine(RULES, capacity=2)
    engine.register_many([0, 1, 2], [SeriesInfo("S0", q, None, None) for q in "abc"], [60] * 3)
    engine.restore_watermarks(np.array([0, 1, 0]), np.array([5 * S, 7 * S, 3 * S]))
    assert engine.watermark[:3].tolist() == [5 * S, 7 * S, NONE]
    k = engine.sensor("S0")
    assert k is not None and int(engine.sensor_last[k]) == 7 * S
    engine.restore_watermarks(np.array([1]), np.array([6 * S]))  # older: no move back
    assert int(engine.watermark[1]) == 7 * S


def test_state_is_kept_for_the_pairs_rules_apply_to_only() -> None:
    """A city's rules each apply to a few quantities: the engine holds state for those pairs
    (and restored ones), not for every rule of every series."""
    engine = Engine(RULES, capacity=2)
    n = 3_000
    quantities = ["a", "b", "c", "x"]  # "x": no rule applies
    infos = [SeriesInfo(f"S{i}", quantities[i % 4], None, None) for i in range(n)]
    engine.register_many(list(range(n)), infos, [60.0] * n)
    assert engine.pairs == sum(len(applicable(RULES, i)) for i in infos)
    assert len(engine.active) < 2 * engine.pairs + 1024  # not len(RULES) x series
    # A pair restored without its rule applying keeps its state, as the dense layout did: when
    # the series is registered again under a quantity the rule covers, the state is there.
    engine.restore(0, 3, True, 5 * S, 6 * S, 70.0)  # rule 0 is of "a"; series 3 is "x"
    assert engine.pairs == sum(len(applicable(RULES, i)) for i in infos) + 1
    engine.register(3, SeriesInfo("S3", "a", None, None), 60.0)
    tr, state = engine.evaluate(
        np.array([3], dtype=np.int32), np.array([7 * S], dtype=np.int64), np.array([10.0])
    )
    assert [(r, up) for r, _, _, _, _, up in tr.rows()] == [(0, False)]  # cleared: was active
    assert state.rule.tolist() == [0, 1] and not state.active.any()
