"""The notifier: follows the alarm outbox and delivers it to every configured receiver.

One step, repeated every PUSAT_NOTIFY_EVERY_S:
1. number newly committed outbox rows (store.outbox.sequence);
2. escalate alarms active and unacknowledged past their rule's `escalate_after` (an audit event,
   so also an outbox row);
3. each receiver takes its next rows in order: a webhook gets one signed POST per transition, an
   Alertmanager gets the current state of the alarms those transitions touched, and a silence
   made or expired when an alarm is shelved or leaves shelving. A failure stops that receiver
   (later rows wait behind it, in order) until a retry time that backs off up to
   PUSAT_NOTIFY_MAX_BACKOFF_S;
4. with Alertmanager: re-send the open alarms every PUSAT_ALERTMANAGER_RESEND_S, and shelve
   alarms that a silence made in Alertmanager matches (unshelve them when it expires).

Only one notifier works per database (an advisory lock); another one waits as a standby.
Delivery is at least once: a crash between a receiver's 2xx and the commit sends that
transition again, with the same `X-Pusat-Event` id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from notify import webhook
from notify.alertmanager import Alertmanager, AlertmanagerError, Silence, alert, labels
from notify.metrics import NotifyMetrics
from processing.rules import Rule, escalations
from pusat.settings import Settings
from store import alerts as lifecycle
from store import db, outbox
from store.writer import CHANNEL

log = logging.getLogger(__name__)

ALERTMANAGER = "alertmanager"
BATCH = 200
AM_ACTOR = "alertmanager"


class Notifier:
    def __init__(
        self, settings: Settings, rules: list[Rule], metrics: NotifyMetrics | None = None
    ) -> None:
        assert settings.database_url is not None
        self.settings = settings
        self.url = settings.database_url
        self.metrics = metrics or NotifyMetrics()
        self.escalate_after = escalations(rules)
        self.http = httpx.Client(timeout=settings.notify_timeout_s)
        self.am = (
            Alertmanager(settings.alertmanager_url, self.http)
            if settings.alertmanager_url
            else None
        )
        secret = settings.alarm_webhook_secret
        self.secret = secret.get_secret_value().encode() if secret else b""
        self.webhooks = {webhook.receiver_name(u): u for u in settings.alarm_webhooks}
        self.receivers = ([ALERTMANAGER] if self.am else []) + list(self.webhooks)
        self._attempts: dict[str, int] = {}
        self._last_resend = 0.0
        self.claimed = threading.Event()  # set while this notifier holds the lock

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set; reconnects (with back-off) when the database goes away."""
        wait = self.settings.notify_every_s
        try:
            while not stop.is_set():
                try:
                    with db.connect(self.url, autocommit=True, application="pusat-notify") as c:
                        self._serve(c, stop)
                except psycopg.OperationalError as e:
                    self.claimed.clear()
                    log.warning("notifier: database unavailable, retrying: %s", e)
                    stop.wait(wait)
                    wait = min(wait * 2, 30.0)
        finally:
            self.http.close()

    def _serve(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        with conn.cursor() as cur:
            while not outbox.claim(cur):
                if stop.wait(self.settings.notify_every_s):
                    return
        with self._tx(conn) as cur:
            gone = outbox.forget_receivers(cur, self.receivers)
        if gone:
            log.info("notifier: no longer delivering to %s", ", ".join(gone))
        self.claimed.set()
        log.info("notifier: delivering to %s", ", ".join(self.receivers) or "nobody")
        while not stop.is_set():
            self.step(conn)
            stop.wait(self.settings.notify_every_s)

    @contextmanager
    def _tx(self, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Cursor[Any]]:
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def step(self, conn: psycopg.Connection[Any]) -> None:
        with self._tx(conn) as cur:
            outbox.sequence(cur)
        if self.escalate_after:
            with self._tx(conn) as cur:
                escalated = lifecycle.escalate(cur, self.escalate_after, datetime.now(UTC))
                outbox.sequence(cur)
                if escalated:
                    _walls(cur)
            if escalated:
                self.metrics.escalations.inc(len(escalated))
                log.info("notifier: escalated alarms %s", escalated)
        for name in self.receivers:
            self._deliver(conn, name)
        if self.am is not None:
            try:
                self._sync_silences(conn, self.am)
                self._resend(conn, self.am)
            except AlertmanagerError as e:
                log.warning("notifier: Alertmanager: %s", e)
        with self._tx(conn) as cur:
            self.metrics.outbox_age.set(outbox.oldest_undelivered_age_s(cur, self.receivers))

    # -- delivery -------------------------------------------------------------------------------

    def _deliver(self, conn: psycopg.Connection[Any], name: str) -> None:
        with self._tx(conn) as cur:
            r = outbox.receiver(cur, name)
            if r.next_attempt_at is not None and r.next_attempt_at > datetime.now(UTC):
                return  # backing off
            entries = outbox.pending(cur, r.delivered_seq, BATCH)
        if not entries:
            return
        try:
            if name == ALERTMANAGER:
                assert self.am is not None
                self._to_alertmanager(conn, self.am, entries)
                done = entries
            else:
                done = []
                for e in entries:
                    self._attempts[name] = self._attempts.get(name, 0) + 1
                    data = webhook.body(e.id, e.seq, e.payload)
                    webhook.post(self.http, self.webhooks[name], self.secret, e.id, data)
                    with self._tx(conn) as cur:
                        outbox.delivered(cur, name, e, self._attempts.pop(name))
                    self.metrics.delivered.labels(name).inc()
                return
        except (webhook.WebhookError, AlertmanagerError) as err:
            self._failed(conn, name, r.failures, str(err))
            return
        attempts = self._attempts.pop(name, 0) + 1
        with self._tx(conn) as cur:
            for e in done:
                outbox.delivered(cur, name, e, attempts)
        self.metrics.delivered.labels(name).inc(len(done))

    def _failed(self, conn: psycopg.Connection[Any], name: str, failures: int, error: str) -> None:
        self.metrics.failures.labels(name).inc()
        if name == ALERTMANAGER:
            self._attempts[name] = self._attempts.get(name, 0) + 1
        backoff = min(
            self.settings.notify_every_s * 2**failures, self.settings.notify_max_backoff_s
        )
        with self._tx(conn) as cur:
            outbox.failed(cur, name, error, datetime.now(UTC) + timedelta(seconds=backoff))
        log.warning("notifier: %s failed (retry in %.0f s): %s", name, backoff, error)

    def _to_alertmanager(
        self, conn: psycopg.Connection[Any], am: Alertmanager, entries: list[outbox.Entry]
    ) -> None:
        """Alertmanager holds state, not history: post the touched alarms as they are now."""
        ids = sorted({e.alert_id for e in entries})
        with self._tx(conn) as cur:
            found = outbox.alarms(cur, "a.id = ANY(%s) ORDER BY a.id", (ids,))
        now = datetime.now(UTC)
        base, resend = self.settings.link_base(), self.settings.alertmanager_resend_s
        am.post_alerts([a for alarm in found for a in alert(alarm, base, now, resend)])
        for alarm in found:
            self._silence_for(conn, am, alarm)

    def _silence_for(
        self, conn: psycopg.Connection[Any], am: Alertmanager, alarm: dict[str, Any]
    ) -> None:
        """Keep one Pusat silence per shelved alarm, until `shelved_until`; none otherwise."""
        alert_id = alarm["id"]
        until = alarm["shelved_until"]
        shelved = alarm["state"] == "shelved" and until is not None
        with self._tx(conn) as cur:
            tied = outbox.live_silences(cur, alert_id)
            who = cur.execute(
                "SELECT actor, comment FROM alert_events WHERE alert_id = %s AND event = 'shelve'"
                " ORDER BY id DESC LIMIT 1",
                (alert_id,),
            ).fetchone()
        for sid, origin, ends_at in tied:
            if shelved and (ends_at == until or (origin == AM_ACTOR and ends_at >= until)):
                return  # a silence that covers this shelving exists
            if origin == "pusat":
                am.expire_silence(sid)
            with self._tx(conn) as cur:
                outbox.expire_silence(cur, sid, alert_id)
        if not shelved:
            return
        actor, comment = who if who else ("pusat", "")
        sid = am.create_silence(alert_id, until, f"pusat:{actor}", comment)
        with self._tx(conn) as cur:
            outbox.add_silence(cur, sid, alert_id, "pusat", actor, until)
        self.metrics.silences.labels("to_alertmanager").inc()

    def _resend(self, conn: psycopg.Connection[Any], am: Alertmanager) -> None:
        now_m = time.monotonic()
        if now_m - self._last_resend < self.settings.alertmanager_resend_s:
            return
        with self._tx(conn) as cur:
            open_alarms = outbox.alarms(cur, "a.state <> 'closed' ORDER BY a.id")
        now = datetime.now(UTC)
        base, resend = self.settings.link_base(), self.settings.alertmanager_resend_s
        am.post_alerts([a for alarm in open_alarms for a in alert(alarm, base, now, resend)])
        for alarm in open_alarms:
            if alarm["state"] == "shelved":
                self._silence_for(conn, am, alarm)
        self._last_resend = now_m

    # -- silences made in Alertmanager ---------------------------------------------------------

    def _sync_silences(self, conn: psycopg.Connection[Any], am: Alertmanager) -> None:
        silences = am.silences()
        by_id = {s.id: s for s in silences}
        now = datetime.now(UTC)
        with self._tx(conn) as cur:
            ours = outbox.silence_ids(cur, "pusat")
            known = outbox.known_silences(cur)
            tied = {
                **outbox.silences_by_origin(cur, AM_ACTOR),
                **outbox.silences_by_origin(cur, "pusat"),
            }
        for sid, ties in tied.items():
            s = by_id.get(sid)
            if s is not None and s.state != "expired":
                continue
            # Expired in Alertmanager before the end it had when tied (Alertmanager moves the
            # end of an expired silence to the moment of expiry): the shelving ends too. A
            # silence of ours that is gone (an Alertmanager without storage) is made again by
            # the next re-send.
            actor = AM_ACTOR if sid in ours or s is None else f"{AM_ACTOR}:{s.created_by}"
            for alert_id, ends_at in ties:
                with self._tx(conn) as cur:
                    outbox.expire_silence(cur, sid, alert_id)
                    early = s is not None and ends_at > now
                    if early and not outbox.live_silences(cur, alert_id):
                        # no longer shelved (AlertError): nothing to undo
                        with contextlib.suppress(lifecycle.AlertError):
                            lifecycle.unshelve(cur, alert_id, actor, f"silence {sid} expired")
                            _walls(cur)
        active = [s for s in silences if s.state == "active" and s.id not in ours]
        if not active:
            return
        with self._tx(conn) as cur:
            candidates = outbox.alarms(cur, "a.state NOT IN ('closed', 'shelved') ORDER BY a.id")
        for s in active:
            for alarm in candidates:
                if (s.id, alarm["id"]) in known or not s.matches(labels(alarm)):
                    continue
                self._shelve_by(conn, s, alarm["id"])

    def _shelve_by(self, conn: psycopg.Connection[Any], s: Silence, alert_id: int) -> None:
        with self._tx(conn) as cur:
            try:
                # Recorded first, so the shelve transition's delivery makes no second silence.
                outbox.add_silence(cur, s.id, alert_id, AM_ACTOR, s.created_by, s.ends_at)
                lifecycle.shelve(
                    cur,
                    alert_id,
                    s.ends_at,
                    f"{AM_ACTOR}:{s.created_by}",
                    s.comment or f"Alertmanager silence {s.id}",
                )
                _walls(cur)
            except lifecycle.AlertError as e:
                log.info("notifier: silence %s does not shelve alarm %s: %s", s.id, alert_id, e)
                return
        self.metrics.silences.labels("from_alertmanager").inc()


def _walls(cur: psycopg.Cursor[Any]) -> None:
    """Tell live walls an alarm changed (as ingest and the API do), so they show it at once."""
    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"alarms": 1})))
