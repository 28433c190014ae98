"""The notifier's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class NotifyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.delivered = Counter(
            "pusat_notify_deliveries_total",
            "Alarm transitions delivered, by receiver",
            ["receiver"],
            registry=r,
        )
        self.failures = Counter(
            "pusat_notify_failures_total",
            "Failed delivery attempts (each is retried), by receiver",
            ["receiver"],
            registry=r,
        )
        self.outbox_age = Gauge(
            "pusat_notify_outbox_age_seconds",
            "Age of the oldest alarm transition some receiver has not got yet (0: none)",
            registry=r,
        )
        self.escalations = Counter(
            "pusat_notify_escalations_total",
            "Alarms escalated for not being acknowledged in time",
            registry=r,
        )
        self.silences = Counter(
            "pusat_notify_silences_total",
            "Alertmanager silences made for shelved alarms (to_alertmanager) and alarms shelved"
            " by silences made there (from_alertmanager)",
            ["direction"],
            registry=r,
        )
