"""Issue 17's steps inside the warehouse case (test_warehouse_expected_output.build_case), before its
final full refresh: the raw archive of every ingest hour, the purge of soft-deleted orders with a
moved clock, then the raw event tables dropped, recreated and replayed from the archive, which the
full refresh rebuilds every mart from.

The archive is written before the purge, so it still holds the deleted order (the archive is not
purged: README, "Raw archive, replay and retention"); the replay brings the order back and the
rebuilt marts equal the incremental ones. The exception is the order status snapshot: the purge
removed the order's history there for good, and the rebuild can only start it again at the order's
current state (test_warehouse_expected_output.PURGED_HISTORY).

Each step records `observed` and `expected` entries of the case, which
test_batches_load_and_build_as_worked_out compares; expected values are computed apart from the
code under test (the case's own events, pyarrow reading the Parquet files, plain count()s).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from archive.location import ArchiveLocation, sql_string
from archive.replay import replay
from archive.writer import archive_hour, hours_with_rows
from ingestion.raw_tables import ensure_tables
from ingestion.topics import DOMAINS
from retention.deleted_orders import purge_deleted_orders
from settings import archive_url, load_settings

RAW_EVENT_TABLES = [f"raw_{domain}_events" for domain in DOMAINS]


def _in(values: set[str]) -> str:
    return "(" + ", ".join(sql_string(v) for v in sorted(values)) + ")"


def _order_rows(client: Any, databases: Iterable[str], order_ids: set[str], event_ids: set[str]) -> dict[str, int]:
    """Rows naming the orders (order_id) or their events (event_id, orders domain) in every table of
    the databases (views show what their tables hold), by a scan of their columns: a table the purge
    should have found shows up here."""
    found = {}
    for database in databases:
        columns: dict[str, set[str]] = {}
        for table, column in client.query(
            "SELECT table, name FROM system.columns WHERE database = {db:String}"
            " AND name IN ('order_id', 'event_id', 'domain', 'event_type')"
            " AND table IN (SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree')",
            parameters={"db": database},
        ).result_rows:
            columns.setdefault(table, set()).add(column)
        for table, names in columns.items():
            conditions = []
            if "order_id" in names:
                conditions.append(f"toString(order_id) IN {_in(order_ids)}")
            if "event_id" in names:
                domain = " AND domain = 'orders'" if "domain" in names else ""
                domain += " AND event_type LIKE 'order.%'" if "event_type" in names else ""
                conditions.append(f"(event_id IN {_in(event_ids)}{domain})")
            if not conditions:
                continue
            rows = client.command(f"SELECT count() FROM `{database}`.`{table}` WHERE {' OR '.join(conditions)}")
            if rows:
                found[f"{database}.{table}"] = int(rows)
    return found


def deleted_orders(events: list[dict]) -> dict[str, datetime]:
    """order_id -> deleted_at of the case's soft-deleted orders, from its events."""
    return {
        e["payload"]["order_id"]: datetime.fromisoformat(e["payload"]["deleted_at"].replace("Z", "+00:00"))
        for e in events
        if e["event_type"] == "order.deleted"
    }


def observe_purge(
    client: Any, env: dict[str, str], events: list[dict], observed: dict, expected: dict
) -> dict[str, int]:
    """Purge with the clock at the newest deleted_at + 6 days (nothing due), then + 8 days: every row
    of the deleted orders goes from the raw and warehouse tables. Returns the rows removed per table."""
    settings = load_settings(env)
    raw, database = settings.clickhouse.raw_database, settings.clickhouse.database
    deleted_at = deleted_orders(events)
    deleted = set(deleted_at)
    newest = max(deleted_at.values())
    # every event of those orders, not only the deletes
    event_ids = {
        e["event_id"]
        for e in events
        if e["event_type"].startswith("order.") and e["payload"].get("order_id") in deleted
    }
    before = _order_rows(client, (raw, database), deleted, event_ids)
    raw_orders = client.command(f"SELECT count() FROM `{raw}`.raw_orders_events")

    early = purge_deleted_orders(client, raw, database, newest + timedelta(days=6), 7)
    observed["purge at the newest deleted_at + 6 days"] = (early.orders, early.removed)
    expected["purge at the newest deleted_at + 6 days"] = ({}, {})
    observed["deleted orders' rows before the purge"] = before == _order_rows(
        client, (raw, database), deleted, event_ids
    )
    expected["deleted orders' rows before the purge"] = True

    due = purge_deleted_orders(client, raw, database, newest + timedelta(days=8), 7)
    observed["orders purged at the newest deleted_at + 8 days"] = sorted(due.orders)
    expected["orders purged at the newest deleted_at + 8 days"] = sorted(deleted)
    observed["rows removed by the purge"] = due.removed
    expected["rows removed by the purge"] = before
    observed["deleted orders' rows after the purge"] = _order_rows(client, (raw, database), deleted, event_ids)
    expected["deleted orders' rows after the purge"] = {}
    observed["other orders' raw rows after the purge"] = client.command(
        f"SELECT count() FROM `{raw}`.raw_orders_events"
    )
    expected["other orders' raw rows after the purge"] = raw_orders - before[f"{raw}.raw_orders_events"]
    return due.removed


def mart_hashes(
    client: Any, marts: list[str], leave_out: set[str], where: dict[str, str] | None = None
) -> dict[str, tuple[int, int]]:
    """(rows, sum of each row's cityHash64) per mart, the columns of when a row was computed left out.

    Each row is hashed as the text of its tuple, so NULLs count (cityHash64 of a NULL is NULL)."""
    hashes = {}
    for mart in marts:
        columns = [
            f"`{name}`"
            for (name,) in client.query(
                "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String}"
                " ORDER BY position",
                parameters={"t": mart},
            ).result_rows
            if name not in leave_out
        ]
        condition = (where or {}).get(mart, "1")
        rows, total = client.query(
            f"SELECT count(), sum(cityHash64(toString(tuple({', '.join(columns)})))) FROM `{mart}` WHERE {condition}"
        ).first_row
        hashes[mart] = (int(rows), int(total))
    return hashes


