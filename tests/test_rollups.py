"""Rollup partials: any split and order of the input merges to the rollup of the whole."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from processing import rollups
from processing.rollups import Partials

readings = st.lists(
    st.tuples(
        st.integers(0, 4),  # series
        st.integers(-3 * rollups.HOUR_US, 3 * rollups.HOUR_US),  # ts, around the epoch
        st.integers(-1000, 1000),  # integer values keep float sums exact in any order
    ),
    max_size=200,
    unique_by=lambda r: (r[0], r[1]),  # the store hands over each (series, ts) once
)


def arrays(rs: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([r[0] for r in rs], dtype=np.int32),
        np.array([r[1] for r in rs], dtype=np.int64),
        np.array([r[2] for r in rs], dtype=np.float64),
    )


def as_rows(p: Partials) -> list[tuple[object, ...]]:
    return [
        tuple(getattr(p, f)[i].item() for f in Partials.__dataclass_fields__) for i in range(len(p))
    ]


@settings(max_examples=300, deadline=None, database=None)
@given(
    readings,
    st.randoms(use_true_random=False),
    st.sampled_from([rollups.MINUTE_US, rollups.HOUR_US]),
)
def test_any_split_and_order_merges_to_the_whole(
    rs: list[tuple[int, int, int]], rnd: random.Random, width: int
) -> None:
    whole = rollups.of_readings(*arrays(rs), width)
    shuffled = rs[:]
    rnd.shuffle(shuffled)
    cuts = sorted(rnd.sample(range(len(shuffled) + 1), k=min(3, len(shuffled) + 1)))
    chunks = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    parts = [rollups.of_readings(*arrays(c), width) for c in chunks]
    rnd.shuffle(parts)
    # merge pairwise in a random tree, as batches and the database would
    while len(parts) > 1:
        i = rnd.randrange(len(parts) - 1)
        parts[i : i + 2] = [rollups.merge(parts[i], parts[i + 1])]
    merged = parts[0] if parts else rollups.empty()
    assert as_rows(merged) == as_rows(whole)


def test_buckets_hold_the_right_readings() -> None:
    m = rollups.MINUTE_US
    series = np.array([1, 1, 1, 2], dtype=np.int32)
    ts = np.array([5 * m + 1, 5 * m + 59_000_000, 6 * m, -1], dtype=np.int64)
    value = np.array([4.0, 2.0, 9.0, 1.0])
    p = rollups.of_readings(series, ts, value, m)
    assert as_rows(p) == [
        (1, 5 * m, 2, 6.0, 2.0, 4.0, 5 * m + 1, 4.0, 5 * m + 59_000_000, 2.0),
        (1, 6 * m, 1, 9.0, 9.0, 9.0, 6 * m, 9.0, 6 * m, 9.0),
        (2, -m, 1, 1.0, 1.0, 1.0, -1, 1.0, -1, 1.0),  # before the epoch: floor, not truncate
    ]
    assert p.mean.tolist() == [3.0, 9.0, 1.0]


def test_newest_picks_the_latest_event_time_per_series() -> None:
    from processing.latest import newest

    series = np.array([2, 1, 2, 1, 3], dtype=np.int32)
    ts = np.array([50, 10, 7_000_000_000, 5, 1], dtype=np.int64)
    p = rollups.of_readings(series, ts, ts.astype(np.float64), rollups.MINUTE_US)
    top = newest(p)
    got = sorted(zip(p.series[top].tolist(), p.last_ts[top].tolist(), strict=True))
    assert got == [(1, 10), (2, 7_000_000_000), (3, 1)]


@settings(max_examples=200, deadline=None, database=None)
@given(readings)
def test_hourly_from_minutes_equals_hourly_from_readings(rs: list[tuple[int, int, int]]) -> None:
    minute = rollups.of_readings(*arrays(rs), rollups.MINUTE_US)
    hour = rollups.of_readings(*arrays(rs), rollups.HOUR_US)
    assert as_rows(rollups.coarsen(minute, rollups.HOUR_US)) == as_rows(hour)


def _by_hand(rs: list[tuple[int, int, int]], width: int) -> list[tuple[object, ...]]:
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for s, t, v in rs:
        groups.setdefault((s, t // width * width), []).append((t, v))
    rows = []
    for (s, b), tv in sorted(groups.items()):
        vs = [float(v) for _, v in tv]
        (t0, v0), (t1, v1) = min(tv), max(tv)
        rows.append((s, b, len(tv), sum(vs), min(vs), max(vs), t0, float(v0), t1, float(v1)))
    return rows


@settings(max_examples=50, deadline=None, database=None)
@given(st.randoms(use_true_random=False))
def test_grouping_of_spread_ids_and_long_unsorted_runs(rnd: random.Random) -> None:
    """The kernel's other sorting paths: series ids too far apart for a counting sort, and one
    series with hundreds of readings out of order."""
    spread = [
        (rnd.randrange(1 << 30), rnd.randrange(-(10**12), 10**12), rnd.randrange(99))
        for _ in range(300)
    ]
    one = [(7, t, rnd.randrange(99)) for t in rnd.sample(range(-(10**11), 10**11, 997), 500)]
    for rs in (spread, one, spread + one):
        rs = list({(s, t): (s, t, v) for s, t, v in rs}.values())  # unique (series, ts)
        rnd.shuffle(rs)
        p = rollups.of_readings(*arrays(rs), rollups.MINUTE_US)
        assert as_rows(p) == _by_hand(rs, rollups.MINUTE_US)
