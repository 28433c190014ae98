-- Every alarm of a series and rule, closed ones too: the flapping check counts the condition
-- changes of the series' past alarms. The partial index alerts_open (state <> 'closed') cannot
-- serve it, so each raise read the whole alerts table; after a city-wide outage (100,000 stale
-- alarms raised at once) that stalled ingest.
CREATE INDEX alerts_series_rule ON alerts (sensor_id, coalesce(quantity, ''), rule);
