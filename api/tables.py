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
    """Each row as a JSON object, ``between`` between two, written from each column's JSON
    texts: what orjson writes for each row's dict, byte for byte, without building one Python
    dict per row (most of a large answer's time)."""
    n, k = (len(columns[0].values), len(columns)) if columns else (0, 0)
    if n == 0:
        return b""
    # Keys and values interleaved (`}<between>{"a":` 1 `,"b":` 2 ...), laid into one list by
    # slice assignment and joined once; the first row's lead-in is cut off.
    lead = b"}" + between + b"{"
    pieces: list[bytes] = [b""] * (2 * k * n)
    for j, c in enumerate(columns):
        key = (lead if j == 0 else b",") + orjson.dumps(c.name) + b":"
        pieces[2 * j :: 2 * k] = [key] * n
        pieces[2 * j + 1 :: 2 * k] = _json_texts(c)
    return b"".join(pieces)[len(lead) - 1 :] + b"}"


def _json_texts(c: Column) -> list[bytes]:
    """The JSON text of each value of ``c`` (NaN, a gap, is null as orjson writes it)."""
    # Not one orjson.dumps per value: each bytes object it returns keeps the ~4 KiB buffer it
    # was written in, which made a raw answer hold about 4 KiB per distinct time. Slices of
    # one call's output (and their concatenations) are objects of their own size.
    if len(c.values) == 0:
        return []
    if c.kind == "time":
        # Many rows share a time (one per series): each distinct time is formatted once, all
        # in one orjson call (RFC 3339 texts hold no comma).
        distinct, at = np.unique(np.asarray(c.values, dtype=np.int64), return_inverse=True)
        texts = orjson.dumps(_iso(distinct))[1:-1].split(b",")
        return [texts[i] for i in at.ravel().tolist()]
    if c.kind == "text":
        return _text_texts(c.values)
    # Numbers, booleans and nulls hold no comma: one orjson call, then split.
    return orjson.dumps(_python(c))[1:-1].split(b",")


def _text_texts(values: npt.NDArray[Any] | Sequence[Any]) -> list[bytes]:
    """JSON texts of strings (or nulls), each distinct one written once. Strings without a
    quote go through one orjson call, split at `","`: with no quote inside any of them, that
    sequence stands only between two strings. The rest are written one by one."""
    distinct = [v for v in dict.fromkeys(values) if v is not None]
    plain = [v for v in distinct if '"' not in v]
    texts: dict[Any, bytes] = {None: b"null"}
    if plain:
        parts = orjson.dumps(plain)[2:-2].split(b'","')
        texts.update((v, b'"' + p + b'"') for v, p in zip(plain, parts, strict=True))
    texts.update((v, _compact(orjson.dumps(v))) for v in distinct if '"' in v)
    return [texts[v] for v in values]


def _compact(b: bytes) -> bytes:
    """A copy of exactly its length (see ``_json_texts``)."""
    return bytes(memoryview(b))


def to_csv(t: Table, header: bool = True) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    if header:
        w.writerow([c.name for c in t.columns])
    cols = []
    for c in t.columns:
        values = _python(c)
        if c.kind == "float":
            values = ["" if v != v else repr(v) for v in values]  # v != v: NaN, a gap
        elif c.kind == "bool":
            values = ["true" if v else "false" for v in values]
        cols.append(values)
    w.writerows(zip(*cols, strict=True))
    return out.getvalue().encode("utf-8")


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
