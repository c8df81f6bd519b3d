"""Which raw tables the archive (and replay) covers: derived from the raw database itself.

Every table of the raw database with a `loaded_at` column (the ingest time) is raw data: the four
`raw_<domain>_events`, `dead_letters`, and tables added later by the same rule (the CDC tables
`cdc_<table>`) without a change here. The loader's own log `ingest_batches` is not raw data.
"""

from __future__ import annotations

from typing import Any

from ingestion.raw_tables import NOT_RAW_DATA

INGEST_TIME_COLUMN = "loaded_at"


def archived_tables(client: Any, raw_database: str) -> list[str]:
    """The raw database's tables that hold raw data (MergeTree family, with `loaded_at`), sorted."""
    rows = client.query(
        "SELECT t.name FROM system.tables AS t"
        " WHERE t.database = {db:String} AND t.engine LIKE '%MergeTree'"
        " AND t.name IN (SELECT table FROM system.columns WHERE database = {db:String} AND name = {col:String})"
        " ORDER BY t.name",
        parameters={"db": raw_database, "col": INGEST_TIME_COLUMN},
    ).result_rows
    return [name for (name,) in rows if name not in NOT_RAW_DATA]
