"""ClickHouse tables the loader writes: raw events per domain, dead letters, and the batch log.

All are created idempotently (`CREATE ... IF NOT EXISTS`) and declared as dbt sources.

- `raw_<domain>_events`: one row per delivered event, envelope columns typed, payload JSON kept
  whole. ReplacingMergeTree on the event's identity so a re-delivered event collapses on merge;
  the loader's exactly-once effect means a plain count() is already exact.
- `dead_letters`: messages that broke the contract, with topic, partition, offset, raw bytes,
  the reason and when; ReplacingMergeTree on (topic, partition, offset).
- `ingest_batches`: the loader's log. A `started` row before a batch's inserts and a `done`
  row after them: the `done` rows say how far each partition is loaded (resume point) and
  carry the pipeline metrics; an unfinished `started` row tells a restarted loader to redo
  exactly that offset range with the same deduplication tokens.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingestion.contract import Envelope
from ingestion.topics import DOMAINS

# Keep the last N insert tokens per table so a retried insert is recognised.
DEDUP_WINDOW = 10_000

RAW_COLUMNS = (
    "event_id",
    "event_type",
    "schema_version",
    "user_id",
    "session_id",
    "source_service",
    "source_host",
    "ts",
    "ingested_at",
    "sequence",
    "dedupe_key",
    "payload",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_topic_id",
)

DEAD_LETTER_COLUMNS = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_topic_id",
    "kafka_key",
    "raw_value",
    "error",
    "failed_at",
)


def encode_raw_row(
    envelope: Envelope, ingested_at: str, topic: str, partition: int, offset: int, topic_id: str
) -> bytes:
    """One JSONEachRow line of a raw table (RAW_COLUMNS), from a validated envelope.

    The payload stays an object: ClickHouse stores its JSON text in the String column when the
    insert sets `input_format_json_read_objects_as_strings`, which saves a second encoding.
    """
    return orjson.dumps(
        {
            "event_id": envelope.event_id,
            "event_type": envelope.event_type,
            "schema_version": envelope.schema_version,
            "user_id": envelope.user_id,
            "session_id": envelope.session_id,
            "source_service": envelope.source_service,
            "source_host": envelope.source_host,
            "ts": envelope.ts_text,
            "ingested_at": ingested_at,
            "sequence": envelope.sequence,
            "dedupe_key": envelope.dedupe_key,
            "payload": envelope.payload,
            "kafka_topic": topic,
            "kafka_partition": partition,
            "kafka_offset": offset,
            "kafka_topic_id": topic_id,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def raw_table(domain: str) -> str:
    return f"raw_{domain}_events"


def _raw_ddl(database: str, domain: str, ttl_days: int | None) -> str:
    ttl = f"\nTTL toDateTime(ts) + INTERVAL {int(ttl_days)} DAY" if ttl_days else ""
    return f"""
CREATE TABLE IF NOT EXISTS `{database}`.`{raw_table(domain)}` (
    event_id String,
    event_type LowCardinality(String),
    schema_version UInt16,
    user_id Nullable(String),
    session_id Nullable(String),
    source_service LowCardinality(String),
    source_host LowCardinality(String),
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    ingested_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    loaded_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1)),
    sequence Nullable(UInt64),
    dedupe_key String,
    payload String CODEC(ZSTD(3)),
    kafka_topic LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset UInt64 CODEC(Delta, ZSTD(1)),
    kafka_topic_id LowCardinality(String)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (event_type, toDate(ts), event_id){ttl}
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""


def _dead_letters_ddl(database: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS `{database}`.`dead_letters` (
    kafka_topic LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset UInt64,
    kafka_topic_id LowCardinality(String),
    kafka_key Nullable(String),
    raw_value String CODEC(ZSTD(3)),
    error String,
    failed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(failed_at)
PARTITION BY toYYYYMM(failed_at)
ORDER BY (kafka_topic, kafka_topic_id, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""


def _ingest_batches_ddl(database: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS `{database}`.`ingest_batches` (
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


def ensure_tables(client: Any, database: str, ttl_days: int | None = None) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    for domain in DOMAINS:
        client.command(_raw_ddl(database, domain, ttl_days))
    client.command(_dead_letters_ddl(database))
    client.command(_ingest_batches_ddl(database))
