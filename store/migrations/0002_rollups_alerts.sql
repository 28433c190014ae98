-- Rollups (mergeable partials per series and bucket) and the alarm lifecycle.

CREATE TABLE rollup_1m_data (
  bucket     timestamptz NOT NULL,
  series_id  integer NOT NULL,
  count      bigint NOT NULL,
  sum        double precision NOT NULL,
  min        double precision NOT NULL,
  max        double precision NOT NULL,
  first_ts   timestamptz NOT NULL,
  first      double precision NOT NULL,
  last_ts    timestamptz NOT NULL,
  last       double precision NOT NULL,
  PRIMARY KEY (series_id, bucket)
);

CREATE TABLE rollup_1h_data (LIKE rollup_1m_data INCLUDING ALL);

CREATE VIEW rollup_1m AS
  SELECT r.bucket, s.sensor_id, s.quantity, r.count, r.min, r.max, r.sum / r.count AS mean,
         r.last, r.first, r.sum, r.first_ts, r.last_ts, s.unit, r.series_id
  FROM rollup_1m_data r JOIN series s USING (series_id);

CREATE VIEW rollup_1h AS
  SELECT r.bucket, s.sensor_id, s.quantity, r.count, r.min, r.max, r.sum / r.count AS mean,
         r.last, r.first, r.sum, r.first_ts, r.last_ts, s.unit, r.series_id
  FROM rollup_1h_data r JOIN series s USING (series_id);

-- One row per alarm. State: active (raised, not acknowledged), acknowledged, cleared (the
-- condition is back to normal but nobody acknowledged yet), shelved (suppressed until
-- shelved_until), flapping (changing state too often to re-raise), closed (over).
CREATE TABLE alerts (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sensor_id      text NOT NULL,
  quantity       text,
  series_id      integer,
  rule           text NOT NULL,
  kind           text NOT NULL,
  severity       text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  state          text NOT NULL CHECK (state IN
                   ('active', 'acknowledged', 'cleared', 'shelved', 'flapping', 'closed')),
  message        text NOT NULL DEFAULT '',
  value          double precision,
  raised_at      timestamptz NOT NULL,   -- event time of the reading that raised it
  raised_seen_at timestamptz NOT NULL DEFAULT now(),  -- when the platform raised it
  acked_at       timestamptz,
  acked_by       text,
  cleared_at     timestamptz,
  closed_at      timestamptz,
  shelved_until  timestamptz,
  updated_at     timestamptz NOT NULL DEFAULT now()
);
-- At most one open alarm per series (or sensor) and rule.
CREATE UNIQUE INDEX alerts_open ON alerts (sensor_id, coalesce(quantity, ''), rule)
  WHERE state <> 'closed';
CREATE INDEX alerts_state ON alerts (state, raised_at DESC);

-- The audit trail: every transition, who made it and why.
CREATE TABLE alert_events (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  alert_id    bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
  at          timestamptz NOT NULL DEFAULT now(),
  event       text NOT NULL,   -- raise, ack, shelve, unshelve, clear, close, flap, reraise
  from_state  text,
  to_state    text NOT NULL,
  actor       text NOT NULL,   -- 'system' or the token's name
  comment     text NOT NULL DEFAULT '',
  value       double precision,
  event_time  timestamptz      -- event time of the reading behind a system transition
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, at);

-- The alert engine's per-series state, so that a restarted worker carries on where it stopped
-- (a condition that had held for 90 s of a 2-minute `for` still raises 30 s later).
CREATE TABLE alert_rules (
  rule_id  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  key      text NOT NULL UNIQUE
);
CREATE TABLE alert_state (
  rule_id     integer NOT NULL REFERENCES alert_rules (rule_id) ON DELETE CASCADE,
  series_id   integer NOT NULL,
  active      boolean NOT NULL,
  run_start   bigint NOT NULL,   -- Unix microseconds; -1: the condition is not holding
  last_ts     bigint NOT NULL,   -- Unix microseconds of the last reading evaluated
  last_value  double precision NOT NULL,
  PRIMARY KEY (rule_id, series_id)
);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM create_hypertable('rollup_1m_data', 'bucket', chunk_time_interval => interval '7 days');
    PERFORM create_hypertable('rollup_1h_data', 'bucket', chunk_time_interval => interval '30 days');
  END IF;
END $$;
