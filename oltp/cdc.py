"""`eventhouse cdc`: change data capture of the OLTP dimension tables into Kafka.

PostgreSQL decodes its WAL for the publication `eventhouse_cdc` (users, products, leaderboard)
into a logical replication slot (plugin pgoutput). psycopg 3 does not speak the streaming
replication protocol, so the slot is read with SQL: `pg_logical_slot_peek_binary_changes`
returns whole transactions in commit order, which oltp/pgoutput.py parses and oltp/debezium.py
turns into Debezium change events on `cdc.<schema>.<table>` (key = the primary key).

**Publish, then advance.** A peek does not consume: the events of every complete transaction
are sent with acks=all, and only once the broker acknowledged all of them does the slot advance
(`pg_replication_slot_advance`) to the last Commit's end LSN. A crash before that re-reads the
same changes on restart: re-sent, they carry the same LSN, the ClickHouse table's version, and
collapse with their first copy. Nothing is lost, since the slot only moves past what Kafka holds.
A peek that reached the end of the WAL lets the slot advance to the flush position read before
it (no transaction committed before that position has changes for us), so busy tables outside
the publication never hold WAL back.

**Snapshot.** A new slot starts at its creation LSN L and decodes only what commits after it,
so the tables' existing rows are read once (op `r`, LSN L) in a REPEATABLE READ transaction
begun after the slot was created. That transaction may already see changes committed after L;
the slot streams those too, with LSNs above L, and since each carries the row's state after the
change, applying them over the snapshot ends in the same state: a later version of what the
snapshot saw. (Rows of a transaction that straddled the slot's creation may have LSNs below L:
their versions are raised to L+1, still in commit order per row.) Each table's snapshot starts
with a truncate event at L-1, so rows deleted while no slot existed disappear from the warehouse.

**A dropped slot.** `cdc_state` (migration 0002) records the slot once its snapshot is
published. A missing slot with a record means someone dropped it under us: changes since are
gone from the log, so the capture logs a WARNING naming the slot, creates it again and
re-snapshots every table. A slot without a record is an unfinished snapshot (the record is
removed before a snapshot starts and written when it is published): it is recreated and the
snapshot done again.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ingestion.cdc_tables import CDC_TABLES
from oltp import pgoutput
from oltp.connection import connect
from oltp.debezium import ChangeEvent, TableShape, change_event
from oltp.migrations import CDC_PUBLICATION, apply_migrations
from settings import (
    DEFAULT_CDC_BATCH_CHANGES,
    DEFAULT_CDC_POLL_SECONDS,
    DEFAULT_CDC_SLOT,
    Settings,
    cdc_topic_prefix,
)

log = logging.getLogger(__name__)

# Test hook: kill the capture (SIGKILL) after the broker acknowledged a batch of changes and before
# the slot advances, the one moment where a crash makes the next run publish those changes again.
KILL_BEFORE_ADVANCE_ENV = "EVENTHOUSE_CDC_TEST_KILL_BEFORE_ADVANCE"
SEND_TIMEOUT_S = 60.0


class CdcError(RuntimeError):
    """The capture cannot go on (the slot, the database or Kafka refused); the message says why."""


@dataclass
class CdcConfig:
    dsn: str
    slot: str = DEFAULT_CDC_SLOT
    publication: str = CDC_PUBLICATION
    batch_changes: int = DEFAULT_CDC_BATCH_CHANGES
    poll_seconds: float = DEFAULT_CDC_POLL_SECONDS
    once: bool = False
    topic_prefix: str = field(default_factory=cdc_topic_prefix)


@dataclass
class CdcStats:
    snapshots: int = 0
    snapshot_rows: int = 0
    slot_recreated: int = 0
    transactions: int = 0
    changes: Counter[str] = field(default_factory=Counter)
    published: int = 0
    confirmed_lsn: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "snapshots": self.snapshots,
            "snapshot_rows": self.snapshot_rows,
            "slot_recreated_after_drop": self.slot_recreated,
            "transactions": self.transactions,
            "changes": dict(sorted(self.changes.items())),
            "published": self.published,
            "confirmed_lsn": self.confirmed_lsn,
        }


@dataclass
class _Transaction:
    xid: int
    commit_ms: int
    events: list[tuple[str, ChangeEvent]] = field(default_factory=list)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class CdcCapture:
    def __init__(self, settings: Settings, config: CdcConfig, producer: Any = None):
        self.settings = settings
        self.config = config
        self.stats = CdcStats()
        self._stop = threading.Event()
        self._producer = producer
        self._conn: Any = None
        self._database = ""
        self._shapes: dict[tuple[str, str], TableShape] = {}
        self._relations: dict[int, TableShape] = {}
        self._skipped: set[tuple[str, str]] = set()
        # Changes decoded right after a snapshot at L may have LSNs below L (module docstring).
        self._floor_lsn = 0

    def request_stop(self, *_args: Any) -> None:
        self._stop.set()

    # ---- the run ------------------------------------------------------------------

    def run(self) -> CdcStats:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self.request_stop)
        try:
            self._connect()
            self._ensure_slot()
            while not self._stop.is_set():
                reached_end = self._poll()
                if reached_end and self.config.once:
                    break
                if reached_end:
                    self._stop.wait(self.config.poll_seconds)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        return self.stats

    def close(self) -> None:
        for closeable in (self._producer, self._conn):
            if closeable is not None:
                try:
                    closeable.close()
                except Exception:
                    log.debug("close failed", exc_info=True)
        self._producer = self._conn = None

    def _connect(self) -> None:
        from kafka import KafkaAdminClient, KafkaProducer

        from ingestion.topics import ensure_topics

        self._conn = connect(self.config.dsn, autocommit=True)  # PostgresUnavailable names the server
        # Timestamps are decoded in the session's time zone: UTC makes the text unambiguous.
        self._conn.execute("SET TimeZone = 'UTC'")
        apply_migrations(self._conn)  # idempotent; its own transaction
        self._database = str(self._conn.execute("SELECT current_database()").fetchone()[0])
        admin = KafkaAdminClient(**self.settings.kafka.client_kwargs(), client_id="eventhouse-cdc-admin")
        try:
            ensure_topics(admin, [table.topic_spec_in(self.config.topic_prefix) for table in CDC_TABLES])
        finally:
            admin.close()
        if self._producer is None:
            # One request in flight keeps each topic's order as committed, retries included.
            self._producer = KafkaProducer(
                **self.settings.kafka.client_kwargs(),
                acks="all",
                linger_ms=5,
                max_in_flight_requests_per_connection=1,
                client_id="eventhouse-cdc",
            )

    # ---- the slot and its snapshot -------------------------------------------------

    def _slot(self) -> tuple[str, str] | None:
        """(plugin, confirmed_flush_lsn) of the slot, None when it does not exist."""
        row = self._conn.execute(
            "SELECT plugin, confirmed_flush_lsn::text, database FROM pg_replication_slots WHERE slot_name = %s",
            (self.config.slot,),
        ).fetchone()
        if row is not None and row[2] != self._database:
            raise CdcError(
                f"replication slot {self.config.slot!r} belongs to database {row[2]!r}, not {self._database!r}: "
                "choose another --slot"
            )
        return None if row is None else (row[0], row[1] or "")

    def _ensure_slot(self) -> None:
        slot = self._slot()
        record = self._conn.execute(
            "SELECT snapshot_lsn::text, snapshot_at FROM cdc_state WHERE slot_name = %s", (self.config.slot,)
        ).fetchone()
        if slot is not None and slot[0] != "pgoutput":
            raise CdcError(f"replication slot {self.config.slot!r} exists with plugin {slot[0]!r}, not pgoutput")
        if slot is not None and record is not None:
            self._floor_lsn = pgoutput.lsn_int(record[0]) + 1
            self.stats.confirmed_lsn = slot[1]
            log.info("resuming from replication slot %r at %s", self.config.slot, slot[1])
            return
        if slot is None and record is not None:
            self.stats.slot_recreated += 1
            log.warning(
                "replication slot %r is missing, but this capture published from it before (snapshot at LSN %s, %s): "
                "changes made while it was missing cannot be read; creating it again and re-snapshotting %s",
                self.config.slot,
                record[0],
                record[1].isoformat(),
                ", ".join(f"{t.schema}.{t.table}" for t in CDC_TABLES),
            )
        elif slot is not None:
            log.info("replication slot %r has no finished snapshot: creating it again", self.config.slot)
            self._conn.execute("SELECT pg_drop_replication_slot(%s)", (self.config.slot,))
        self._snapshot()

    def _snapshot(self) -> None:
        import psycopg

        # The record goes first and comes back only once the snapshot is published: a crash in between
        # leaves a slot without a record, which the next start snapshots again.
        self._conn.execute("DELETE FROM cdc_state WHERE slot_name = %s", (self.config.slot,))
        created = self._conn.execute(
            "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (self.config.slot,)
        ).fetchone()[0]
        lsn = pgoutput.lsn_int(created)
        log.info("created replication slot %r at %s; snapshotting the tables", self.config.slot, created)
        rows = 0
        with connect(self.config.dsn) as snap:
            snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            snap.read_only = True
            with snap.transaction():
                snap.execute("SET LOCAL TimeZone = 'UTC'")
                taken_ms = int(snap.execute("SELECT (extract(epoch FROM now()) * 1000)::bigint").fetchone()[0])
                for table in CDC_TABLES:
                    shape = self._shape(table.schema, table.table, snap)
                    events = [
                        (self._topic(shape), self._event(shape, "t", None, None, lsn - 1, None, taken_ms, "true"))
                    ]
                    columns = ", ".join(f'"{name}"::text' for name, _ in shape.columns)
                    query = f'SELECT {columns} FROM "{table.schema}"."{table.table}"'  # noqa: S608
                    table_rows = 0
                    # a server-side cursor, published in batches: a large table never sits in memory whole
                    with snap.cursor(name=f"snapshot_{table.table}") as cursor:
                        cursor.execute(query)
                        for values in cursor:
                            row = shape.row(tuple(values))
                            events.append(
                                (self._topic(shape), self._event(shape, "r", None, row, lsn, None, taken_ms, "true"))
                            )
                            table_rows += 1
                            if len(events) >= self.config.batch_changes:
                                self._publish(events)
                                events = []
                    self._publish(events)
                    rows += table_rows
                    log.info("snapshot of %s.%s: %d rows", table.schema, table.table, table_rows)
        self._conn.execute(
            "INSERT INTO cdc_state (slot_name, snapshot_lsn, snapshot_at, tables) VALUES (%s, %s::pg_lsn, now(), %s) "
            "ON CONFLICT (slot_name) DO UPDATE SET snapshot_lsn = excluded.snapshot_lsn, "
            "snapshot_at = excluded.snapshot_at, tables = excluded.tables",
            (self.config.slot, created, [f"{t.schema}.{t.table}" for t in CDC_TABLES]),
        )
        self._floor_lsn = lsn + 1
        self.stats.snapshots += 1
        self.stats.snapshot_rows += rows
        self.stats.confirmed_lsn = created

    # ---- streaming ------------------------------------------------------------------

    def _poll(self) -> bool:
        """Publish the complete transactions waiting in the slot, then advance it; True at the end of the WAL."""
        import psycopg

        flushed = self._conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0]
        try:
            rows = self._conn.execute(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes("
                "%s, NULL, %s, 'proto_version', '1', 'publication_names', %s)",
                (self.config.slot, self.config.batch_changes, self.config.publication),
            ).fetchall()
        except psycopg.errors.UndefinedObject:
            # The slot was dropped while we ran: the same decision as at start (a warning, a re-snapshot).
            self._ensure_slot()
            return False
        except psycopg.errors.ObjectInUse as exc:
            raise CdcError(f"replication slot {self.config.slot!r} is in use by another reader: {exc}") from None
        events: list[tuple[str, ChangeEvent]] = []
        transaction: _Transaction | None = None
        end_lsn: int | None = None
        for lsn_text, data in rows:
            message = pgoutput.parse(data)
            if isinstance(message, pgoutput.Begin):
                transaction = _Transaction(message.xid, _ms(message.commit_time))
            elif isinstance(message, pgoutput.Relation):
                self._relations[message.oid] = self._shape(message.namespace, message.name, self._conn, message)
            elif isinstance(message, pgoutput.Commit):
                if transaction is not None:
                    events.extend(transaction.events)
                    self.stats.transactions += 1
                transaction, end_lsn = None, message.end_lsn
            elif transaction is not None:
                self._change(transaction, message, pgoutput.lsn_int(lsn_text))
        reached_end = len(rows) < self.config.batch_changes
        if events:
            self._publish(events)
            if os.environ.get(KILL_BEFORE_ADVANCE_ENV):
                log.warning("%s is set: killing the capture before the slot advances", KILL_BEFORE_ADVANCE_ENV)
                os.kill(os.getpid(), signal.SIGKILL)
        target = end_lsn
        if reached_end:
            target = max(target or 0, pgoutput.lsn_int(flushed))
        if target:
            confirmed = self._conn.execute(
                "SELECT end_lsn::text FROM pg_replication_slot_advance(%s, %s::pg_lsn)",
                (self.config.slot, pgoutput.lsn_text(target)),
            ).fetchone()[0]
            self.stats.confirmed_lsn = confirmed
        if events:
            log.info(
                "published %d changes; slot %r confirmed at %s", len(events), self.config.slot, self.stats.confirmed_lsn
            )
        return reached_end

    def _change(self, transaction: _Transaction, message: pgoutput.Message, lsn: int) -> None:
        version = max(lsn, self._floor_lsn)
        if isinstance(message, pgoutput.Truncate):
            for oid in message.relation_oids:
                shape = self._relations.get(oid)
                if shape is not None and self._known(shape):
                    event = self._event(shape, "t", None, None, version, transaction.xid, transaction.commit_ms)
                    transaction.events.append((self._topic(shape), event))
            return
        if not isinstance(message, pgoutput.Insert | pgoutput.Update | pgoutput.Delete):
            return  # Origin, Type and logical messages carry no row
        shape = self._relations.get(message.relation_oid)
        if shape is None:
            raise CdcError(f"a change of relation {message.relation_oid} arrived before its Relation message")
        if not self._known(shape):
            return
        if isinstance(message, pgoutput.Insert):
            op, before, after = "c", None, shape.row(message.new)
        elif isinstance(message, pgoutput.Update):
            before = shape.row(message.old)
            op, after = "u", shape.row(message.new, fallback=before)
        else:
            op, before, after = "d", shape.row(message.old), None
        event = self._event(shape, op, before, after, version, transaction.xid, transaction.commit_ms)
        transaction.events.append((self._topic(shape), event))

    # ---- helpers --------------------------------------------------------------------

    def _known(self, shape: TableShape) -> bool:
        """Whether the table is one the loader lands (ingestion/cdc_tables.py); others are skipped once, loudly."""
        if any((t.schema, t.table) == (shape.schema, shape.table) for t in CDC_TABLES):
            return True
        if (shape.schema, shape.table) not in self._skipped:
            self._skipped.add((shape.schema, shape.table))
            log.warning(
                "%s.%s is in publication %s but not in ingestion/cdc_tables.py CDC_TABLES: its changes are skipped",
                shape.schema,
                shape.table,
                self.config.publication,
            )
        return False

    def _topic(self, shape: TableShape) -> str:
        return f"{self.config.topic_prefix}.{shape.schema}.{shape.table}"

    def _shape(self, schema: str, table: str, conn: Any, relation: pgoutput.Relation | None = None) -> TableShape:
        """The table's columns (from its Relation message when given, else the catalog) and primary key."""
        if relation is None and (schema, table) in self._shapes:
            return self._shapes[(schema, table)]
        key = tuple(
            row[0]
            for row in conn.execute(
                "SELECT a.attname FROM pg_index i "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
                "WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND i.indisprimary "
                "ORDER BY array_position(i.indkey::int2[], a.attnum)",
                (schema, table),
            ).fetchall()
        )
        if relation is not None:
            columns = tuple((column.name, column.type_oid) for column in relation.columns)
        else:
            columns = tuple(
                (row[0], int(row[1]))
                for row in conn.execute(
                    "SELECT attname, atttypid FROM pg_attribute "
                    "WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum",
                    (schema, table),
                ).fetchall()
            )
        shape = TableShape(schema, table, columns, key or tuple(name for name, _ in columns))
        self._shapes[(schema, table)] = shape
        return shape

    def _event(
        self,
        shape: TableShape,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        lsn: int,
        tx_id: int | None,
        source_ts_ms: int,
        snapshot: str = "false",
    ) -> ChangeEvent:
        self.stats.changes[op] += 1
        return change_event(
            shape,
            op,
            before,
            after,
            lsn=lsn,
            tx_id=tx_id,
            source_ts_ms=source_ts_ms,
            database=self._database,
            topic_prefix=self.config.topic_prefix,
            snapshot=snapshot,
            now_ms=int(time.time() * 1000),
        )

    def _publish(self, events: list[tuple[str, ChangeEvent]]) -> None:
        """Send every event and wait until the broker acknowledged each (acks=all); raise otherwise."""
        from kafka.errors import KafkaError

        futures = [self._producer.send(topic, key=event.key, value=event.value) for topic, event in events]
        self._producer.flush(timeout=SEND_TIMEOUT_S)
        try:
            for future in futures:
                future.get(timeout=SEND_TIMEOUT_S)
        except KafkaError as exc:
            raise CdcError(f"Kafka did not acknowledge a change event ({exc}); the slot was not advanced") from None
        self.stats.published += len(events)
