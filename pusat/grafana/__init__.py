"""Grafana walls as code: dashboards, provisioning files and a push client.

- `datasource`: Grafana's PostgreSQL data source on the read-only role, and the SQL query type
  that grafana-foundation-sdk lacks.
- `sql`: the panel queries over the public SQL surface (DESIGN.md), rollup-aware.
- `dashboards`: the City Overview wall and the Air Quality, Traffic, Wetlands, Alarms and Data
  Health dashboards, built with grafana-foundation-sdk; the wall playlist.
- `build`: renders everything under ``deploy/grafana`` (deterministic; the output is committed
  and a test fails when it differs from what the code generates).
- `push`: creates or updates the folder, data source, dashboards and playlist in a running
  Grafana through its HTTP API (grafana-client), and pushes alarm events as annotations.
"""
