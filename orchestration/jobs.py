"""Jobs: ingestion, the dbt build, the hourly refresh of everything, and the daily partitions batch."""

import dagster as dg

from orchestration.assets.alerting import alerts
from orchestration.assets.archive import deleted_orders_retention, raw_archive
from orchestration.assets.dbt import DAILY_DBT_ASSETS, DBT_ASSETS
from orchestration.assets.ingestion import RAW_TABLE_KEYS, dead_letters, kafka_topics

RAW_TABLES = dg.AssetSelection.assets(*RAW_TABLE_KEYS)
OBSERVED_SOURCES = (
    dg.AssetSelection.assets(kafka_topics)
    | dg.AssetSelection.assets(dead_letters.key)
    | dg.AssetSelection.assets(alerts)
)
# Every dbt model, seed and snapshot; the day-partitioned marts among them.
DBT = dg.AssetSelection.assets(*DBT_ASSETS)
DAILY_MARTS = dg.AssetSelection.assets(*DAILY_DBT_ASSETS)
# The daily marts and what reads them (KPI anomalies, data quality, the anomaly fact).
DAILY_MARTS_AND_DOWNSTREAM = DAILY_MARTS.downstream()

ingestion_job = dg.define_asset_job(
    "ingestion",
    selection=RAW_TABLES,
    description="Load whatever waits in Kafka into the raw tables (each domain until caught up).",
)

# dbt only (the raw tables as they are); a partition range recomputes those days of the daily marts.
build_warehouse_job = dg.define_asset_job(
    "build_warehouse",
    selection=DBT,
    description="dbt build of every model, snapshot and seed; the daily marts for the run's day(s).",
)

# The hourly run also rebuilds today's partition of the daily marts, so today's KPIs stay current.
hourly_job = dg.define_asset_job(
    "hourly_refresh",
    selection=RAW_TABLES | DBT,
    description="Ingestion, the incremental warehouse build and today's partition of the daily marts.",
)

# 3 retries 5 minutes apart, as the reference daily batch does.
DAILY_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=300)

daily_job = dg.define_asset_job(
    "daily_partitions",
    selection=DAILY_MARTS_AND_DOWNSTREAM,
    op_retry_policy=DAILY_RETRY_POLICY,
    description="The previous day's partition of every daily mart, then what reads them; a backfill of a "
    "range of days runs as one dbt invocation.",
)

observe_sources_job = dg.define_asset_job(
    "observe_sources",
    selection=OBSERVED_SOURCES,
    description="Observe the Kafka topics (messages, loader lag), the dead letters and the published alerts.",
)

# One ingest hour of every raw table to Parquet (the partition: a UTC hour).
archive_job = dg.define_asset_job(
    "archive_raw",
    selection=dg.AssetSelection.assets(raw_archive),
    partitions_def=raw_archive.partitions_def,
    description="Write the partition's ingest hour of every raw table to the Parquet archive.",
)

retention_job = dg.define_asset_job(
    "retention",
    selection=dg.AssetSelection.assets(deleted_orders_retention),
    description="Remove soft-deleted orders 7 days after deleted_at from the raw and warehouse tables.",
)

JOBS = [ingestion_job, build_warehouse_job, hourly_job, daily_job, observe_sources_job, archive_job, retention_job]
