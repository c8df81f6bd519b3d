"""The Kafka -> ClickHouse loader's consume loop: poll, batch per partition, write, then commit.

The loader's effect is exactly-once; the design is documented with the batch-log protocol that
carries it (ingestion/batch_log.py). This module keeps its side of it:

- on assignment, every partition is sought to where the batch log says loading stopped
  (`batch_log.resume_point`), and an unfinished range is closed at exactly its old last offset;
- messages are accepted into per-partition ranges (ingestion/partition_ranges.py), sealed into
  a batch and handed to the writer (ingestion/batch_writer.py), one batch in flight at a time;
- Kafka offsets are committed only after the writer logged the batch `done`; a crash before
  that leaves the commit behind ClickHouse's `done` rows, which the next owner resumes from;
- a partition whose highwater falls below what was loaded (a restarted in-memory broker) is
  read again from 0 under a new topic id, so its new data is neither skipped nor deduplicated
  against the old.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import ConsumerRebalanceListener

from ingestion.batch_log import NOTHING_LOGGED, read_progress, resume_point
from ingestion.batch_writer import BatchWriter
from ingestion.cdc_rows import CdcPartitionState
from ingestion.cdc_tables import cdc_table_for_topic, cdc_topics
from ingestion.dead_letters import DlqPublisher
from ingestion.loader_metrics import LoaderMetrics
from ingestion.loader_stats import LoaderStats
from ingestion.partition_ranges import Batch, PartitionState, clickhouse_time, seal_batch
from ingestion.raw_tables import ensure_tables
from ingestion.retries import LoaderError, Retrier, short_reason
from ingestion.topics import DOMAINS, TOPICS_BY_NAME, TopicSpec, ensure_topics, topics_for_domains
from settings import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    DEFAULT_BATCH_SECONDS,
    DEFAULT_KAFKA_SESSION_TIMEOUT_MS,
    DEFAULT_LOADER_GROUP_ID,
    DEFAULT_RAW_DATABASE,
    DEFAULT_RETRY_MAX_SLEEP_SECONDS,
    Settings,
)

# Imported from here by the CLI, Dagster and the tests.
__all__ = ["Loader", "LoaderConfig", "LoaderError", "LoaderStats", "short_reason"]

log = logging.getLogger(__name__)

# Messages accepted together (PartitionState.accept_many): their rows are encoded in one call and
# they share one reading of the clock, so the rows' ingested_at is at most this many messages stale
# (about a millisecond).
ACCEPT_SLICE = 512


@dataclass
class LoaderConfig:
    domains: tuple[str, ...] = DOMAINS
    group_id: str = DEFAULT_LOADER_GROUP_ID
    raw_database: str = DEFAULT_RAW_DATABASE
    batch_rows: int = DEFAULT_BATCH_ROWS
    batch_bytes: int = DEFAULT_BATCH_BYTES
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    until_caught_up: bool = False
    max_seconds: float | None = None
    session_timeout_ms: int = DEFAULT_KAFKA_SESSION_TIMEOUT_MS
    ttl_days: int | None = None
    # The longest wait between retries while a server is down (they start at 0.2 s and double).
    retry_max_sleep: float = DEFAULT_RETRY_MAX_SLEEP_SECONDS
    # Kafka fetch sizes bound the loader's memory: kafka-python buffers up to one fetch per partition.
    fetch_max_bytes: int = 16 * 1024 * 1024
    partition_fetch_bytes: int = 4 * 1024 * 1024
    progress_every: float = 5.0
    # How long the broker may hold a fetch waiting for data; it bounds how stale a quiet
    # partition's newest events get before the loader sees them.
    fetch_max_wait_ms: int = 100
    # Also load the CDC topics (cdc.<schema>.<table>) into the cdc_<table> tables
    # (ingestion/cdc_tables.py). `eventhouse load` does by default (--no-cdc leaves them out).
    cdc: bool = False


class Loader:
    def __init__(
        self,
        settings: Settings,
        config: LoaderConfig,
        loader_id: str | None = None,
        metrics: LoaderMetrics | None = None,
    ):
        self.settings = settings
        self.config = config
        self.loader_id = loader_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stats = LoaderStats()
        # Always kept (a few counter updates per batch); served only when the caller starts a MetricsServer.
        self.metrics = metrics or LoaderMetrics()
        self.partitions: dict[tuple[str, int], PartitionState] = {}
        self._stop = threading.Event()
        self._deadline: float | None = None
        self._retrying = Retrier(
            settings,
            self.stats,
            self._stop,
            max_sleep=config.retry_max_sleep,
            max_seconds=config.max_seconds,
            deadline=None,
        )
        # Set when the run ends in an exception: the revoke callback must not write what was pending then.
        self._failed = False
        self._client: Any = None
        self._consumer: Any = None
        self._producer: Any = None
        self._dlq: DlqPublisher | None = None
        self._cluster_id = ""
        self._last_progress = time.monotonic()
        self._to_resume: list[Any] = []
        self._clock_at = 0.0
        self._clock_value = (datetime.now(UTC), "")
        self._batch_writer: BatchWriter | None = None
        # One writer thread: ClickHouse inserts of batch N overlap consuming batch N+1.
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventhouse-writer")
        self._inflight: tuple[Batch, Future] | None = None

    # ---- set-up -----------------------------------------------------------------

    def request_stop(self, *_args: Any) -> None:
        self._stop.set()

    def _clickhouse(self) -> Any:
        import clickhouse_connect

        kwargs = self.settings.clickhouse.client_kwargs()
        kwargs["database"] = "default"
        return clickhouse_connect.get_client(
            **kwargs, autogenerate_session_id=False, compress=False, query_retries=0, send_receive_timeout=120
        )

    def _connect(self) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

        self._client = self._retrying(self._clickhouse, "connect to ClickHouse")
        self._retrying(
            lambda: ensure_tables(self._client, self.config.raw_database, self.config.ttl_days), "create tables"
        )
        specs = topics_for_domains(list(self.config.domains)) + (cdc_topics() if self.config.cdc else [])

        def create_topics() -> None:
            admin = KafkaAdminClient(**self._kafka_kwargs(), client_id=f"{self.loader_id}-admin")
            try:
                ensure_topics(admin, specs)
            finally:
                admin.close()

        self._retrying(create_topics, "reach Kafka")
        self._consumer = self._retrying(
            lambda: KafkaConsumer(
                **self._kafka_kwargs(),
                group_id=self.config.group_id,
                client_id=self.loader_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.config.batch_rows,
                session_timeout_ms=self.config.session_timeout_ms,
                heartbeat_interval_ms=max(self.config.session_timeout_ms // 6, 500),
                fetch_max_bytes=self.config.fetch_max_bytes,
                max_partition_fetch_bytes=self.config.partition_fetch_bytes,
                fetch_max_wait_ms=self.config.fetch_max_wait_ms,
            ),
            "reach Kafka",
        )
        self._consumer.subscribe([spec.name for spec in specs], listener=_Rebalance(self))
        self._producer = self._retrying(
            lambda: KafkaProducer(**self._kafka_kwargs(), acks="all", linger_ms=5, client_id=f"{self.loader_id}-dlq"),
            "reach Kafka",
        )
        self._dlq = DlqPublisher(self._producer, lambda topic: _topic_spec(topic).dlq)
        self._batch_writer = BatchWriter(
            self._client, self.config.raw_database, self._dlq, self._retrying, self.stats, self.loader_id
        )

    def _kafka_kwargs(self) -> dict[str, Any]:
        """Kafka client settings; waiting for a broker never outlasts the run's time limit."""
        kwargs = self.settings.kafka.client_kwargs()
        if self._deadline is not None:
            remaining_ms = int((self._deadline - time.monotonic()) * 1000)
            kwargs["bootstrap_timeout_ms"] = max(min(int(kwargs["bootstrap_timeout_ms"]), remaining_ms), 500)
        return kwargs

    # ---- assignment and resume -------------------------------------------------

    def on_assigned(self, assigned: list[Any]) -> None:
        # kafka-python runs this inside its network loop, where blocking calls (committed())
        # cannot run; the main loop resumes these partitions right after poll returns.
        self._to_resume.extend(assigned)

    def _resume(self, assigned: list[Any]) -> None:
        """Seek newly assigned partitions to where ClickHouse says loading stopped."""
        cluster = self._consumer._client.cluster
        self._cluster_id = cluster.cluster_id or ""
        self._batch_writer.cluster_id = self._cluster_id
        for tp in assigned:
            topic_id = cluster.topic_id(tp.topic)
            spec = _topic_spec(tp.topic)
            cdc_table = cdc_table_for_topic(tp.topic)
            topic_id_text = str(topic_id) if topic_id else ""
            self.partitions[(tp.topic, tp.partition)] = (
                PartitionState(tp.topic, tp.partition, spec.domain, topic_id_text)
                if cdc_table is None
                else CdcPartitionState(tp.topic, tp.partition, spec.domain, topic_id_text, cdc_table)
            )
        topic_ids = {(tp.topic, tp.partition): self.partitions[(tp.topic, tp.partition)].topic_id for tp in assigned}
        logged = self._retrying(
            lambda: read_progress(self._client, self.config.raw_database, self._cluster_id, topic_ids),
            "read the batch log",
        )
        for tp in assigned:
            key = (tp.topic, tp.partition)
            state = self.partitions[key]
            progress = logged.get(key, NOTHING_LOGGED)
            committed = self._consumer.committed(tp)
            point = resume_point(committed, progress)
            if progress.done_last is not None and (committed is None or progress.done_last + 1 > committed):
                log.info(
                    "%s[%d]: ClickHouse has offsets up to %d loaded, ahead of the committed offset %s; resuming there",
                    tp.topic,
                    tp.partition,
                    progress.done_last,
                    committed,
                )
            if point.redo_until is not None:
                log.info(
                    "%s[%d]: redoing unfinished range %d-%d", tp.topic, tp.partition, point.seek_to, point.redo_until
                )
            if point.seek_to is not None:
                self._consumer.seek(tp, point.seek_to)
            else:
                self._consumer.seek_to_beginning(tp)  # nothing committed or loaded: auto_offset_reset=earliest
            state.next_offset = point.seek_to
            state.forced_end = point.redo_until
        # the loader's id tells the workers of `eventhouse load --workers N` apart in one log
        log.info("assigned %s to %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in assigned), self.loader_id)

    def on_revoked(self, revoked: list[Any]) -> None:
        # Loaded ranges are recorded in ClickHouse; the Kafka commit is left to the next owner's
        # resume (commits cannot run inside kafka-python's rebalance callbacks).
        keys = [(tp.topic, tp.partition) for tp in revoked]
        if self._failed:
            # The run is ending in an exception (consumer.close() revokes): write nothing more.
            # What was pending is not logged `done` nor committed, so the next owner redoes it.
            for key in keys:
                self.partitions.pop(key, None)
            return
        self._finish_inflight(commit=False)
        self._to_resume = [tp for tp in self._to_resume if (tp.topic, tp.partition) not in keys]
        # (a range being redone and not yet whole is not written: the next owner redoes it)
        self.flush([k for k in keys if k in self.partitions], commit=False)
        for key in keys:
            self.partitions.pop(key, None)
            self.metrics.forget_partition(*key)

    # ---- the loop ------------------------------------------------------------------

    def run(self) -> LoaderStats:
        # The time limit counts from here: connecting and waiting for servers are part of the run.
        deadline = time.monotonic() + self.config.max_seconds if self.config.max_seconds else None
        self._deadline = deadline
        self._retrying.deadline = deadline
        previous = {}
        frozen = False
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self.request_stop)
        try:
            self._connect()
            # What exists by now (modules, clients) lives as long as the run: the garbage collector's
            # full passes, which the per-event allocations trigger every ~50k events, need not walk
            # it again each time (about 9% of a loader's CPU in bench/loader_ceiling.py). Undone at
            # the end, so a process that runs loaders in-process (Dagster) collects as before.
            gc.freeze()
            frozen = True
            while not self._stop.is_set():
                started = time.perf_counter()
                polled = self._consumer.poll(timeout_ms=200, max_records=self.config.batch_rows)
                self.stats.consume_s += time.perf_counter() - started
                self._reap_inflight()
                if self._to_resume:
                    resumed, self._to_resume = self._to_resume, []
                    self._resume(resumed)
                    # Records fetched before the seek are fetched again from the resume point.
                    fresh = {(tp.topic, tp.partition) for tp in resumed}
                    polled = {tp: m for tp, m in polled.items() if (tp.topic, tp.partition) not in fresh}
                parse_started = time.perf_counter()
                for tp, messages in polled.items():
                    state = self.partitions.get((tp.topic, tp.partition))
                    if state is None:
                        continue
                    # one metric update per partition and poll, not per message (the hot path)
                    before = self.stats.messages
                    self._accept_all(state, messages)
                    self.metrics.consumed(tp.topic, self.stats.messages - before)
                self.stats.parse_s += time.perf_counter() - parse_started
                self._check_resets()
                if self._should_flush() or (self.config.until_caught_up and not polled):
                    # (a bounded run flushes as soon as a poll comes back empty: nothing is coming
                    # to fill the batch, and waiting for --batch-seconds would only delay the end)
                    self._flush_in_background()
                self._progress()
                if self.config.until_caught_up and self._caught_up():
                    log.info("caught up on every assigned partition")
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    log.info("time limit of %.0f s reached", self.config.max_seconds)
                    break
            self.flush()
            self._update_lag()
        except BaseException:
            self._failed = True
            raise
        finally:
            if frozen:
                gc.unfreeze()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        return self.stats

    def close(self) -> None:
        self._writer_thread.shutdown(wait=True)
        if self._dlq is not None:
            self.stats.dlq_copy_failures = self._dlq.failures
            self.stats.dlq_copies_pending = self._dlq.pending
        for closeable in (self._consumer, self._producer):
            if closeable is not None:
                try:
                    closeable.close()
                except Exception:
                    log.debug("close failed", exc_info=True)
        self._consumer = self._producer = None

    def _accept_all(self, state: PartitionState, messages: list[Any]) -> None:
        """Accept one poll's messages of a partition (in offset order), in slices that share a clock reading."""
        if state.next_offset is not None and messages and messages[0].offset < state.next_offset:
            messages = [m for m in messages if m.offset >= state.next_offset]  # already loaded (a re-fetch after seek)
        if state.forced_end is not None:
            for message in messages:  # a range being redone: it must end exactly at forced_end
                self._accept(state, message)
            return
        contract = self.settings.contract
        for start in range(0, len(messages), ACCEPT_SLICE):
            now, now_text = self._clock()
            state.accept_many(messages[start : start + ACCEPT_SLICE], contract, now, now_text, self.stats)

    def _accept(self, state: PartitionState, message: Any) -> None:
        if state.next_offset is not None and message.offset < state.next_offset:
            return  # already loaded (a re-fetch after seek)
        key = (state.topic, state.partition)
        if state.forced_end is not None and message.offset > state.forced_end:
            self.flush([key])
        now, now_text = self._clock()
        state.accept(message, self.settings.contract, now, now_text, self.stats)
        if state.forced_end is not None and message.offset >= state.forced_end:
            self.flush([key])

    def _clock(self) -> tuple[datetime, str]:
        """The current time and its ClickHouse text, refreshed at most every 10 ms (hot path)."""
        ticks = time.monotonic()
        if ticks - self._clock_at > 0.01:
            self._clock_at = ticks
            now = datetime.now(UTC)
            self._clock_value = (now, clickhouse_time(now))
        return self._clock_value

    def _should_flush(self) -> bool:
        pending = [s for s in self.partitions.values() if s.has_data]
        if not pending:
            return False
        rows = sum(s.row_count + len(s.dead) for s in pending)
        nbytes = sum(s.nbytes for s in pending)
        oldest = min(s.opened_at for s in pending)
        return (
            rows >= self.config.batch_rows
            or nbytes >= self.config.batch_bytes
            or time.monotonic() - oldest >= self.config.batch_seconds
        )

    def _caught_up(self) -> bool:
        if self._to_resume or not self.partitions or any(s.has_data for s in self.partitions.values()):
            return False
        if self._inflight is not None:
            return False
        from kafka import TopicPartition

        for state in self.partitions.values():
            tp = TopicPartition(state.topic, state.partition)
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                if state.next_offset is None:
                    # Never fetched: ask where the consumer stands (an empty partition is caught up at 0).
                    position = self._consumer.position(tp)
                    state.next_offset = position
                return False
            position = state.next_offset if state.next_offset is not None else self._consumer.position(tp)
            if position < highwater:
                return False
        return True

    def _check_resets(self) -> None:
        """A partition whose highwater is below our position was reset: start it over from 0."""
        from kafka import TopicPartition

        for state in self.partitions.values():
            if state.reset_checked or state.next_offset is None:
                continue
            tp = TopicPartition(state.topic, state.partition)
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            state.reset_checked = True
            if highwater < state.next_offset:
                log.warning(
                    "%s[%d] was reset (highwater %d is below offset %d already loaded); reading it from the start",
                    state.topic,
                    state.partition,
                    highwater,
                    state.next_offset,
                )
                self._finish_inflight()
                state.clear()
                state.next_offset = 0
                state.topic_id = f"{state.topic_id}-reset-{int(time.time())}"
                self._consumer.seek(tp, 0)

    def _progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress < self.config.progress_every:
            return
        self._last_progress = now
        self._update_lag()
        total_lag = sum(self.stats.lag.values())
        recent = sorted(self.stats.insert_latencies_ms[-200:])
        p50, p95 = (recent[len(recent) // 2], recent[int(len(recent) * 0.95)]) if recent else (0.0, 0.0)
        log.info(
            "loaded %d rows, %d dead letters, %d duplicate rows collapsed; %.0f msg/s; insert p50 %.0f ms, "
            "p95 %.0f ms; lag %d",
            self.stats.rows_loaded,
            self.stats.dead_letters,
            self.stats.duplicates_collapsed,
            self.stats.messages / max(now - self.stats.started, 1e-9),
            p50,
            p95,
            total_lag,
        )

    def _update_lag(self) -> None:
        if self._consumer is None:
            return
        from kafka import TopicPartition

        for state in self.partitions.values():
            highwater = self._consumer.highwater(TopicPartition(state.topic, state.partition))
            if highwater is not None and state.next_offset is not None:
                lag = max(highwater - state.next_offset, 0)
                self.stats.lag[f"{state.topic}[{state.partition}]"] = lag
                self.metrics.lag(state.topic, state.partition, lag)

    # ---- flushing ----------------------------------------------------------------

    def flush(self, keys: list[tuple[str, int]] | None = None, commit: bool = True) -> None:
        """Write the pending ranges (of `keys`, or all) now, and commit them unless told not to."""
        self._finish_inflight(commit)
        batch = self._seal(keys)
        if batch is not None:
            self._batch_writer.write(batch)
            self._finish(batch, commit)

    def _flush_in_background(self) -> None:
        """Hand the pending ranges to the writer thread and go on consuming.

        At most one batch is in flight: the next flush waits for it (back-pressure), and its
        offsets are committed by this thread once ClickHouse has acknowledged it.
        """
        self._finish_inflight()
        batch = self._seal(None)
        if batch is not None:
            self._inflight = (batch, self._writer_thread.submit(self._batch_writer.write, batch))

    def _reap_inflight(self) -> None:
        """Commit the in-flight batch if the writer is done with it (called after each poll)."""
        if self._inflight is not None and self._inflight[1].done():
            self._finish_inflight()

    def _finish_inflight(self, commit: bool = True) -> None:
        if self._inflight is None:
            return
        batch, future = self._inflight
        self._inflight = None
        future.result()  # re-raises what the writer could not retry away
        self._finish(batch, commit)

    def _seal(self, keys: list[tuple[str, int]] | None) -> Batch | None:
        """Move the pending rows of these partitions into a batch; the partitions start afresh."""
        return seal_batch(state for key, state in self.partitions.items() if keys is None or key in keys)

    def _finish(self, batch: Batch, commit: bool) -> None:
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        stats = self.stats
        for chunk in batch.chunks:
            # ClickHouse's written_rows also counts what materialized views on the raw table wrote
            # (the insert-time realtime models), so more rows than were sent means all of them landed.
            loaded = min(chunk.written, chunk.row_count)
            stats.rows_loaded += loaded
            stats.duplicates_collapsed += chunk.row_count - loaded
            stats.insert_latencies_ms.append(chunk.insert_ms)
            stats.batch_sizes.append(chunk.row_count + len(chunk.dead))
            stats.dead_letters += len(chunk.dead)
            self.metrics.range_written(
                chunk.topic,
                chunk.row_count,
                loaded,
                (letter.reason for letter in chunk.dead),
                chunk.insert_ms / 1000,
            )
        stats.batches += 1
        owned = [c for c in batch.chunks if (c.topic, c.partition) in self.partitions]
        offsets = {TopicPartition(c.topic, c.partition): OffsetAndMetadata(c.last_offset + 1, "", -1) for c in owned}
        try:
            if commit and offsets:
                self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # ClickHouse already records these ranges as done; the next owner resumes from there.
            log.warning("offset commit failed (%s); ClickHouse's batch log keeps the position", exc)


def _topic_spec(topic: str) -> TopicSpec:
    """An event topic's or a CDC topic's spec."""
    cdc_table = cdc_table_for_topic(topic)
    return TOPICS_BY_NAME[topic] if cdc_table is None else cdc_table.topic_spec


class _Rebalance(ConsumerRebalanceListener):
    """Forwards kafka-python's rebalance callbacks (run inside poll) to the loader."""

    def __init__(self, loader: Loader):
        self._loader = loader

    def on_partitions_assigned(self, assigned: list[Any]) -> None:
        self._loader.on_assigned(list(assigned))

    def on_partitions_revoked(self, revoked: list[Any]) -> None:
        self._loader.on_revoked(list(revoked))
