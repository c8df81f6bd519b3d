"""Remove soft-deleted orders physically, `EVENTHOUSE_DELETED_ORDER_RETENTION_DAYS` (7) after deleted_at.

A soft delete (`order.deleted`, whose payload has `deleted_at`) keeps the order in the warehouse,
out of every commerce mart; reference system 4 then removes it physically after 7 days. Here the
whole order goes, every one of its events, not only the delete:
- from the raw orders table (rows whose payload's order_id is the order's);
- from every warehouse table (MergeTree family; views follow their tables) with an `order_id`
  column: the order facts, the latest-version table, the status snapshot, fct_events;
- from every warehouse table with `event_id` and a `domain` column, or an orders table with
  `event_id` (fct_anomalies, latency_late_events, the orders quarantine): the order's event ids.
The tables are found by their columns, so a new model holding order rows is covered without a
change here. Aggregates (daily latency, KPIs) keep what they counted until they are rebuilt.

Deletes are mutations (`ALTER TABLE ... DELETE`, waited for), which rewrite the parts: the rows are
gone from disk, not only hidden. The archive's Parquet files keep them: a replay brings such an
order back, and the next purge removes it again (its deleted_at is still in the past).

The clock is `now` (EVENTHOUSE_RETENTION_NOW or `--now`), so tests and audits move it without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from archive.location import sql_string
from ingestion.raw_tables import raw_table

ORDERS_TABLE = raw_table("orders")


@dataclass
class PurgeReport:
    now: datetime
    cutoff: datetime
    dry_run: bool
    orders: dict[str, str] = field(default_factory=dict)  # order_id -> deleted_at
    removed: dict[str, int] = field(default_factory=dict)  # `database.table` -> rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat().replace("+00:00", "Z"),
            "deleted_before": self.cutoff.isoformat().replace("+00:00", "Z"),
            "dry_run": self.dry_run,
            "orders": self.orders,
            "rows_removed" if not self.dry_run else "rows_to_remove": self.removed,
            "total_rows": sum(self.removed.values()),
        }


def due_orders(client: Any, raw_database: str, cutoff: datetime) -> dict[str, str]:
    """Orders soft-deleted at or before `cutoff`: order_id -> deleted_at (the delete's ts without one)."""
    before = sql_string(f"{cutoff:%Y-%m-%d %H:%M:%S.%f}")
    rows = client.query(
        "SELECT order_id, toString(deleted_at) FROM ("
        " SELECT JSONExtractString(payload, 'order_id') AS order_id,"
        " min(coalesce(parseDateTime64BestEffortOrNull(JSONExtractString(payload, 'deleted_at'), 3, 'UTC'), ts))"
        " AS deleted_at"
        f" FROM `{raw_database}`.`{ORDERS_TABLE}` WHERE event_type = 'order.deleted' GROUP BY order_id)"
        f" WHERE order_id != '' AND deleted_at <= toDateTime64({before}, 3, 'UTC')"
        " ORDER BY order_id"
    ).result_rows
    return {str(order_id): str(deleted_at) for order_id, deleted_at in rows}


def _literal_list(values: list[str]) -> str:
    return "(" + ", ".join(sql_string(v) for v in values) + ")"


def purge_targets(client: Any, raw_database: str, database: str, order_ids: list[str]) -> dict[str, str]:
    """`database.table` -> the WHERE condition that selects the orders' rows, for every table holding them."""
    ids = _literal_list(order_ids)
    targets = {f"{raw_database}.{ORDERS_TABLE}": f"JSONExtractString(payload, 'order_id') IN {ids}"}
    event_ids = [
        str(event_id)
        for (event_id,) in client.query(
            f"SELECT DISTINCT event_id FROM `{raw_database}`.`{ORDERS_TABLE}`"
            f" WHERE JSONExtractString(payload, 'order_id') IN {ids}"
        ).result_rows
    ]
    columns: dict[str, set[str]] = {}
    for table, column in client.query(
        "SELECT c.table, c.name FROM system.columns AS c"
        " WHERE c.database = {db:String} AND c.name IN ('order_id', 'event_id', 'domain')"
        " AND c.table IN (SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree')",
        parameters={"db": database},
    ).result_rows:
        columns.setdefault(str(table), set()).add(str(column))
    for table, names in sorted(columns.items()):
        if "order_id" in names:
            targets[f"{database}.{table}"] = f"order_id IN {ids}"
        elif "event_id" in names and event_ids and ("domain" in names or "orders" in table):
            condition = f"event_id IN {_literal_list(event_ids)}"
            targets[f"{database}.{table}"] = condition + (" AND domain = 'orders'" if "domain" in names else "")
    return targets


def purge_deleted_orders(
    client: Any,
    raw_database: str,
    database: str,
    now: datetime,
    retention_days: int,
    dry_run: bool = False,
) -> PurgeReport:
    """Remove (or with dry_run count) the rows of every order soft-deleted `retention_days` before `now`."""
    cutoff = now - timedelta(days=retention_days)
    report = PurgeReport(now, cutoff, dry_run)
    report.orders = due_orders(client, raw_database, cutoff)
    if not report.orders:
        return report
    for name, condition in purge_targets(client, raw_database, database, list(report.orders)).items():
        db, table = name.split(".", 1)
        rows = int(client.command(f"SELECT count() FROM `{db}`.`{table}` WHERE {condition}"))
        if not rows:
            continue
        report.removed[name] = rows
        if not dry_run:
            # mutations_sync=2: wait until the parts are rewritten, so the rows are gone on return
            client.command(f"ALTER TABLE `{db}`.`{table}` DELETE WHERE {condition}", settings={"mutations_sync": 2})
    return report
