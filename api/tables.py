"""Tabular answers in three formats that pandas reads straight from a URL.

- JSON: a Table Schema document (``{"schema": {"fields": [...]}, "data": [...]}``, the layout
  ``pandas.read_json(url, orient="table")`` reads, dtypes included), plus whatever extra keys
  the endpoint adds (``query``, ``before``); readers that do not know them ignore them.
- CSV: a header line, RFC 3339 times, empty cells for nulls (``pandas.read_csv(url)``).
- JSON lines: one row object per line, the same objects as JSON's ``data``
  (``pandas.read_json(url, lines=True)``); nothing else in the body.
- Parquet: typed columns, times as UTC microsecond timestamps, nulls as nulls
  (``pandas.read_parquet(url)``); the extra keys ride in the file's key-value metadata
  under ``pusat``.

A table too large to hold goes out in chunks (``Stream``): each chunk is encoded as the whole
table would be (CSV without its header after the first, Parquet as one more row group), so a
streamed answer is byte for byte the one-piece answer for CSV and JSON lines, and the same
typed columns and metadata for Parquet.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi.responses import Response


class Format(StrEnum):
    json = "json"
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


# Table Schema field types of our column kinds, and their Arrow types.
_SCHEMA_TYPE = {
    "time": "datetime",
    "text": "string",
    "float": "number",
    "int": "integer",
    "bool": "boolean",
}
_ARROW_TYPE = {
    "time": pa.timestamp("us", tz="UTC"),
    "text": pa.string(),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
}


@dataclass
class Column:
    """One column: ``time`` values are int64 Unix microseconds; ``float`` NaN means null."""

    name: str
    kind: str  # time | text | float | int | bool
    values: npt.NDArray[Any] | Sequence[Any]


@dataclass
class Table:
    columns: list[Column]
    extra: dict[str, Any] = field(default_factory=dict)  # JSON keys / Parquet metadata
    headers: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns[0].values) if self.columns else 0


def _iso(us: npt.NDArray[np.int64]) -> list[str]:
    return list(np.datetime_as_string(np.asarray(us, dtype="datetime64[us]"), timezone="UTC"))


def _python(c: Column) -> list[Any]:
    """Column values as JSON/CSV-ready Python values (times as RFC 3339 text)."""
    if c.kind == "time":
        return _iso(np.asarray(c.values, dtype=np.int64))
    if isinstance(c.values, np.ndarray):
        return list(c.values.tolist())
    return list(c.values)


def to_json(t: Table) -> bytes:
    fields: list[dict[str, Any]] = []
    for c in t.columns:
        f: dict[str, Any] = {"name": c.name, "type": _SCHEMA_TYPE[c.kind]}
        if c.kind == "time":
            f["tz"] = "UTC"
        fields.append(f)
    extra = {k: v for k, v in t.extra.items() if k not in ("schema", "data")}
    head = orjson.dumps({**extra, "schema": {"fields": fields}})
    return head[:-1] + b',"data":' + json_rows(t.columns) + b"}"


def to_jsonl(t: Table) -> bytes:
    """The rows of JSON's ``data``, one per line (each line ends in a newline)."""
    return _rows(t.columns, b"\n") + b"\n" if len(t) else b""


def json_rows(columns: list[Column]) -> bytes:
    """The rows as a JSON list of objects."""
    return b"[" + _rows(columns, b",") + b"]"


def _rows(columns: list[Column], between: bytes) -> bytes:
    """Each row as a JSON object, ``between`` between two: what orjson writes for each row's
    dict, byte for byte, without a Python dict per row. JSON text holds no raw NUL (orjson
    writes it ``\\u0000``), so the rows can be laid out by ``_records``."""
    n = len(columns[0].values) if columns else 0
    if n == 0:
        return b""
    parts: list[bytes | _Fixed] = []
    for j, c in enumerate(columns):
        parts.append((b"{" if j == 0 else b",") + orjson.dumps(c.name) + b":")
        parts.extend(_json_fixed(c))
    parts.append(b"}" + between)
    return _records(n, parts)[: -len(between)]


def _records(n: int, parts: list[bytes | _Fixed]) -> bytes:
    """``n`` rows, each the concatenation of ``parts`` (constants, and arrays of a text per
    row). Every row is one record of fixed-width fields (each text padded with NULs to its
    column's widest), filled a column at a time; the NULs are then deleted from the whole at
    once, so no text may hold one. Joining a list of two pieces per value instead took 2 s of a
    city's 510,001-row `latest` as JSON, most of it in ``bytes.join`` visiting 14 million
    objects."""
    merged: list[bytes | _Fixed] = []
    for p in parts:  # neighbouring constants as one field
        if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += p
        else:
            merged.append(p)
    fields = [
        (f"f{i}", p.dtype if isinstance(p, np.ndarray) else f"S{len(p)}")
        for i, p in enumerate(merged)
    ]
    record = np.empty(n, dtype=fields)
    for (name, _), p in zip(fields, merged, strict=True):
        record[name] = p
    return record.tobytes().translate(None, b"\x00")


