"""Publishing envelopes to their topics, shared by every producer."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import orjson

from ingestion.topics import TOPICS, ensure_topics, message_key, topic_for
from settings import KafkaConfig

log = logging.getLogger(__name__)


class Publisher:
    """A KafkaProducer that routes each envelope to its topic with its key, and counts."""

    def __init__(
        self,
        kafka: KafkaConfig,
        client_id: str = "eventhouse-producer",
        ensure: bool = True,
        producer_options: dict[str, Any] | None = None,
    ):
        """`producer_options`: KafkaProducer settings over the ones below (the collector bounds how
        long send() may block with max_block_ms)."""
        from kafka import KafkaAdminClient, KafkaProducer

        kwargs = kafka.client_kwargs()
        if ensure:
            admin = KafkaAdminClient(**kwargs, client_id=f"{client_id}-admin")
            try:
                ensure_topics(admin, list(TOPICS))
            finally:
                admin.close()
        options: dict[str, Any] = {
            "client_id": client_id,
            "acks": "all",
            "linger_ms": 20,
            "batch_size": 256 * 1024,
            "compression_type": "lz4",
            "max_in_flight_requests_per_connection": 5,
        }
        options.update(producer_options or {})
        self._producer = KafkaProducer(**kwargs, **options)
        self.sent: Counter[str] = Counter()
        self._started = time.monotonic()

    def publish(self, event: dict[str, Any]) -> None:
        spec = topic_for(event["event_type"])
        self._producer.send(spec.name, key=message_key(spec, event), value=orjson.dumps(event))
        self.sent[spec.name] += 1

    def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Send bytes as they are (tests use this for poison messages)."""
        self._producer.send(topic, key=key, value=value)
        self.sent[topic] += 1

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        """Send bytes as they are; return kafka-python's FutureRecordMetadata, whose `.get(timeout=...)`
        waits for the broker's acknowledgement (acks=all) and raises when the send failed."""
        future = self._producer.send(topic, key=key, value=value)
        self.sent[topic] += 1
        return future

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def rate(self) -> float:
        return self.total / max(time.monotonic() - self._started, 1e-9)

    def flush(self) -> None:
        self._producer.flush()

    def close(self, timeout: float | None = None) -> None:
        """Flush, then close. `timeout` (seconds; default none) bounds each step for callers that must
        not hang while Kafka is down (the collector at shutdown): a flush that times out raises
        KafkaTimeoutError and the producer is left to the interpreter's exit (kafka-python's own
        close would flush again, and raise again, before stopping its sender thread)."""
        self._producer.flush(timeout)
        self._producer.close(timeout)
