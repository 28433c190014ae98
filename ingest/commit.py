"""One batch through processing into the store, in one transaction.

This is where ingest composes the stages: the store says which readings are new, processing turns
them into rollup partials, and the store merges those, all committed together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.alarms import Alarms
from processing import latest, rollups
from store.writer import Batch, Writer


@dataclass(frozen=True)
class Committed:
    stored: int
    duplicates: int
    quarantined: int
    alarms: set[tuple[str, str]]  # (sensor, severity) whose alarms changed: publish these


def commit(writer: Writer, batch: Batch, alarms: Alarms | None = None) -> Committed:
    r = batch.readings
    series = writer.series_ids(r)
    touched: set[tuple[str, str]] = set()
    try:
        with writer.transaction() as tx:
            if alarms is not None:
                # Before the readings go in: a (re)load reads watermarks from `latest`.
                alarms.ensure(tx.cur, series)
            new = tx.readings(r, series)
            writer.write_side(tx, batch)
            if alarms is not None and batch.sensors:
                alarms.sensors_changed(tx.cur, [m.sensor_id for m in batch.sensors])
            if len(new):
                s, t, v = series[new], r.ts_us[new], r.value[new]
                minute = rollups.of_readings(s, t, v, rollups.MINUTE_US)
                top = latest.newest(minute)
                # latest's received_at: when this batch's newest message arrived (within the
                # batch window of the reading's own arrival)
                received = np.full(len(top), r.received_us[new].max(), dtype=np.int64)
                tx.latest(minute.series[top], minute.last_ts[top], minute.last[top], received)
                tx.rollups("rollup_1m_data", minute)
                tx.rollups("rollup_1h_data", rollups.coarsen(minute, rollups.HOUR_US))
                if alarms is not None:
                    touched = alarms.on_batch(tx.cur, s, t, v)
            if len(new) or touched or batch.quarantine or batch.sensors:
                tx.notify(len(new), len(touched), len(batch.quarantine), len(batch.sensors))
    except BaseException:
        if alarms is not None:
            alarms.invalidate()  # its memory ran ahead of what was rolled back
        raise
    return Committed(len(new), len(r) - len(new), len(batch.quarantine), touched)
