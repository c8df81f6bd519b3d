"""ClickHouse tables the loader writes: raw events per domain, dead letters, and the batch log.

All are created idempotently (`CREATE ... IF NOT EXISTS`) and declared as dbt sources.

- `raw_<domain>_events`: one row per delivered event, envelope columns typed, payload JSON kept
  whole. ReplacingMergeTree sorted by `event_id` alone, with no partition key: the event id is
  the event's identity, so every delivery of one id collapses to the latest (by `ingested_at`,
  then the last inserted) under FINAL or a merge, even when a producer re-sent it with another
  event type or day. The loader's exactly-once effect means a plain count() counts deliveries.
- `dead_letters`: messages that broke the contract, with topic, partition, offset, raw bytes,
  the reason and when; ReplacingMergeTree on (topic, partition, offset). Its `loaded_at` is
  when the loader wrote it (by default `failed_at`, the loader's clock as it refused the message).
- `ingest_batches`: the loader's log, whose DDL lives beside the protocol that writes and reads
  it (ingestion/batch_log.py). The `done` rows say how far each partition is loaded and carry
  the pipeline metrics; an unfinished `started` row tells a restarted loader to redo exactly
  that offset range with the same deduplication tokens.

The event tables and `dead_letters` have `loaded_at`, the ingest time: their TTL counts from it
(`EVENTHOUSE_RAW_TTL_DAYS`, default 400 days; settings/__init__.py), so history replayed today
is not deleted on arrival, and the raw archive files each row under its `loaded_at` hour.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson

from ingestion.batch_log import ingest_batches_ddl
from ingestion.cluster_ddl import for_cluster
from ingestion.contract import Envelope
from ingestion.topics import DOMAINS
from settings import clickhouse_cluster, raw_ttl_days

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


# The loader's log is not raw data: it is neither archived nor expired with the raw tables.
NOT_RAW_DATA = frozenset({"ingest_batches"})


def ttl_expression(ttl_days: int | None) -> str | None:
    """The TTL of a raw table as ClickHouse prints it in engine_full: from ingest time (`loaded_at`)."""
    return f"toDateTime(loaded_at) + toIntervalDay({int(ttl_days)})" if ttl_days else None


def _ttl_clause(ttl_days: int | None) -> str:
    expression = ttl_expression(ttl_days)
    return f"\nTTL {expression}" if expression else ""


def _raw_ddl(database: str, domain: str, ttl_days: int | None, table: str | None = None) -> str:
    ttl = _ttl_clause(ttl_days)
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


def _dead_letters_ddl(database: str, ttl_days: int | None) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS `{database}`.`dead_letters` (
    kafka_topic LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset UInt64,
    kafka_topic_id LowCardinality(String),
    kafka_key Nullable(String),
    raw_value String CODEC(ZSTD(3)),
    error String,
    failed_at DateTime64(3, 'UTC'),
    {_DEAD_LETTERS_LOADED_AT}
)
ENGINE = ReplacingMergeTree(failed_at)
PARTITION BY toYYYYMM(failed_at)
ORDER BY (kafka_topic, kafka_topic_id, kafka_partition, kafka_offset){_ttl_clause(ttl_days)}
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""


# The loader sets failed_at when it refuses a message, which is when it writes the dead letter: a
# default that needs no change to the loader, and stable for rows written before the column existed
# (a `now64()` default added by ALTER would be evaluated anew on every read of the old parts).
_DEAD_LETTERS_LOADED_AT = "loaded_at DateTime64(3, 'UTC') DEFAULT failed_at"


def _engine_full(client: Any, database: str, table: str) -> str:
    return str(
        client.command(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {table:String}",
            parameters={"db": database, "table": table},
        )
        or ""
    )


def current_ttl(engine_full: str) -> str | None:
    """The table TTL in a system.tables engine_full (None when the table has none)."""
    match = re.search(r"\bTTL (.+?)(?: SETTINGS |$)", engine_full)
    return match.group(1).strip() if match else None


def ttl_statement(database: str, table: str, ttl_days: int | None) -> str:
    wanted = ttl_expression(ttl_days)
    if wanted is None:
        return f"ALTER TABLE `{database}`.`{table}` REMOVE TTL"
    return f"ALTER TABLE `{database}`.`{table}` MODIFY TTL {wanted}"


def ensure_ttl(client: Any, database: str, table: str, ttl_days: int | None, cluster: str | None = None) -> bool:
    """Give an existing table the TTL wanted (MODIFY or REMOVE TTL) when it differs; True if changed.

    Idempotent: a table that already has it is left alone (no mutation is started)."""
    wanted = ttl_expression(ttl_days)
    if current_ttl(_engine_full(client, database, table)) == wanted:
        return False
    client.command(for_cluster(ttl_statement(database, table, ttl_days), cluster))
    log.info("%s.%s: TTL now %s", database, table, wanted or "none")
    return True


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


def _ttl_days(table: str, override: int | None) -> int | None:
    """The loader's --ttl-days when given, else the table's configured TTL."""
    return override if override is not None else raw_ttl_days(table)


def create_statements(database: str, ttl_days: int | None = None, cluster: str | None = None) -> list[str]:
    """Every statement that creates the loader's database and tables (as `ensure_tables` runs them),
    for `cluster` when given (ingestion/cluster_ddl.py)."""
    from ingestion.cdc_tables import CDC_TABLES, cdc_ddl

    statements = [f"CREATE DATABASE IF NOT EXISTS `{database}`"]
    for domain in DOMAINS:
        days = _ttl_days(raw_table(domain), ttl_days)
        statements.append(_raw_ddl(database, domain, days))
    days = _ttl_days("dead_letters", ttl_days)
    statements.append(_dead_letters_ddl(database, days))
    statements.append(f"ALTER TABLE `{database}`.`dead_letters` ADD COLUMN IF NOT EXISTS {_DEAD_LETTERS_LOADED_AT}")
    statements.append(ingest_batches_ddl(database))
    # CDC tables (ingestion/cdc_tables.py): state copied from PostgreSQL, without a TTL.
    statements.extend(cdc_ddl(database, table) for table in CDC_TABLES)
    return [for_cluster(statement, cluster) for statement in statements]


def ensure_tables(client: Any, database: str, ttl_days: int | None = None, cluster: str | None = None) -> None:
    """Create the raw tables that do not exist and bring their TTL to the configured one.

    `ttl_days` (the loader's `--ttl-days`) overrides every raw table's TTL; without it each table's
    comes from EVENTHOUSE_RAW_TTL_DAYS[_<TABLE>] (default 400 days from `loaded_at`). On a cluster
    (`cluster`, default EVENTHOUSE_CLICKHOUSE_CLUSTER) every statement runs ON CLUSTER with
    Replicated* engines."""
    cluster = cluster if cluster is not None else clickhouse_cluster()
    statements = create_statements(database, ttl_days, cluster)
    client.command(statements[0])  # the database
    if not cluster:
        # a one-time rebuild of raw tables made before the current sorting key, on one server only
        for domain in DOMAINS:
            days = _ttl_days(raw_table(domain), ttl_days)
            _migrate_to_identity_key(client, database, domain, days)
    for statement in statements[1:]:
        client.command(statement)
    for table in [*(raw_table(domain) for domain in DOMAINS), "dead_letters"]:
        days = _ttl_days(table, ttl_days)
        ensure_ttl(client, database, table, days, cluster)
