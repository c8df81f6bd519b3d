"""Replay the raw archive: restore the raw tables from it, or publish its events to Kafka again.

`--to raw` inserts the archived rows of the selected ingest hours into their raw tables through
ClickHouse (`INSERT INTO raw_x SELECT ... FROM file(glob, Parquet)`), with `loaded_at` set to the
replay time: the TTL counts from ingest time, so replayed history is not expired on arrival, and
incremental dbt models (which find new rows by loaded_at) see the rows as new. A row replayed
into a table that still holds it collapses as any re-delivery does (ReplacingMergeTree on event_id).

`--to kafka` rebuilds each archived event's envelope from the raw columns and publishes it to its
topic with its key, so a loader loads it again (the same event_id and ingested_at: it collapses
with any copy already loaded). Only the event tables are re-published: a dead letter broke the
contract and would only become a dead letter again; other raw tables (CDC) have no envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from archive.location import ArchiveLocation, sql_string
from archive.tables import INGEST_TIME_COLUMN, archived_tables
from ingestion.raw_tables import RAW_COLUMNS, ensure_tables
from ingestion.topics import TOPICS_BY_NAME, message_key, topic_for
from settings import Settings

# a range of more days than this reads every day's directory (one glob) and filters by loaded_at
MAX_DAYS_IN_GLOB = 62


class ReplayError(ValueError):
    """The replay cannot run as asked (no archive, an empty window, since after until)."""


@dataclass
class ReplaySummary:
    to: str
    location: str
    since: datetime | None
    until: datetime | None
    replayed_at: datetime
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    hours: set[str] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

        return {
            "to": self.to,
            "archive": self.location,
            "since": iso(self.since),
            "until": iso(self.until),
            "replayed_at": iso(self.replayed_at),
            "rows": sum(t["rows"] for t in self.tables.values()),
            "files": sum(t["files"] for t in self.tables.values()),
            "hours": len(self.hours),
            "tables": self.tables,
            "skipped": self.skipped,
        }


def check_window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since > until:
        raise ReplayError(f"--since {since.isoformat()} is after --until {until.isoformat()}")


def _days(since: datetime | None, until: datetime | None) -> list[date] | None:
    """The archive days (dt=...) the window touches, or None for every day."""
    if since is None or until is None or (until - since).days > MAX_DAYS_IN_GLOB:
        return None
    days, day = [], since.date()
    while day <= until.date():
        days.append(day)
        day += timedelta(days=1)
    return days


def window_filter(since: datetime | None, until: datetime | None) -> str:
    """The archived rows' own `loaded_at` within [since, until): the hour each is filed under."""
    conditions = ["1"]
    if since is not None:
        conditions.append(
            f"{INGEST_TIME_COLUMN} >= toDateTime64({sql_string(since.strftime('%Y-%m-%d %H:%M:%S.%f'))}, 3, 'UTC')"
        )
    if until is not None:
        conditions.append(
            f"{INGEST_TIME_COLUMN} < toDateTime64({sql_string(until.strftime('%Y-%m-%d %H:%M:%S.%f'))}, 3, 'UTC')"
        )
    return " AND ".join(conditions)


def require_archive(location: ArchiveLocation) -> None:
    root = location.local_root()
    if root is not None and not (root.is_dir() and any(root.glob("*/dt=*/hour=*/*.parquet"))):
        raise ReplayError(f"no archive at {root}: no <table>/dt=YYYY-MM-DD/hour=HH/*.parquet files there")


def _has_files(location: ArchiveLocation, table: str, days: list[date] | None) -> bool:
    root = location.local_root()
    if root is None:  # S3: ask ClickHouse (a glob that matches nothing is an error there)
        return True
    patterns = [f"dt={day:%Y-%m-%d}" for day in days] if days is not None else ["dt=*"]
    return any(any((root / table).glob(f"{pattern}/hour=*/*.parquet")) for pattern in patterns)


def _archived_files(client: Any, source: str, where: str) -> list[tuple[str, str, int]]:
    """(file, hour, rows) of the archived rows within the window."""
    rows = client.query(
        f"SELECT _path, toString(toStartOfHour({INGEST_TIME_COLUMN})), count() FROM {source}"
        f" WHERE {where} GROUP BY ALL ORDER BY ALL"
    ).result_rows
    return [(str(path), str(hour), int(count)) for path, hour, count in rows]


