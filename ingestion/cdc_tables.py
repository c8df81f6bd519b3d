"""CDC topics and their ClickHouse tables: the OLTP dimension tables as Debezium-style change events.

`eventhouse cdc` (oltp/cdc.py) publishes each change of a PostgreSQL table `<schema>.<table>` to
the topic `cdc.<schema>.<table>` (the prefix is EVENTHOUSE_CDC_TOPIC_PREFIX); the loader lands it
in `<raw database>.cdc_<table>`, one row per change event:

- the table's primary key columns (String; the ORDER BY, so every change of one row collapses);
- `row_json`: the row as JSON (`after`, or `before` for a delete), `op` (c/u/d/r, t for a truncate);
- `lsn`: the change's position in PostgreSQL's WAL (a snapshot row carries the slot's creation
  LSN), the ReplacingMergeTree version: a change re-sent after a crash has the same LSN and
  collapses with its first copy, and a later change of the row always has a larger one;
- `is_deleted`: 1 for deletes, so `FINAL` drops the row (`ReplacingMergeTree(lsn, is_deleted)`);
- `source_ts` (the commit time), `tx_id`, the Kafka coordinates, `loaded_at` (ingest time).

A truncate has no rows to name: it is one row with empty key columns and op `t`; staging drops
every row whose LSN is below the table's latest truncate. CDC tables hold state, not events, so
they get no TTL: an unchanged user must not expire 400 days after it was copied.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingestion.topics import TopicSpec
from settings import cdc_topic_prefix

CDC_DOMAIN = "cdc"  # the loader's PartitionState.domain for CDC topics (not an event domain)


@dataclass(frozen=True)
class CdcTable:
    """A PostgreSQL table copied by CDC: where its changes travel and land."""

    schema: str
    table: str
    key_columns: tuple[str, ...]

    @property
    def topic(self) -> str:
        # Debezium's topic.prefix (EVENTHOUSE_CDC_TOPIC_PREFIX, default `cdc`): read when asked, so a
        # process (a test) can point the capture and the loader at topics of its own
        return self.topic_in(cdc_topic_prefix())

    def topic_in(self, prefix: str) -> str:
        return f"{prefix}.{self.schema}.{self.table}"

    @property
    def clickhouse_table(self) -> str:
        return f"cdc_{self.table}"

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the loader inserts (JSONEachRow)."""
        return (*self.key_columns, *CDC_VALUE_COLUMNS)

    @property
    def topic_spec(self) -> TopicSpec:
        return self.topic_spec_in(cdc_topic_prefix())

    def topic_spec_in(self, prefix: str) -> TopicSpec:
        # One partition keeps each table's changes in commit order on the topic as well (the
        # version makes the order irrelevant to the result, but a reader of the topic sees it).
        return TopicSpec(self.topic_in(prefix), CDC_DOMAIN, "key", partitions=1)


# The tables in the publication (oltp/migrations.py CDC_TABLES) with their primary keys.
CDC_TABLES: tuple[CdcTable, ...] = (
    CdcTable("public", "users", ("user_id",)),
    CdcTable("public", "products", ("product_id",)),
    CdcTable("public", "leaderboard", ("user_id", "stage_id")),
)

CDC_VALUE_COLUMNS = (
    "row_json",
    "op",
    "lsn",
    "is_deleted",
    "source_ts",
    "tx_id",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_topic_id",
)


def cdc_topics() -> list[TopicSpec]:
    return [table.topic_spec for table in CDC_TABLES]


def cdc_table_for_topic(topic: str) -> CdcTable | None:
    return next((table for table in CDC_TABLES if table.topic == topic), None)


def cdc_ddl(database: str, table: CdcTable) -> str:
    from ingestion.raw_tables import DEDUP_WINDOW

    keys = ",\n    ".join(f"`{column}` String" for column in table.key_columns)
    order_by = ", ".join(f"`{column}`" for column in table.key_columns)
    return f"""
CREATE TABLE IF NOT EXISTS `{database}`.`{table.clickhouse_table}` (
    {keys},
    row_json String CODEC(ZSTD(3)),
    op LowCardinality(String),
    lsn UInt64,
    is_deleted UInt8,
    source_ts DateTime64(3, 'UTC'),
    tx_id Nullable(UInt64),
    kafka_topic LowCardinality(String),
    kafka_partition UInt16,
    kafka_offset UInt64,
    kafka_topic_id LowCardinality(String),
    loaded_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(lsn, is_deleted)
ORDER BY ({order_by})
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""
