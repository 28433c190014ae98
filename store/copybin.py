"""PostgreSQL binary COPY buffers, binary arrays and packed rows with NumPy: no per-row Python."""

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


# Each fixed-width type's binary send function: what ``read`` packs a row's columns with.
SEND = {
    "bool": "boolsend",
    "int4": "int4send",
    "int8": "int8send",
    "float8": "float8send",
    "timestamptz": "timestamptz_send",
}


def read(
    cur: psycopg.Cursor[Any], query: str, params: Sequence[Any], kinds: Sequence[str]
) -> list[npt.NDArray[Any]]:
    """The columns of ``query``'s rows as native NumPy arrays (timestamptz in Unix
    microseconds); its columns must be of ``kinds`` (fixed-width) and never NULL (ValueError).

    The server packs every row's binary values into one bytea, read as one value: neither a
    Python object per value (fetchall) nor a message per row (COPY, which psycopg hands over
    one row at a time: a second for 510,001 rows).
    """
    return read_with_texts(cur, query, params, kinds, 0)[0]


def read_with_texts(
    cur: psycopg.Cursor[Any], query: str, params: Sequence[Any], kinds: Sequence[str], texts: int
) -> tuple[list[npt.NDArray[Any]], list[list[Any]]]:
    """``read`` for a query whose ``kinds`` columns are followed by ``texts`` columns of any
    type (NULL allowed), each of those read as one array: the arrays, and those as lists. One
    aggregate reads the rows once, so every column has them in the same order."""
    names = [f"c{i}" for i in range(len(kinds) + texts)]
    fixed = names[: len(kinds)]
    packed = " || ".join(f"{SEND[k]}(q.{n})" for k, n in zip(kinds, fixed, strict=True))
    arrays = "".join(f", array_agg(q.{n})" for n in names[len(kinds) :])
    row = cur.execute(
        f"SELECT count(*), string_agg({packed}, ''::bytea){arrays}"
        f" FROM ({query}) q({', '.join(names)})",
        params,
    ).fetchone()
    assert row is not None
    count, data, *lists = row
    count, data = int(count), data or b""
    dt = np.dtype([(n, TYPES[k]) for n, k in zip(fixed, kinds, strict=True)])
    if len(data) != count * dt.itemsize:
        raise ValueError(f"a NULL, or other columns than {', '.join(kinds)}")
    got = np.frombuffer(data, dtype=dt)
    out: list[npt.NDArray[Any]] = []
    for n, kind in zip(fixed, kinds, strict=True):
        values = got[n].astype(np.dtype(TYPES[kind]).newbyteorder("="))
        out.append(values + PG_EPOCH_US if kind == "timestamptz" else values)
    return out, [list(x or []) for x in lists]


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
