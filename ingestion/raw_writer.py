"""Write envelopes straight into the raw tables, in exactly the loader's row format.

For benchmarks of the warehouse and tests of ClickHouse-side behaviour (materialized views,
snapshots) that need raw rows without measuring Kafka: each event is validated like the
loader validates it and encoded with `encode_raw_row`; rows are inserted in large blocks.
Offsets are a per-topic counter and the topic id is `source`, so nothing here collides with
what the loader writes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson

from ingestion.contract import validate
from ingestion.raw_tables import RAW_COLUMNS, encode_raw_row, raw_table
from ingestion.topics import topic_for


class RawWriter:
    """Buffers raw rows per table and inserts them in blocks of `insert_rows`."""

    def __init__(self, client: Any, database: str, *, insert_rows: int = 250_000, source: str = "raw-writer"):
        self.client = client
        self.database = database
        self.insert_rows = insert_rows
        self.source = source
        self.bodies: dict[str, bytearray] = defaultdict(bytearray)
        self.counts: dict[str, int] = defaultdict(int)
        self.offsets: dict[str, int] = defaultdict(int)
        self.written = 0

    def add(self, event: dict[str, Any]) -> None:
        envelope = validate(orjson.dumps(event))
        spec = topic_for(envelope.event_type)
        offset = self.offsets[spec.name]
        self.offsets[spec.name] = offset + 1
        table = raw_table(spec.domain)
        self.bodies[table] += encode_raw_row(
            envelope, envelope.ingested_at_text or envelope.ts_text, spec.name, 0, offset, self.source
        )
        self.counts[table] += 1
        if self.counts[table] >= self.insert_rows:
            self.flush(table)

    def add_all(self, events: Any) -> RawWriter:
        for event in events:
            self.add(event)
        return self

    def flush(self, table: str | None = None) -> None:
        for name in [table] if table else list(self.bodies):
            if not self.counts[name]:
                continue
            self.client.raw_insert(
                f"`{self.database}`.`{name}`",
                column_names=list(RAW_COLUMNS),
                insert_block=bytes(self.bodies[name]),
                fmt="JSONEachRow",
                settings={"input_format_json_read_objects_as_strings": 1},
            )
            self.written += self.counts[name]
            self.bodies[name] = bytearray()
            self.counts[name] = 0
