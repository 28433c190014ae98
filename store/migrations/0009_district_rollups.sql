-- Rollups per district and quantity, beside the per-series ones: a district's 24-hour panel
-- merges one row per bucket here instead of one per sensor (4,000 loops of a district made it
-- 5.8 million one-minute rows a day). The ingest worker merges them in the statement that
-- merges the series' rollups, so both change in the same transactions. A reading counts in the
-- district its sensor was in when it was stored: a sensor that moves takes only its later
-- readings with it. Sensors without a district (NULL or empty) have no row here.

CREATE TABLE district_rollup_1m_data (
  district   text NOT NULL,
  quantity   text NOT NULL,
  bucket     timestamptz NOT NULL,
  count      bigint NOT NULL,
  sum        double precision NOT NULL,
  min        double precision NOT NULL,
  max        double precision NOT NULL,
  first_ts   timestamptz NOT NULL,
  first      double precision NOT NULL,
  last_ts    timestamptz NOT NULL,
  last       double precision NOT NULL,
  PRIMARY KEY (district, quantity, bucket)
);

CREATE TABLE district_rollup_1h_data (LIKE district_rollup_1m_data INCLUDING ALL);

-- What was stored before this migration, merged from the series' rollups.
INSERT INTO district_rollup_1m_data
SELECT s.district, se.quantity, r.bucket, sum(r.count), sum(r.sum), min(r.min), max(r.max),
  min(r.first_ts), (array_agg(r.first ORDER BY r.first_ts))[1],
  max(r.last_ts), (array_agg(r.last ORDER BY r.last_ts DESC))[1]
FROM rollup_1m_data r JOIN series se USING (series_id) JOIN sensors s USING (sensor_id)
WHERE s.district <> ''
GROUP BY 1, 2, 3;

INSERT INTO district_rollup_1h_data
SELECT s.district, se.quantity, r.bucket, sum(r.count), sum(r.sum), min(r.min), max(r.max),
  min(r.first_ts), (array_agg(r.first ORDER BY r.first_ts))[1],
  max(r.last_ts), (array_agg(r.last ORDER BY r.last_ts DESC))[1]
FROM rollup_1h_data r JOIN series se USING (series_id) JOIN sensors s USING (sensor_id)
WHERE s.district <> ''
GROUP BY 1, 2, 3;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM create_hypertable('district_rollup_1m_data', 'bucket',
      chunk_time_interval => interval '7 days', migrate_data => true);
    PERFORM create_hypertable('district_rollup_1h_data', 'bucket',
      chunk_time_interval => interval '30 days', migrate_data => true);
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pusat_grafana') THEN
    GRANT SELECT ON district_rollup_1m_data, district_rollup_1h_data TO pusat_grafana;
  END IF;
END $$;
