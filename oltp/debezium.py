"""Change events in Debezium's shape (PostgreSQL connector, JsonConverter with schemas disabled).

Value: `{"before", "after", "source", "op", "ts_ms"}`; key: the primary key as a JSON object
(`{"user_id": "u1"}`). `op` is c (insert), u (update), d (delete), r (a snapshot read) or t
(truncate). `source` carries `version` (this capture's), `connector` "postgresql", `name` (the
topic prefix), `ts_ms` (the commit time; for a snapshot, when it was taken), `snapshot`, `db`,
`schema`, `table`, `txId` and `lsn`. Deletes are not followed by a tombstone (Debezium's
`tombstones.on.delete=false`): the warehouse keeps deletes as rows with a delete flag.

Values are typed from PostgreSQL's text output by type OID as Debezium types them by default
(`time.precision.mode=adaptive`), except numeric:
- bool, int2/int4/int8/oid -> JSON booleans and numbers; float4/float8 -> numbers;
- numeric -> a decimal string such as "12.50" (Debezium's `decimal.handling.mode=string`: the
  default `precise` mode would give base64 bytes, unreadable in SQL, and `double` loses cents);
- timestamptz -> an ISO 8601 string in UTC, `2026-11-01T10:00:00.123456Z` (Debezium's
  ZonedTimestamp); timestamp -> epoch microseconds (MicroTimestamp); date -> days since
  1970-01-01 (Date);
- text, varchar, uuid, json, jsonb and anything else -> the text as PostgreSQL prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson

from oltp.pgoutput import UNCHANGED_TOAST

CONNECTOR = "postgresql"
CONNECTOR_VERSION = "eventhouse-cdc-1"
# What Debezium writes for a TOASTed column an update did not change (and did not send).
UNAVAILABLE_VALUE = "__debezium_unavailable_value"

BOOL, INT8, INT2, INT4, OID, FLOAT4, FLOAT8 = 16, 20, 21, 23, 26, 700, 701
DATE, TIMESTAMP, TIMESTAMPTZ, NUMERIC = 1082, 1114, 1184, 1700
_INTEGERS = frozenset({INT8, INT2, INT4, OID})
_EPOCH_DATE = date(1970, 1, 1)


def _parse_time(text: str) -> datetime:
    # PostgreSQL prints `2026-11-01 10:00:00.123456+00` (offset hours only when whole).
    return datetime.fromisoformat(text)


def typed(text: str | None, type_oid: int) -> Any:
    """A column's value, from PostgreSQL's text output, typed as Debezium types it (module docstring)."""
    if text is None:
        return None
    if type_oid == BOOL:
        return text in ("t", "true")  # the output function prints t/f, a ::text cast true/false
    if type_oid in _INTEGERS:
        return int(text)
    if type_oid in (FLOAT4, FLOAT8):
        return float(text)  # NaN and Infinity are not JSON: orjson writes them as null
    if type_oid == TIMESTAMPTZ and text[0].isdigit():
        moment = _parse_time(text).astimezone(UTC)
        whole, fraction = moment.strftime("%Y-%m-%dT%H:%M:%S"), f"{moment.microsecond:06d}".rstrip("0")
        return f"{whole}.{fraction}Z" if fraction else f"{whole}Z"
    if type_oid == TIMESTAMP and text[0].isdigit():
        moment = _parse_time(text).replace(tzinfo=UTC)
        return int(moment.timestamp()) * 1_000_000 + moment.microsecond
    if type_oid == DATE and text[0].isdigit():
        return (date.fromisoformat(text) - _EPOCH_DATE).days
    return text  # numeric (decimal.handling.mode=string), text, uuid, json, infinity, ...


@dataclass(frozen=True)
class TableShape:
    """What a change event needs to know of a table: its name, columns (with type OIDs) and key."""

    schema: str
    table: str
    columns: tuple[tuple[str, int], ...]  # (name, type OID) in the table's order
    key_columns: tuple[str, ...]

    def row(self, values: tuple[object, ...] | None, fallback: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A tuple's values (text, None or UNCHANGED_TOAST) as a typed row."""
        if values is None:
            return None
        if len(values) != len(self.columns):
            raise ValueError(
                f"{self.schema}.{self.table}: a tuple of {len(values)} columns, the relation has {len(self.columns)}"
            )
        row: dict[str, Any] = {}
        for (name, type_oid), value in zip(self.columns, values, strict=True):
            if value is UNCHANGED_TOAST:
                row[name] = (fallback or {}).get(name, UNAVAILABLE_VALUE)
            else:
                row[name] = typed(value if isinstance(value, str) or value is None else bytes(value).hex(), type_oid)
        return row

    def key(self, row: dict[str, Any]) -> dict[str, Any]:
        return {name: row.get(name) for name in self.key_columns}


@dataclass(frozen=True)
class ChangeEvent:
    """One change, ready to publish: the topic's key and value bytes, and its version."""

    key: bytes
    value: bytes
    lsn: int


def change_event(
    shape: TableShape,
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    lsn: int,
    tx_id: int | None,
    source_ts_ms: int,
    database: str,
    topic_prefix: str,
    snapshot: str = "false",
    now_ms: int,
) -> ChangeEvent:
    """The Debezium key and value of one change (module docstring for the shape)."""
    keyed = after if after is not None else before
    key = orjson.dumps(shape.key(keyed)) if keyed is not None else b"null"
    value = {
        "before": before,
        "after": after,
        "source": {
            "version": CONNECTOR_VERSION,
            "connector": CONNECTOR,
            "name": topic_prefix,
            "ts_ms": source_ts_ms,
            "snapshot": snapshot,
            "db": database,
            "schema": shape.schema,
            "table": shape.table,
            "txId": tx_id,
            "lsn": lsn,
        },
        "op": op,
        "ts_ms": now_ms,
    }
    return ChangeEvent(key, orjson.dumps(value), lsn)
