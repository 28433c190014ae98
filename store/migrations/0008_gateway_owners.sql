-- Gateway availability per owner: each publisher of a gateway (the gateway itself, owner '',
-- or a simulator run) says online/offline for itself, and its last will speaks for it alone.
-- gateways.status is derived: online while any owner's last word is online, so a second
-- publisher that ends does not make a gateway that is still publishing look dead.
CREATE TABLE gateway_status (
  gateway_id  text NOT NULL,
  owner       text NOT NULL,
  status      text NOT NULL,
  status_at   timestamptz NOT NULL,
  PRIMARY KEY (gateway_id, owner)
);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pusat_grafana') THEN
    GRANT SELECT ON gateway_status TO pusat_grafana;
  END IF;
END $$;
