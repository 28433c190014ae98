"""Binary COPY buffers round-trip through a real PostgreSQL exactly."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest

from store import copybin

pytestmark = pytest.mark.tiers


def test_rows_round_trip(database_url: str) -> None:
    ts = np.array([0, 1_764_252_000_123_456, -86_400_000_000], dtype=np.int64)
    cols = [
        ("int4", np.array([1, -2, 2**31 - 1], dtype=np.int32)),
        ("int8", np.array([2**40, 0, -1], dtype=np.int64)),
        ("float8", np.array([1.5, -0.0, 1e300])),
        ("timestamptz", ts),
    ]
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TEMP TABLE t (a int4, b int8, c float8, d timestamptz)")
        with conn.cursor().copy("COPY t FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(copybin.rows(cols))
        got = conn.execute("SELECT a, b, c, d FROM t").fetchall()
    assert got == [
        (1, 2**40, 1.5, datetime(1970, 1, 1, tzinfo=UTC)),
        (-2, 0, -0.0, datetime(2025, 11, 27, 14, 0, 0, 123456, tzinfo=UTC)),
        (2**31 - 1, -1, 1e300, datetime(1969, 12, 31, tzinfo=UTC)),
    ]


def test_read_gives_the_columns_as_arrays(database_url: str) -> None:
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE r (a int4, b int8, c float8, d timestamptz, e bool)")
        cur.execute(
            "INSERT INTO r VALUES (1, -5, 2.5, '2025-11-27 14:00:00.123456+00', true),"
            " (-2, 2^40, -0.0, '1969-12-31 00:00:00+00', false)"
        )
        kinds = ["int4", "int8", "float8", "timestamptz", "bool"]
        a, b, c, d, e = copybin.read(cur, "SELECT * FROM r WHERE a > %s ORDER BY a", [-9], kinds)
        assert a.tolist() == [-2, 1] and a.dtype == np.int32
        assert b.tolist() == [2**40, -5] and b.dtype == np.int64
        assert c.tolist() == [-0.0, 2.5]
        assert d.tolist() == [-86_400_000_000, 1_764_252_000_123_456]
        assert e.tolist() == [False, True] and e.dtype == bool
        none = copybin.read(cur, "SELECT a, b FROM r WHERE false", [], ["int4", "int8"])
        assert [len(x) for x in none] == [0, 0]
        cur.execute("INSERT INTO r (a, b) VALUES (3, NULL)")
        with pytest.raises(ValueError, match="NULL"):
            copybin.read(cur, "SELECT a, b FROM r", [], ["int4", "int8"])
