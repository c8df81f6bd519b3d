"""The batch log (`ingest_batches`): how the loader's effect is exactly-once.

How nothing is lost or counted twice:

1. Messages are validated one by one; a bad one becomes a dead letter (to `<topic>.dlq` and
   the `dead_letters` table, with the reason) and never stops its neighbours. A message that
   fails at any step (decode, validate, wrong topic, encode) is a dead letter, and a row
   ClickHouse refuses is isolated from its batch and dead-lettered too; the batch state only
   ever holds fully encoded rows, so a range is never logged `done` without its rows
   (ingestion/partition_ranges.py, ingestion/batch_writer.py).
2. A batch is flushed per partition as a contiguous offset range [first, last]. Before its
   inserts the loader records a `started` row in `ingest_batches`; each insert carries
   `insert_deduplication_token = topic:partition:first-last@topic_id`; after them a `done` row.
3. Only then are the Kafka offsets committed (ingestion/loader.py). A crash anywhere before
   that leaves the committed offset behind ClickHouse's `done` rows, so on assignment the
   loader resumes after the last `done` range (`resume_point`), and redoes an unfinished
   `started` range with exactly the same boundaries and tokens, so ClickHouse drops whatever
   part of it had landed. A range being redone is written only whole, never in part
   (`PartitionState.ready_to_seal`): a part would carry other tokens.
4. ClickHouse errors are retried with backoff; nothing is committed or dropped meanwhile. A
   time limit (`max_seconds`) or a stop request ends the retries too: the loader then exits
   with an error and the unfinished range is redone by the next run (ingestion/retries.py).

Resume positions are keyed by Kafka cluster id and topic id: the embedded broker keeps data
in memory, so after it restarts its offsets start again at 0 under a new cluster id, and the
loader neither skips the new data nor takes it for data already loaded.

This module holds the table's DDL, the rows the loader writes to it, and the resume decision
read back from it; the decision is a pure function of the logged ranges and the committed
offset, so it is unit-tested without Kafka or ClickHouse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingestion.partition_ranges import Batch

BATCH_LOG_TABLE = "ingest_batches"

BATCH_LOG_COLUMNS = (
    "batch_id",
    "state",
    "loader_id",
    "kafka_cluster_id",
    "kafka_topic",
    "kafka_topic_id",
    "kafka_partition",
    "first_offset",
    "last_offset",
    "rows_loaded",
    "dead_letters",
    "bytes_consumed",
    "insert_ms",
    "batch_started_at",
    "max_event_lag_ms",
    "partition_lag",
)


def ingest_batches_ddl(database: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS `{database}`.`{BATCH_LOG_TABLE}` (
    batch_id String,
    state Enum8('started' = 1, 'done' = 2),
    loader_id String,
    kafka_cluster_id String,
    kafka_topic LowCardinality(String),
    kafka_topic_id String,
    kafka_partition UInt16,
    first_offset UInt64,
    last_offset UInt64,
    rows_loaded UInt32,
    dead_letters UInt32,
    bytes_consumed UInt64,
    insert_ms Float32,
    batch_started_at DateTime64(3, 'UTC'),
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3),
    max_event_lag_ms Float64,
    partition_lag UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(recorded_at)
ORDER BY (kafka_cluster_id, kafka_topic, kafka_topic_id, kafka_partition, last_offset, state)
"""


def batch_log_rows(
    batch: Batch, state: str, loader_id: str, cluster_id: str, lag: Mapping[str, int]
) -> list[list[Any]]:
    """The `started` or `done` rows (BATCH_LOG_COLUMNS) of a batch: one per partition range."""
    return [
        [
            batch.batch_id,
            state,
            loader_id,
            cluster_id,
            c.topic,
            c.topic_id,
            c.partition,
            c.first_offset,
            c.last_offset,
            c.row_count,
            len(c.dead),
            c.nbytes,
            c.insert_ms,
            batch.started_at,
            c.max_event_lag_ms,
            lag.get(f"{c.topic}[{c.partition}]", 0),
        ]
        for c in batch.chunks
    ]


