"""PostgreSQL binary COPY buffers and binary arrays built with NumPy: no per-row Python."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from processing.rollups import Partials

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
# PostgreSQL counts time from 2000-01-01 UTC in microseconds.
PG_EPOCH_US = 946_684_800_000_000

# Fixed-width column types: their big-endian NumPy type.
TYPES = {"bool": "?", "int4": ">i4", "int8": ">i8", "float8": ">f8", "timestamptz": ">i8"}
# Their type oids, which the binary array format names (the server checks them).
OIDS = {"bool": 16, "int4": 23, "int8": 20, "float8": 701, "timestamptz": 1184}


def rows(columns: Sequence[tuple[str, npt.NDArray[np.generic]]]) -> bytes:
    """The whole COPY stream (header, rows, trailer) for fixed-width columns of equal length.

    Each row is a field count, then each field as a 4-byte length and its big-endian value;
    timestamptz columns are given in Unix microseconds.
    """
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    for i, (kind, _) in enumerate(columns):
        fields += [(f"l{i}", ">i4"), (f"v{i}", TYPES[kind])]
    n = len(columns[0][1]) if columns else 0
    out = np.empty(n, dtype=np.dtype(fields))
    out["nfields"] = len(columns)
    for i, (kind, values) in enumerate(columns):
        out[f"l{i}"] = np.dtype(TYPES[kind]).itemsize
        out[f"v{i}"] = values - PG_EPOCH_US if kind == "timestamptz" else values
    return HEADER + out.tobytes() + TRAILER


def parse(data: bytes | bytearray | memoryview, kinds: Sequence[str]) -> list[npt.NDArray[Any]]:
    """The columns of a binary COPY stream of fixed-width columns without NULLs (what ``rows``
    writes, or ``COPY ... TO STDOUT (FORMAT BINARY)`` reads), as native NumPy arrays;
    timestamptz columns in Unix microseconds. Raises ValueError on anything else."""
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    for i, kind in enumerate(kinds):
        fields += [(f"l{i}", ">i4"), (f"v{i}", TYPES[kind])]
    dt = np.dtype(fields)
    view = memoryview(data)
    if bytes(view[: len(HEADER)]) != HEADER or bytes(view[-len(TRAILER) :]) != TRAILER:
        raise ValueError("not a binary COPY stream without header extensions")
    body = view[len(HEADER) : len(view) - len(TRAILER)]
    if len(body) % dt.itemsize:
        raise ValueError("rows of another layout (a NULL, or other column types)")
    got = np.frombuffer(body, dtype=dt)
    if (got["nfields"] != len(kinds)).any():
        raise ValueError(f"rows of another width than {len(kinds)} columns")
    out: list[npt.NDArray[Any]] = []
    for i, kind in enumerate(kinds):
        if (got[f"l{i}"] != np.dtype(TYPES[kind]).itemsize).any():
            raise ValueError(f"column {i}: a NULL or another type than {kind}")
        values = got[f"v{i}"].astype(np.dtype(TYPES[kind]).newbyteorder("="))
        out.append(values + PG_EPOCH_US if kind == "timestamptz" else values)
    return out


def read(
    cur: psycopg.Cursor[Any], query: str, params: Sequence[Any], kinds: Sequence[str]
) -> list[npt.NDArray[Any]]:
    """The columns of ``query``'s rows by binary COPY (no Python object per value); its
    columns must be of ``kinds`` (fixed-width) and never NULL."""
    buf = bytearray()
    with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)", params) as copy:
        for block in copy:
            buf += block
    return parse(buf, kinds)


def array(kind: str, values: npt.NDArray[np.generic]) -> bytes:
    """A one-dimensional array of a fixed-width type without NULLs, in PostgreSQL's binary
    format (what ``array_recv`` reads): a header, then each element's length and value."""
    n = len(values)
    if n == 0:
        return struct.pack(">iiI", 0, 0, OIDS[kind])  # no dimensions: the empty array
    out = np.empty(n, dtype=np.dtype([("len", ">i4"), ("v", TYPES[kind])]))
    out["len"] = np.dtype(TYPES[kind]).itemsize
    out["v"] = values - PG_EPOCH_US if kind == "timestamptz" else values
    return struct.pack(">iiIii", 1, 0, OIDS[kind], n, 1) + out.tobytes()


def readings(
    series: npt.NDArray[np.int32],
    ts_us: npt.NDArray[np.int64],
    value: npt.NDArray[np.float64],
    received_us: npt.NDArray[np.int64],
) -> bytes:
    """Rows of (series_id, ts, value, received_at), the layout of `reading_data`'s staging."""
    return rows(
        [("int4", series), ("timestamptz", ts_us), ("float8", value), ("timestamptz", received_us)]
    )


def partials(p: Partials) -> bytes:
    """Rows of rollup partials, in the column order of the rollup tables."""
    return rows(
        [
            ("int4", p.series),
            ("timestamptz", p.bucket),
            ("int8", p.count),
            ("float8", p.sum),
            ("float8", p.min),
            ("float8", p.max),
            ("timestamptz", p.first_ts),
            ("float8", p.first),
            ("timestamptz", p.last_ts),
            ("float8", p.last),
        ]
    )
