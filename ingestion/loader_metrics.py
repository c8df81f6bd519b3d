"""The loader's Prometheus metrics, and the HTTP endpoint that serves them (`eventhouse load --metrics-port`).

Each loader owns its own `CollectorRegistry` (not prometheus-client's global one), so two loaders
in one process (tests, Dagster) never clash over a metric name. The loader updates these at the
points where it updates `LoaderStats` (ingestion/loader.py), from the same numbers.

Dead letters are labelled with their reason's category, never the reason itself: a reason names
the offending value ('ts' 2100-01-01..., the unknown event type), and a label per distinct value
would grow without bound. `reason_category` maps the texts `ingestion/contract.py`,
`ingestion/topics.py`, `partition_ranges.py` and `batch_writer.py` build onto a fixed set.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from settings import DEFAULT_METRICS_HOST

log = logging.getLogger(__name__)

PREFIX = "eventhouse_loader"

# Checked in order, first match wins; anything else is "other" (still bounded).
_CATEGORIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("clickhouse_refused", r"^ClickHouse refused the row"),
        ("unexpected", r"^could not be loaded \("),
        ("empty", r"^empty message"),
        ("too_large", r"^message is \d+ bytes, over"),
        ("invalid_json", r"^invalid JSON|^message must be a JSON object"),
        ("wrong_topic", r"^wrong topic:"),
        ("unknown_event_type", r"^unknown event[_ ]type|^'event_type' is required"),
        ("schema_version", r"^unsupported schema_version"),
        ("string_limit", r"characters long, over the limit|contains the control character|nests more than"),
        ("timestamp", r"^'(ts|ingested_at)'"),
        ("payload", r"payload field|^'payload'"),
        ("encode", r"^cannot be encoded as a raw row"),
        ("envelope", r"^(\S+: )?'(event_id|user_id|session_id|source|sequence|dedupe_key)'"),
    )
)
REASON_CATEGORIES = tuple(name for name, _ in _CATEGORIES) + ("other",)

# Batch sizes span one message (a quiet stream) to --batch-rows and beyond (bulk loads).
_BATCH_ROWS_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)
# Insert latency: milliseconds on the embedded server, seconds while a server retries.
_INSERT_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def reason_category(reason: str) -> str:
    """The dead-letter reason's category: one of `REASON_CATEGORIES`, whatever values the text names."""
    for name, pattern in _CATEGORIES:
        if pattern.search(reason):
            return name
    return "other"


class LoaderMetrics:
    """One loader's metrics on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_consumed = Counter(
            f"{PREFIX}_events_consumed", "Messages read from Kafka and accepted into a batch", ["topic"], registry=r
        )
        self.events_loaded = Counter(
            f"{PREFIX}_events_loaded", "Rows ClickHouse wrote to the raw tables", ["topic"], registry=r
        )
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters", "Messages dead-lettered, by the category of their reason", ["reason"], registry=r
        )
        self.duplicates_collapsed = Counter(
            f"{PREFIX}_duplicates_collapsed",
            "Rows ClickHouse deduplicated on insert (a redone or retried range)",
            ["topic"],
            registry=r,
        )
        self.insert_batch_rows = Histogram(
            f"{PREFIX}_insert_batch_rows",
            "Messages (rows and dead letters) per partition range written",
            buckets=_BATCH_ROWS_BUCKETS,
            registry=r,
        )
        self.insert_seconds = Histogram(
            f"{PREFIX}_insert_seconds",
            "Time to write one partition range to ClickHouse, retries included",
            buckets=_INSERT_SECONDS_BUCKETS,
            registry=r,
        )
        self.partition_lag = Gauge(
            f"{PREFIX}_partition_lag",
            "Messages between the partition's highwater and the loader's position",
            ["topic", "partition"],
            registry=r,
        )

    def consumed(self, topic: str, count: int) -> None:
        if count:
            self.events_consumed.labels(topic).inc(count)

    def range_written(self, topic: str, rows: int, written: int, reasons: Iterable[str], seconds: float) -> None:
        """One written partition range: `rows` good rows of which ClickHouse wrote `written`, and its dead letters."""
        dead = 0
        for reason in reasons:
            self.dead_letters.labels(reason_category(reason)).inc()
            dead += 1
        self.events_loaded.labels(topic).inc(written)
        self.duplicates_collapsed.labels(topic).inc(rows - written)
        self.insert_batch_rows.observe(rows + dead)
        self.insert_seconds.observe(seconds)

    def lag(self, topic: str, partition: int, lag: int) -> None:
        self.partition_lag.labels(topic, str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int) -> None:
        """A revoked partition: its lag is now another loader's to report."""
        with contextlib.suppress(KeyError):  # never reported
            self.partition_lag.remove(topic, str(partition))


class HasRegistry(Protocol):
    """What the endpoint serves: a component's metrics on their own registry (the loader's, the alert
    publisher's)."""

    registry: CollectorRegistry


class MetricsServer:
    """prometheus-client's HTTP server for one registry, on a daemon thread; `port` is the bound one."""

    def __init__(self, metrics: HasRegistry, port: int, host: str = DEFAULT_METRICS_HOST):
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        self.host = host
        self.port = self._server.server_port  # the free port picked when asked for port 0
        log.info("serving Prometheus metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
