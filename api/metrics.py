"""The API's Prometheus metrics, in a registry the app owns (two apps in one process, as in the
tests, never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "pusat_api_requests_total",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=r,
        )
        self.seconds = Histogram(
            "pusat_api_request_seconds",
            "Time to answer a request (to the first byte for streams), by route template",
            ["route"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.live_clients = Gauge(
            "pusat_api_live_clients", "Clients connected to the live stream", registry=r
        )
        self.live_events = Counter(
            "pusat_api_live_events_total",
            "Events sent on the live stream, by kind",
            ["kind"],
            registry=r,
        )
        self.alert_actions = Counter(
            "pusat_api_alert_actions_total",
            "Operator actions on alarms, by action",
            ["action"],
            registry=r,
        )
        self.snapshot_builds = Counter(
            "pusat_api_snapshot_builds_total",
            "Shared snapshots worked out (`latest`), by route: far fewer than requests under load",
            ["route"],
            registry=r,
        )
        self.replayed = Counter(
            "pusat_api_quarantine_replayed_total",
            "Quarantined messages republished to the broker for re-ingest",
            registry=r,
        )
        self.ingest_lag = Gauge(
            "pusat_api_ingest_lag_seconds",
            "Now minus the newest received_at in latest, at the last /healthz",
            registry=r,
        )
        self.replica_lag = Gauge(
            "pusat_api_replica_lag_seconds",
            "How far the read replica's replay is behind the primary, at the last /healthz",
            registry=r,
        )
        self.replica_lag_bytes = Gauge(
            "pusat_api_replica_lag_bytes",
            "WAL the primary has that the read replica has not replayed, at the last /healthz",
            registry=r,
        )
        self.event_lag = Gauge(
            "pusat_api_event_lag_seconds",
            "Now minus the newest event time in latest, at the last /healthz",
            registry=r,
        )
        # Alarm delivery as the database holds it, read at each scrape: it shows a notifier
        # that stopped (its own counters go with it) as a growing backlog.
        self.alarm_pending = Gauge(
            "pusat_alarm_outbox_pending",
            "Alarm transitions a receiver has not got yet, by receiver (at the last scrape)",
            ["receiver"],
            registry=r,
        )
        self.alarm_receiver_failures = Gauge(
            "pusat_alarm_receiver_failures",
            "Consecutive failed attempts of a receiver's next transition (0: keeping up)",
            ["receiver"],
            registry=r,
        )
        self.alarm_outbox_age = Gauge(
            "pusat_alarm_outbox_age_seconds",
            "Age of the oldest alarm transition some receiver has not got yet (0: none)",
            registry=r,
        )
