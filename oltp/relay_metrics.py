"""The outbox relay's Prometheus metrics (`eventhouse relay --metrics-port`), on its own registry.

Served by the loader's `MetricsServer` (ingestion/loader_metrics.py), as the alert publisher's are.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From a row's commit to the broker's ack: tens of milliseconds when the relay keeps up, up to the
# 5 s poll when a notification was missed, minutes while Kafka is down.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pending = Gauge(
            "eventhouse_outbox_pending",
            "Outbox rows not yet published to Kafka (as the relay last counted)",
            registry=r,
        )
        self.published = Counter(
            "eventhouse_relay_published", "Outbox rows published to Kafka and marked published", ["topic"], registry=r
        )
        self.retries = Counter(
            "eventhouse_relay_retries", "Outbox batches rolled back after a failed publish, to be retried", registry=r
        )
        self.latency = Histogram(
            "eventhouse_relay_publish_latency_seconds",
            "From an outbox row's insert (its transaction's commit) to the broker's acknowledgement",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
