"""Each assigned partition's pending offset range: messages accepted as raw rows or dead letters.

A message is validated against the contract, checked against its topic and encoded as a raw
row; whatever fails at any of these steps becomes a dead letter with the reason, and never
stops its neighbours. The loader hands over each poll's messages of a partition together
(`accept_many`): a plainly valid event gets its row from the fast path (ingestion/fast_rows.py),
any other message goes through the reference steps above, with the same result either way.
The range only ever holds fully encoded rows, so a range is never written (and logged `done`)
without its rows. Sealing a range hands it to the writer as a `Chunk`; one flush's chunks form a
`Batch`. Nothing here talks to Kafka or ClickHouse.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import orjson

from ingestion.contract import ContractError, validate
from ingestion.dead_letters import DeadLetter
from ingestion.fast_rows import FastRows, encode_lines
from ingestion.loader_stats import LoaderStats
from ingestion.raw_tables import encode_raw_row
from ingestion.topics import check_topic

log = logging.getLogger(__name__)


class Message(Protocol):
    """What the loader reads of a Kafka record (kafka-python's ConsumerRecord has these)."""

    offset: int
    key: bytes | None
    value: bytes | None


def clickhouse_time(moment: datetime) -> str:
    """`YYYY-MM-DD hh:mm:ss.mmm` in UTC, as ClickHouse parses DateTime64(3) (isoformat is ~7x faster than strftime)."""
    return moment.astimezone(UTC).isoformat(sep=" ", timespec="milliseconds")[:23]


@dataclass
class PartitionState:
    """One assigned partition: where reading stands, and the offset range waiting to be written."""

    topic: str
    partition: int
    domain: str
    topic_id: str
    next_offset: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    # JSONEachRow lines, appended in place: holding each orjson.dumps() result as its own
    # bytes object kept ~8 KB of allocation per row (orjson's buffer is not shrunk).
    body: bytearray = field(default_factory=bytearray)
    row_count: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    nbytes: int = 0
    opened_at: float = 0.0
    forced_end: int | None = None  # recovery: this range must end exactly here
    reset_checked: bool = False
    max_event_lag_ms: float = 0.0

    @property
    def has_data(self) -> bool:
        return self.first_offset is not None

    @property
    def ready_to_seal(self) -> bool:
        """Whether the pending range may be written now.

        A range being redone (`forced_end`) is written only whole, up to exactly its old last
        offset: written in part, its rows would carry other deduplication tokens than the first
        attempt's, and whatever of that attempt had landed would be loaded twice. Until then it
        stays pending; if the run ends or the partition is revoked first, it is not written at
        all, and the next owner redoes it whole from the batch log.
        """
        if not self.has_data:
            return False
        return self.forced_end is None or (self.last_offset is not None and self.last_offset >= self.forced_end)

    @property
    def token(self) -> str:
        return f"{self.topic}:{self.partition}:{self.first_offset}-{self.last_offset}@{self.topic_id}"

    def accept(self, message: Message, contract: Any, now: datetime, now_text: str, stats: LoaderStats) -> None:
        """Add the next message of the range: as a raw row, or as a dead letter with the reason.

        `now` is the loader's clock (the contract checks timestamps against it) and `now_text`
        the same moment as ClickHouse text, the row's `ingested_at` when the event has none.
        """
        self.accept_many((message,), contract, now, now_text, stats)

    def accept_many(
        self, messages: Sequence[Message], contract: Any, now: datetime, now_text: str, stats: LoaderStats
    ) -> None:
        """Add the next messages of the range, in offset order: exactly what `accept` of each would do.

        Each message is tried on the fast path (ingestion/fast_rows.py), which builds the row of a
        plainly valid event; any other message takes the reference path (`_encode`: the contract,
        the topic check, `encode_raw_row`) and becomes its row or a dead letter with the reason.
        The rows are encoded in one call and appended to the body once. The state changes only
        after that, so an exception leaves nothing half-built for a flush to write.
        """
        if not messages:
            return
        arrived = time.monotonic()
        if stats.first_message_at is None:
            stats.first_message_at = arrived
        fast = self._fast_rows()
        items, letters, oldest, max_lag, nbytes = self._rows(messages, fast, contract, now, now_text, stats)
        encode_started = time.perf_counter()
        try:
            block = encode_lines(items) if items else b""
        except Exception:  # not foreseen: every message of the slice takes the reference path
            log.exception("%s[%d]: fast rows not encodable; the reference path instead", self.topic, self.partition)
            items, letters, oldest, max_lag, nbytes = self._rows(messages, None, contract, now, now_text, stats)
            block = encode_lines(items) if items else b""
        stats.encode_s += time.perf_counter() - encode_started
        if oldest is not None:
            max_lag = max(max_lag, (now - oldest).total_seconds() * 1000)
        if not self.has_data:
            self.first_offset = messages[0].offset
            self.opened_at = arrived
        self.last_offset = messages[-1].offset
        self.next_offset = self.last_offset + 1
        stats.messages += len(messages)
        stats.bytes_consumed += nbytes
        self.nbytes += nbytes
        self.body += block
        self.row_count += len(items)
        self.dead.extend(letters)
        self.max_event_lag_ms = max_lag

    def _rows(
        self,
        messages: Sequence[Message],
        fast: FastRows | None,
        contract: Any,
        now: datetime,
        now_text: str,
        stats: LoaderStats,
    ) -> tuple[list[Any], list[DeadLetter], datetime | None, float, int]:
        """The rows (RawRow, or msgspec.Raw of a reference row without its newline) and dead letters
        of these messages; the earliest `ts` among the fast rows, the largest event lag among the
        others (and the range's so far), and the bytes read."""
        found: list[Any]
        oldest: datetime | None = None
        if fast is not None:
            try:
                found, unsure, oldest, nbytes = fast.rows(
                    messages, contract, contract.ts_min, now + contract.ts_max_ahead, now_text
                )
            except Exception:  # not foreseen: every message takes the reference path
                log.exception("%s[%d]: the fast path failed; the reference path instead", self.topic, self.partition)
                fast = None
        if fast is None:
            found, unsure, oldest = [None] * len(messages), len(messages), None
            nbytes = sum(len(message.value or b"") for message in messages)
        letters: list[DeadLetter] = []
        max_lag = self.max_event_lag_ms
        if not unsure:
            return found, letters, oldest, max_lag, nbytes
        items: list[Any] = []
        for message, row in zip(messages, found, strict=True):
            if row is not None:
                items.append(row)
                continue
            value = message.value or b""
            try:
                reference_row, event_lag_ms = self._encode(message, value, contract, now, now_text, stats)
            except ContractError as error:
                letters.append(self._letter(message, value, error.reason))
            except Exception as error:  # not foreseen, but still this one message's problem, not the loader's
                log.exception("%s[%d] offset %d could not be loaded", self.topic, self.partition, message.offset)
                letters.append(self._letter(message, value, f"could not be loaded ({type(error).__name__}: {error})"))
            else:
                items.append(msgspec.Raw(reference_row[:-1]))  # encode_lines puts the newline back
                max_lag = max(max_lag, event_lag_ms)
        return items, letters, oldest, max_lag, nbytes

    def _fast_rows(self) -> FastRows | None:
        """The fast path for this partition's messages (None: every message takes the reference path)."""
        return FastRows.for_topic(self.topic, self.partition, self.topic_id)

    def _encode(
        self, message: Message, value: bytes, contract: Any, now: datetime, now_text: str, stats: LoaderStats
    ) -> tuple[bytes, float]:
        """The raw-table row of one message (ContractError when it cannot be one) and its event lag in ms."""
        if not value:
            raise ContractError("empty message (no value)" if message.value is None else "empty message (0 bytes)")
        envelope = validate(value, contract, now)
        check_topic(envelope.event_type, self.topic)
        encode_started = time.perf_counter()
        try:
            ingested_at = envelope.ingested_at_text or now_text
            row = encode_raw_row(envelope, ingested_at, self.topic, self.partition, message.offset, self.topic_id)
        except orjson.JSONEncodeError as exc:
            raise ContractError(f"cannot be encoded as a raw row: {exc}") from None
        stats.encode_s += time.perf_counter() - encode_started
        return row, (now - envelope.ts).total_seconds() * 1000

    def _letter(self, message: Message, value: bytes, reason: str) -> DeadLetter:
        return DeadLetter(
            self.topic, self.partition, message.offset, self.topic_id, message.key, value, reason, datetime.now(UTC)
        )

    def seal(self) -> Chunk:
        """The pending range as a chunk to write; the partition starts a new range."""
        assert self.first_offset is not None and self.last_offset is not None
        chunk = Chunk(
            self.topic,
            self.partition,
            self.domain,
            self.topic_id,
            self.first_offset,
            self.last_offset,
            self.body,
            self.row_count,
            self.dead,
            self.nbytes,
            self.max_event_lag_ms,
            self.token,
        )
        self.clear()
        return chunk

    def clear(self) -> None:
        self.first_offset = self.last_offset = None
        self.body, self.row_count = bytearray(), 0
        self.dead = []
        self.nbytes = 0
        self.forced_end = None
        self.max_event_lag_ms = 0.0


@dataclass
class Chunk:
    """One partition's contiguous offset range, sealed for writing."""

    topic: str
    partition: int
    domain: str
    topic_id: str
    first_offset: int
    last_offset: int
    body: bytearray
    row_count: int
    dead: list[DeadLetter]
    nbytes: int
    max_event_lag_ms: float
    token: str  # the insert deduplication token of the range's rows
    written: int = 0
    insert_ms: float = 0.0
    # Set for CDC topics (ingestion/cdc_rows.py): the table and columns the rows go to, instead
    # of the domain's raw events table.
    table: str = ""
    columns: tuple[str, ...] = ()


@dataclass
class Batch:
    """The chunks of one flush, logged `started` and `done` together under one batch id."""

    batch_id: str
    chunks: list[Chunk]
    started_at: datetime


def seal_batch(states: Iterable[PartitionState]) -> Batch | None:
    """Move the pending rows of these partitions into a batch; the partitions start afresh.

    A partly redone range stays where it is (see `PartitionState.ready_to_seal`).
    """
    chunks = [state.seal() for state in states if state.ready_to_seal]
    if not chunks:
        return None
    return Batch(uuid.uuid4().hex, chunks, datetime.now(UTC))
