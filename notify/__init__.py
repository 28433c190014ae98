"""Alarm notification: the outbox's transitions to Prometheus Alertmanager and signed webhooks."""
