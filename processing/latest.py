"""The newest reading of each series in a batch (latest moves only forward in event time)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from processing.rollups import Partials


def newest(p: Partials) -> npt.NDArray[np.intp]:
    """Rows of sorted partials holding each series' newest reading: its latest bucket, whose
    ``last``/``last_ts`` are then the series' newest value and time."""
    if len(p) == 0:
        return np.empty(0, dtype=np.intp)
    last = np.ones(len(p), dtype=bool)
    last[:-1] = p.series[1:] != p.series[:-1]
    return np.flatnonzero(last)
