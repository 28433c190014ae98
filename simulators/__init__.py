"""A simulated Putrajaya that publishes MQTT like real gateways: traffic (Eclipse SUMO), air
quality (an illustrative dispersion model fed by SUMO's emissions), the wetland (EPA SWMM), with
scenarios and injected faults. Simulators only publish MQTT; they never touch the database."""
