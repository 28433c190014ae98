"""PostgreSQL binary COPY buffers built with NumPy: a batch of readings costs no per-row Python."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
# PostgreSQL counts time from 2000-01-01 UTC in microseconds.
PG_EPOCH_US = 946_684_800_000_000

# One row of staging_readings (series_id int4, ts timestamptz, value float8, received_at
# timestamptz): a field count, then each field as length + big-endian value.
READING_ROW = np.dtype(
    [
        ("nfields", ">i2"),
        ("l_series", ">i4"),
        ("series", ">i4"),
        ("l_ts", ">i4"),
        ("ts", ">i8"),
        ("l_value", ">i4"),
        ("value", ">f8"),
        ("l_received", ">i4"),
        ("received", ">i8"),
    ]
)


def readings(
    series: npt.NDArray[np.int32],
    ts_us: npt.NDArray[np.int64],
    value: npt.NDArray[np.float64],
    received_us: npt.NDArray[np.int64],
) -> bytes:
    """The whole COPY stream (header, rows, trailer) for the given columns (Unix microseconds)."""
    rows = np.empty(len(series), dtype=READING_ROW)
    rows["nfields"] = 4
    rows["l_series"] = 4
    rows["series"] = series
    rows["l_ts"] = 8
    rows["ts"] = ts_us - PG_EPOCH_US
    rows["l_value"] = 8
    rows["value"] = value
    rows["l_received"] = 8
    rows["received"] = received_us - PG_EPOCH_US
    return HEADER + rows.tobytes() + TRAILER
