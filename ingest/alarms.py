"""Alarms for one worker: the engine (processing), the lifecycle (store) and the MQTT topics.

The engine's state lives in memory and is saved with every batch in the same transaction (the
writer's merge statement carries it), so a restarted worker (or one whose transaction failed)
reloads exactly what was committed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from processing.alerts import NONE, Engine, StateRows, Transitions
from processing.catalogue import Catalogue
from processing.rules import Rule
from store import alerts as lifecycle
from store import copybin
from store.alerts import Transition
from store.writer import AlarmState

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]
DEFAULT_PERIOD_S = 300.0


@dataclass(frozen=True)
class _Saved:
    """What a load reads from the database."""

    rule_ids: list[int]
    sensors: list[tuple[str, str | None, str | None]]  # sensor, district, domain
    quantities: list[str]
    series: list[npt.NDArray[Any]]  # series, its sensor and its quantity (in the lists above)
    state: list[npt.NDArray[Any]]  # alert_state's columns, as _STATE reads them
    watermarks: list[npt.NDArray[Any]]  # series, newest event time (Unix microseconds)
    stale: list[str]  # sensors with an open stale alarm


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
        # series -> its quantity, as an index into _quantities (-1: not registered); its
        # sensor is the engine's. Arrays, not a dict of tuples: 510,000 series held 100 MB so.
        self._quantity_of = np.full(0, -1, dtype=np.int16)
        self._quantities: list[str] = []
        self._quantity_index: dict[str, int] = {}
        self._rule_ids = np.empty(0, dtype=np.int32)  # the database's id of each rule
        # Threshold (and index) rules carry only `active` and `run_start` from one reading to
        # the next; rate and flatline rules also the last reading, which changes every time.
        self._carries_last = np.array([r.kind in ("rate", "flatline") for r in rules], dtype=bool)
        # Per pair slot of the engine: what `alert_state` holds (or would restore to: idle when
        # absent).
        self._saved_active = np.zeros(0, dtype=bool)
        self._saved_run = np.zeros(0, dtype=np.int64)
        self._loaded = False

    # -- loading --------------------------------------------------------------------------------

    def _register(self, rows: Iterable[tuple[int, str, str, str | None, str | None]]) -> None:
        """A few series (new ones, or a moved sensor's), as rows of ``_SERIES``."""
        rows = list(rows)
        if not rows:
            return
        series, sensors, quantities, districts, domains = zip(*rows, strict=True)
        codes = self._codes(list(quantities))
        self.engine.register_columns(
            series, sensors, quantities, districts, domains, self._periods()[codes]
        )
        self._note(np.asarray(series, dtype=np.intp), codes)

    def _register_all(self, saved: _Saved) -> None:
        """Every known series, as codes: no Python object per series (their rows, and a
        SeriesInfo each, took seconds and left hundreds of MB of freed small objects)."""
        series, sensor, quantity = saved.series
        # a series newer than the sensors read is left to ``ensure``, which registers it
        keep = (sensor >= 0) & (quantity >= 0)
        series, sensor, quantity = series[keep], sensor[keep], quantity[keep]
        if not len(series):
            return
        named = self.engine.named
        where = [(name if name in named else "", d, m) for name, d, m in saved.sensors]
        places = {k: c for c, k in enumerate(dict.fromkeys(where))}
        place = np.fromiter(map(places.__getitem__, where), dtype=np.intp, count=len(where))
        codes = self._codes(saved.quantities)[quantity]
        self.engine.register_coded(
            series.astype(np.intp),
            sensor.astype(np.intp),
            [name for name, _, _ in saved.sensors],
            place[sensor],
            list(places),
            quantity.astype(np.intp),
            saved.quantities,
            self._periods()[codes],
        )
        self._note(series.astype(np.intp), codes)

    def _codes(self, quantities: list[str]) -> npt.NDArray[np.int16]:
        """Each quantity's code (new ones are given one)."""
        qindex = self._quantity_index
        for quantity in dict.fromkeys(quantities):
            if quantity not in qindex:
                qindex[quantity] = len(self._quantities)
                self._quantities.append(quantity)
        return np.fromiter(map(qindex.__getitem__, quantities), np.int16, count=len(quantities))

    def _periods(self) -> npt.NDArray[np.float64]:
        """The expected period of each quantity code, in seconds."""
        period = {q.name: q.period for q in self.catalogue.quantities}
        return np.array([period.get(q, DEFAULT_PERIOD_S) for q in self._quantities])

    def _note(self, s_arr: npt.NDArray[np.intp], codes: npt.NDArray[np.int16]) -> None:
        """Remember the quantity of each series."""
        need = int(s_arr.max()) + 1
        if need > len(self._quantity_of):
            grown = np.full(max(need, 2 * len(self._quantity_of)), -1, dtype=np.int16)
            grown[: len(self._quantity_of)] = self._quantity_of
            self._quantity_of = grown
        self._quantity_of[s_arr] = codes

    _SERIES = (
        "SELECT se.series_id, se.sensor_id, se.quantity, s.district, s.domain"
        " FROM series se JOIN sensors s USING (sensor_id)"
    )

    # Every series with its sensor and quantity as positions in the lists given (-1: not in
    # them, for a series newer than those lists).
    _SERIES_CODED = (
        "SELECT se.series_id, coalesce(k.i::int4, 0) - 1,"
        " coalesce(array_position(%s::text[], se.quantity), 0) - 1"
        " FROM series se LEFT JOIN unnest(%s::text[]) WITH ORDINALITY AS k(sensor_id, i)"
        " USING (sensor_id)"
    )

    # Read as arrays (copybin.read): no Python object per value (510,001 watermarks took
    # 0.9 s as tuples).
    _WATERMARKS = "SELECT series_id, ts FROM latest_data"
    _WATERMARK_KINDS = ("int4", "timestamptz")
    _STATE = (
        "SELECT rule_id, series_id, active, run_start, last_ts, last_value"
        " FROM alert_state WHERE rule_id = ANY(%s)"
    )
    _STATE_KINDS = ("int4", "int4", "bool", "int8", "int8", "float8")

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def series(self) -> int:
        """How many series the engine knows."""
        return int(np.count_nonzero(self._quantity_of >= 0))

    def reload(self, conn: psycopg.Connection[Any]) -> None:
        """Load between transactions, each read a statement of its own, then build: the
        worker's way at start and after a failure. Inside a batch's transaction, building the
        state of 466,666 series left it idle for longer than the database allows
        (``db_idle_in_transaction_s``), which ended the connection. Under READ COMMITTED every
        statement reads its own snapshot anyway, so the transaction bought no consistency."""
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                saved = self._read(cur)
        finally:
            if not conn.closed:
                conn.autocommit = False
        self._build(saved)

    def load(self, cur: psycopg.Cursor[Any]) -> None:
        """Rebuild everything from the database, inside the caller's transaction."""
        self._build(self._read(cur))

    def _read(self, cur: psycopg.Cursor[Any]) -> _Saved:
        """Every read of a load, one after another (the Python work comes after them)."""
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
        rule_ids = [ids[k] for k in keys]
        sensors = cur.execute(
            "SELECT s.sensor_id, s.district, s.domain FROM sensors s"
            " WHERE EXISTS (SELECT 1 FROM series se WHERE se.sensor_id = s.sensor_id)"
        ).fetchall()
        quantities = [q for (q,) in cur.execute("SELECT DISTINCT quantity FROM series")]
        sensor_ids = [name for name, _, _ in sensors]
        return _Saved(
            rule_ids,
            sensors,
            quantities,
            copybin.read(cur, self._SERIES_CODED, (quantities, sensor_ids), ("int4",) * 3),
            copybin.read(cur, self._STATE, (rule_ids,), self._STATE_KINDS),
            copybin.read(cur, self._WATERMARKS, (), self._WATERMARK_KINDS),
            [
                sensor
                for (sensor,) in cur.execute(
                    "SELECT sensor_id FROM alerts WHERE kind = 'stale' AND state <> 'closed'"
                )
            ],
        )

    def _build(self, saved: _Saved) -> None:
        self.engine = Engine(self.rules)
        self._quantity_of = np.full(0, -1, dtype=np.int16)
        self._rule_ids = np.array(saved.rule_ids, dtype=np.int32)
        self._register_all(saved)
        rid, series, active, run_start, last_ts, last_value = saved.state
        if len(rid):
            # rule ids -> positions in self.rules
            order = np.argsort(self._rule_ids)
            at = np.searchsorted(self._rule_ids[order], rid)
            self.engine.restore_many(
                order[at].astype(np.intp),
                series.astype(np.intp),
                active,
                run_start,
                last_ts,
                last_value,
            )
        self._restore_watermarks(*saved.watermarks)
        for sensor in saved.stale:
            self.engine.restore_stale(sensor)
        self._saved_active = self.engine.active.copy()
        self._saved_run = self.engine.run_start.copy()
        self._loaded = True

    def _restore_watermarks(self, series: npt.NDArray[Any], ts_us: npt.NDArray[Any]) -> None:
        if len(series):
            self.engine.restore_watermarks(series.astype(np.intp), ts_us)

    def invalidate(self) -> None:
        """The last transaction failed: the in-memory state may be ahead of the database."""
        self._loaded = False

    def ensure(self, cur: psycopg.Cursor[Any], series: np.ndarray) -> None:
        if not self._loaded:
            self.load(cur)
        if self.engine.knows(series):
            return  # the usual batch: no series new to the engine
        ids = np.unique(series)
        inside = ids < len(self._quantity_of)
        known = np.zeros(len(ids), dtype=bool)
        known[inside] = self._quantity_of[ids[inside]] >= 0
        unknown = ids[~known].tolist()
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

    def evaluate(
        self, series: np.ndarray, ts_us: np.ndarray, value: np.ndarray
    ) -> tuple[list[Transition], AlarmState]:
        """Run new readings through the engine (in memory): the transitions to apply and the
        state to save, both inside the batch's transaction. ``ensure`` must have run for these
        series in the same transaction, before `latest` moved (a reload reads watermarks from
        it); if the transaction fails, ``invalidate``."""
        transitions, state = self.engine.evaluate(series, ts_us, value)
        return self._describe(transitions), self._state(state)

    @staticmethod
    def apply(cur: psycopg.Cursor[Any], transitions: list[Transition]) -> set[tuple[str, str]]:
        """The lifecycle of the alarms behind ``transitions``; returns touched alarm topics."""
        return lifecycle.apply(cur, transitions) if transitions else set()

    def tick(self, cur: psycopg.Cursor[Any], now: datetime) -> set[tuple[str, str]]:
        if not self._loaded:
            self.load(cur)
        now_us = int(now.timestamp() * 1e6)
        due = self.engine.stale_due(now_us)
        if len(due):
            # Other workers may take some of these sensors' readings (other partitions, or a
            # shared group): before calling a sensor stale, read what the database holds.
            names = [self.engine.sensors[k] for k in due.tolist()]
            self._restore_watermarks(
                *copybin.read(
                    cur,
                    self._WATERMARKS + " JOIN series USING (series_id) WHERE sensor_id = ANY(%s)",
                    (names,),
                    self._WATERMARK_KINDS,
                )
            )
        transitions = self.engine.tick(now_us)
        touched = lifecycle.apply(cur, self._describe(transitions))
        windows = {r.key: r.flap_window_us for r in self.rules}
        return touched | lifecycle.settle(cur, now, windows)

    def _describe(self, tr: Transitions) -> list[Transition]:
        out = []
        for r, series, sensor, ts, value, raised in tr.rows():
            rule = self.rules[r]
            if series >= 0:
                sensor_id = self.engine.sensors[int(self.engine.sensor_of[series])]
                quantity = self._quantities[int(self._quantity_of[series])]
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

    def _state(self, st: StateRows) -> AlarmState:
        """The rows of ``st`` that differ from what `alert_state` holds, now taken as saved (a
        failed transaction invalidates, and the reload reads them back). A threshold pair whose
        condition neither started, stopped nor raised is skipped: restoring its older row
        evaluates the same."""
        self._cover(len(self.engine.active))
        q = self.engine.slots(st.rule, st.series)  # every touched pair has its slot
        write = (
            self._carries_last[st.rule]
            | (self._saved_active[q] != st.active)
            | (self._saved_run[q] != st.run_start)
        )
        q = q[write]
        self._saved_active[q] = st.active[write]
        self._saved_run[q] = st.run_start[write]
        return AlarmState(
            self._rule_ids[st.rule[write]],
            st.series[write],
            st.active[write],
            st.run_start[write],
            st.last_ts[write],
            st.last_value[write],
        )

    def _cover(self, capacity: int) -> None:
        """Grow the saved-state arrays with the engine's slots; new pairs have nothing saved
        (idle)."""
        have = len(self._saved_active)
        if capacity > have:
            extra = (0, capacity - have)
            self._saved_active = np.pad(self._saved_active, extra, constant_values=False)
            self._saved_run = np.pad(self._saved_run, extra, constant_values=NONE)

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