def replay(
    client: Any,
    settings: Settings,
    location: ArchiveLocation,
    since: datetime | None = None,
    until: datetime | None = None,
    to: str = "raw",
    replayed_at: datetime | None = None,
) -> ReplaySummary:
    """Replay the archived rows loaded in [since, until) to the raw tables or to Kafka."""
    if to not in ("raw", "kafka"):
        raise ReplayError(f"--to {to!r}: choose raw or kafka")
    check_window(since, until)
    require_archive(location)
    raw_database = settings.clickhouse.raw_database
    # the replayed rows' loaded_at: one moment for the whole replay
    summary = ReplaySummary(to, location.url, since, until, replayed_at or datetime.now(UTC))
    ensure_tables(client, raw_database)
    days = _days(since, until)
    where = window_filter(since, until)
    publisher = None
    try:
        for table in archived_tables(client, raw_database):
            if to == "kafka" and not table.startswith("raw_"):
                summary.skipped[table] = "not an event table: nothing to publish"
                continue
            if not _has_files(location, table, days):
                continue
            source = location.table_function(location.table_glob(table, days))
            files = _archived_files(client, source, where)
            if not files:
                continue
            if to == "raw":
                _insert_into_raw(client, raw_database, table, source, where, summary.replayed_at)
            else:
                if publisher is None:
                    from ingestion.publisher import Publisher

                    publisher = Publisher(settings.kafka, client_id="eventhouse-replay")
                _publish(client, publisher, source, where)
            summary.tables[table] = {
                "rows": sum(count for _, _, count in files),
                "files": len({path for path, _, _ in files}),
                "hours": len({hour for _, hour, _ in files}),
            }
            summary.hours.update(hour for _, hour, _ in files)
    finally:
        if publisher is not None:
            publisher.close()
    return summary


def _insert_into_raw(client: Any, raw_database: str, table: str, source: str, where: str, at: datetime) -> None:
    table_columns = [
        name
        for (name,) in client.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position",
            parameters={"db": raw_database, "t": table},
        ).result_rows
    ]
    archived = {row[0] for row in client.query(f"DESCRIBE TABLE {source}").result_rows}
    columns = [name for name in table_columns if name in archived and name != INGEST_TIME_COLUMN]
    names = ", ".join(f"`{name}`" for name in columns)
    moment = sql_string(at.strftime("%Y-%m-%d %H:%M:%S.%f"))
    # The WHERE reads the archived loaded_at: the file's own schema, not the one ClickHouse would
    # otherwise take from the insert's column list (which has no archived loaded_at).
    client.command(
        f"INSERT INTO `{raw_database}`.`{table}` ({names}, `{INGEST_TIME_COLUMN}`)"
        f" SELECT {names}, toDateTime64({moment}, 3, 'UTC') FROM {source} WHERE {where}"
        " SETTINGS use_structure_from_insertion_table_in_table_functions = 0"
    )


def _iso(column: str) -> str:
    """A DateTime64(3, 'UTC') column as the envelope writes it: 2024-03-01T13:00:00.000Z."""
    return f"concat(replaceOne(toString({column}), ' ', 'T'), 'Z')"


def envelope_from_raw(row: dict[str, Any]) -> dict[str, Any]:
    """The envelope a raw row was loaded from (ingestion/contract.py), rebuilt from its columns."""
    return {
        "schema_version": int(row["schema_version"]),
        "event_type": row["event_type"],
        "event_id": row["event_id"],
        "user_id": row["user_id"],
        "session_id": row["session_id"],
        "source": {"service": row["source_service"], "host": row["source_host"]},
        "ts": row["ts"],
        "ingested_at": row["ingested_at"],
        "sequence": row["sequence"],
        "payload": orjson.loads(row["payload"]),
        "dedupe_key": row["dedupe_key"],
    }


def _publish(client: Any, publisher: Any, source: str, where: str) -> None:
    columns = [c for c in RAW_COLUMNS if c not in ("ts", "ingested_at")]
    select = ", ".join([*columns, f"{_iso('ts')} AS ts", f"{_iso('ingested_at')} AS ingested_at"])
    names = [*columns, "ts", "ingested_at"]
    with client.query_rows_stream(
        f"SELECT {select} FROM {source} WHERE {where} ORDER BY kafka_topic, kafka_partition, kafka_offset"
    ) as stream:
        for values in stream:
            row = dict(zip(names, values, strict=True))
            event = envelope_from_raw(row)
            spec = TOPICS_BY_NAME.get(row["kafka_topic"]) or topic_for(event["event_type"])
            publisher.send(spec.name, orjson.dumps(event), key=message_key(spec, event))
    publisher.flush()
