"""Ingestion assets: Kafka topics (observed), one raw table per domain filled by the loader, and the
CDC tables (the orders service's users, products and leaderboard, copied from PostgreSQL).

A raw-table materialization runs the exactly-once loader for that domain's topics until it has
caught up with what was in Kafka when it started (or a time limit), and records what it did.
"""

import dagster as dg
from dagster import AssetExecutionContext

from ingestion.cdc_tables import CDC_TABLES, cdc_topics
from ingestion.lag import group_lag
from ingestion.raw_tables import raw_table
from ingestion.topics import DOMAINS, TOPICS, topics_for_domains
from orchestration.resources import EventhouseResource
from orchestration.translator import raw_table_key
from settings import DEFAULT_LOADER_GROUP_ID

KAFKA_GROUP = "kafka"
INGESTION_GROUP = "ingestion"
# Each domain's loader is its own consumer group, so runs of different raw tables never rebalance
# each other; resume positions live in ClickHouse's batch log, not in the group. (The pipeline alerts'
# lag check knows these names: alerting/pipeline.py, measure_lag.)
LOADER_GROUP_PREFIX = DEFAULT_LOADER_GROUP_ID


def loader_group(domain: str) -> str:
    return f"{LOADER_GROUP_PREFIX}-{domain}"


def topic_key(topic: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topic])


TOPIC_SPECS = [
    dg.AssetSpec(
        key=topic_key(spec.name),
        description=f"Kafka topic `{spec.name}` ({spec.domain} events, keyed by {spec.key_field}, "
        f"{spec.partitions} partitions); bad messages go to `{spec.dlq}`.",
        group_name=KAFKA_GROUP,
        kinds={"kafka"},
    )
    for spec in TOPICS
] + [
    dg.AssetSpec(
        key=topic_key(spec.name),
        description=f"Kafka topic `{spec.name}`: Debezium-shaped change events of the PostgreSQL table "
        f"`{spec.name.split('.', 1)[1]}`, published by `eventhouse cdc` from a logical replication slot.",
        group_name=KAFKA_GROUP,
        kinds={"kafka", "postgres"},
    )
    for spec in cdc_topics()
]


@dg.multi_observable_source_asset(specs=TOPIC_SPECS, name="kafka_topics", can_subset=False)
def kafka_topics(context: AssetExecutionContext, eventhouse: EventhouseResource):
    """Observe every topic's size (sum of partition highwaters) and the loader groups' lag on it."""
    settings = eventhouse.ensure_stack(context.log)
    topics = [spec.name for spec in TOPICS] + [spec.name for spec in cdc_topics()]
    lag_by_topic: dict[str, int] = {}
    highwater: dict[str, int] = {}
    groups = [(loader_group(domain), [s.name for s in topics_for_domains([domain])]) for domain in DOMAINS]
    groups.append((loader_group(CDC_LOADER), [s.name for s in cdc_topics()]))
    for group, group_topics in groups:
        lag = group_lag(settings.kafka, group, group_topics)
        lag_by_topic.update(lag.by_topic())
        highwater.update(lag.highwater_by_topic())
    for topic in topics:
        yield dg.ObserveResult(
            asset_key=topic_key(topic),
            data_version=dg.DataVersion(str(highwater.get(topic, 0))),
            metadata={
                "messages": dg.MetadataValue.int(highwater.get(topic, 0)),
                "loader_lag": dg.MetadataValue.int(lag_by_topic.get(topic, 0)),
            },
        )


@dg.observable_source_asset(
    key=raw_table_key("dead_letters"),
    group_name=INGESTION_GROUP,
    description="Messages the loader could not accept, with the reason (written by every raw-table run; "
    "also published to `<topic>.dlq`).",
)
def dead_letters(context, eventhouse: EventhouseResource) -> dg.ObserveResult:
    settings = eventhouse.ensure_stack(context.log)
    rows = (
        eventhouse.client()
        .query(
            f"SELECT kafka_topic, error, count() FROM `{settings.clickhouse.raw_database}`.dead_letters "
            "GROUP BY kafka_topic, error ORDER BY count() DESC LIMIT 20"
        )
        .result_rows
    )
    total = sum(int(r[2]) for r in rows)
    return dg.ObserveResult(
        data_version=dg.DataVersion(str(total)),
        metadata={
            "dead_letters": dg.MetadataValue.int(total),
            "top_reasons": dg.MetadataValue.md(
                "\n".join(f"- `{topic}`: {reason} ({n})" for topic, reason, n in rows) or "none"
            ),
        },
    )


class LoaderRunConfig(dg.Config):
    """Bounds of one loader run (a materialization never runs forever)."""

    max_seconds: float = 600.0
    batch_rows: int = 5000