def _parquet_rows(root: Path, table: str) -> tuple[int, int, set[str]]:
    """(rows, files, compression codecs) of a table's archive, read by pyarrow."""
    files = sorted((root / table).glob("dt=*/hour=*/*.parquet"))
    codecs = {
        pq.ParquetFile(f).metadata.row_group(0).column(0).compression
        for f in files
        if pq.ParquetFile(f).metadata.num_row_groups
    }
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files), len(files), codecs


def archive_all(client: Any, env: dict[str, str], observed: dict, expected: dict, seconds: dict) -> dict[str, Any]:
    """Archive every ingest hour, check the files against the tables and re-run an hour. Returns what
    the replay is checked against: each table's rows and distinct events now."""
    settings = load_settings(env)
    raw = settings.clickhouse.raw_database
    location = ArchiveLocation(archive_url(env))
    root = Path(location.url)

    started = time.monotonic()
    hours = hours_with_rows(client, raw)
    results = [archive_hour(client, location, raw, hour) for hour in hours]
    seconds["archive (all hours)"] = time.monotonic() - started
    seconds["archive (slowest hour)"] = max(r.seconds for r in results)
    tables = ["dead_letters", *RAW_EVENT_TABLES]
    counts = {t: int(client.command(f"SELECT count() FROM `{raw}`.`{t}`")) for t in tables}
    archived = {t: _parquet_rows(root, t) for t in tables}
    observed["archived rows per raw table (pyarrow)"] = {t: archived[t][0] for t in tables}
    expected["archived rows per raw table (pyarrow)"] = counts
    observed["archive files: one per table and hour with rows"] = sum(archived[t][1] for t in tables)
    expected["archive files: one per table and hour with rows"] = sum(
        int(client.command(f"SELECT uniqExact(toStartOfHour(loaded_at)) FROM `{raw}`.`{t}`")) for t in tables
    )
    observed["archive compression"] = set().union(*(archived[t][2] for t in tables))
    expected["archive compression"] = {"ZSTD"}

    # re-running an hour replaces its file with the same rows
    first = results[0]
    table = next(iter(first.rows))
    hour_dir = Path(first.files[0]).parent
    again = archive_hour(client, location, raw, first.hour)
    observed["an hour archived again: its rows, files in its directory"] = (
        again.rows,
        sum(pq.ParquetFile(f).metadata.num_rows for f in hour_dir.glob("*.parquet")),
        len(list(hour_dir.iterdir())),
    )
    expected["an hour archived again: its rows, files in its directory"] = (first.rows, first.rows[table], 1)

    # an hour without rows writes no file
    empty = archive_hour(client, location, raw, datetime(2000, 1, 1, tzinfo=UTC))
    observed["an hour without rows: rows, files"] = (empty.rows, sorted(map(str, root.glob("*/dt=2000-01-01"))))
    expected["an hour without rows: rows, files"] = ({}, [])

    distinct = {t: int(client.command(f"SELECT uniqExact(event_id) FROM `{raw}`.`{t}`")) for t in RAW_EVENT_TABLES}
    return {"counts": counts, "distinct": distinct}


def drop_and_replay(
    client: Any, env: dict[str, str], archived: dict[str, Any], observed: dict, expected: dict, seconds: dict
) -> None:
    """Drop and recreate the raw event tables and replay them (every table) from the archive."""
    settings = load_settings(env)
    raw = settings.clickhouse.raw_database
    location = ArchiveLocation(archive_url(env))
    counts, distinct = archived["counts"], archived["distinct"]
    loaded_before = max(client.command(f"SELECT max(loaded_at) FROM `{raw}`.`{t}`") for t in RAW_EVENT_TABLES)
    # the insert-time materialized views read the raw tables by name (models/marts/live): a plain
    # MergeTree they feed gains rows per inserted block, so the replay's inserts must add some
    live_rows = f"SELECT count() FROM `{settings.clickhouse.database}`.live_anomaly_entities"
    live_before = int(client.command(live_rows))
    for t in RAW_EVENT_TABLES:
        client.command(f"DROP TABLE `{raw}`.`{t}`")
    ensure_tables(client, raw)
    started = time.monotonic()
    summary = replay(client, settings, location).as_dict()
    seconds["replay to raw"] = time.monotonic() - started
    observed["replayed rows per table"] = {t: n["rows"] for t, n in summary["tables"].items() if t in counts}
    expected["replayed rows per table"] = {t: n for t, n in counts.items() if n}
    observed["insert-time views fed by the replay into recreated tables"] = int(client.command(live_rows)) > live_before
    expected["insert-time views fed by the replay into recreated tables"] = True
    observed["distinct events after the replay"] = {
        t: int(client.command(f"SELECT uniqExact(event_id) FROM `{raw}`.`{t}`")) for t in RAW_EVENT_TABLES
    }
    expected["distinct events after the replay"] = distinct
    # the replayed rows are new to the TTL and to incremental models: loaded at the replay, none
    # at or before the newest loaded_at of the dropped tables
    observed["replayed rows loaded at the replay"] = {
        t: int(
            client.command(
                f"SELECT countIf(loaded_at <= {{before:DateTime64(3, 'UTC')}}) FROM `{raw}`.`{t}`",
                parameters={"before": loaded_before},
            )
        )
        for t in RAW_EVENT_TABLES
    }
    expected["replayed rows loaded at the replay"] = dict.fromkeys(RAW_EVENT_TABLES, 0)
