"""The API's read access to ClickHouse: parameterised queries, rows as JSON-ready dicts.

Every query binds its values as ClickHouse query parameters (`{name:Type}`); no value is ever
formatted into SQL text. One clickhouse-connect client serves every request thread: without a
session id its HTTP requests share nothing but the connection pool.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from fastapi import HTTPException

from settings import ClickHouseConfig


def json_value(value: Any) -> Any:
    """A ClickHouse value as JSON carries it: Decimal as a number, dates as ISO 8601 (UTC with Z)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/inf (a ratio over zero rows) is not JSON
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


class Warehouse:
    """Queries the marts (the dbt database) and the raw database of one ClickHouse."""

    def __init__(self, config: ClickHouseConfig):
        self.config = config
        self.database = config.database
        self.raw_database = config.raw_database
        self._client: Any = None
        self._lock = threading.Lock()
        self._tables_seen: set[tuple[str, str]] = set()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import clickhouse_connect
                    from clickhouse_connect.driver.httputil import get_pool_manager

                    self._client = clickhouse_connect.get_client(
                        **self.config.client_kwargs(),
                        autogenerate_session_id=False,
                        connect_timeout=5,
                        send_receive_timeout=30,
                        # a connection per request thread (uvicorn's pool has 40; the default keeps 8)
                        pool_mgr=get_pool_manager(maxsize=40, block=False),
                    )
        return self._client

    def rows(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        result = self.client.query(sql, parameters=dict(parameters or {}), settings=dict(settings or {}))
        names = result.column_names
        return [{n: json_value(v) for n, v in zip(names, row, strict=True)} for row in result.result_rows]

    def one(self, sql: str, parameters: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        rows = self.rows(sql, parameters)
        return rows[0] if rows else None

    def has_table(self, database: str, name: str) -> bool:
        """Whether the table exists (the alert publisher creates `alerts` on its first run). Asked
        until it does: a table once there stays."""
        if (database, name) in self._tables_seen:
            return True
        found = bool(
            self.client.command(
                "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {name:String}",
                parameters={"db": database, "name": name},
            )
        )
        if found:
            self._tables_seen.add((database, name))
        return found

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def not_found(what: str) -> HTTPException:
    """404 with a body that says what has no data (not an empty 200)."""
    return HTTPException(status_code=404, detail=what)


def _days_held(db: Warehouse, table: str, column: str) -> str:
    span = db.one(f"SELECT min({column}) AS first, max({column}) AS last, count() AS n FROM {table}")
    if not span or not span["n"]:
        return "it is empty"
    return f"it has {span['first']}..{span['last']}"


def missing_day(db: Warehouse, what: str, day: dt.date, table: str, column: str) -> HTTPException:
    """404 for a day `table` has no row for, naming the days it has."""
    return not_found(f"no {what} for {day}: {_days_held(db, table, column)} ({table})")
