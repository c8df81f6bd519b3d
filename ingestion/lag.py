"""How far a consumer group is behind: each partition's highwater minus the group's committed offset.

The highwater is read the way the loader itself sees it, from fetch responses (`consumer.highwater`),
not from a ListOffsets request (`end_offsets`): the lag this reports is the lag the loader would act on.
The consumer here is manually assigned, so it never joins (or rebalances) the group it reports on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from settings import KafkaConfig


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here (it will start at the beginning)
    highwater: int

    @property
    def lag(self) -> int:
        return max(self.highwater - (self.committed or 0), 0)


@dataclass(frozen=True)
class GroupLag:
    group_id: str
    partitions: tuple[PartitionLag, ...]

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def by_topic(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for p in self.partitions:
            totals[p.topic] = totals.get(p.topic, 0) + p.lag
        return totals

    def highwater_by_topic(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for p in self.partitions:
            totals[p.topic] = totals.get(p.topic, 0) + p.highwater
        return totals


class LagUnavailable(RuntimeError):
    """Kafka did not report a highwater for every partition in time."""


def group_lag(kafka: KafkaConfig, group_id: str, topics: list[str], timeout_s: float = 15.0) -> GroupLag:
    """The lag of `group_id` on every partition of `topics` (topics that do not exist yet are skipped)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **kafka.client_kwargs(),
        group_id=group_id,
        client_id=f"{group_id}-lag-probe",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        # Only the highwater in the fetch response is wanted, not the records.
        max_partition_fetch_bytes=1024,
        fetch_max_bytes=64 * 1024,
    )
    try:
        existing = consumer.topics()
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            if topic in existing
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return GroupLag(group_id, ())
        consumer.assign(partitions)
        committed = {tp: consumer.committed(tp) for tp in partitions}
        for tp, offset in committed.items():
            if offset is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        highwater: dict[TopicPartition, int] = {}
        while True:
            consumer.poll(timeout_ms=200, max_records=1, update_offsets=False)
            for tp in partitions:
                seen = consumer.highwater(tp)
                if seen is not None:
                    highwater[tp] = seen
            if len(highwater) == len(partitions):
                break
            if time.monotonic() > deadline:
                missing = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions if tp not in highwater)
                raise LagUnavailable(f"no highwater from Kafka within {timeout_s:.0f} s for {missing}")
        return GroupLag(
            group_id,
            tuple(
                PartitionLag(tp.topic, tp.partition, committed[tp], highwater[tp])
                for tp in sorted(partitions, key=lambda tp: (tp.topic, tp.partition))
            ),
        )
    finally:
        consumer.close()
