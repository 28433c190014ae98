"""Ingest: MQTT in, decode and validate, hand columnar batches on, write through the store."""
