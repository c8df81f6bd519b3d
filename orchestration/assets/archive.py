"""The raw archive (hourly Parquet files of every raw table) and the retention purge, as Dagster assets.

`raw_archive` is partitioned by ingest hour (UTC): a partition writes the rows the loader wrote in
that hour (`loaded_at`) to `<archive>/<table>/dt=YYYY-MM-DD/hour=HH/part.parquet`; re-running it
replaces the files with the same rows (archive/writer.py). `deleted_orders_retention` removes
soft-deleted orders 7 days after deleted_at from the raw and warehouse tables (retention/).
"""

from datetime import UTC, datetime

import dagster as dg
from dagster import AssetExecutionContext

from ingestion.raw_tables import raw_table
from orchestration.assets.ingestion import RAW_TABLE_KEYS, dead_letters
from orchestration.resources import EventhouseResource
from orchestration.translator import raw_table_key
from settings import archive_partitions_start

ARCHIVE_GROUP = "archive"
# end_offset=1: the hour in progress is a partition too, so rows loaded a moment ago can be archived
# at once (the demo does); archiving it again once it has ended replaces its files with the whole hour.
HOURLY_ARCHIVE_PARTITIONS = dg.HourlyPartitionsDefinition(
    start_date=archive_partitions_start(), timezone="UTC", end_offset=1
)


def hour_partition_key(moment: datetime) -> str:
    """The archive partition of the hour a moment falls in."""
    return f"{moment.astimezone(UTC):%Y-%m-%d-%H}:00"


@dg.asset(
    key=dg.AssetKey(["archive", "raw_hourly"]),
    deps=[*RAW_TABLE_KEYS, dead_letters.key],
    partitions_def=HOURLY_ARCHIVE_PARTITIONS,
    group_name=ARCHIVE_GROUP,
    kinds={"clickhouse", "parquet"},
    description="Every raw table's rows loaded in the partition's hour (loaded_at, UTC), as zstd Parquet at "
    "`<archive>/<table>/dt=YYYY-MM-DD/hour=HH/part.parquet` (EVENTHOUSE_ARCHIVE_URL), written by ClickHouse.",
)
def raw_archive(context: AssetExecutionContext, eventhouse: EventhouseResource) -> dg.MaterializeResult:
    from archive.location import ArchiveLocation
    from archive.writer import archive_hour
    from settings import archive_url

    settings = eventhouse.ensure_stack(context.log)
    hour = context.partition_time_window.start
    result = archive_hour(eventhouse.client(), ArchiveLocation(archive_url()), settings.clickhouse.raw_database, hour)
    context.log.info(f"archived {sum(result.rows.values())} rows of {hour:%Y-%m-%d %H}:00 UTC: {result.rows}")
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.json(result.rows),
            "files": dg.MetadataValue.json(result.files),
            "rows_archived": dg.MetadataValue.int(sum(result.rows.values())),
            "seconds": dg.MetadataValue.float(result.seconds),
        }
    )


@dg.asset(
    key=dg.AssetKey(["retention", "deleted_orders"]),
    deps=[raw_table_key(raw_table("orders"))],
    group_name=ARCHIVE_GROUP,
    kinds={"clickhouse"},
    description="Removes soft-deleted orders (every event of each) from the raw and warehouse tables "
    "EVENTHOUSE_DELETED_ORDER_RETENTION_DAYS (7) after their deleted_at.",
)
def deleted_orders_retention(context: AssetExecutionContext, eventhouse: EventhouseResource) -> dg.MaterializeResult:
    from retention.deleted_orders import purge_deleted_orders
    from settings import deleted_order_retention_days, retention_now

    settings = eventhouse.ensure_stack(context.log)
    report = purge_deleted_orders(
        eventhouse.client(),
        settings.clickhouse.raw_database,
        settings.clickhouse.database,
        retention_now(),
        deleted_order_retention_days(),
    )
    context.log.info(f"removed {len(report.orders)} deleted orders: {report.removed}")
    return dg.MaterializeResult(
        metadata={
            "orders_removed": dg.MetadataValue.int(len(report.orders)),
            "rows_removed": dg.MetadataValue.json(report.removed),
        }
    )


ARCHIVE_ASSETS = [raw_archive, deleted_orders_retention]
