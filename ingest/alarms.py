"""Alarms for one worker: the engine (processing), the lifecycle (store) and the MQTT topics.

The engine's state lives in memory and is saved with every batch in the same transaction, so a
restarted worker (or one whose transaction failed) reloads exactly what was committed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg

from processing.alerts import Engine, StateRows, Transitions
from processing.catalogue import Catalogue
from processing.rules import Rule, SeriesInfo
from store import alerts as lifecycle
from store import copybin
from store.alerts import Transition

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]
DEFAULT_PERIOD_S = 300.0


class Alarms:
    def __init__(
        self,
        rules: list[Rule],
        catalogue: Catalogue,
        topic_root: str,
        publish: Publish | None = None,
    ) -> None:
        self.rules = rules
        self.catalogue = catalogue
        self.topic_root = topic_root
        self.publish_fn = publish
        self.engine = Engine(rules)
        self._names: dict[int, tuple[str, str]] = {}  # series -> (sensor, quantity)
        self._rule_ids: list[int] = []
        self._loaded = False

    # -- loading --------------------------------------------------------------------------------

    def _register(self, rows: Iterable[tuple[int, str, str, str | None, str | None]]) -> None:
        for series, sensor, quantity, district, domain in rows:
            q = self.catalogue.get(quantity)
            self.engine.register(
                series,
                SeriesInfo(sensor, quantity, district, domain),
                q.period if q else DEFAULT_PERIOD_S,
            )
            self._names[series] = (sensor, quantity)

    _SERIES = (
        "SELECT se.series_id, se.sensor_id, se.quantity, s.district, s.domain"
        " FROM series se JOIN sensors s USING (sensor_id)"
    )

    def load(self, cur: psycopg.Cursor[Any]) -> None:
        """Rebuild everything from the database (at start, and after a failed transaction)."""
        self.engine = Engine(self.rules)
        self._names.clear()
        keys = [r.key for r in self.rules]
        cur.execute(
            "INSERT INTO alert_rules (key) SELECT unnest(%s::text[]) ON CONFLICT (key) DO NOTHING",
            (keys,),
        )
        ids = dict(
            cur.execute(
                "SELECT key, rule_id FROM alert_rules WHERE key = ANY(%s)", (keys,)
            ).fetchall()
        )
        self._rule_ids = [ids[k] for k in keys]
        index = {rid: i for i, rid in enumerate(self._rule_ids)}
        self._register(cur.execute(self._SERIES).fetchall())
        for rid, series, active, run_start, last_ts, last_value in cur.execute(
            "SELECT rule_id, series_id, active, run_start, last_ts, last_value FROM alert_state"
            " WHERE rule_id = ANY(%s)",
            (self._rule_ids,),
        ):
            self.engine.restore(index[rid], series, active, run_start, last_ts, last_value)
        for series, ts in cur.execute(
            "SELECT series_id, (extract(epoch FROM ts) * 1000000)::bigint FROM latest_data"
        ):
            self.engine.restore_watermark(series, ts)
        for (sensor,) in cur.execute(
            "SELECT sensor_id FROM alerts WHERE kind = 'stale' AND state <> 'closed'"
        ):
            self.engine.restore_stale(sensor)
        self._loaded = True

    def invalidate(self) -> None:
        """The last transaction failed: the in-memory state may be ahead of the database."""
        self._loaded = False

    def ensure(self, cur: psycopg.Cursor[Any], series: np.ndarray) -> None:
        if not self._loaded:
            self.load(cur)
        unknown = [int(s) for s in np.unique(series) if int(s) not in self._names]
        if unknown:
            self._register(
                cur.execute(self._SERIES + " WHERE se.series_id = ANY(%s)", (unknown,)).fetchall()
            )

    def sensors_changed(self, cur: psycopg.Cursor[Any], sensors: list[str]) -> None:
        """A meta message moved sensors (district, domain): re-scope their series' rules."""
        if sensors and self._loaded:
            self._register(
                cur.execute(self._SERIES + " WHERE se.sensor_id = ANY(%s)", (sensors,)).fetchall()
            )

    # -- evaluation -----------------------------------------------------------------------------

    def on_batch(
        self, cur: psycopg.Cursor[Any], series: np.ndarray, ts_us: np.ndarray, value: np.ndarray
    ) -> set[tuple[str, str]]:
        """Evaluate new readings inside the batch's transaction; returns touched alarm topics.
        ``ensure`` must have run for these series in the same transaction (commit does it first,
        before the readings move the watermarks a reload would read)."""
        transitions, state = self.engine.evaluate(series, ts_us, value)
        self._save(cur, state)
        return lifecycle.apply(cur, self._describe(transitions))

    def tick(self, cur: psycopg.Cursor[Any], now: datetime) -> set[tuple[str, str]]:
        if not self._loaded:
            self.load(cur)
        transitions = self.engine.tick(int(now.timestamp() * 1e6))
        touched = lifecycle.apply(cur, self._describe(transitions))
        windows = {r.key: r.flap_window_us for r in self.rules}
        return touched | lifecycle.settle(cur, now, windows)

    def _describe(self, tr: Transitions) -> list[Transition]:
        out = []
        for r, series, sensor, ts, value, raised in tr.rows():
            rule = self.rules[r]
            if series >= 0:
                sensor_id, quantity = self._names[series]
            else:
                sensor_id, quantity = self.engine.sensors[sensor], None
            out.append(
                Transition(
                    rule=rule.key,
                    kind=rule.kind,
                    severity=rule.severity,
                    message=rule.message or rule.key,
                    sensor_id=sensor_id,
                    quantity=quantity,
                    series_id=series if series >= 0 else None,
                    ts_us=ts,
                    value=value,
                    raised=raised,
                    flap_count=rule.flap_count,
                    flap_window_us=rule.flap_window_us,
                )
            )
        return out

    def _save(self, cur: psycopg.Cursor[Any], st: StateRows) -> None:
        if len(st.rule) == 0:
            return
        rule_ids = np.array(self._rule_ids, dtype=np.int32)[st.rule]
        cur.execute("TRUNCATE staging_alert_state")
        with cur.copy("COPY staging_alert_state FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(
                copybin.rows(
                    [
                        ("int4", rule_ids),
                        ("int4", st.series),
                        ("bool", st.active),
                        ("int8", st.run_start),
                        ("int8", st.last_ts),
                        ("float8", st.last_value),
                    ]
                )
            )
        cur.execute(
            "INSERT INTO alert_state SELECT * FROM staging_alert_state"
            " ON CONFLICT (rule_id, series_id) DO UPDATE SET active = excluded.active,"
            " run_start = excluded.run_start, last_ts = excluded.last_ts,"
            " last_value = excluded.last_value"
        )

    # -- publication ----------------------------------------------------------------------------

    def publish(self, cur: psycopg.Cursor[Any], touched: set[tuple[str, str]]) -> None:
        """Retained `<root>/alerts/<severity>/<sensor>` while alarms are open; emptied after."""
        if self.publish_fn is None:
            return
        for sensor, severity in sorted(touched):
            self.publish_fn(*retained(cur, self.topic_root, sensor, severity))


def retained(
    cur: psycopg.Cursor[Any], topic_root: str, sensor: str, severity: str
) -> tuple[str, bytes]:
    """The retained message for one sensor and severity: its open alarms, or empty (which
    removes the retained message) when none is left open. Ingest and the API both send it."""
    open_alarms = lifecycle.open_for(cur, sensor, severity)
    payload = (
        json.dumps(
            {
                "sensor": sensor,
                "severity": severity,
                "alerts": open_alarms,
                "at": datetime.now(UTC).isoformat(),
            }
        ).encode()
        if open_alarms
        else b""
    )
    return f"{topic_root}/alerts/{severity}/{sensor}", payload
