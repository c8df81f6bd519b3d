"""Dead letters: the record of a message the loader could not load, and its copy on `<topic>.dlq`.

The `dead_letters` table is the record: it keeps the message's key and value byte for byte,
whatever they are (a String column holds any bytes), with the reason. The copy on the DLQ topic
is for consumers that watch Kafka: it carries the reason in headers and is cut to
`DLQ_MAX_VALUE_BYTES` when the message was larger (its original size and SHA-256 in headers),
so one huge message can never exceed the producer's or broker's request size. A copy that cannot
be published is kept and retried with later batches; it never stops the loader.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingestion.contract import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

# A DLQ copy's value and key are cut to these sizes; the table keeps the whole message.
DLQ_MAX_VALUE_BYTES = MAX_MESSAGE_BYTES
DLQ_MAX_KEY_BYTES = 1024
# Copies waiting for a retry are bounded; past this the oldest are given up (the table keeps them).
MAX_PENDING_COPIES = 10_000
REASON_HEADER_BYTES = 1000


@dataclass(slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    topic_id: str
    key: bytes | None
    value: bytes
    reason: str
    failed_at: datetime

    def row(self) -> list[Any]:
        """A `dead_letters` row (raw_tables.DEAD_LETTER_COLUMNS); key and value as the bytes received."""
        return [
            self.topic,
            self.partition,
            self.offset,
            self.topic_id,
            self.key,
            self.value,
            self.reason,
            self.failed_at,
        ]

    def dlq_copy(self) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        """(key, value, headers) of the copy published to the DLQ topic."""
        headers = [
            ("eventhouse.error", self.reason.encode()[:REASON_HEADER_BYTES]),
            ("eventhouse.source", f"{self.topic}:{self.partition}:{self.offset}".encode()),
        ]
        value = self.value
        if len(value) > DLQ_MAX_VALUE_BYTES:
            headers += [
                ("eventhouse.truncated", b"value"),
                ("eventhouse.original_size", str(len(value)).encode()),
                ("eventhouse.original_sha256", hashlib.sha256(value).hexdigest().encode()),
            ]
            value = value[:DLQ_MAX_VALUE_BYTES]
        key = self.key
        if key is not None and len(key) > DLQ_MAX_KEY_BYTES:
            headers += [
                ("eventhouse.key_truncated", b"1"),
                ("eventhouse.original_key_size", str(len(key)).encode()),
                ("eventhouse.original_key_sha256", hashlib.sha256(key).hexdigest().encode()),
            ]
            key = key[:DLQ_MAX_KEY_BYTES]
        return key, value, headers


class DlqPublisher:
    """Publishes DLQ copies without ever raising: failures are logged, kept and retried."""

    def __init__(self, producer: Any, dlq_topic_of: Any):
        self._producer = producer
        self._dlq_topic_of = dlq_topic_of  # source topic -> DLQ topic
        self._lock = threading.Lock()
        self._failed: deque[DeadLetter] = deque()
        self.published = 0
        self.failures = 0
        self.given_up = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._failed)

    def publish(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            self._send(letter)

    def _send(self, letter: DeadLetter) -> None:
        key, value, headers = letter.dlq_copy()
        try:
            future = self._producer.send(self._dlq_topic_of(letter.topic), key=key, value=value, headers=headers)
        except Exception as exc:  # e.g. no metadata for the topic within max_block_ms
            self._on_failure(letter, exc)
            return
        future.add_callback(self._on_success)
        future.add_errback(lambda exc: self._on_failure(letter, exc))

    def _on_success(self, _metadata: Any) -> None:
        with self._lock:
            self.published += 1

    def _on_failure(self, letter: DeadLetter, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self._failed.append(letter)
            while len(self._failed) > MAX_PENDING_COPIES:
                dropped = self._failed.popleft()
                self.given_up += 1
                log.error(
                    "gave up copying %s:%d:%d to its DLQ topic (%d copies waiting); dead_letters keeps it",
                    dropped.topic,
                    dropped.partition,
                    dropped.offset,
                    MAX_PENDING_COPIES,
                )
        log.warning(
            "could not copy dead letter %s:%d:%d to its DLQ topic (%s); will retry",
            letter.topic,
            letter.partition,
            letter.offset,
            exc,
        )

    def flush(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for the copies sent so far, then send the failed ones once more."""
        with self._lock:
            retry = list(self._failed)
            self._failed.clear()
        for letter in retry:
            self._send(letter)
        try:
            self._producer.flush(timeout=timeout)
        except Exception as exc:  # KafkaTimeoutError: the copies stay queued in the producer
            log.warning("DLQ copies not acknowledged within %.0f s (%s); they stay queued", timeout, exc)
