-- Alarm notification: every transition goes into a durable outbox in the transaction that made
-- it; a notifier delivers it to Alertmanager and to webhooks, in order per receiver.

ALTER TABLE alerts ADD COLUMN escalated_at timestamptz;

-- seq is given by the notifier once the row is committed and visible, in id order: ids are
-- taken at insert time and may become visible out of order (two ingest transactions), seq never
-- does, so a receiver that has delivered up to seq N has nothing left below N.
CREATE TABLE alarm_outbox (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  seq         bigint UNIQUE,
  alert_id    bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
  event_id    bigint REFERENCES alert_events (id) ON DELETE CASCADE,
  event       text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  payload     jsonb NOT NULL
);
CREATE INDEX alarm_outbox_unsequenced ON alarm_outbox (id) WHERE seq IS NULL;
CREATE INDEX alarm_outbox_alert ON alarm_outbox (alert_id);

-- One row per receiver (a webhook URL, or 'alertmanager'): how far it has got, and its retry
-- state while it is failing.
CREATE TABLE alarm_receivers (
  receiver         text PRIMARY KEY,
  delivered_seq    bigint NOT NULL DEFAULT 0,
  failures         integer NOT NULL DEFAULT 0,   -- consecutive failures of the current head
  next_attempt_at  timestamptz,
  last_error       text,
  last_error_at    timestamptz,
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Where and when each transition was delivered (shown on GET /api/v1/alerts/{id}).
CREATE TABLE alarm_deliveries (
  receiver      text NOT NULL,
  outbox_id     bigint NOT NULL REFERENCES alarm_outbox (id) ON DELETE CASCADE,
  alert_id      bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
  attempts      integer NOT NULL,
  delivered_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (receiver, outbox_id)
);
CREATE INDEX alarm_deliveries_alert ON alarm_deliveries (alert_id, delivered_at);

-- Alertmanager silences tied to alarms: made by Pusat for a shelved alarm (origin 'pusat'), or
-- made in Alertmanager and found to match an alarm, which Pusat then shelves ('alertmanager').
CREATE TABLE alarm_silences (
  silence_id  text NOT NULL,
  alert_id    bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
  origin      text NOT NULL CHECK (origin IN ('pusat', 'alertmanager')),
  created_by  text NOT NULL,
  ends_at     timestamptz NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expired_at  timestamptz,
  PRIMARY KEY (silence_id, alert_id)
);
CREATE INDEX alarm_silences_alert ON alarm_silences (alert_id) WHERE expired_at IS NULL;
