-- Derived readings (indices) name the table that made them, and what set their value.
CREATE TABLE derived_info (
  series_id  integer NOT NULL,
  ts         timestamptz NOT NULL,
  method     text NOT NULL,          -- e.g. epa-aqi-2024, doe-api-psi, doe-wqi, hcm-urban-street
  dominant   text NOT NULL DEFAULT '',  -- the pollutant(s) or table(s) that set the value
  detail     jsonb NOT NULL DEFAULT '{}',
  PRIMARY KEY (series_id, ts)
);

CREATE VIEW derived AS
  SELECT d.ts, s.sensor_id, s.quantity, r.value, d.method, d.dominant, d.detail
  FROM derived_info d
  JOIN series s USING (series_id)
  JOIN reading_data r ON r.series_id = d.series_id AND r.ts = d.ts;
