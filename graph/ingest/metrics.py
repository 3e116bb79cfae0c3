"""Ingestion metrics shared by every source (file, Kafka, HTTP, CRM, webhooks).

One ``IngestMetrics`` per process, on a registry of its own: the API serves it beside its request
metrics at ``/metrics``; ``personas consume`` serves it on its own port. Labels stay bounded:
``source`` is a source family (``file``, ``kafka``, ``http``, ``graphql``, ``crm``,
``context``), and ``reason`` a short code from ``REJECT_CODES``, never a free-text reason.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REJECT_CODES = ("malformed", "invalid", "too_large", "unauthorized", "conflict", "erased",
                "error")
"""Why a record was refused: unparsable, failed validation, over a size limit, refused by
signature or consent, contradicted newer data, names a user erased after it happened, or failed
while writing."""

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("personas_events_received", "Records received, by source",
                                ["source"], registry=r)
        self.accepted = Counter("personas_events_accepted",
                                "Events written to the graph (duplicates excluded), by source",
                                ["source"], registry=r)
        self.duplicates = Counter("personas_events_duplicate",
                                  "Events already in the graph, skipped, by source",
                                  ["source"], registry=r)
        self.rejected = Counter("personas_events_rejected", "Records refused, by source and reason",
                                ["source", "reason"], registry=r)
        self.dead_letters = Counter("personas_dead_letters", "Records sent to a dead-letter sink",
                                    ["source"], registry=r)
        self.batch_seconds = Histogram("personas_batch_write_seconds",
                                       "Time to write one batch to Neo4j", ["source"],
                                       buckets=BATCH_BUCKETS, registry=r)
        self.freshness = Histogram(
            "personas_event_freshness_seconds",
            "From an event reaching us (Kafka timestamp, HTTP receipt) to its commit in the graph",
            ["source"], buckets=FRESHNESS_BUCKETS, registry=r)
        self.consumer_lag = Gauge("personas_consumer_lag",
                                  "Messages behind the end of each partition",
                                  ["topic", "partition"], registry=r)

    def reject(self, source: str, reason: str, n: int = 1) -> None:
        if reason not in REJECT_CODES:
            raise ValueError(f"unknown reject code {reason!r}; expected one of {REJECT_CODES}")
        self.rejected.labels(source, reason).inc(n)

    def batch(self, source: str, seconds: float, written: int, duplicates: int) -> None:
        self.batch_seconds.labels(source).observe(seconds)
        self.accepted.labels(source).inc(written)
        self.duplicates.labels(source).inc(duplicates)
