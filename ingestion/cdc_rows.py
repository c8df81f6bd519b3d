"""How the loader accepts a CDC change event (Debezium JSON, schemas disabled) as a `cdc_<table>` row.

The same exactly-once machinery as events (offset ranges, batch log, insert tokens) carries
them; only the check and the encoding differ: a message must be a change event of its topic's
table, with an op, a numeric LSN, a commit time and the key columns in the row. Anything else
is a dead letter with the reason, like a malformed event.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from ingestion.cdc_tables import CdcTable
from ingestion.contract import MAX_MESSAGE_BYTES, ContractError
from ingestion.loader_stats import LoaderStats
from ingestion.partition_ranges import Chunk, Message, PartitionState, clickhouse_time

OPS = frozenset({"c", "u", "d", "r", "t"})
MAX_LSN = 2**64 - 1


def encode_cdc_row(table: CdcTable, value: bytes, topic: str, partition: int, offset: int, topic_id: str) -> bytes:
    """One JSONEachRow line of `cdc_<table>` from a change event; ContractError naming what is wrong."""
    if len(value) > MAX_MESSAGE_BYTES:
        raise ContractError(f"message is {len(value)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"invalid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ContractError(f"a change event must be a JSON object, not {type(event).__name__}")
    op = event.get("op")
    if op not in OPS:
        raise ContractError(f"change event: 'op' is {op!r}, not one of c, u, d, r, t")
    source = event.get("source")
    if not isinstance(source, dict):
        raise ContractError("change event: 'source' is missing or not an object")
    if (source.get("schema"), source.get("table")) != (table.schema, table.table):
        raise ContractError(
            f"wrong topic: a change of {source.get('schema')}.{source.get('table')} on topic {topic} "
            f"(which carries {table.schema}.{table.table})"
        )
    lsn = source.get("lsn")
    if type(lsn) is not int or not 0 <= lsn <= MAX_LSN:
        raise ContractError(f"change event: 'source.lsn' is {lsn!r}, not an unsigned 64-bit integer")
    ts_ms = source.get("ts_ms")
    if type(ts_ms) is not int or ts_ms < 0:
        raise ContractError(f"change event: 'source.ts_ms' is {ts_ms!r}, not epoch milliseconds")
    tx_id = source.get("txId")
    if tx_id is not None and (type(tx_id) is not int or tx_id < 0):
        raise ContractError(f"change event: 'source.txId' is {tx_id!r}, not a transaction id")
    row: dict[str, Any]
    if op == "t":
        row = {column: "" for column in table.key_columns}
        data: dict[str, Any] = {}
    else:
        side = "before" if op == "d" else "after"
        data = event.get(side)
        if not isinstance(data, dict):
            raise ContractError(f"change event with op {op!r}: '{side}' is missing or not an object")
        row = {}
        for column in table.key_columns:
            key = data.get(column)
            if isinstance(key, bool) or not isinstance(key, str | int) or key == "":
                raise ContractError(f"change event: key column {side}.{column} is {key!r}")
            row[column] = str(key)
    row.update(
        {
            "row_json": data,  # an object: stored as its JSON text (input_format_json_read_objects_as_strings)
            "op": op,
            "lsn": lsn,
            "is_deleted": 1 if op in ("d", "t") else 0,
            "source_ts": clickhouse_time(datetime.fromtimestamp(ts_ms / 1000, UTC)),
            "tx_id": tx_id,
            "kafka_topic": topic,
            "kafka_partition": partition,
            "kafka_offset": offset,
            "kafka_topic_id": topic_id,
        }
    )
    try:
        return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError as exc:
        raise ContractError(f"cannot be encoded as a CDC row: {exc}") from None


class CdcPartitionState(PartitionState):
    """A partition of a CDC topic: rows for `cdc_<table>` instead of a raw events table."""

    def __init__(self, topic: str, partition: int, domain: str, topic_id: str, table: CdcTable):
        super().__init__(topic, partition, domain, topic_id)
        self.table = table

    def _encode(
        self, message: Message, value: bytes, contract: Any, now: datetime, now_text: str, stats: LoaderStats
    ) -> tuple[bytes, float]:
        if not value:
            # Debezium follows a delete with a tombstone (null value) for log compaction; eventhouse's
            # capture sends none, so an empty message is someone else's mistake.
            raise ContractError("empty message (no value)" if message.value is None else "empty message (0 bytes)")
        started = time.perf_counter()
        row = encode_cdc_row(self.table, value, self.topic, self.partition, message.offset, self.topic_id)
        stats.encode_s += time.perf_counter() - started
        return row, 0.0

    def _fast_rows(self) -> None:
        return None  # CDC messages are not events: each takes encode_cdc_row

    def seal(self) -> Chunk:
        chunk = super().seal()
        chunk.table = self.table.clickhouse_table
        chunk.columns = self.table.columns
        return chunk
