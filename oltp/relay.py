"""The outbox relay (`eventhouse relay`): committed outbox rows to Kafka, each once in the normal case.

One batch is one PostgreSQL transaction:

    SELECT ... FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT 100 FOR UPDATE SKIP LOCKED
    publish every row (acks=all) and wait for every acknowledgement
    UPDATE outbox SET published_at = clock_timestamp() ...; COMMIT

- Published before marked: a relay killed between the acks and the commit leaves the rows pending,
  and the next relay publishes them again with the same event_id (the outbox row's id), which the
  raw table collapses (ReplacingMergeTree by event_id). Nothing committed is ever lost.
- A failed publish (a broker down, an ack timeout) rolls the transaction back: the rows stay pending,
  their `attempts` go up, and the relay backs off (0.2 s doubling up to 10 s) and retries.
- Several relays may run at once: SKIP LOCKED hands each a different batch, and a row another relay
  marked meanwhile no longer matches `published_at IS NULL` when it is re-checked under the lock
  (READ COMMITTED), so no row is published by two relays in the normal case. Per-order ordering in
  Kafka then holds within one relay only; the warehouse picks each order's latest state by version,
  not by arrival.
- The relay waits for work on LISTEN outbox (the insert trigger's NOTIFY) and polls at least every
  5 s anyway (a notification sent while no relay listened is not kept).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from ingestion.contract import make_event
from ingestion.retries import FIRST_RETRY_SLEEP
from ingestion.topics import message_key, topic_for
from oltp.migrations import OUTBOX_CHANNEL
from oltp.relay_metrics import RelayMetrics
from settings import (
    DEFAULT_OUTBOX_ACK_TIMEOUT_SECONDS,
    DEFAULT_OUTBOX_BATCH_ROWS,
    DEFAULT_OUTBOX_PENDING_THRESHOLD,
    DEFAULT_OUTBOX_POLL_SECONDS,
    DEFAULT_RETRY_MAX_SLEEP_SECONDS,
)

log = logging.getLogger(__name__)

RELAY_SERVICE = "order-outbox-relay"
# Test hook: the relay kills itself (SIGKILL) once the broker acknowledged its first batch and before
# the batch is marked published: the one moment where a crash makes the next relay publish those rows
# again (tests/integration/test_outbox.py).
KILL_AFTER_ACK_ENV = "EVENTHOUSE_RELAY_TEST_KILL_AFTER_ACK"
# `--once` gives up after this many failed publishes in a row (a service relay retries for ever)
ONCE_MAX_CONSECUTIVE_FAILURES = 5
# how often a waiting relay checks for a stop request
_WAIT_SLICE_SECONDS = 0.25
# the pending count is a query: at most once a second while busy
_PENDING_REFRESH_SECONDS = 1.0
# a pending count above the threshold is logged again after this long
_PENDING_WARNING_EVERY_SECONDS = 60.0

_SELECT_BATCH = """
    SELECT id, seq, event_type, aggregate_id, user_id, occurred_at, payload, created_at
    FROM outbox
    WHERE published_at IS NULL
    ORDER BY seq
    LIMIT %s
    FOR UPDATE SKIP LOCKED
"""


class RelayError(RuntimeError):
    """The relay cannot go on (`--once` and Kafka keeps failing); nothing unpublished was marked."""


class PublishFailed(Exception):
    def __init__(self, ids: list[Any], reason: str):
        super().__init__(reason)
        self.ids = ids
        self.reason = reason


class Sink(Protocol):
    """What the relay publishes through: ingestion.publisher.Publisher's `send` (a future whose
    `get(timeout)` waits for the broker's ack and raises when the send failed)."""

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any: ...


@dataclass(frozen=True)
class OutboxRow:
    id: Any  # uuid.UUID
    seq: int
    event_type: str
    aggregate_id: str
    user_id: str | None
    occurred_at: datetime
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class RelayConfig:
    batch_rows: int = DEFAULT_OUTBOX_BATCH_ROWS
    poll_seconds: float = DEFAULT_OUTBOX_POLL_SECONDS
    ack_timeout: float = DEFAULT_OUTBOX_ACK_TIMEOUT_SECONDS
    retry_max_sleep: float = DEFAULT_RETRY_MAX_SLEEP_SECONDS
    pending_threshold: int = DEFAULT_OUTBOX_PENDING_THRESHOLD


