"""District rollups (store/migrations/0009): a district's panel (`group=district` for one whole
district) is merged from one row per district, quantity and bucket that ingest keeps beside the
series' rollups. Checked against aggregates computed here from the raw readings, across late
readings, a sensor that moves in, a sensor without a district, and the migration's backfill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from pusat.embedded.ports import free_port
from pusat.settings import Settings
from store import db, migrate
from tests.test_api_readings import AGGS, expected
from tests.test_api_support import US, Api, sensor, us, write

pytest_plugins = ["tests.test_api_support"]
pytestmark = pytest.mark.tiers

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
HOURS = 3


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    # The districts' series counted afresh for each answer: a sensor moves in mid-test.
    return settings.with_(api_port=free_port(), api_token_cache_s=0.0, api_group_cache_s=0.0)


def _flow(rng: np.random.Generator, first_min: int, last_min: int) -> tuple[Any, Any]:
    """Irregular readings (0 to 3 a minute) between two minutes after T0."""
    stamps = [
        us(T0) + m * 60 * US + s * US
        for m in range(first_min, last_min)
        for s in np.sort(rng.choice(60, rng.integers(0, 4), replace=False))
    ]
    t = np.asarray(stamps, dtype=np.int64)
    return t, np.round(rng.gamma(4.0, 200.0, len(t)), 3)


def _panel(api: Api, step: str) -> dict[str, Any]:
    r = api.get(
        "/api/v1/readings",
        district="Presint 1",
        quantity="flow",
        group="district",
        start=T0.isoformat(),
        end=(T0 + timedelta(hours=HOURS)).isoformat(),
        step=step,
        agg=AGGS,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _check(api: Api, readings: list[tuple[Any, Any]], sensors: int) -> None:
    t = np.concatenate([x[0] for x in readings])
    v = np.concatenate([x[1] for x in readings])
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    for step, table in (("15m", "district_rollup_1m"), ("1h", "district_rollup_1h")):
        d = _panel(api, step)
        q = d["query"]
        assert q["table"] == table and q["group"] == "district"
        assert q["series"] == [
            {"district": "Presint 1", "quantity": "flow", "unit": "veh/h", "sensors": sensors}
        ]
        want = expected(t, v, T0, q["step_s"], q["buckets"])
        frame = pd.DataFrame(d["data"])
        assert len(frame) == q["buckets"] and (frame["district"] == "Presint 1").all()
        for k in ("mean", "min", "max", "sum", "count"):  # first/last: ties between sensors
            got = frame[k].to_numpy(dtype=float)
            np.testing.assert_allclose(got, want[k].astype(float), rtol=1e-9, err_msg=(step, k))


def test_a_district_panel_is_merged_from_the_district_rollups_exactly(api: Api) -> None:
    url = api.settings.database_url or ""
    rng = np.random.default_rng(11)
    a, b = _flow(rng, 60, HOURS * 60), _flow(rng, 0, HOURS * 60)
    a_late = _flow(rng, 0, 60)  # committed after later readings: merges into old buckets
    c_before, c_after = _flow(rng, 0, 90), _flow(rng, 90, HOURS * 60)
    loops = [
        sensor("LOOP-A", "traffic", "Presint 1", quantities=("flow",)),
        sensor("LOOP-B", "traffic", "Presint 1", quantities=("flow",)),
        sensor("LOOP-C", "traffic", "Presint 2", quantities=("flow",)),
    ]
    write(
        url,
        [("LOOP-A", "flow", *a), ("LOOP-B", "flow", *b), ("LOOP-C", "flow", *c_before)],
        sensors=loops,
    )
    write(url, [("LOOP-A", "flow", *a_late)])
    # a loop with no district counts in no district's rollup
    write(url, [("LOOP-X", "flow", *_flow(rng, 0, 60))], sensors=[sensor("LOOP-X", "traffic", "")])
    _check(api, [a, b, a_late], sensors=2)

    # LOOP-C moves to Presint 1: its readings from then on count there, the earlier ones stay
    # with Presint 2 (the readings as the district had them when they arrived).
    write(
        url,
        [("LOOP-C", "flow", *c_after)],
        sensors=[sensor("LOOP-C", "traffic", "Presint 1", quantities=("flow",))],
    )
    _check(api, [a, b, a_late, c_after], sensors=3)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT sum(count) FROM district_rollup_1m WHERE district = 'Presint 2'"
        ).fetchone()
    assert row is not None and row[0] == len(c_before[0])


def test_the_migration_backfills_what_was_stored_before_it(database_url: str) -> None:
    rng = np.random.default_rng(5)
    write(
        database_url,
        [("AQ-1", "pm25", *_flow(rng, 0, 150)), ("AQ-2", "pm25", *_flow(rng, 30, 200))],
        sensors=[
            sensor("AQ-1", "air", "Presint 8", quantities=("pm25",)),
            sensor("AQ-2", "air", "Presint 8", quantities=("pm25",)),
        ],
    )
    tables = ("district_rollup_1m_data", "district_rollup_1h_data")

    def rows(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY district, quantity, bucket").fetchall()
            for t in tables
        }

    with db.connect(database_url) as conn:
        kept = rows(conn)
        assert all(kept.values())
        # as a database of the schema before 0009 would be: its rollups, no district rows
        conn.execute("DROP VIEW district_rollup_1m, district_rollup_1h")
        for t in tables:  # one at a time: TimescaleDB drops one hypertable per statement
            conn.execute(f"DROP TABLE {t}")
        conn.execute("DELETE FROM schema_migrations WHERE version IN (9, 10)")
        conn.commit()
        assert [m.version for m in migrate.upgrade(conn)] == [9, 10]
        again = rows(conn)
    for t in tables:  # sums may differ in their last bits: added up in another order
        assert [r[:4] + r[5:] for r in again[t]] == [r[:4] + r[5:] for r in kept[t]], t
        np.testing.assert_allclose([r[4] for r in again[t]], [r[4] for r in kept[t]], rtol=1e-12)


def test_a_batch_delivered_again_counts_once_in_its_district(api: Api) -> None:
    """A batch whose readings were partly stored before goes through staging: only the new
    readings reach the district rollups (and the sensors named for them are theirs)."""
    url = api.settings.database_url or ""
    rng = np.random.default_rng(3)
    a, b = _flow(rng, 0, HOURS * 60), _flow(rng, 0, HOURS * 60)
    loops = [
        sensor("LOOP-A", "traffic", "Presint 1", quantities=("flow",)),
        sensor("LOOP-B", "traffic", "Presint 1", quantities=("flow",)),
    ]
    write(url, [("LOOP-A", "flow", *a)], sensors=loops)
    write(url, [("LOOP-A", "flow", *a), ("LOOP-B", "flow", *b)])  # A's again, B's new
    _check(api, [a, b], sensors=2)
