"""The alert publisher's Prometheus metrics (`eventhouse alerts --metrics-port`), on its own registry
as the loader's are (ingestion/loader_metrics.py, whose endpoint class serves them too).

Labels are bounded: channels are three, anomaly types the five live rules plus the five pipeline checks.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "eventhouse_alerts"

_POLL_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AlertMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.published = Counter(
            f"{PREFIX}_published", "Alerts delivered, per channel and anomaly type", ["channel", "type"], registry=r
        )
        self.delivery_failures = Counter(
            f"{PREFIX}_delivery_failures", "Delivery attempts that failed, per channel", ["channel"], registry=r
        )
        self.retries = Counter(
            f"{PREFIX}_retries",
            "Delivery attempts after a failed one (webhook), or re-sends after a read-back (kafka)",
            ["channel"],
            registry=r,
        )
        self.last_alert = Gauge(
            f"{PREFIX}_last_alert_timestamp_seconds", "When the newest alert was written (Unix time)", registry=r
        )
        self.open_deliveries = Gauge(
            f"{PREFIX}_open_deliveries", "Deliveries not yet delivered, per channel", ["channel"], registry=r
        )
        self.poll_seconds = Histogram(
            f"{PREFIX}_poll_seconds", "Time of one publisher pass", buckets=_POLL_SECONDS_BUCKETS, registry=r
        )
