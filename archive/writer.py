"""Archive an hour: each raw table's rows loaded in that hour, as one zstd Parquet file per table.

ClickHouse writes the files itself (`INSERT INTO FUNCTION file(...)` / `s3(...)`), so no row
passes through Python. `engine_file_truncate_on_insert` (and `s3_truncate_on_insert`) make a
re-run replace the hour's file instead of appending to it or failing: a re-run writes the same
rows as long as the table still holds them (a merge that collapsed a re-delivery into a later
hour's delivery leaves the earlier hour one row short; the later hour has the event).

An hour without rows writes nothing and leaves an earlier file of that hour alone: the archive
outlives the raw tables' TTL, so archiving an hour again after the TTL emptied it must not erase it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from archive.location import ArchiveLocation, hour_start, sql_string
from archive.tables import INGEST_TIME_COLUMN, archived_tables

# dead_letters keeps the bytes it received, valid UTF-8 or not: its strings are stored as Parquet
# binary; the event tables hold validated UTF-8 and are stored as Parquet strings (readable as text).
BINARY_STRING_TABLES = frozenset({"dead_letters"})


@dataclass
class HourArchive:
    hour: datetime
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows archived
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "hour": self.hour.strftime("%Y-%m-%dT%H:00:00Z"),
            "rows": self.rows,
            "files": self.files,
            "seconds": round(self.seconds, 3),
        }


def hour_filter(hour: datetime) -> str:
    """`loaded_at` within [hour, hour + 1 h): the rows of one ingest hour."""
    start = hour_start(hour)
    end = start + timedelta(hours=1)
    return (
        f"{INGEST_TIME_COLUMN} >= toDateTime64({sql_string(f'{start:%Y-%m-%d %H:%M:%S}')}, 3, 'UTC')"
        f" AND {INGEST_TIME_COLUMN} < toDateTime64({sql_string(f'{end:%Y-%m-%d %H:%M:%S}')}, 3, 'UTC')"
    )


def archive_statement(location: ArchiveLocation, raw_database: str, table: str, hour: datetime) -> str:
    """The INSERT that writes one table's hour to its file (replacing an earlier one)."""
    truncate = "s3_truncate_on_insert" if location.is_s3 else "engine_file_truncate_on_insert"
    as_string = 0 if table in BINARY_STRING_TABLES else 1
    return (
        f"INSERT INTO FUNCTION {location.table_function(location.hour_file(table, hour))}"
        f" SELECT * FROM `{raw_database}`.`{table}` WHERE {hour_filter(hour)}"
        f" SETTINGS output_format_parquet_compression_method = 'zstd', {truncate} = 1,"
        f" output_format_parquet_string_as_string = {as_string}"
    )


def archive_hour(
    client: Any, location: ArchiveLocation, raw_database: str, hour: datetime, tables: list[str] | None = None
) -> HourArchive:
    """Write every raw table's rows of `hour` (an ingest hour, UTC) to the archive."""
    started = time.monotonic()
    result = HourArchive(hour_start(hour))
    for table in tables if tables is not None else archived_tables(client, raw_database):
        rows = int(client.command(f"SELECT count() FROM `{raw_database}`.`{table}` WHERE {hour_filter(hour)}"))
        if not rows:
            continue
        # ClickHouse creates the hour's directories itself (the file may be on another machine)
        client.command(archive_statement(location, raw_database, table, hour))
        result.rows[table] = rows
        result.files.append(location.hour_file(table, hour))
    result.seconds = time.monotonic() - started
    return result


def hours_with_rows(client: Any, raw_database: str, tables: list[str] | None = None) -> list[datetime]:
    """Every ingest hour some raw table has rows of (to archive a whole history)."""
    hours: set[datetime] = set()
    for table in tables if tables is not None else archived_tables(client, raw_database):
        rows = client.query(
            f"SELECT DISTINCT toStartOfHour({INGEST_TIME_COLUMN}) FROM `{raw_database}`.`{table}`"
        ).result_rows
        hours.update(hour_start(moment) for (moment,) in rows)
    return sorted(hours)
