"""The collector's Kafka side: one Publisher per app, made on first use, and sends that wait for acks.

The Publisher is created lazily (the read-only API starts and answers without Kafka) under a
lock. When creating it fails, the requests that were waiting on the lock share that failure's
verdict rather than each trying again in turn (each attempt can take the bootstrap timeout);
the next request after them tries afresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

from ingestion.publisher import Publisher
from serving.collector_batch import Message

log = logging.getLogger(__name__)

CLIENT_ID = "eventhouse-collector"

_creating = threading.Lock()


def producer_options(ack_timeout_seconds: float) -> dict[str, Any]:
    """The collector's producer settings over the Publisher's.

    linger_ms 0: the answer waits for the acks, so a linger is added to every request's latency
    (the Publisher's 20 ms suits producers that do not wait). Batches still form under load,
    from the records appended while the previous produce requests are in flight; bench/collector.py
    measured more events/s and lower latency with 0 than with 20 (bench/RESULTS.md).
    max_block_ms: bounds send(), which blocks while it waits for a topic's metadata or for room in
    the producer's buffer, neither of which comes while Kafka is down."""
    return {"linger_ms": 0, "max_block_ms": int(ack_timeout_seconds * 1000)}


class KafkaUnavailable(Exception):
    """Kafka could not take or acknowledge a request's events; the message says what happened."""


def publisher_for(app: Any) -> Publisher:
    """The app's Publisher, created on first use; KafkaUnavailable when it cannot be."""
    state = app.state
    publisher = state.publisher
    if publisher is not None:
        return publisher
    failures_seen = getattr(state, "collector_publisher_failures", 0)
    with _creating:
        if state.publisher is not None:
            return state.publisher
        if getattr(state, "collector_publisher_failures", 0) != failures_seen:
            # an attempt failed while this request waited for the lock: share its verdict
            raise KafkaUnavailable(state.collector_publisher_error)
        settings, serve = state.settings, state.serve
        try:
            state.publisher = Publisher(
                settings.kafka,
                client_id=CLIENT_ID,
                producer_options=producer_options(serve.collector_ack_timeout_seconds),
            )
        except Exception as exc:  # noqa: BLE001 - whatever stops the producer from starting is a 503
            state.collector_publisher_error = (
                f"cannot connect to Kafka at {settings.kafka.bootstrap}: {_describe(exc)}"
            )
            state.collector_publisher_failures = failures_seen + 1
            log.warning("collector: %s", state.collector_publisher_error)
            raise KafkaUnavailable(state.collector_publisher_error) from None
        return state.publisher


def publish_and_wait(publisher: Publisher, messages: Sequence[Message], timeout: float) -> None:
    """Send every message, then wait (at most `timeout` seconds in all) for the broker to acknowledge
    each; KafkaUnavailable names the first that failed. Sends that fail may leave some of the
    messages published: the caller answers that none were accepted, and the client's retry of
    the same events is collapsed by event_id in the warehouse."""
    deadline = time.monotonic() + timeout
    futures = []
    for message in messages:
        try:
            futures.append(publisher.send(message.topic, message.value, message.key))
        except KafkaError as exc:
            raise KafkaUnavailable(_failed(message, "could not be sent to Kafka", exc)) from None
    for message, future in zip(messages, futures, strict=True):
        try:
            # (the futures of one partition's batch complete together: most of these return at once)
            future.get(timeout=max(deadline - time.monotonic(), 0.0))
        except KafkaTimeoutError:
            raise KafkaUnavailable(_failed(message, f"was not acknowledged by Kafka within {timeout:g} s")) from None
        except KafkaError as exc:
            raise KafkaUnavailable(_failed(message, "was not acknowledged by Kafka", exc)) from None


def _failed(message: Message, what: str, exc: Exception | None = None) -> str:
    reason = f"event {message.index} (event_id {message.event_id!r}, topic {message.topic}) {what}"
    if exc is not None:
        reason += f": {_describe(exc)}"
    log.warning("collector: %s", reason)
    return reason


def _describe(exc: Exception) -> str:
    """The exception's type and message, once (kafka-python's messages start with the type)."""
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"