# ---- reading it back: where a newly assigned partition resumes ---------------------------------


@dataclass(frozen=True)
class LoggedRange:
    """One offset range of one partition as the batch log records it (a `started` or `done` row)."""

    batch_id: str
    first_offset: int
    last_offset: int


@dataclass(frozen=True)
class PartitionProgress:
    """What the batch log says of one partition."""

    done_last: int | None  # the last offset of the furthest `done` range; None: nothing done
    unfinished: tuple[int, int] | None  # the earliest range `started` after it and never `done`


def partition_progress(started: Iterable[LoggedRange], done: Iterable[LoggedRange]) -> PartitionProgress:
    """Fold one partition's `started` and `done` rows into how far it is loaded.

    A range is finished when its batch logged `done`. A `started` range at or below the
    furthest `done` offset was redone by a later run (with another batch id) before that run
    went on, so only unfinished ranges beyond it count; the earliest of them is redone first.
    """
    done = list(done)
    done_ids = {r.batch_id for r in done}
    done_last = max((r.last_offset for r in done), default=None)
    unfinished = sorted(
        (r.first_offset, r.last_offset)
        for r in started
        if r.batch_id not in done_ids and (done_last is None or r.first_offset > done_last)
    )
    return PartitionProgress(done_last, unfinished[0] if unfinished else None)


NOTHING_LOGGED = PartitionProgress(None, None)


@dataclass(frozen=True)
class ResumePoint:
    seek_to: int | None  # the next offset to read; None: nothing committed or loaded, read from the start
    redo_until: int | None = None  # an unfinished range is being redone: the first range ends exactly here


def resume_point(committed: int | None, progress: PartitionProgress) -> ResumePoint:
    """Where a newly assigned partition is read from, given its committed Kafka offset.

    ClickHouse's `done` rows win over a committed offset behind them (the loader stopped
    between logging `done` and committing). An unfinished range at or after that point is
    read again from its first offset and closed at exactly its last one, so its rows get the
    same deduplication tokens as the first attempt.
    """
    position = committed
    if progress.done_last is not None and (position is None or progress.done_last + 1 > position):
        position = progress.done_last + 1
    if progress.unfinished is not None and (position is None or progress.unfinished[0] >= position):
        first, last = progress.unfinished
        return ResumePoint(first, last)
    return ResumePoint(position)


def read_progress(
    client: Any, database: str, cluster_id: str, topic_ids: Mapping[tuple[str, int], str]
) -> dict[tuple[str, int], PartitionProgress]:
    """The progress of these partitions ((topic, partition) -> topic id) under this Kafka cluster."""
    rows = client.query(
        f"""
        SELECT kafka_topic, kafka_partition, kafka_topic_id,
               groupArrayIf((batch_id, first_offset, last_offset), state = 'started') AS started,
               groupArrayIf((batch_id, first_offset, last_offset), state = 'done') AS done
        FROM `{database}`.{BATCH_LOG_TABLE}
        WHERE kafka_cluster_id = {{cluster:String}} AND kafka_topic IN {{topics:Array(String)}}
        GROUP BY kafka_topic, kafka_partition, kafka_topic_id
        """,
        parameters={"cluster": cluster_id, "topics": sorted({topic for topic, _ in topic_ids})},
    ).result_rows
    progress: dict[tuple[str, int], PartitionProgress] = {}
    for topic, partition, topic_id, started, done in rows:
        if topic_ids.get((topic, partition)) != topic_id:
            continue  # another incarnation of the topic
        progress[(topic, partition)] = partition_progress(
            (LoggedRange(b, int(f), int(last)) for b, f, last in started),
            (LoggedRange(b, int(f), int(last)) for b, f, last in done),
        )
    return progress
