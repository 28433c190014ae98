"""Ingest counters, as Prometheus metrics in a registry owned by the worker (no global registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.records import REASONS

# Where the worker meets a database failure: opening a connection; a batch's COPY, merge or
# commit; loading alarm state and publishing alarm topics; the alarm tick; the hourly indices;
# retention and compression.
DB_STAGES = ("connect", "batch", "alarms", "tick", "indices", "maintenance")


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "pusat_ingest_messages", "MQTT messages received", ["kind"], registry=r
        )
        self.elsewhere = Counter(
            "pusat_ingest_messages_other_partition",
            "messages of other partitions' gateways, acknowledged and left to their worker",
            registry=r,
        )
        self.received = Counter(
            "pusat_ingest_readings_received", "readings decoded from messages", registry=r
        )
        self.stored = Counter("pusat_ingest_readings_stored", "readings committed", registry=r)
        self.duplicates = Counter(
            "pusat_ingest_readings_duplicate", "readings already stored (same key)", registry=r
        )
        self.quarantined = Counter(
            "pusat_ingest_quarantined", "records quarantined, by reason", ["reason"], registry=r
        )
        for reason in REASONS:
            self.quarantined.labels(reason)
        self.batches = Counter("pusat_ingest_batches", "batches committed", registry=r)
        self.overlapped = Counter(
            "pusat_ingest_batches_overlapped",
            "batches whose readings were sent while the previous batch committed",
            registry=r,
        )
        self.db_errors = Counter(
            "pusat_ingest_db_errors",
            "database operations that failed (each retried), by where the worker met the failure",
            ["stage"],
            registry=r,
        )
        for stage in DB_STAGES:
            self.db_errors.labels(stage)
        self.db_up = Gauge(
            "pusat_ingest_database_up",
            "1 while the worker's database answers; 0 from an outage met anywhere until it answers",
            registry=r,
        )
        self.alarm_changes = Counter(
            "pusat_alarm_changes", "alarm topics republished after a change", registry=r
        )
        self.queue_depth = Gauge(
            "pusat_ingest_queue_depth", "messages waiting between MQTT and the worker", registry=r
        )
        self.partitions = Gauge(
            "pusat_ingest_partitions_served",
            "RabbitMQ partition queues this worker is serving now (source rabbitmq)",
            registry=r,
        )
        self.lag_p50 = Gauge(
            "pusat_ingest_lag_p50_seconds", "median event time to commit, last batch", registry=r
        )
        self.lag_max = Gauge(
            "pusat_ingest_lag_max_seconds", "largest event time to commit, last batch", registry=r
        )
        self.commit_seconds = Histogram(
            "pusat_ingest_batch_seconds",
            "time to write and commit one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of one sample, e.g. ``value("pusat_ingest_readings_stored_total")``."""
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else v

    def db_errors_total(self) -> float:
        """Database failures met anywhere (the sum over stages)."""
        return sum(self.value("pusat_ingest_db_errors_total", {"stage": s}) for s in DB_STAGES)

    def database_down(self) -> bool:
        return self.value("pusat_ingest_database_up") == 0 and self.db_errors_total() > 0

    def summary(self) -> str:
        q = sum(self.value("pusat_ingest_quarantined_total", {"reason": r}) for r in REASONS)
        elsewhere = self.value("pusat_ingest_messages_other_partition_total")
        return (
            f"received={self.value('pusat_ingest_readings_received_total'):.0f}"
            f" stored={self.value('pusat_ingest_readings_stored_total'):.0f}"
            f" duplicate={self.value('pusat_ingest_readings_duplicate_total'):.0f}"
            f" quarantined={q:.0f}"
            f" lag_p50={self.value('pusat_ingest_lag_p50_seconds'):.3f}s"
            f" queue={self.value('pusat_ingest_queue_depth'):.0f}"
            + (f" other_partition={elsewhere:.0f}" if elsewhere else "")
            + (" database=DOWN" if self.database_down() else "")
        )
