-- The HTTP API: its tokens, and the indexes its queries need.

-- API tokens. Only the SHA-256 of the secret is kept: the secret is shown once, at creation.
-- The name is the actor recorded in the alarm audit trail, so it is unique among live tokens.
CREATE TABLE api_tokens (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name          text NOT NULL,
  role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'engineer', 'admin')),
  token_hash    text NOT NULL UNIQUE,
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz,
  revoked_at    timestamptz
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- Sensor filters by district alone (the wall's district tiles, the district panel) and the
-- unprovisioned-sensor list for engineers.
CREATE INDEX sensors_district ON sensors (district);
CREATE INDEX sensors_unprovisioned ON sensors (sensor_id) WHERE NOT provisioned;

-- The live stream asks for alarms changed since its last look.
CREATE INDEX alerts_updated ON alerts (updated_at);

-- Quarantine by gateway (the engineer's "what did my gateway send wrong").
CREATE INDEX quarantine_gateway ON quarantine (gateway_id, received_at DESC);
