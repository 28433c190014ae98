-- Room on every page for the new versions of the rows ingest updates in place, so that an
-- update stays on its page (a HOT update: no new index entry, a smaller WAL record, and
-- the old version pruned with the page instead of by vacuum). Packed full, 13-15 % of the
-- updates of latest_data and rollup_1h_data were HOT in a city run (100,000 sensors,
-- 15,000 readings/s: every latest row is rewritten every half minute) and 1.4 % of
-- rollup_1m_data's, whose rows are updated once or twice in their minute.
-- Pages written before this migration keep what they hold until the table is rewritten
-- (VACUUM FULL, which locks it): new pages are laid out this way.
ALTER TABLE latest_data SET (fillfactor = 50);
ALTER TABLE rollup_1h_data SET (fillfactor = 50);
ALTER TABLE rollup_1m_data SET (fillfactor = 70);
ALTER TABLE alert_state SET (fillfactor = 50);
