-- The district rollups as views, for Grafana and analysts, as rollup_1m and rollup_1h are for
-- series. A migration of its own: 0009 had landed (and run) without them.
CREATE VIEW district_rollup_1m AS
  SELECT bucket, district, quantity, count, min, max, sum / count AS mean, last, first, sum,
         first_ts, last_ts
  FROM district_rollup_1m_data;

CREATE VIEW district_rollup_1h AS
  SELECT bucket, district, quantity, count, min, max, sum / count AS mean, last, first, sum,
         first_ts, last_ts
  FROM district_rollup_1h_data;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pusat_grafana') THEN
    -- Grafana reads the views, as for every other table (0005), not the physical layout.
    REVOKE SELECT ON district_rollup_1m_data, district_rollup_1h_data FROM pusat_grafana;
    GRANT SELECT ON district_rollup_1m, district_rollup_1h TO pusat_grafana;
  END IF;
END $$;
