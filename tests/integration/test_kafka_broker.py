"""kafka-python against the embedded Tansu broker: topics, produce, consume, commit, resume."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from settings import DEFAULT_KAFKA_SESSION_TIMEOUT_MS

pytestmark = pytest.mark.integration


def _consume(consumer: KafkaConsumer, expected: int, timeout: float = 60.0) -> list:
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def _consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=DEFAULT_KAFKA_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=1000,
    )


def test_produce_consume_commit_resume(embedded_stack):
    bootstrap = embedded_stack.kafka_bootstrap
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    described = admin.describe_topics([topic])
    assert len(described[0]["partitions"]) == 3
    admin.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(1000):
        producer.send(topic, key=f"user-{i % 50}".encode(), value=f"event-{i}".encode())
    producer.flush()

    group = f"group-{uuid.uuid4().hex[:8]}"
    consumer = _consumer(bootstrap, topic, group)
    records = _consume(consumer, 1000)
    assert sorted(r.value for r in records) == sorted(f"event-{i}".encode() for i in range(1000))
    # One key always lands on one partition.
    partitions_by_key: dict[bytes, set[int]] = {}
    for record in records:
        partitions_by_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions_by_key.values())
    consumer.commit()
    committed = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
    highwater = {tp.partition: consumer.highwater(tp) for tp in consumer.assignment()}
    assert sum(committed.values()) == 1000
    assert committed == highwater
    consumer.close()

    producer.send(topic, key=b"user-1", value=b"late-event")
    producer.flush()
    producer.close()
    resumed = _consumer(bootstrap, topic, group)
    later = _consume(resumed, 1, timeout=30)
    assert [r.value for r in later] == [b"late-event"]
    # Nothing else is left to deliver: the resumed consumer stands where the group committed,
    # one further on the late event's partition, i.e. at the end of all 1001 messages.
    positions = {p: resumed.position(TopicPartition(topic, p)) for p in range(3)}
    assert positions == {p: committed[p] + (1 if p == later[0].partition else 0) for p in range(3)}
    resumed.close()
