"""The Kafka channel: the `anomalies` topic, sending alerts to it, and reading it back after a crash.

See alerting/state.py for the protocol. The read-back reads each partition from the recorded offset
up to the highwater Kafka reports in its fetch responses (the embedded broker's `end_offsets()` is
wrong; ingestion/lag.py reads the highwater the same way).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from alerting.anomaly import Anomaly
from settings import KafkaConfig

log = logging.getLogger(__name__)

ANOMALIES_TOPIC = "anomalies"
ANOMALIES_PARTITIONS = 3


class KafkaChannelError(RuntimeError):
    """The `anomalies` topic could not be read or written."""


@dataclass(frozen=True)
class ReadBack:
    """What reading the topic back decided for deliveries that were maybe sent."""

    delivered: dict[str, tuple[int, int]]  # anomaly_id -> (partition, offset) where it was found
    resend: list[str]  # not on the topic: send again


def kafka_read_back(maybe_sent: Iterable[str], found: Mapping[str, tuple[int, int]]) -> ReadBack:
    """Deliveries left `sending` are delivered if their anomaly id is on the topic (the first copy
    found, if a crash ever let one through twice), and are sent again otherwise."""
    delivered: dict[str, tuple[int, int]] = {}
    resend: list[str] = []
    for anomaly_id in sorted(set(maybe_sent)):
        if anomaly_id in found:
            delivered[anomaly_id] = found[anomaly_id]
        else:
            resend.append(anomaly_id)
    return ReadBack(delivered, resend)


def read_from_bounds(read_froms: Iterable[Mapping[int, int]], partitions: Iterable[int]) -> dict[int, int]:
    """Where to start reading each partition: the lowest offset any `sending` row recorded for it
    (0 where none did, so a partition is never skipped)."""
    starts = {p: None for p in partitions}
    for bounds in read_froms:
        for p, offset in bounds.items():
            current = starts.get(p)
            starts[p] = offset if current is None else min(current, offset)
    return {p: 0 if o is None else o for p, o in starts.items()}


class KafkaChannel:
    """A producer for `anomalies` (created if missing) and a consumer to read it back."""

    def __init__(self, kafka: KafkaConfig, topic: str = ANOMALIES_TOPIC):
        from kafka import KafkaAdminClient, KafkaProducer

        self.kafka = kafka
        self.topic = topic
        admin = KafkaAdminClient(**kafka.client_kwargs(), client_id="eventhouse-alerts-admin")
        try:
            self._ensure_topic(admin)
        finally:
            admin.close()
        self._producer = KafkaProducer(
            **kafka.client_kwargs(),
            client_id="eventhouse-alerts",
            acks="all",
            linger_ms=5,
            max_in_flight_requests_per_connection=1,  # retries never reorder an entity's alerts
        )

    def _ensure_topic(self, admin) -> None:
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        if self.topic in set(admin.list_topics()):
            return
        with contextlib.suppress(TopicAlreadyExistsError):  # another process created it meanwhile
            admin.create_topics([NewTopic(self.topic, num_partitions=ANOMALIES_PARTITIONS, replication_factor=1)])
        log.info("created topic %s", self.topic)

    def partitions(self) -> list[int]:
        found = self._producer.partitions_for(self.topic)
        if not found:
            raise KafkaChannelError(f"Kafka topic {self.topic!r} has no partitions (metadata not available)")
        return sorted(found)

    def send(self, anomalies: Sequence[Anomaly], timeout: float = 30.0) -> dict[str, tuple[int, int]]:
        """Send each anomaly's envelope keyed by its entity and wait for Kafka's acknowledgements:
        anomaly_id -> (partition, offset). Raises on the first failure (the rest stay `sending`)."""
        futures = [
            (
                a.anomaly_id,
                self._producer.send(self.topic, key=a.entity_id.encode(), value=orjson.dumps(a.event())),
            )
            for a in anomalies
        ]
        self._producer.flush(timeout=timeout)
        acked: dict[str, tuple[int, int]] = {}
        for anomaly_id, future in futures:
            metadata = future.get(timeout=timeout)
            acked[anomaly_id] = (metadata.partition, metadata.offset)
        return acked

    def find(self, starts: Mapping[int, int], timeout: float = 30.0) -> dict[str, tuple[int, int]]:
        """The anomaly ids (envelope event_id) on the topic from `starts` (partition -> offset) to the
        highwater: anomaly_id -> (partition, offset) of its first copy."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            **self.kafka.client_kwargs(),
            client_id="eventhouse-alerts-read-back",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        found: dict[str, tuple[int, int]] = {}
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(starts)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, starts[tp.partition])
            remaining = set(tps)
            deadline = time.monotonic() + timeout
            while remaining:
                batches = consumer.poll(timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                            anomaly_id = orjson.loads(record.value).get("event_id")
                            if anomaly_id and anomaly_id not in found:
                                found[anomaly_id] = (tp.partition, record.offset)
                for tp in list(remaining):
                    highwater = consumer.highwater(tp)
                    if highwater is None:
                        continue
                    if starts[tp.partition] > highwater:
                        # the topic is younger than our record (a broker that keeps data in memory
                        # restarted): read this new incarnation from its start
                        log.warning("%s[%d]: recorded offset is past the end: reading from 0", self.topic, tp.partition)
                        starts = {**starts, tp.partition: 0}
                        consumer.seek(tp, 0)
                        continue
                    if consumer.position(tp) >= highwater:
                        remaining.discard(tp)
                if remaining and time.monotonic() > deadline:
                    missing = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(remaining))
                    raise KafkaChannelError(f"could not read {missing} up to its highwater within {timeout:g} s")
        finally:
            consumer.close()
        return found

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._producer.flush(timeout=10)
        self._producer.close(timeout=10)
