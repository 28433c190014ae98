-- Grafana's data source reads the public SQL surface as `pusat_grafana`, and nothing else: not
-- the physical tables behind the views, not the API's tokens. Read-only by grant and by default
-- transaction, with a statement timeout so that a heavy panel cannot hold the database.
--
-- The role is cluster-wide and made without a login: the deployment gives it one (the compose
-- stack's initdb script deploy/grafana/initdb/20-pusat-grafana-role.sh, or by hand:
-- ALTER ROLE pusat_grafana LOGIN PASSWORD '...'). A migrating user that may not create or alter
-- roles (a managed database) skips that part with a notice; the grants still apply when the
-- role exists.

DO $$
DECLARE
  may_manage boolean;
BEGIN
  SELECT rolsuper OR rolcreaterole INTO may_manage FROM pg_roles WHERE rolname = current_user;
  IF NOT may_manage THEN
    RAISE NOTICE 'pusat_grafana: % may not create roles: create it, then grant as docs/grafana.md says',
      current_user;
  ELSE
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pusat_grafana') THEN
      CREATE ROLE pusat_grafana NOLOGIN;
    END IF;
    ALTER ROLE pusat_grafana SET default_transaction_read_only = on;
    ALTER ROLE pusat_grafana SET statement_timeout = '60s';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pusat_grafana') THEN
    GRANT USAGE ON SCHEMA public TO pusat_grafana;
    GRANT SELECT ON sensors, readings, latest, rollup_1m, rollup_1h, alerts, alert_events,
      quarantine, derived, gateways TO pusat_grafana;
  END IF;
END $$;
