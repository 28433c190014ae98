"""One batch through processing into the store, in one transaction.

This is where ingest composes the stages: the store says which readings are new, processing turns
them into rollup partials, alarm transitions and state, and the store merges those in one
statement, all committed together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingest.alarms import Alarms
from processing import latest, rollups
from store.writer import AlarmState, Batch, DirectCopy, Latest, Named, Redelivered, Tx, Writer


@dataclass(frozen=True)
class Committed:
    stored: int
    duplicates: int
    quarantined: int
    alarms: set[tuple[str, str]]  # (sensor, severity) whose alarms changed: publish these


def commit(writer: Writer, batch: Batch, alarms: Alarms | None = None) -> Committed:
    series = writer.series_ids(batch.readings)
    try:
        done = _attempt(writer, batch, series, alarms, direct=writer.expect_new)
    except Redelivered:
        # Some reading was stored before: the aborted transaction had done nothing else.
        done = _attempt(writer, batch, series, alarms, direct=False)
    writer.expect_new = done.duplicates == 0
    return done


@dataclass
class Started:
    """A batch whose transaction is open and whose readings' COPY is on its way (``start``):
    the server stores them while the caller prepares the next batch or completes the last."""

    writer: Writer
    batch: Batch
    series: npt.NDArray[np.int32]
    tx: Tx
    copy: DirectCopy | None  # None once awaited
    redelivered: bool = False  # some reading was stored before: the transaction rolled back

    def copied(self) -> None:
        """Wait until the server has stored the readings, or found some stored before
        (``redelivered``); any other failure rolls the transaction back and is raised."""
        copy, self.copy = self.copy, None
        if copy is None:
            return
        try:
            copy.wait()
        except Redelivered:
            self.redelivered = True
            self.writer.close(self.tx, commit=False)
        except BaseException:
            self.writer.close(self.tx, commit=False)
            raise

    def abandon(self, why: BaseException) -> None:
        """Roll the batch back (it is written again later, from its messages)."""
        copy, self.copy = self.copy, None
        if copy is not None:
            copy.abandon(why)
        if not self.redelivered:
            self.writer.close(self.tx, commit=False)


def start(writer: Writer, batch: Batch, series: npt.NDArray[np.int32] | None = None) -> Started:
    """Open the batch's transaction and send its readings by direct COPY (not awaited).

    For a batch with readings, on a writer that expects no redelivery (``writer.expect_new``);
    ``complete`` finishes it. Between the two the caller may use another writer's connection.
    ``series``: the readings' series ids when already known (``writer.series_ids``).
    """
    if series is None:
        series = writer.series_ids(batch.readings)
    tx = writer.open()
    try:
        copy = tx.send_readings(batch.readings, series)
    except BaseException:
        writer.close(tx, commit=False)
        raise
    return Started(writer, batch, series, tx, copy)


def complete(started: Started, alarms: Alarms | None = None) -> Committed:
    """Everything after the readings, then commit: the same as ``commit`` for that batch.

    Redelivered (some reading stored before) is handled here, by writing the batch again
    through staging.
    """
    writer, batch = started.writer, started.batch
    started.copied()
    if started.redelivered:
        done = _attempt(writer, batch, started.series, alarms, direct=False)
        writer.expect_new = done.duplicates == 0
        return done
    try:
        touched = _rest(writer, started.tx, batch, started.series, None, alarms)
        writer.close(started.tx, commit=True)
    except BaseException:
        writer.close(started.tx, commit=False)
        if alarms is not None:
            alarms.invalidate()  # its memory ran ahead of what was rolled back
        raise
    writer.expect_new = True
    return Committed(len(batch.readings), 0, len(batch.quarantine), touched)


def _attempt(
    writer: Writer,
    batch: Batch,
    series: npt.NDArray[np.int32],
    alarms: Alarms | None,
    *,
    direct: bool,
) -> Committed:
    r = batch.readings
    try:
        with writer.transaction() as tx:
            # The readings first: a direct COPY refused by the key aborts the transaction, and
            # nothing before it may need undoing (in the database or in the alarms' memory).
            new = tx.readings(r, series, direct=direct)
            touched = _rest(writer, tx, batch, series, new, alarms)
    except Redelivered:
        raise  # raised before anything touched the alarms' memory
    except BaseException:
        if alarms is not None:
            alarms.invalidate()  # its memory ran ahead of what was rolled back
        raise
    return Committed(len(new), len(r) - len(new), len(batch.quarantine), touched)


def _rest(
    writer: Writer,
    tx: Tx,
    batch: Batch,
    series: npt.NDArray[np.int32],
    new: npt.NDArray[np.intp] | None,
    alarms: Alarms | None,
) -> set[tuple[str, str]]:
    """The batch's writes after its readings; ``new``: the positions stored now (None: all)."""
    stored = len(batch.readings) if new is None else len(new)
    if alarms is not None:
        # Before `latest` moves: a (re)load reads the watermarks from it.
        alarms.ensure(tx.cur, series)
    # Gateways' last-seen times go with the merge when there is one (a round trip less).
    writer.write_side(tx, batch, seen=not stored)
    if alarms is not None and batch.sensors:
        alarms.sensors_changed(tx.cur, [m.sensor_id for m in batch.sensors])
    if stored:
        return _merge(tx, batch, series, new, alarms)
    if batch.quarantine or batch.sensors:
        tx.notify(0, 0, len(batch.quarantine), len(batch.sensors))
    return set()


def _merge(
    tx: Tx,
    batch: Batch,
    series: npt.NDArray[np.int32],
    new: npt.NDArray[np.intp] | None,
    alarms: Alarms | None,
) -> set[tuple[str, str]]:
    """Rollups, `latest`, alarms and the notification for the readings stored now."""
    r = batch.readings
    if new is None or len(new) == len(r):  # the usual case: every reading is new, no copies needed
        s, t, v, received = series, r.ts_us, r.value, r.received_us
        sensor, quantity = r.sensor, r.quantity
    else:
        s, t, v, received = series[new], r.ts_us[new], r.value[new], r.received_us[new]
        sensor = [r.sensor[i] for i in new.tolist()]
        quantity = [r.quantity[i] for i in new.tolist()]
    minute = rollups.of_readings(s, t, v, rollups.MINUTE_US)
    named = Named.of(minute.series, s, sensor, quantity)
    top = latest.newest(minute)
    # latest's received_at: when this batch's newest message arrived (within the batch window of
    # the reading's own arrival)
    newest = Latest(
        minute.series[top],
        minute.last_ts[top],
        minute.last[top],
        np.full(len(top), received.max(), dtype=np.int64),
    )
    touched: set[tuple[str, str]] = set()
    state: AlarmState | None = None
    if alarms is not None:
        transitions, state = alarms.evaluate(s, t, v)
        touched = alarms.apply(tx.cur, transitions)  # rare: nothing to do when none changed
    changes = (len(s), len(touched), len(batch.quarantine), len(batch.sensors))
    hour = rollups.coarsen(minute, rollups.HOUR_US)
    tx.merge(minute, named, hour, newest, state, batch.gateways_seen, changes)
    return touched