_Fixed = npt.NDArray[np.bytes_]  # texts NUL-padded to one width


def _json_fixed(c: Column) -> list[bytes | _Fixed]:
    """The JSON text of each value of ``c`` (NaN, a gap, is null as orjson writes it), as
    fixed-width arrays and the constants between them."""
    if c.kind == "time":
        return [b'"', *_iso_fixed(np.asarray(c.values, dtype=np.int64)), b'"']
    if c.kind == "text":
        return [_text_fixed(c.values)]
    # Numbers, booleans and nulls hold no comma: one orjson call, then split.
    if isinstance(c.values, np.ndarray) and c.values.dtype in _NATIVE:
        written = orjson.dumps(np.ascontiguousarray(c.values), option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        written = orjson.dumps(_python(c))
    return [np.array(written[1:-1].split(b","), dtype="S")]


# what orjson writes from an array as it writes the same values as Python objects (float32 it
# would write shorter)
_NATIVE = (np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.bool_))
_TIME_OF_DAY = np.frombuffer(b"T00:00:00.000000Z", dtype=np.uint8)
# where each digit of hours, minutes, seconds and microseconds goes in _TIME_OF_DAY
_DIGITS = ((3_600_000_000, (1, 2)), (60_000_000, (4, 5)), (1_000_000, (7, 8)))


