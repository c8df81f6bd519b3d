"""The Kafka -> ClickHouse loader: batches, a dead-letter path, and an exactly-once effect.

How nothing is lost or counted twice:

1. Messages are validated one by one; a bad one becomes a dead letter (to `<topic>.dlq` and
   the `dead_letters` table, with the reason) and never stops its neighbours. A message that
   fails at any step (decode, validate, wrong topic, encode) is a dead letter, and a row
   ClickHouse refuses is isolated from its batch and dead-lettered too; the batch state only
   ever holds fully encoded rows, so a range is never logged `done` without its rows.
2. A batch is flushed per partition as a contiguous offset range [first, last]. Before its
   inserts the loader records a `started` row in `ingest_batches`; each insert carries
   `insert_deduplication_token = topic:partition:first-last@topic_id`; after them a `done` row.
3. Only then are the Kafka offsets committed. A crash anywhere before that leaves the
   committed offset behind ClickHouse's `done` rows, so on assignment the loader resumes
   after the last `done` range, and redoes an unfinished `started` range with exactly the
   same boundaries and tokens, so ClickHouse drops whatever part of it had landed.
4. ClickHouse errors are retried with backoff; nothing is committed or dropped meanwhile. A
   time limit (`max_seconds`) or a stop request ends the retries too: the loader then exits
   with an error and the unfinished range is redone by the next run.

Resume positions are keyed by Kafka cluster id and topic id: the embedded broker keeps data
in memory, so after it restarts its offsets start again at 0 under a new cluster id, and the
loader neither skips the new data nor takes it for data already loaded.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import statistics
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener

from ingestion.contract import ContractError, validate
from ingestion.dead_letters import DeadLetter, DlqPublisher
from ingestion.raw_tables import DEAD_LETTER_COLUMNS, RAW_COLUMNS, encode_raw_row, ensure_tables, raw_table
from ingestion.topics import DOMAINS, TOPICS_BY_NAME, check_topic, ensure_topics, topics_for_domains
from settings import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    DEFAULT_BATCH_SECONDS,
    DEFAULT_KAFKA_SESSION_TIMEOUT_MS,
    DEFAULT_RAW_DATABASE,
    Settings,
)

log = logging.getLogger(__name__)


@dataclass
class LoaderConfig:
    domains: tuple[str, ...] = DOMAINS
    group_id: str = "eventhouse-loader"
    raw_database: str = DEFAULT_RAW_DATABASE
    batch_rows: int = DEFAULT_BATCH_ROWS
    batch_bytes: int = DEFAULT_BATCH_BYTES
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    until_caught_up: bool = False
    max_seconds: float | None = None
    session_timeout_ms: int = DEFAULT_KAFKA_SESSION_TIMEOUT_MS
    ttl_days: int | None = None
    retry_max_sleep: float = 10.0
    # Kafka fetch sizes bound the loader's memory: kafka-python buffers up to one fetch per partition.
    fetch_max_bytes: int = 16 * 1024 * 1024
    partition_fetch_bytes: int = 4 * 1024 * 1024
    progress_every: float = 5.0
    # How long the broker may hold a fetch waiting for data; it bounds how stale a quiet
    # partition's newest events get before the loader sees them.
    fetch_max_wait_ms: int = 100


@dataclass
class LoaderStats:
    rows_loaded: int = 0
    dead_letters: int = 0
    duplicates_collapsed: int = 0
    batches: int = 0
    messages: int = 0
    bytes_consumed: int = 0
    consume_s: float = 0.0
    parse_s: float = 0.0
    encode_s: float = 0.0
    insert_s: float = 0.0
    insert_latencies_ms: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    first_message_at: float | None = None  # rates from here exclude start-up and the group join
    retries: int = 0
    rows_rejected: int = 0  # valid events ClickHouse refused (dead-lettered; counted in dead_letters too)
    dlq_copy_failures: int = 0
    dlq_copies_pending: int = 0

    def summary(self) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-9)
        latencies = sorted(self.insert_latencies_ms)

        def pct(p: float) -> float | None:
            return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else None

        return {
            "rows_loaded": self.rows_loaded,
            "dead_letters": self.dead_letters,
            "duplicates_collapsed": self.duplicates_collapsed,
            "messages": self.messages,
            "batches": self.batches,
            "rows_per_s": round(self.messages / elapsed, 1),
            "rows_per_s_since_first_message": round(self.messages / max(now - self.first_message_at, 1e-9), 1)
            if self.first_message_at is not None
            else None,
            "elapsed_s": round(elapsed, 2),
            "median_batch_size": statistics.median(self.batch_sizes) if self.batch_sizes else 0,
            "insert_ms_p50": pct(0.50),
            "insert_ms_p95": pct(0.95),
            "time_split_s": {
                "consume": round(self.consume_s, 3),
                "parse_validate": round(self.parse_s - self.encode_s, 3),
                "encode": round(self.encode_s, 3),
                "insert": round(self.insert_s, 3),
            },
            "lag": dict(self.lag),
            "clickhouse_retries": self.retries,
            "rows_rejected_by_clickhouse": self.rows_rejected,
            "dlq_copy_failures": self.dlq_copy_failures,
            "dlq_copies_pending": self.dlq_copies_pending,
        }


@dataclass
class _Partition:
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
    def token(self) -> str:
        return f"{self.topic}:{self.partition}:{self.first_offset}-{self.last_offset}@{self.topic_id}"

    def seal(self) -> _Chunk:
        """The pending range as a chunk to write; the partition starts a new range."""
        chunk = _Chunk(
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
class _Chunk:
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
    token: str
    written: int = 0
    insert_ms: float = 0.0


@dataclass
class _Batch:
    batch_id: str
    chunks: list[_Chunk]
    started_at: datetime


BATCH_LOG_COLUMNS = (
    "batch_id",
    "state",
    "loader_id",
    "kafka_cluster_id",
    "kafka_topic",
    "kafka_topic_id",
    "kafka_partition",
    "first_offset",
    "last_offset",
    "rows_loaded",
    "dead_letters",
    "bytes_consumed",
    "insert_ms",
    "batch_started_at",
    "max_event_lag_ms",
    "partition_lag",
)


def _ch_time(moment: datetime) -> str:
    """`YYYY-MM-DD hh:mm:ss.mmm` in UTC, as ClickHouse parses DateTime64(3) (isoformat is ~7x faster than strftime)."""
    return moment.astimezone(UTC).isoformat(sep=" ", timespec="milliseconds")[:23]


def short_reason(error: BaseException) -> str:
    """What went wrong, in a few words: the root cause a client library wrapped (connection refused, ...)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "host not found"
        if isinstance(seen, TimeoutError):
            return "timed out"
        seen = seen.__cause__ or seen.__context__
    text = str(error).strip()
    if "Connection refused" in text:
        return "connection refused"
    if "Unable to bootstrap" in text:  # kafka-python: no broker answered within bootstrap_timeout_ms
        return "no broker answered"
    return text.splitlines()[0][:200] if text else type(error).__name__


