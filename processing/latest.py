"""The newest reading of each series in a batch (latest moves only forward in event time)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def newest(series: npt.NDArray[np.int32], ts_us: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """Position of the reading with the greatest event time of each series (one per series)."""
    if len(series) == 0:
        return np.empty(0, dtype=np.intp)
    order = np.lexsort((ts_us, series))
    s = series[order]
    last = np.ones(len(s), dtype=bool)
    last[:-1] = s[1:] != s[:-1]
    return order[last]