def _raw_table_asset(domain: str) -> dg.AssetsDefinition:
    table = raw_table(domain)
    topics = [spec.name for spec in topics_for_domains([domain])]

    @dg.asset(
        key=raw_table_key(table),
        deps=[topic_key(t) for t in topics],
        group_name=INGESTION_GROUP,
        kinds={"clickhouse", "kafka"},
        description=f"Raw {domain} events in ClickHouse (`{table}`), loaded exactly once from "
        f"{', '.join(f'`{t}`' for t in topics)} by the eventhouse loader; bad messages become dead letters.",
        op_tags={"eventhouse/domain": domain},
    )
    def load_raw_table(
        context: AssetExecutionContext, eventhouse: EventhouseResource, config: LoaderRunConfig
    ) -> dg.MaterializeResult:
        from ingestion.loader import Loader, LoaderConfig

        settings = eventhouse.ensure_stack(context.log)
        loader_config = LoaderConfig(
            domains=(domain,),
            group_id=loader_group(domain),
            raw_database=settings.clickhouse.raw_database,
            until_caught_up=True,
            max_seconds=config.max_seconds,
            batch_rows=config.batch_rows,
            session_timeout_ms=settings.kafka.session_timeout_ms,
        )
        context.log.info(f"loading {', '.join(topics)} into {settings.clickhouse.raw_database}.{table}")
        stats = Loader(settings, loader_config).run()
        summary = stats.summary()
        remaining_lag = sum(stats.lag.values())
        if remaining_lag:
            context.log.warning(
                f"stopped after {config.max_seconds:.0f} s with {remaining_lag} messages still to load; "
                "the next run continues from there"
            )
        total_rows = eventhouse.client().command(f"SELECT count() FROM `{settings.clickhouse.raw_database}`.`{table}`")
        return dg.MaterializeResult(
            metadata={
                "rows_loaded": dg.MetadataValue.int(summary["rows_loaded"]),
                "dead_letters": dg.MetadataValue.int(summary["dead_letters"]),
                "duplicates_collapsed": dg.MetadataValue.int(summary["duplicates_collapsed"]),
                "messages_read": dg.MetadataValue.int(summary["messages"]),
                "throughput_rows_per_s": dg.MetadataValue.float(float(summary["rows_per_s"])),
                "elapsed_s": dg.MetadataValue.float(float(summary["elapsed_s"])),
                "remaining_lag": dg.MetadataValue.int(remaining_lag),
                "lag_by_partition": dg.MetadataValue.json(summary["lag"]),
                "insert_ms_p95": dg.MetadataValue.float(float(summary["insert_ms_p95"] or 0.0)),
                # rows ClickHouse refused despite the contract (dead-lettered), DLQ copies not yet published
                "rows_rejected_by_clickhouse": dg.MetadataValue.int(summary["rows_rejected_by_clickhouse"]),
                "dlq_copies_pending": dg.MetadataValue.int(summary["dlq_copies_pending"]),
                "dagster/row_count": dg.MetadataValue.int(int(total_rows)),
            }
        )

    return load_raw_table


# the CDC tables' loader: a consumer group of its own, like each domain's
CDC_LOADER = "cdc"


@dg.multi_asset(
    name="cdc_tables",
    specs=[
        dg.AssetSpec(
            key=raw_table_key(table.clickhouse_table),
            deps=[topic_key(table.topic)],
            group_name=INGESTION_GROUP,
            kinds={"clickhouse", "kafka"},
            description=f"Every change of PostgreSQL's `{table.schema}.{table.table}` (ReplacingMergeTree "
            f"by WAL position, deletes flagged), loaded exactly once from `{table.topic}` by the eventhouse "
            "loader; `stg_oltp__*` keep the current rows.",
        )
        for table in CDC_TABLES
    ],
    op_tags={"eventhouse/domain": CDC_LOADER},
    # a job that selects one of them (a dbt model's upstream) loads all three topics, reports the one
    can_subset=True,
)
def cdc_tables(context: AssetExecutionContext, eventhouse: EventhouseResource, config: LoaderRunConfig):
    """Load the CDC topics into the cdc_<table> tables (what `eventhouse cdc` published from the slot)."""
    from ingestion.loader import Loader, LoaderConfig

    settings = eventhouse.ensure_stack(context.log)
    loader_config = LoaderConfig(
        domains=(),
        cdc=True,
        group_id=loader_group(CDC_LOADER),
        raw_database=settings.clickhouse.raw_database,
        until_caught_up=True,
        max_seconds=config.max_seconds,
        batch_rows=config.batch_rows,
        session_timeout_ms=settings.kafka.session_timeout_ms,
    )
    stats = Loader(settings, loader_config).run()
    summary = stats.summary()
    client = eventhouse.client()
    for table in CDC_TABLES:
        if raw_table_key(table.clickhouse_table) not in context.selected_asset_keys:
            continue
        name = f"`{settings.clickhouse.raw_database}`.`{table.clickhouse_table}`"
        yield dg.MaterializeResult(
            asset_key=raw_table_key(table.clickhouse_table),
            metadata={
                "changes_loaded_this_run": dg.MetadataValue.int(summary["rows_loaded"]),
                "dead_letters": dg.MetadataValue.int(summary["dead_letters"]),
                "dagster/row_count": dg.MetadataValue.int(int(client.command(f"SELECT count() FROM {name}"))),
            },
        )


RAW_TABLE_ASSETS = [*(_raw_table_asset(domain) for domain in DOMAINS), cdc_tables]
EVENT_RAW_TABLE_KEYS = [raw_table_key(raw_table(domain)) for domain in DOMAINS]
# CDC tables hold state: no freshness check (an unchanged catalog loads nothing, and that is fine)
RAW_TABLE_KEYS = EVENT_RAW_TABLE_KEYS + [raw_table_key(table.clickhouse_table) for table in CDC_TABLES]
