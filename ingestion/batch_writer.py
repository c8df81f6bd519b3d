"""Writes a sealed batch to ClickHouse: raw rows, dead letters, and its `started`/`done` log rows.

Every insert goes through the loader's bounded retries (ingestion/retries.py) and carries the
range's deduplication token, so a retried or redone insert lands once. A row ClickHouse refuses
(a value it cannot parse or store) is isolated from its chunk and dead-lettered, so it never
blocks its partition. Only ClickHouse and the DLQ producer are touched here, never the Kafka
consumer: the writer runs on its own thread while the consume loop goes on.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from ingestion.batch_log import BATCH_LOG_COLUMNS, BATCH_LOG_TABLE, batch_log_rows
from ingestion.dead_letters import DeadLetter, DlqPublisher
from ingestion.loader_stats import LoaderStats
from ingestion.partition_ranges import Batch, Chunk
from ingestion.raw_tables import DEAD_LETTER_COLUMNS, RAW_COLUMNS, raw_table
from ingestion.retries import Retrier

log = logging.getLogger(__name__)

# ClickHouse errors that blame the data of an insert (a value it cannot parse or store, a
# constraint), not the server or the statement: only those split a chunk to isolate rows.
# (Over the embedded server, errors raised after parsing, such as a CHECK constraint, are not
# reported at all: chDB 4.4's streaming insert swallows them; see the README.)
ROW_REFUSED_CODES = frozenset({6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 376, 469, 691})


def rows_refused(exc: BaseException) -> bool:
    """Whether ClickHouse refused an insert for its data (then the refused rows are isolated)."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    return isinstance(exc, DatabaseError) and getattr(exc, "code", None) in ROW_REFUSED_CODES


class BatchWriter:
    def __init__(
        self,
        client: Any,
        database: str,
        dlq: DlqPublisher,
        retrying: Retrier,
        stats: LoaderStats,
        loader_id: str,
    ):
        self.client = client
        self.database = database
        self.dlq = dlq
        self.retrying = retrying
        self.stats = stats
        self.loader_id = loader_id
        self.cluster_id = ""  # the Kafka cluster the batches come from: set on each assignment

    def write(self, batch: Batch) -> None:
        """Log the batch `started`, insert its dead letters and rows, log it `done`."""
        self._log(batch, "started")
        for chunk in batch.chunks:
            began = time.perf_counter()
            if chunk.dead:
                self.dlq.publish(chunk.dead)
                rows = [letter.row() for letter in chunk.dead]
                self._insert_rows("dead_letters", DEAD_LETTER_COLUMNS, rows, "dlq:" + chunk.token)
            if chunk.row_count:
                self._insert_chunk(chunk)
            chunk.insert_ms = (time.perf_counter() - began) * 1000
        if any(chunk.dead for chunk in batch.chunks):
            self.dlq.flush()
        self._log(batch, "done")

    def _log(self, batch: Batch, state: str) -> None:
        rows = batch_log_rows(batch, state, self.loader_id, self.cluster_id, self.stats.lag)
        self._insert_rows(BATCH_LOG_TABLE, BATCH_LOG_COLUMNS, rows, None)

    def _insert_chunk(self, chunk: Chunk) -> None:
        """Insert a chunk's rows; rows ClickHouse refuses are split off and dead-lettered.

        The contract should let no such row through, but if one does, it must not block its
        partition: the chunk is inserted in halves (each with a token derived from the range
        and the row positions, so a redo of the range splits and deduplicates the same way)
        until the refused rows stand alone.
        """
        table = chunk.table or raw_table(chunk.domain)
        columns = chunk.columns or RAW_COLUMNS
        try:
            chunk.written = self._insert_json(table, chunk.body, chunk.token, columns)
            return
        except Exception as exc:
            if not rows_refused(exc):
                raise
            error = exc
        lines = bytes(chunk.body).splitlines(keepends=True)
        refused: list[tuple[int, Exception]] = []
        chunk.written = self._insert_halves(table, lines, 0, len(lines), chunk.token, error, refused, columns)
        letters = [_refused_letter(chunk, table, lines[index], exc) for index, exc in refused]
        log.error(
            "ClickHouse refused %d row(s) of %s[%d] %d-%d; dead-lettered: %s",
            len(letters),
            chunk.topic,
            chunk.partition,
            chunk.first_offset,
            chunk.last_offset,
            letters[0].reason if letters else "",
        )
        self.dlq.publish(letters)
        rows = [letter.row() for letter in letters]
        self._insert_rows("dead_letters", DEAD_LETTER_COLUMNS, rows, "dlq-refused:" + chunk.token)
        chunk.dead = chunk.dead + letters
        chunk.row_count -= len(letters)
        self.stats.rows_rejected += len(letters)

    def _insert_halves(
        self,
        table: str,
        lines: list[bytes],
        start: int,
        end: int,
        token: str,
        error: Exception,
        refused: list[tuple[int, Exception]],
        columns: tuple[str, ...] = RAW_COLUMNS,
    ) -> int:
        """Insert lines[start:end], known to be refused as a whole; returns the rows written."""
        if end - start == 1:
            refused.append((start, error))
            return 0
        middle = (start + end) // 2
        written = 0
        for first, last in ((start, middle), (middle, end)):
            try:
                written += self._insert_json(table, b"".join(lines[first:last]), f"{token}#{first}-{last}", columns)
            except Exception as exc:
                if not rows_refused(exc):
                    raise
                written += self._insert_halves(table, lines, first, last, token, exc, refused, columns)
        return written

    def _insert_rows(self, table: str, columns: tuple[str, ...], rows: list[list[Any]], token: str | None) -> int:
        settings = {"insert_deduplication_token": token} if token else None
        database = self.database
        began = time.perf_counter()
        summary = self.retrying(
            lambda: self.client.insert(f"`{database}`.`{table}`", rows, column_names=list(columns), settings=settings),
            f"insert into {table}",
        )
        self.stats.insert_s += time.perf_counter() - began
        return int(summary.written_rows)

    def _insert_json(
        self, table: str, body: bytes | bytearray, token: str, columns: tuple[str, ...] = RAW_COLUMNS
    ) -> int:
        database = self.database
        began = time.perf_counter()
        summary = self.retrying(
            lambda: self.client.raw_insert(
                f"`{database}`.`{table}`",
                column_names=list(columns),
                insert_block=bytes(body),
                fmt="JSONEachRow",
                settings={"insert_deduplication_token": token, "input_format_json_read_objects_as_strings": 1},
            ),
            f"insert into {table}",
        )
        self.stats.insert_s += time.perf_counter() - began
        return int(summary.written_rows)


def _refused_letter(chunk: Chunk, table: str, line: bytes, error: Exception) -> DeadLetter:
    offset = int(orjson.loads(line)["kafka_offset"])
    text = str(error).split("server response: ", 1)[-1].strip().splitlines()[0]
    reason = f"{getattr(error, 'name', None) or 'code ' + str(getattr(error, 'code', '?'))}: {text[:400]}"
    return DeadLetter(
        chunk.topic,
        chunk.partition,
        offset,
        chunk.topic_id,
        None,
        line,
        f"ClickHouse refused the row for {table}: {reason} (raw_value holds the row as encoded for the table)",
        datetime.now(UTC),
    )
