"""ClickHouse tables the loader writes: raw events per domain, dead letters, and the batch log.

All are created idempotently (`CREATE ... IF NOT EXISTS`) and declared as dbt sources.

- `raw_<domain>_events`: one row per delivered event, envelope columns typed, payload JSON kept
  whole. ReplacingMergeTree sorted by `event_id` alone, with no partition key: the event id is
  the event's identity, so every delivery of one id collapses to the latest (by `ingested_at`,
  then the last inserted) under FINAL or a merge, even when a producer re-sent it with another
  event type or day. The loader's exactly-once effect means a plain count() counts deliveries.
- `dead_letters`: messages that broke the contract, with topic, partition, offset, raw bytes,
  the reason and when; ReplacingMergeTree on (topic, partition, offset).
- `ingest_batches`: the loader's log, whose DDL lives beside the protocol that writes and reads
  it (ingestion/batch_log.py). The `done` rows say how far each partition is loaded and carry
  the pipeline metrics; an unfinished `started` row tells a restarted loader to redo exactly
  that offset range with the same deduplication tokens.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ingestion.batch_log import ingest_batches_ddl
from ingestion.contract import Envelope
from ingestion.topics import DOMAINS

log = logging.getLogger(__name__)

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


# The raw tables' sorting key: the event's identity (see the module docstring).
RAW_SORTING_KEY = "event_id"


def _raw_ddl(database: str, domain: str, ttl_days: int | None, table: str | None = None) -> str:
    ttl = f"\nTTL toDateTime(ts) + INTERVAL {int(ttl_days)} DAY" if ttl_days else ""
    return f"""
CREATE TABLE IF NOT EXISTS `{database}`.`{table or raw_table(domain)}` (
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
ORDER BY {RAW_SORTING_KEY}{ttl}
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


def _migrate_to_identity_key(client: Any, database: str, domain: str, ttl_days: int | None) -> None:
    """Rebuild a raw table made before event_id alone was the sorting key (a one-time copy).

    The rows are copied into a new table, which then takes the old one's name (EXCHANGE), so
    materialized views reading the table by name keep working and see no insert: the copy goes
    into the new table while it has another name. Run it with no loader writing this domain.
    """
    table = raw_table(domain)
    staging = f"{table}__identity_migration"
    key = client.command(
        "SELECT sorting_key FROM system.tables WHERE database = {db:String} AND name = {table:String}",
        parameters={"db": database, "table": table},
    )
    if not key or key == RAW_SORTING_KEY:
        return
    log.warning("%s.%s is sorted by (%s): rebuilding it sorted by event_id (one-time)", database, table, key)
    client.command(f"DROP TABLE IF EXISTS `{database}`.`{staging}`")
    client.command(_raw_ddl(database, domain, ttl_days, table=staging))
    columns = ", ".join(f"`{name}`" for name in (*RAW_COLUMNS, "loaded_at"))
    # optimize_on_insert=0: every delivery is copied; the new key collapses them under FINAL or a merge.
    client.command(
        f"INSERT INTO `{database}`.`{staging}` ({columns}) SELECT {columns} FROM `{database}`.`{table}` "
        "SETTINGS optimize_on_insert = 0"
    )
    client.command(f"EXCHANGE TABLES `{database}`.`{table}` AND `{database}`.`{staging}`")
    client.command(f"DROP TABLE `{database}`.`{staging}`")


def ensure_tables(client: Any, database: str, ttl_days: int | None = None) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    for domain in DOMAINS:
        _migrate_to_identity_key(client, database, domain, ttl_days)
        client.command(_raw_ddl(database, domain, ttl_days))
    client.command(_dead_letters_ddl(database))
    client.command(ingest_batches_ddl(database))
