"""One batch through processing into the store, in one transaction.

This is where ingest composes the stages: the store says which readings are new, processing turns
them into rollup partials, and the store merges those, all committed together.
"""

from __future__ import annotations

from dataclasses import dataclass

from processing import rollups
from store.writer import Batch, Writer


@dataclass(frozen=True)
class Committed:
    stored: int
    duplicates: int
    quarantined: int


def commit(writer: Writer, batch: Batch) -> Committed:
    r = batch.readings
    series = writer.series_ids(r)
    with writer.transaction() as tx:
        new = tx.readings(r, series)
        if len(new):
            tx.latest()
            s, t, v = series[new], r.ts_us[new], r.value[new]
            tx.rollups("rollup_1m_data", rollups.of_readings(s, t, v, rollups.MINUTE_US))
            tx.rollups("rollup_1h_data", rollups.of_readings(s, t, v, rollups.HOUR_US))
        writer.write_side(tx, batch)
    return Committed(len(new), len(r) - len(new), len(batch.quarantine))
