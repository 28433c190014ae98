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