class LoaderError(RuntimeError):
    """The loader cannot go on (a server unreachable within the time limit, credentials refused, ...).

    Its message is one line naming the problem; nothing unfinished was committed, so the next
    run redoes it.
    """


class Loader:
    def __init__(self, settings: Settings, config: LoaderConfig, loader_id: str | None = None):
        self.settings = settings
        self.config = config
        self.loader_id = loader_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stats = LoaderStats()
        self.partitions: dict[tuple[str, int], _Partition] = {}
        self._stop = threading.Event()
        self._deadline: float | None = None
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
        # One writer thread: ClickHouse inserts of batch N overlap consuming batch N+1.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventhouse-writer")
        self._inflight: tuple[_Batch, Future] | None = None

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
        specs = topics_for_domains(list(self.config.domains))

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
        self._dlq = DlqPublisher(self._producer, lambda topic: TOPICS_BY_NAME[topic].dlq)

    def _kafka_kwargs(self) -> dict[str, Any]:
        """Kafka client settings; waiting for a broker never outlasts the run's time limit."""
        kwargs = self.settings.kafka.client_kwargs()
        if self._deadline is not None:
            remaining_ms = int((self._deadline - time.monotonic()) * 1000)
            kwargs["bootstrap_timeout_ms"] = max(min(int(kwargs["bootstrap_timeout_ms"]), remaining_ms), 500)
        return kwargs

    def _retrying(self, action: Any, what: str) -> Any:
        """Run `action` until it succeeds: a server being down is a wait, not a failure.

        The wait ends at the run's time limit or a stop request (LoaderError); errors that
        waiting cannot mend (wrong credentials, a bad statement) are raised at once.
        """
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
        from kafka.errors import RetriableError

        delay = 0.2
        while True:
            try:
                return action()
            except OperationalError as exc:  # connection refused, reset, timeout
                error: Exception = exc
            except DatabaseError as exc:
                code = getattr(exc, "code", None)
                if code == 516:
                    ch = self.settings.clickhouse
                    raise LoaderError(
                        f"ClickHouse at {ch.host}:{ch.port} refused user {ch.user!r}: wrong password or no such user "
                        "(EVENTHOUSE_CLICKHOUSE_USER / EVENTHOUSE_CLICKHOUSE_PASSWORD)"
                    ) from None
                # Server-side failures that can pass (overload, shutdown); others are bugs to surface.
                if code not in (None, 159, 202, 209, 210, 241, 1000, 1001):
                    raise
                error = exc
            except RetriableError as exc:  # no broker answered yet (KafkaTimeoutError "Unable to bootstrap", ...)
                error = exc
            reason = short_reason(error)
            if self._stop.is_set():
                raise LoaderError(f"stopped while waiting to {what}: {self._where(what)}: {reason}")
            if self._deadline is not None and time.monotonic() + delay >= self._deadline:
                raise LoaderError(
                    f"could not {what} within the time limit of {self.config.max_seconds:g} s: "
                    f"{self._where(what)}: {reason}"
                )
            self.stats.retries += 1
            log.warning("could not %s (%s); retrying in %.1f s", what, reason, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, self.config.retry_max_sleep)

    def _where(self, what: str) -> str:
        if "Kafka" in what:
            return self.settings.kafka.bootstrap
        ch = self.settings.clickhouse
        return f"{ch.host}:{ch.port}"

    # ---- assignment and resume -------------------------------------------------

    def on_assigned(self, assigned: list[Any]) -> None:
        # kafka-python runs this inside its network loop, where blocking calls (committed())
        # cannot run; the main loop resumes these partitions right after poll returns.
        self._to_resume.extend(assigned)

    def _resume(self, assigned: list[Any]) -> None:
        """Seek newly assigned partitions to where ClickHouse says loading stopped."""
        cluster = self._consumer._client.cluster
        self._cluster_id = cluster.cluster_id or ""
        for tp in assigned:
            topic_id = cluster.topic_id(tp.topic)
            spec = TOPICS_BY_NAME[tp.topic]
            self.partitions[(tp.topic, tp.partition)] = _Partition(
                tp.topic, tp.partition, spec.domain, str(topic_id) if topic_id else ""
            )
        history = self._load_history([self.partitions[(tp.topic, tp.partition)] for tp in assigned])
        for tp in assigned:
            state = self.partitions[(tp.topic, tp.partition)]
            done_last, intent = history.get((tp.topic, tp.partition), (None, None))
            committed = self._consumer.committed(tp)
            position = committed
            if done_last is not None and (position is None or done_last + 1 > position):
                log.info(
                    "%s[%d]: ClickHouse has offsets up to %d loaded, ahead of the committed offset %s; resuming there",
                    tp.topic,
                    tp.partition,
                    done_last,
                    committed,
                )
                position = done_last + 1
            if intent is not None and (position is None or intent[0] >= position):
                position = intent[0]
                state.forced_end = intent[1]
                log.info("%s[%d]: redoing unfinished range %d-%d", tp.topic, tp.partition, intent[0], intent[1])
            if position is not None:
                self._consumer.seek(tp, position)
            else:
                self._consumer.seek_to_beginning(tp)  # nothing committed or loaded: auto_offset_reset=earliest
            state.next_offset = position
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    def _load_history(self, states: list[_Partition]) -> dict[tuple[str, int], tuple[int | None, tuple | None]]:
        """Per partition: the last offset of a `done` range, and the earliest unfinished range after it."""
        database = self.config.raw_database
        topics = sorted({s.topic for s in states})
        rows = self._retrying(
            lambda: (
                self._client.query(
                    f"""
                SELECT kafka_topic, kafka_partition, kafka_topic_id,
                       maxIf(last_offset, state = 'done') AS done_last,
                       countIf(state = 'done') AS done_count,
                       groupArrayIf((batch_id, first_offset, last_offset), state = 'started') AS started,
                       groupArrayIf(batch_id, state = 'done') AS done_ids
                FROM `{database}`.ingest_batches
                WHERE kafka_cluster_id = {{cluster:String}} AND kafka_topic IN {{topics:Array(String)}}
                GROUP BY kafka_topic, kafka_partition, kafka_topic_id
                """,
                    parameters={"cluster": self._cluster_id, "topics": topics},
                ).result_rows
            ),
            "read the batch log",
        )
        wanted = {(s.topic, s.partition): s.topic_id for s in states}
        history: dict[tuple[str, int], tuple[int | None, tuple | None]] = {}
        for topic, partition, topic_id, done_last, done_count, started, done_ids in rows:
            if wanted.get((topic, partition)) != topic_id:
                continue  # another incarnation of the topic
            last = int(done_last) if done_count else None
            done = set(done_ids)
            unfinished = sorted(
                (int(first), int(end))
                for batch_id, first, end in started
                if batch_id not in done and (last is None or first > last)
            )
            history[(topic, partition)] = (last, unfinished[0] if unfinished else None)
        return history

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
        self.flush([k for k in keys if k in self.partitions], commit=False)
        for key in keys:
            self.partitions.pop(key, None)

    # ---- the loop ------------------------------------------------------------------

    def run(self) -> LoaderStats:
        # The time limit counts from here: connecting and waiting for servers are part of the run.
        deadline = time.monotonic() + self.config.max_seconds if self.config.max_seconds else None
        self._deadline = deadline
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self.request_stop)
        try:
            self._connect()
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
                    for message in messages:
                        self._accept(state, message)
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
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        return self.stats

    def close(self) -> None:
        self._writer.shutdown(wait=True)
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

    def _accept(self, state: _Partition, message: Any) -> None:
        if state.next_offset is not None and message.offset < state.next_offset:
            return  # already loaded (a re-fetch after seek)
        if state.forced_end is not None and message.offset > state.forced_end:
            self.flush([(state.topic, state.partition)])
        if not state.has_data:
            state.first_offset = message.offset
            state.opened_at = time.monotonic()
        state.last_offset = message.offset
        state.next_offset = message.offset + 1
        value = message.value or b""
        self.stats.messages += 1
        if self.stats.first_message_at is None:
            self.stats.first_message_at = time.monotonic()
        self.stats.bytes_consumed += len(value)
        state.nbytes += len(value)
        try:
            row, event_lag_ms = self._encode(state, message, value)
        except ContractError as error:
            self._dead_letter(state, message, value, error.reason)
        except Exception as error:  # not foreseen, but still this one message's problem, not the loader's
            log.exception("%s[%d] offset %d could not be loaded", state.topic, state.partition, message.offset)
            self._dead_letter(state, message, value, f"could not be loaded ({type(error).__name__}: {error})")
        else:
            # The state changes only here, after the row was fully encoded: an exception above leaves
            # nothing half-built for a later flush (or the revoke callback) to write.
            state.body += row
            state.row_count += 1
            state.max_event_lag_ms = max(state.max_event_lag_ms, event_lag_ms)
        if state.forced_end is not None and message.offset >= state.forced_end:
            self.flush([(state.topic, state.partition)])

    def _encode(self, state: _Partition, message: Any, value: bytes) -> tuple[bytes, float]:
        """The raw-table row of one message (ContractError when it cannot be one) and its event lag in ms."""
        if not value:
            raise ContractError("empty message (no value)" if message.value is None else "empty message (0 bytes)")
        now, now_text = self._clock()
        envelope = validate(value, self.settings.contract, now)
        check_topic(envelope.event_type, state.topic)
        encode_started = time.perf_counter()
        try:
            row = encode_raw_row(
                envelope,
                envelope.ingested_at_text or now_text,
                state.topic,
                state.partition,
                message.offset,
                state.topic_id,
            )
        except orjson.JSONEncodeError as exc:
            raise ContractError(f"cannot be encoded as a raw row: {exc}") from None
        self.stats.encode_s += time.perf_counter() - encode_started
        return row, (now - envelope.ts).total_seconds() * 1000

    def _clock(self) -> tuple[datetime, str]:
        """The current time and its ClickHouse text, refreshed at most every 10 ms (hot path)."""
        ticks = time.monotonic()
        if ticks - self._clock_at > 0.01:
            self._clock_at = ticks
            now = datetime.now(UTC)
            self._clock_value = (now, _ch_time(now))
        return self._clock_value

    def _dead_letter(self, state: _Partition, message: Any, value: bytes, reason: str) -> None:
        state.dead.append(
            DeadLetter(
                state.topic,
                state.partition,
                message.offset,
                state.topic_id,
                message.key,
                value,
                reason,
                datetime.now(UTC),
            )
        )

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
                self.stats.lag[f"{state.topic}[{state.partition}]"] = max(highwater - state.next_offset, 0)

    # ---- flushing ----------------------------------------------------------------

    def flush(self, keys: list[tuple[str, int]] | None = None, commit: bool = True) -> None:
        """Write the pending ranges (of `keys`, or all) now, and commit them unless told not to."""
        self._finish_inflight(commit)
        batch = self._seal(keys)
        if batch is not None:
            self._write(batch)
            self._finish(batch, commit)

    def _flush_in_background(self) -> None:
        """Hand the pending ranges to the writer thread and go on consuming.

        At most one batch is in flight: the next flush waits for it (back-pressure), and its
        offsets are committed by this thread once ClickHouse has acknowledged it.
        """
        self._finish_inflight()
        batch = self._seal(None)
        if batch is not None:
            self._inflight = (batch, self._writer.submit(self._write, batch))

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

    def _seal(self, keys: list[tuple[str, int]] | None) -> _Batch | None:
        """Move the pending rows of these partitions into a batch; the partitions start afresh."""
        chunks = []
        for key, state in self.partitions.items():
            if state.has_data and (keys is None or key in keys):
                chunks.append(state.seal())
        if not chunks:
            return None
        return _Batch(uuid.uuid4().hex, chunks, datetime.now(UTC))

    def _write(self, batch: _Batch) -> None:
        """ClickHouse and the DLQ topic only (no consumer calls): safe on the writer thread."""
        self._log_batches(batch, "started")
        for chunk in batch.chunks:
            began = time.perf_counter()
            if chunk.dead:
                self._dlq.publish(chunk.dead)
                rows = [letter.row() for letter in chunk.dead]
                self._insert_rows("dead_letters", DEAD_LETTER_COLUMNS, rows, "dlq:" + chunk.token)
            if chunk.row_count:
                self._insert_chunk(chunk)
            chunk.insert_ms = (time.perf_counter() - began) * 1000
        if any(chunk.dead for chunk in batch.chunks):
            self._dlq.flush()
        self._log_batches(batch, "done")

    def _insert_chunk(self, chunk: _Chunk) -> None:
        """Insert a chunk's rows; rows ClickHouse refuses are split off and dead-lettered.

        The contract should let no such row through, but if one does, it must not block its
        partition: the chunk is inserted in halves (each with a token derived from the range
        and the row positions, so a redo of the range splits and deduplicates the same way)
        until the refused rows stand alone.
        """
        table = raw_table(chunk.domain)
        try:
            chunk.written = self._insert_json(table, chunk.body, chunk.token)
            return
        except Exception as exc:
            if not _rows_refused(exc):
                raise
            error = exc
        lines = bytes(chunk.body).splitlines(keepends=True)
        refused: list[tuple[int, Exception]] = []
        chunk.written = self._insert_halves(table, lines, 0, len(lines), chunk.token, error, refused)
        letters = [self._refused_letter(chunk, table, lines[index], exc) for index, exc in refused]
        log.error(
            "ClickHouse refused %d row(s) of %s[%d] %d-%d; dead-lettered: %s",
            len(letters),
            chunk.topic,
            chunk.partition,
            chunk.first_offset,
            chunk.last_offset,
            letters[0].reason if letters else "",
        )
        self._dlq.publish(letters)
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
    ) -> int:
        """Insert lines[start:end], known to be refused as a whole; returns the rows written."""
        if end - start == 1:
            refused.append((start, error))
            return 0
        middle = (start + end) // 2
        written = 0
        for first, last in ((start, middle), (middle, end)):
            try:
                written += self._insert_json(table, b"".join(lines[first:last]), f"{token}#{first}-{last}")
            except Exception as exc:
                if not _rows_refused(exc):
                    raise
                written += self._insert_halves(table, lines, first, last, token, exc, refused)
        return written

    def _refused_letter(self, chunk: _Chunk, table: str, line: bytes, error: Exception) -> DeadLetter:
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

    def _finish(self, batch: _Batch, commit: bool) -> None:
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        stats = self.stats
        for chunk in batch.chunks:
            stats.rows_loaded += chunk.written
            stats.duplicates_collapsed += chunk.row_count - chunk.written
            stats.insert_latencies_ms.append(chunk.insert_ms)
            stats.batch_sizes.append(chunk.row_count + len(chunk.dead))
            stats.dead_letters += len(chunk.dead)
        stats.batches += 1
        owned = [c for c in batch.chunks if (c.topic, c.partition) in self.partitions]
        offsets = {TopicPartition(c.topic, c.partition): OffsetAndMetadata(c.last_offset + 1, "", -1) for c in owned}
        try:
            if commit and offsets:
                self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # ClickHouse already records these ranges as done; the next owner resumes from there.
            log.warning("offset commit failed (%s); ClickHouse's batch log keeps the position", exc)

    def _log_batches(self, batch: _Batch, state_name: str) -> None:
        rows = [
            [
                batch.batch_id,
                state_name,
                self.loader_id,
                self._cluster_id,
                c.topic,
                c.topic_id,
                c.partition,
                c.first_offset,
                c.last_offset,
                c.row_count,
                len(c.dead),
                c.nbytes,
                c.insert_ms,
                batch.started_at,
                c.max_event_lag_ms,
                self.stats.lag.get(f"{c.topic}[{c.partition}]", 0),
            ]
            for c in batch.chunks
        ]
        self._insert_rows("ingest_batches", BATCH_LOG_COLUMNS, rows, None)

    def _insert_rows(self, table: str, columns: tuple[str, ...], rows: list[list[Any]], token: str | None) -> int:
        settings = {"insert_deduplication_token": token} if token else None
        database = self.config.raw_database
        began = time.perf_counter()
        summary = self._retrying(
            lambda: self._client.insert(f"`{database}`.`{table}`", rows, column_names=list(columns), settings=settings),
            f"insert into {table}",
        )
        self.stats.insert_s += time.perf_counter() - began
        return int(summary.written_rows)

    def _insert_json(self, table: str, body: bytearray, token: str) -> int:
        database = self.config.raw_database
        began = time.perf_counter()
        summary = self._retrying(
            lambda: self._client.raw_insert(
                f"`{database}`.`{table}`",
                column_names=list(RAW_COLUMNS),
                insert_block=bytes(body),
                fmt="JSONEachRow",
                settings={"insert_deduplication_token": token, "input_format_json_read_objects_as_strings": 1},
            ),
            f"insert into {table}",
        )
        self.stats.insert_s += time.perf_counter() - began
        return int(summary.written_rows)


# ClickHouse errors that blame the data of an insert (a value it cannot parse or store, a
# constraint), not the server or the statement: only those split a chunk to isolate rows.
# (Over the embedded server, errors raised after parsing, such as a CHECK constraint, are not
# reported at all: chDB 4.4's streaming insert swallows them; see the README.)
_ROW_REFUSED_CODES = frozenset({6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 376, 469, 691})


def _rows_refused(exc: BaseException) -> bool:
    from clickhouse_connect.driver.exceptions import DatabaseError

    return isinstance(exc, DatabaseError) and getattr(exc, "code", None) in _ROW_REFUSED_CODES


class _Rebalance(ConsumerRebalanceListener):
    """Forwards kafka-python's rebalance callbacks (run inside poll) to the loader."""

    def __init__(self, loader: Loader):
        self._loader = loader

    def on_partitions_assigned(self, assigned: list[Any]) -> None:
        self._loader.on_assigned(list(assigned))

    def on_partitions_revoked(self, revoked: list[Any]) -> None:
        self._loader.on_revoked(list(revoked))
