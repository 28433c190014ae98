"""Rollups as mergeable partials: count, sum, min, max, first and last by event time.

Partials of any split of the readings, merged in any order, equal the partials of the whole, so
late and out-of-order readings merge into the buckets they belong to. Readings must be unique per
(series, ts) (the store guarantees it: only newly stored readings are rolled up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processing.sorting import stable_order

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


class _Groups:
    """Contiguous groups given by their starts; reductions that cost nothing for the singleton
    groups (readings a minute apart are mostly alone in their minute, and ``ufunc.reduceat``
    pays per group)."""

    def __init__(self, starts: npt.NDArray[np.intp], n: int) -> None:
        self.starts = starts
        self.counts = np.diff(np.append(starts, n))
        multi = np.flatnonzero(self.counts > 1)
        self.multi = multi
        sizes = self.counts[multi]
        ends = np.cumsum(sizes)
        self.sub_starts = ends - sizes  # where each multi group starts inside `pos`
        # positions of the members of the multi-element groups, group by group
        self.pos = np.repeat(starts[multi] - self.sub_starts, sizes) + np.arange(
            int(ends[-1]) if len(ends) else 0
        )

    def reduce(self, ufunc: np.ufunc, x: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        out = x[self.starts]  # a copy; right as it is for the singletons
        if len(self.multi):
            out[self.multi] = ufunc.reduceat(x[self.pos], self.sub_starts)
        return out

    def at_times(self, times: I64, values: F64, wanted: I64) -> F64:
        """Per group, the value whose time equals the group's wanted time (times unique)."""
        out: F64 = values[self.starts]
        if len(self.multi):
            t, v = times[self.pos], values[self.pos]
            hit = t == np.repeat(wanted[self.multi], self.counts[self.multi])
            out[self.multi] = v[hit]
        return out


def of_readings(series: I32, ts_us: I64, value: F64, width_us: int) -> Partials:
    """Partials of raw readings in buckets of ``width_us`` (aligned to the Unix epoch)."""
    if len(series) == 0:
        return empty()
    bucket = ts_us - ts_us % width_us  # NumPy's % floors, so times before 1970 bucket correctly
    slot = (bucket - bucket.min()) // width_us
    # sorted by (series, bucket); the order inside a bucket does not matter
    order = stable_order(slot, series)
    s, b, t, v = series[order], bucket[order], ts_us[order], value[order]
    g = _Groups(_segments(s, b), len(s))
    first_ts: I64 = g.reduce(np.minimum, t)  # type: ignore[assignment]
    last_ts: I64 = g.reduce(np.maximum, t)  # type: ignore[assignment]
    return Partials(
        series=s[g.starts],
        bucket=b[g.starts],
        count=g.counts.astype(np.int64),
        sum=g.reduce(np.add, v),  # type: ignore[arg-type]
        min=g.reduce(np.minimum, v),  # type: ignore[arg-type]
        max=g.reduce(np.maximum, v),  # type: ignore[arg-type]
        first_ts=first_ts,
        first=g.at_times(t, v, first_ts),
        last_ts=last_ts,
        last=g.at_times(t, v, last_ts),
    )


def coarsen(p: Partials, width_us: int) -> Partials:
    """Partials in wider buckets (a multiple of ``p``'s width) from sorted partials, no sort."""
    if len(p) == 0:
        return p
    bucket = p.bucket - p.bucket % width_us
    g = _Groups(_segments(p.series, bucket), len(p))
    ends = np.append(g.starts[1:], len(p)) - 1
    return Partials(
        series=p.series[g.starts],
        bucket=bucket[g.starts],
        count=g.reduce(np.add, p.count),  # type: ignore[arg-type]
        sum=g.reduce(np.add, p.sum),  # type: ignore[arg-type]
        min=g.reduce(np.minimum, p.min),  # type: ignore[arg-type]
        max=g.reduce(np.maximum, p.max),  # type: ignore[arg-type]
        first_ts=p.first_ts[g.starts],
        first=p.first[g.starts],
        last_ts=p.last_ts[ends],
        last=p.last[ends],
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
