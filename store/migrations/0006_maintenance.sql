-- Retention and compression runs, for `pusat db status`; and, on the TimescaleDB community
-- edition, a continuous aggregate of hourly partials (the same shape as rollup_1h) that
-- TimescaleDB keeps itself, as a second answer for long ranges.
CREATE TABLE maintenance_runs (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  tier        text NOT NULL,
  table_name  text NOT NULL,
  method      text NOT NULL,
  removed     bigint NOT NULL DEFAULT 0,
  cutoff      timestamptz
);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
     AND current_setting('timescaledb.license', true) = 'timescale' THEN
    EXECUTE $cagg$
      CREATE MATERIALIZED VIEW reading_1h_cagg WITH (timescaledb.continuous) AS
      SELECT time_bucket(interval '1 hour', ts) AS bucket, series_id,
             count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
             min(ts) AS first_ts, first(value, ts) AS first,
             max(ts) AS last_ts, last(value, ts) AS last
      FROM reading_data GROUP BY 1, 2 WITH NO DATA
    $cagg$;
    PERFORM add_continuous_aggregate_policy('reading_1h_cagg',
      start_offset => interval '3 days', end_offset => interval '1 hour',
      schedule_interval => interval '15 minutes');
  END IF;
END $$;
