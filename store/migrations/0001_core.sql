-- Core schema: the public SQL surface of DESIGN.md over a compact physical layout.
-- Readings are stored against an integer series id (one per sensor and quantity) so that the
-- time-series table has fixed-width rows; the `readings` and `latest` views give the names back.

DO $$
BEGIN
  -- TimescaleDB is used when the server has it preloaded; plain PostgreSQL works without it.
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
     AND current_setting('shared_preload_libraries', true) LIKE '%timescaledb%' THEN
    CREATE EXTENSION IF NOT EXISTS timescaledb;
  END IF;
END $$;

CREATE TABLE gateways (
  gateway_id  text PRIMARY KEY,
  status      text,
  status_at   timestamptz,
  last_seen   timestamptz,
  meta        jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE sensors (
  sensor_id    text PRIMARY KEY,
  gateway_id   text,
  domain       text,
  district     text,
  lat          double precision,
  lon          double precision,
  name         text,
  quantities   text[] NOT NULL DEFAULT '{}',
  units        jsonb NOT NULL DEFAULT '{}',
  provisioned  boolean NOT NULL DEFAULT false,
  attributes   jsonb NOT NULL DEFAULT '{}',
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sensors_domain_district ON sensors (domain, district);

CREATE TABLE series (
  series_id  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sensor_id  text NOT NULL REFERENCES sensors (sensor_id) ON DELETE CASCADE,
  quantity   text NOT NULL,
  unit       text,
  UNIQUE (sensor_id, quantity)
);

-- One row per (series, event time): the key every guarantee hangs on. Time is in the key so the
-- table can be a TimescaleDB hypertable.
CREATE TABLE reading_data (
  ts           timestamptz NOT NULL,
  series_id    integer NOT NULL,
  value        double precision NOT NULL,
  received_at  timestamptz NOT NULL,
  PRIMARY KEY (series_id, ts)
);

CREATE TABLE latest_data (
  series_id    integer PRIMARY KEY REFERENCES series (series_id) ON DELETE CASCADE,
  ts           timestamptz NOT NULL,
  value        double precision NOT NULL,
  received_at  timestamptz NOT NULL
);

CREATE TABLE quarantine (
  id                bigint GENERATED ALWAYS AS IDENTITY,
  received_at       timestamptz NOT NULL,
  topic             text NOT NULL,
  gateway_id        text,
  reason            text NOT NULL,
  detail            text NOT NULL,
  record            integer,
  payload           text NOT NULL,
  payload_encoding  text NOT NULL DEFAULT 'utf8' CHECK (payload_encoding IN ('utf8', 'base64')),
  replayed_at       timestamptz,
  PRIMARY KEY (id, received_at)
);
CREATE INDEX quarantine_received ON quarantine (received_at DESC);
CREATE INDEX quarantine_reason ON quarantine (reason, received_at DESC);

CREATE VIEW readings AS
  SELECT r.ts, s.sensor_id, s.quantity, r.value, s.unit, r.received_at, r.series_id
  FROM reading_data r JOIN series s USING (series_id);

CREATE VIEW latest AS
  SELECT s.sensor_id, s.quantity, l.ts, l.value, s.unit, l.received_at, l.series_id
  FROM latest_data l JOIN series s USING (series_id);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM create_hypertable('reading_data', 'ts', chunk_time_interval => interval '1 day');
    PERFORM create_hypertable('quarantine', 'received_at', chunk_time_interval => interval '7 days');
  END IF;
END $$;
