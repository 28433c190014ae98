"""The vectorised alert engine against the per-reading reference, on random streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processing.alerts import Engine
from processing.rules import Rule, SeriesInfo
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
