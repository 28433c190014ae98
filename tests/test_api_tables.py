"""JSON tables written from column texts are what orjson writes for the plain document (one
object per row), byte for byte, JSON lines are its rows, and CSV is what csv.writer writes;
writing them takes a few times the answer's memory."""

from __future__ import annotations

import csv
import io
import tracemalloc
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from api.tables import (
    _SCHEMA_TYPE,
    Column,
    Table,
    _python,
    json_rows,
    to_csv,
    to_json,
    to_jsonl,
)


def plain(t: Table) -> bytes:
    """The obvious way: a dict per row (what to_json must equal)."""
    names = [c.name for c in t.columns]
    fields = [
        {
            "name": c.name,
            "type": _SCHEMA_TYPE[c.kind],
            **({"tz": "UTC"} if c.kind == "time" else {}),
        }
        for c in t.columns
    ]
    cols = [_python(c) for c in t.columns]
    rows = [dict(zip(names, r, strict=True)) for r in zip(*cols, strict=True)]
    return orjson.dumps({**t.extra, "schema": {"fields": fields}, "data": rows})


def plain_csv(t: Table) -> bytes:
    """What csv.writer writes, a cell at a time (what to_csv must equal)."""

    def cell(kind: str, v: Any) -> Any:
        if kind == "float":
            return "" if v != v else repr(v)
        return ("true" if v else "false") if kind == "bool" else v

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([c.name for c in t.columns])
    cols = [[cell(c.kind, v) for v in _python(c)] for c in t.columns]
    w.writerows(zip(*cols, strict=True))
    return out.getvalue().encode("utf-8")


texts = (
    st.none()
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
    # what the column writer splits on, and its neighbours
    | st.sampled_from(['","', '"', ",", "\\", '\\","', "", '",', "a\nb", "\r", "\x00", " x "])
)
floats = st.floats(allow_infinity=False) | st.sampled_from([0.0, -0.0, 1e16, 5e-324, 1e300])


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(-(2**55), 2**55), texts, floats, texts, st.booleans()),
        max_size=40,
    ),
    as_array=st.booleans(),
    query=st.dictionaries(
        st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), max_size=3
    ),
)
def test_rows_match_the_plain_document(
    rows: list[tuple[int, str | None, float, str | None, bool]],
    as_array: bool,
    query: dict[str, Any],
) -> None:
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    values: Any = [r[2] for r in rows]
    if as_array:
        # a column of a 2-D array, as the readings' values are: not contiguous
        values = np.array([values, values], dtype=np.float64).T[:, 0]
    t = Table(
        [
            Column("ts", "time", ts),
            Column("sensor_id", "text", [r[1] for r in rows]),
            Column("value", "float", values),
            Column("unit", "text", [r[3] for r in rows]),
            Column("stale", "bool", np.array([r[4] for r in rows], dtype=bool)),
        ],
        extra={"query": query, "before": []},
    )
    assert to_json(t) == plain(t)
    lines = [orjson.dumps(row) for row in orjson.loads(plain(t))["data"]]
    assert to_jsonl(t) == b"".join(line + b"\n" for line in lines)
    assert to_csv(t) == plain_csv(t)
    assert to_csv(Table(t.columns[1:2])) == plain_csv(Table(t.columns[1:2]))  # a lone column


def test_writing_rows_holds_a_few_times_the_answer() -> None:
    # Column texts as fixed-width arrays, one record per row: the peak is those arrays, the
    # records and the answer (4.6x the answer here). A list of two bytes objects per value,
    # as before, peaked at 9x; one orjson.dumps per value kept a ~4 KiB buffer each.
    n = 5000
    columns = [
        Column("ts", "time", 1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 10**6),
        Column("sensor_id", "text", [f"AQ-{i:05d}" for i in range(n)]),
        Column("value", "float", np.arange(n) / 7),
    ]
    tracemalloc.start()
    try:
        answer = json_rows(columns)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(orjson.loads(answer)) == n
    assert peak / len(answer) < 6, f"peak {peak / len(answer):.1f}x the answer"
