"""Rollups as mergeable partials: count, sum, min, max, first and last by event time.

Partials of any split of the readings, merged in any order, equal the partials of the whole, so
late and out-of-order readings merge into the buckets they belong to. Readings must be unique per
(series, ts) (the store guarantees it: only newly stored readings are rolled up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processing import kernels

MINUTE_US = 60_000_000
HOUR_US = 3_600_000_000

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Partials:
    """One row per (series, bucket), sorted by (series, bucket). Times in Unix microseconds."""

    series: I32
    bucket: I64
    count: I64
    sum: F64
    min: F64
    max: F64
    first_ts: I64
    first: F64
    last_ts: I64
    last: F64

    def __len__(self) -> int:
        return len(self.series)

    @property
    def mean(self) -> F64:
        return self.sum / self.count


def _segments(series: I32, bucket: I64) -> npt.NDArray[np.intp]:
    """Start index of each run of equal (series, bucket) in sorted arrays."""
    if len(series) == 0:
        return np.empty(0, dtype=np.intp)
    change = np.empty(len(series), dtype=bool)
    change[0] = True
    change[1:] = (series[1:] != series[:-1]) | (bucket[1:] != bucket[:-1])
    return np.flatnonzero(change)


def empty() -> Partials:
    i64 = np.empty(0, dtype=np.int64)
    f64 = np.empty(0, dtype=np.float64)
    return Partials(np.empty(0, dtype=np.int32), i64, i64, f64, f64, f64, i64, f64, i64, f64)


def of_readings(series: I32, ts_us: I64, value: F64, width_us: int) -> Partials:
    """Partials of raw readings in buckets of ``width_us`` (aligned to the Unix epoch)."""
    if len(series) == 0:
        return empty()
    return Partials(
        *kernels.partials(
            np.ascontiguousarray(series, dtype=np.int32),
            np.ascontiguousarray(ts_us, dtype=np.int64),
            np.ascontiguousarray(value, dtype=np.float64),
            width_us,
        )
    )


def coarsen(p: Partials, width_us: int) -> Partials:
    """Partials in wider buckets (a multiple of ``p``'s width) from sorted partials, no sort."""
    if len(p) == 0:
        return p
    return Partials(
        *kernels.coarsen(
            p.series,
            p.bucket,
            p.count,
            p.sum,
            p.min,
            p.max,
            p.first_ts,
            p.first,
            p.last_ts,
            p.last,
            width_us,
        )
    )


def merge(*parts: Partials) -> Partials:
    """Merge partials of disjoint sets of readings."""
    p = Partials(*(np.concatenate([getattr(x, f) for x in parts]) for f in _FIELDS))
    if len(p) == 0:
        return p
    by_first = np.lexsort((p.first_ts, p.bucket, p.series))
    s, b = p.series[by_first], p.bucket[by_first]
    starts = _segments(s, b)
    # The last of a group is the partial with the latest last_ts: sort the same groups by it.
    by_last = np.lexsort((p.last_ts, p.bucket, p.series))
    ends = np.append(starts[1:], len(s)) - 1
    return Partials(
        series=s[starts],
        bucket=b[starts],
        count=np.add.reduceat(p.count[by_first], starts),
        sum=np.add.reduceat(p.sum[by_first], starts),
        min=np.minimum.reduceat(p.min[by_first], starts),
        max=np.maximum.reduceat(p.max[by_first], starts),
        first_ts=p.first_ts[by_first][starts],
        first=p.first[by_first][starts],
        last_ts=p.last_ts[by_last][ends],
        last=p.last[by_last][ends],
    )


_FIELDS = tuple(Partials.__dataclass_fields__)