def _iso_fixed(us: npt.NDArray[np.int64]) -> tuple[_Fixed, _Fixed]:
    """RFC 3339 texts of Unix microseconds as `_iso` writes them, in two parts: the date (each
    distinct day written by numpy once) and the time of day, its digits worked out as numbers
    (numpy's text for every value took 0.13 s for 510,001 distinct times)."""
    day, rest = np.divmod(us, 86_400_000_000)
    days, at = np.unique(day, return_inverse=True)
    dates = np.datetime_as_string(days.astype("datetime64[D]")).astype("S")[at.ravel()]
    clock = np.empty((len(us), len(_TIME_OF_DAY)), dtype=np.uint8)
    clock[:] = _TIME_OF_DAY
    for unit, (tens, ones) in _DIGITS:
        value, rest = np.divmod(rest, unit)
        clock[:, tens] += (value // 10).astype(np.uint8)
        clock[:, ones] += (value % 10).astype(np.uint8)
    for place in range(6):  # microseconds, last digit first
        rest, digit = np.divmod(rest, 10)
        clock[:, 15 - place] += digit.astype(np.uint8)
    return dates, clock.view(f"S{len(_TIME_OF_DAY)}").ravel()


def _text_fixed(values: npt.NDArray[Any] | Sequence[Any]) -> _Fixed:
    """JSON texts of strings (or nulls), each distinct one written once and then picked by
    position. Strings without a quote go through one orjson call, split at `","`: with no
    quote inside any of them, that sequence stands only between two strings. The rest are
    written one by one."""
    distinct, at = _positions(values)
    plain = [v for v in distinct if v is not None and '"' not in v]
    texts: dict[Any, bytes] = {None: b"null"}
    if plain:
        parts = orjson.dumps(plain)[2:-2].split(b'","')
        texts.update((v, b'"' + p + b'"') for v, p in zip(plain, parts, strict=True))
    texts.update((v, orjson.dumps(v)) for v in distinct if v is not None and '"' in v)
    return np.array([texts[v] for v in distinct], dtype="S")[at]


def to_csv(t: Table, header: bool = True) -> bytes:
    """What ``csv.writer`` writes for the header and rows (floats as ``repr`` writes them, NaN
    empty; booleans ``true``/``false``), laid out by ``_records`` when no text holds a NUL and
    there are two columns or more (a lone empty field is written ``""``)."""
    head = _csv_writer_rows([[c.name for c in t.columns]]) if header else b""
    if len(t) == 0:
        return head
    parts = [_csv_fixed(c) for c in t.columns]
    if len(t.columns) < 2 or any(p is None for p in parts):
        return head + _csv_writer_rows(zip(*(_csv_python(c) for c in t.columns), strict=True))
    laid: list[bytes | _Fixed] = []
    for j, p in enumerate(parts):
        assert p is not None
        if j:
            laid.append(b",")
        laid.extend(p)
    return head + _records(len(t), [*laid, b"\n"])


def _csv_writer_rows(rows: Any) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def _csv_python(c: Column) -> list[Any]:
    values = _python(c)
    if c.kind == "float":
        return ["" if v != v else repr(v) for v in values]  # v != v: NaN, a gap
    if c.kind == "bool":
        return ["true" if v else "false" for v in values]
    return values


def _csv_fixed(c: Column) -> list[bytes | _Fixed] | None:
    """The CSV field of each value of ``c``, or None where ``_records`` cannot lay it out."""
    if c.kind == "time":
        return list(_iso_fixed(np.asarray(c.values, dtype=np.int64)))
    if c.kind == "float":
        # each distinct bit pattern written once (by bits: 0.0 and -0.0 are two texts)
        bits = np.ascontiguousarray(np.asarray(c.values, dtype=np.float64)).view(np.int64)
        patterns, where = np.unique(bits, return_inverse=True)
        floats = [repr(v) if v == v else "" for v in patterns.view(np.float64).tolist()]
        return [np.array(floats, dtype="S")[where.ravel()]]
    if c.kind == "bool":
        return [np.where(np.asarray(c.values, dtype=bool), b"true", b"false")]
    values = _python(c)
    distinct, at = _positions(values)
    texts = ["" if v is None else str(v) for v in distinct]
    if any("\x00" in v for v in texts):
        return None
    # quoted as csv.writer quotes (QUOTE_MINIMAL, "\n" ending a line): a lone "\r" is not;
    # tests/test_api_tables.py compares the two
    quoted = [
        '"' + v.replace('"', '""') + '"' if any(ch in v for ch in ',"\n') else v for v in texts
    ]
    return [np.array([v.encode("utf-8") for v in quoted], dtype="S")[at]]


def _positions(values: npt.NDArray[Any] | Sequence[Any]) -> tuple[list[Any], npt.NDArray[np.intp]]:
    """The distinct values in order of first sight, and each value's place among them."""
    distinct = list(dict.fromkeys(values))
    position = {v: i for i, v in enumerate(distinct)}
    return distinct, np.fromiter(map(position.__getitem__, values), np.intp, count=len(values))


def _arrow(t: Table) -> pa.Table:
    arrays = []
    for c in t.columns:
        if c.kind == "time":
            arrays.append(
                pa.array(np.asarray(c.values, dtype="datetime64[us]"), type=_ARROW_TYPE["time"])
            )
        elif c.kind == "float":
            arrays.append(pa.array(np.asarray(c.values, dtype=np.float64), from_pandas=True))
        else:
            arrays.append(pa.array(c.values, type=_ARROW_TYPE[c.kind]))
    table = pa.Table.from_arrays(arrays, names=[c.name for c in t.columns])
    if t.extra:
        table = table.replace_schema_metadata({"pusat": orjson.dumps(t.extra)})
    return table


def to_parquet(t: Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(_arrow(t), sink, compression="zstd")
    return sink.getvalue()


class _Drain(io.RawIOBase):
    """A write-only file whose bytes are taken out as they come (the Parquet writer asks
    where it is, for the offsets in the footer, so the position counts everything written)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._at = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._parts.append(data)
        self._at += len(data)
        return len(data)

    def tell(self) -> int:
        return self._at

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class Stream:
    """One answer in chunks: ``begin()``, then ``chunk(t)`` for each table of rows (all with
    the columns of ``empty``), then ``end()``; each returns the bytes to send next. Parquet
    rows go out as one row group per chunk; JSON is not streamed (one document)."""

    def __init__(self, fmt: Format, empty: Table) -> None:
        if fmt is Format.json:
            raise ValueError("a JSON document is not streamed; use JSON lines")
        self.fmt = fmt
        self.empty = empty
        self._drain = _Drain()
        self._parquet: pq.ParquetWriter | None = None

    def begin(self) -> bytes:
        if self.fmt is Format.csv:
            return to_csv(self.empty)  # the header line
        if self.fmt is Format.parquet:
            schema = _arrow(self.empty).schema
            self._parquet = pq.ParquetWriter(self._drain, schema, compression="zstd")
            return self._drain.take()
        return b""

    def chunk(self, t: Table) -> bytes:
        if self.fmt is Format.csv:
            return to_csv(t, header=False)
        if self.fmt is Format.jsonl:
            return to_jsonl(t)
        assert self._parquet is not None, "begin() first"
        if len(t):
            self._parquet.write_table(_arrow(Table(t.columns, self.empty.extra)))
        return self._drain.take()

    def end(self) -> bytes:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        return self._drain.take()


MEDIA = {
    Format.json: "application/json",
    Format.csv: "text/csv; charset=utf-8",
    Format.jsonl: "application/jsonl",
    Format.parquet: "application/vnd.apache.parquet",
}


def respond(t: Table, fmt: Format, filename: str) -> Response:
    encode = {
        Format.json: to_json,
        Format.csv: to_csv,
        Format.jsonl: to_jsonl,
        Format.parquet: to_parquet,
    }[fmt]
    return Response(encode(t), media_type=MEDIA[fmt], headers=headers_for(t, fmt, filename))


def headers_for(t: Table, fmt: Format, filename: str) -> dict[str, str]:
    headers = dict(t.headers)
    if fmt is not Format.json:
        headers["Content-Disposition"] = f'inline; filename="{filename}.{fmt.value}"'
    return headers


def openapi_content(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The 200 answer of a tabular endpoint, documented in its three media types."""
    return {
        200: {
            "description": "A table: JSON (Table Schema), CSV, JSON lines or Parquet, as"
            " `format` asks",
            "content": {
                "application/json": {"example": example},
                "text/csv": {"schema": {"type": "string"}},
                "application/jsonl": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        }
    }
