"""The HTTP API (`/api/v1`), health and metrics, and the built-in command-centre wall (`/wall`).

`api.app.create_app(settings)` builds the application; it reads the store and never writes
readings (ingest does). Alarm actions, provisioning and quarantine replay are its only writes.
"""