@dataclass
class RelaySummary:
    published: int = 0
    pending: int = 0
    retries: int = 0
    batches: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "pending": self.pending,
            "retries": self.retries,
            "batches": self.batches,
            "by_topic": dict(sorted(self.by_topic.items())),
            "seconds": round(self.seconds, 3),
        }


def outbox_event(row: OutboxRow, host: str) -> dict[str, Any]:
    """The envelope a row is published as: event_id = the row's id (the same on every re-publish),
    ts = when the change happened, dedupe_key as the order simulator's."""
    payload = row.payload
    return make_event(
        row.event_type,
        str(row.id),
        row.occurred_at,
        payload,
        user_id=row.user_id,
        service=RELAY_SERVICE,
        host=host,
        sequence=row.seq,
        dedupe_key=f"{row.event_type}:{row.aggregate_id}:{payload.get('version')}",
    )


def count_pending(conn: Any) -> int:
    (pending,) = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
    conn.commit()  # end the read's transaction: an idle-in-transaction relay would hold back vacuum
    return int(pending)


class Relay:
    def __init__(
        self,
        conn: Any,
        sink: Sink,
        config: RelayConfig | None = None,
        metrics: RelayMetrics | None = None,
        host: str | None = None,
    ):
        self.conn = conn  # psycopg connection, not autocommit
        self.sink = sink
        self.config = config or RelayConfig()
        self.metrics = metrics or RelayMetrics()
        self.host = host or socket.gethostname()
        self.summary = RelaySummary()
        self.stopping = threading.Event()
        self._pending_counted = 0.0
        self._pending_warned = 0.0
        self._once = False  # run(once=True): give up after ONCE_MAX_CONSECUTIVE_FAILURES

    def stop(self) -> None:
        self.stopping.set()

    # ---- one batch ----------------------------------------------------------------------------

    def publish_batch(self) -> int:
        """Publish one batch and mark it, in one transaction; the rows published (0: nothing pending
        that another relay does not hold). PublishFailed: rolled back, nothing marked."""
        conn = self.conn
        with conn.transaction():
            rows = [OutboxRow(*r) for r in conn.execute(_SELECT_BATCH, (self.config.batch_rows,)).fetchall()]
            if not rows:
                return 0
            topics = self._publish(rows)
            acked = time.time()
            if os.environ.get(KILL_AFTER_ACK_ENV):
                log.warning("%s is set: killing the relay after the acks, before marking", KILL_AFTER_ACK_ENV)
                os.kill(os.getpid(), signal.SIGKILL)
            conn.execute(
                "UPDATE outbox SET published_at = clock_timestamp(), attempts = attempts + 1 WHERE id = ANY(%s)",
                ([row.id for row in rows],),
            )
        # committed: only now is the batch published as far as anyone can tell
        for row, topic in zip(rows, topics, strict=True):
            self.metrics.published.labels(topic).inc()
            self.metrics.latency.observe(max(acked - row.created_at.timestamp(), 0.0))
            self.summary.by_topic[topic] = self.summary.by_topic.get(topic, 0) + 1
        self.summary.published += len(rows)
        self.summary.batches += 1
        return len(rows)

    def _publish(self, rows: list[OutboxRow]) -> list[str]:
        from kafka.errors import KafkaError

        topics: list[str] = []
        try:
            futures = []
            for row in rows:
                event = outbox_event(row, self.host)
                spec = topic_for(row.event_type)
                futures.append(self.sink.send(spec.name, orjson.dumps(event), message_key(spec, event)))
                topics.append(spec.name)
            for future in futures:  # acks=all: each returns once every in-sync replica has the message
                future.get(timeout=self.config.ack_timeout)
        except KafkaError as exc:
            raise PublishFailed([row.id for row in rows], f"{type(exc).__name__}: {exc}") from exc
        return topics

    def _note_failure(self, failed: PublishFailed) -> None:
        """Count the failed attempt on the rows (in its own transaction: the batch's was rolled back)."""
        with self.conn.transaction():
            self.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id = ANY(%s) AND published_at IS NULL", (failed.ids,)
            )
        self.summary.retries += 1
        self.metrics.retries.inc()

    # ---- the loop -----------------------------------------------------------------------------

    def drain(self) -> None:
        """Publish batches until none is left (that another relay does not hold), retrying failures."""
        delay, failures = FIRST_RETRY_SLEEP, 0
        while not self.stopping.is_set():
            try:
                published = self.publish_batch()
            except PublishFailed as failed:
                self._note_failure(failed)
                self._refresh_pending(force=False)  # the gauge and the warning matter most during an outage
                failures += 1
                if self._once and failures >= ONCE_MAX_CONSECUTIVE_FAILURES:
                    raise RelayError(
                        f"publishing the outbox to Kafka failed {failures} times in a row ({failed.reason}); "
                        "the rows stay pending for the next run"
                    ) from None
                log.warning(
                    "publishing %d outbox rows failed (%s); retrying in %.1f s", len(failed.ids), failed.reason, delay
                )
                self.stopping.wait(delay)
                delay = min(delay * 2, self.config.retry_max_sleep)
                continue
            delay, failures = FIRST_RETRY_SLEEP, 0
            self._refresh_pending(force=False)
            if published < self.config.batch_rows:
                return

    def _refresh_pending(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._pending_counted < _PENDING_REFRESH_SECONDS:
            return
        self._pending_counted = now
        pending = count_pending(self.conn)
        self.summary.pending = pending
        self.metrics.pending.set(pending)
        if pending > self.config.pending_threshold and now - self._pending_warned >= _PENDING_WARNING_EVERY_SECONDS:
            self._pending_warned = now
            log.warning(
                "OUTBOX_PENDING: %d outbox rows are not published yet, above the threshold of %d "
                "(EVENTHOUSE_OUTBOX_PENDING_THRESHOLD): is the relay keeping up, is Kafka reachable?",
                pending,
                self.config.pending_threshold,
            )

    def _wait(self, listener: Any) -> None:
        """Until a NOTIFY on the channel, the poll interval or a stop request, whichever comes first."""
        deadline = time.monotonic() + self.config.poll_seconds
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if any(True for _ in listener.notifies(timeout=min(left, _WAIT_SLICE_SECONDS), stop_after=1)):
                # take the other queued notifications too: one drain serves them all
                for _ in listener.notifies(timeout=0):
                    pass
                return

    def run(self, listener: Any | None, once: bool = False) -> RelaySummary:
        """Drain, then (unless `once`) wait for more and drain again until stopped."""
        self._once = once
        started = time.monotonic()
        try:
            while not self.stopping.is_set():
                self.drain()
                self._refresh_pending(force=True)
                if once or listener is None:
                    break
                self._wait(listener)
        finally:
            self.summary.seconds = time.monotonic() - started
        return self.summary


def relay_outbox(
    dsn: str,
    kafka: Any,
    config: RelayConfig,
    *,
    once: bool,
    metrics: RelayMetrics | None = None,
    on_start: Iterable[Any] = (),
) -> RelaySummary:
    """Connect, apply the migrations (a relay may start before any writer), LISTEN, and run."""
    from ingestion.publisher import Publisher
    from oltp.connection import connect
    from oltp.migrations import apply_migrations

    conn = connect(dsn)
    listener = None if once else connect(dsn, autocommit=True)
    publisher = None
    try:
        apply_migrations(conn)
        ack_ms = int(config.ack_timeout * 1000)
        publisher = Publisher(
            kafka,
            client_id=RELAY_SERVICE,
            # acks=all (the Publisher's); the batch's sends go out at once (no linger: the relay waits
            # for them), and a send gives up within the ack timeout instead of kafka-python's 2 minutes
            producer_options={
                "linger_ms": 0,
                "request_timeout_ms": ack_ms,
                "delivery_timeout_ms": ack_ms,
                "max_block_ms": ack_ms,
            },
        )
        if listener is not None:
            # after Kafka answered: a relay listening is a relay ready to publish (tests wait for it)
            listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        relay = Relay(conn, publisher, config, metrics)
        for hook in on_start:
            hook(relay)
        return relay.run(listener, once=once)
    finally:
        if publisher is not None:
            try:
                publisher.close(timeout=config.ack_timeout)
            except Exception as exc:  # noqa: BLE001 - nothing unacknowledged was marked; the exit must not hang
                log.warning("closing the Kafka producer: %s", exc)
        conn.close()
        if listener is not None:
            listener.close()
