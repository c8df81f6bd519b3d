"""The publisher's state in ClickHouse (`alerts`, `alert_deliveries`): how each anomaly is published once.

Both tables live in the raw database, beside `ingest_batches` and `dead_letters`. Every write is an
append; nothing is updated in place, so a crash can only leave a write missing, never half-applied.

How nothing is lost or published twice:

1. A pass reads the candidates (new live anomalies, pipeline breaches) and drops those whose
   `anomaly_id` is already in `alerts`. For the rest it writes, in this order, the `alerts` rows
   (the ClickHouse channel: an alert is published there when its row lands) and one `pending` row
   per other channel in `alert_deliveries`. Each insert carries an `insert_deduplication_token`
   made from its rows, so an insert retried after a lost response lands once. A crash before the
   `alerts` insert: the anomaly is still new next time. A crash between the two inserts: the
   alert exists but has no delivery rows; `missing_deliveries` finds it (an alert's `channels`
   names the channels it is owed) and the pending rows are written then.
2. Kafka. Before sending, the publisher writes a `sending` row per anomaly that records, per
   partition of `anomalies`, an offset at or below the topic's end (`read_from`: the offset after
   the last one Kafka acknowledged to this publisher, 0 when none). It then sends, waits for the
   acknowledgements (acks=all) and writes `delivered` rows with each message's partition and offset.
   A `sending` row without a `delivered` one (a crash, or a send that failed) means "maybe sent":
   before sending anything else the publisher reads the topic from `read_from` to its highwater,
   marks the anomaly ids it finds there (the envelope's `event_id` is the `anomaly_id`) as
   delivered and sends the others again (`kafka_read_back`). This assumes one publisher per
   `alerts` table; two would each see an anomaly as new and both publish it. kafka-python 3.0.12
   has an idempotent and a transactional producer, but idempotence only holds within one producer
   session (a restarted process is a new producer id), and the embedded broker (Tansu) has no
   transactional isolation, so neither covers a crash; the read-back does, on any broker.
3. Webhook. Each due delivery is POSTed with `Idempotency-Key: <anomaly_id>`; a 2xx response is
   followed by a `delivered` row, anything else by a `failed` row with the attempt count, the
   error and when to try next (`retry_delay`: exponential backoff, capped). Failures are never
   dropped: a failed delivery stays due until it succeeds. A crash between the response and the
   `delivered` row sends it again after the restart with the same key: the webhook is
   at-least-once, and a receiver that honours the key sees it once.

The current state of a delivery is a pure fold of its rows (`delivery_state`), unit-tested without
ClickHouse; rows are ordered by `seq`, a per-process increasing number seeded from the clock.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from alerting.anomaly import ANOMALY_COLUMNS, Anomaly

# the last N insert tokens a table keeps to recognise a retried insert: the raw tables' window
from ingestion.raw_tables import DEDUP_WINDOW

ALERTS_TABLE = "alerts"
DELIVERIES_TABLE = "alert_deliveries"

CLICKHOUSE = "clickhouse"
KAFKA = "kafka"
WEBHOOK = "webhook"
CHANNELS = (CLICKHOUSE, KAFKA, WEBHOOK)

PENDING, SENDING, FAILED, DELIVERED = "pending", "sending", "failed", "delivered"


ALERT_COLUMNS = (*ANOMALY_COLUMNS, "published_at", "channels")
DELIVERY_COLUMNS = (
    "anomaly_id",
    "channel",
    "state",
    "attempts",
    "last_error",
    "next_attempt_at",
    "read_from",
    "kafka_partition",
    "kafka_offset",
    "seq",
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def alerts_ddl(database: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS `{database}`.`{ALERTS_TABLE}` (
    anomaly_id String,
    anomaly_family LowCardinality(String),
    anomaly_type LowCardinality(String),
    domain LowCardinality(String),
    entity_type LowCardinality(String),
    entity_id String,
    event_id Nullable(String),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    observed_value Float64,
    threshold_value Float64,
    detected_at DateTime64(3, 'UTC'),
    published_at DateTime64(3, 'UTC'),
    channels Array(LowCardinality(String))
)
ENGINE = ReplacingMergeTree(published_at)
ORDER BY anomaly_id
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""


def deliveries_ddl(database: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS `{database}`.`{DELIVERIES_TABLE}` (
    anomaly_id String,
    channel LowCardinality(String),
    state Enum8('{PENDING}' = 1, '{SENDING}' = 2, '{FAILED}' = 3, '{DELIVERED}' = 4),
    attempts UInt32,
    last_error String,
    next_attempt_at DateTime64(3, 'UTC'),
    read_from String,
    kafka_partition Nullable(Int32),
    kafka_offset Nullable(Int64),
    seq UInt64,
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (channel, anomaly_id, seq)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""


def ensure_state_tables(client: Any, database: str) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    client.command(alerts_ddl(database))
    client.command(deliveries_ddl(database))


# ---- the state of one delivery, folded from its rows -------------------------------------------


@dataclass(frozen=True)
class DeliveryRow:
    """One row of `alert_deliveries` as the fold needs it."""

    state: str
    attempts: int
    seq: int
    last_error: str = ""
    next_attempt_at: datetime = EPOCH
    read_from: str = ""


@dataclass(frozen=True)
class DeliveryState:
    anomaly_id: str
    channel: str
    state: str  # PENDING, SENDING (maybe sent: read back first), FAILED or DELIVERED
    attempts: int
    last_error: str
    next_attempt_at: datetime
    read_from: dict[int, int] = field(default_factory=dict)  # SENDING: partition -> first offset to read

    def due(self, now: datetime) -> bool:
        """Whether this delivery is to be attempted now (a failed one waits out its backoff)."""
        return self.state == PENDING or (self.state == FAILED and self.next_attempt_at <= now)


def delivery_state(anomaly_id: str, channel: str, rows: Iterable[DeliveryRow]) -> DeliveryState:
    """Fold a delivery's rows: a `delivered` row ends it whatever came after (a duplicate `pending`
    row from a re-run of step 1); otherwise the latest row by `seq` says where it is, and attempts
    count across all rows (a restart does not reset the backoff or the failure count)."""
    rows = sorted(rows, key=lambda r: r.seq)
    if not rows:
        raise ValueError(f"delivery {anomaly_id}/{channel} has no rows")
    attempts = max(r.attempts for r in rows)
    delivered = [r for r in rows if r.state == DELIVERED]
    last = delivered[-1] if delivered else rows[-1]
    read_from = {int(p): int(o) for p, o in json.loads(last.read_from).items()} if last.state == SENDING else {}
    return DeliveryState(anomaly_id, channel, last.state, attempts, last.last_error, last.next_attempt_at, read_from)


def retry_delay(attempts: int, base: float, ceiling: float) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base, 2 x base, 4 x base, ... at most ceiling."""
    if attempts < 1:
        return 0.0
    return min(base * 2 ** min(attempts - 1, 62), ceiling)


def missing_deliveries(
    channels_by_alert: Mapping[str, Sequence[str]], logged: set[tuple[str, str]]
) -> list[tuple[str, str]]:
    """(anomaly_id, channel) owed by an alert (its `channels`, other than ClickHouse) with no row in the log:
    the publisher stopped between writing the alert and its pending rows."""
    return sorted(
        (anomaly_id, channel)
        for anomaly_id, channels in channels_by_alert.items()
        for channel in channels
        if channel != CLICKHOUSE and (anomaly_id, channel) not in logged
    )


# ---- writing and reading the tables -------------------------------------------------------------


class Sequence_:
    """Increasing `seq` values for this process's rows, seeded from the clock (a restart continues above)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns())
        return self._last


def dedup_token(table: str, rows: Sequence[Sequence[Any]]) -> str:
    """A token made from the rows themselves: the same insert retried carries the same token."""
    digest = hashlib.sha256(repr([list(r) for r in rows]).encode()).hexdigest()
    return f"{table}:{digest}"


class StateStore:
    """Reads and appends the publisher's two tables in `database` (the raw database)."""

    def __init__(self, client: Any, database: str):
        self.client = client
        self.database = database
        self.seq = Sequence_()

    def _insert(self, table: str, columns: Sequence[str], rows: list[list[Any]], tries: int = 3) -> None:
        """Insert, retrying a lost connection with the same token (ClickHouse drops the copy if the first landed)."""
        from clickhouse_connect.driver.exceptions import OperationalError

        if not rows:
            return
        token = dedup_token(table, rows)
        for attempt in range(1, tries + 1):
            try:
                self.client.insert(
                    f"`{self.database}`.`{table}`",
                    rows,
                    column_names=list(columns),
                    settings={"insert_deduplication_token": token},
                )
                return
            except OperationalError:
                if attempt == tries:
                    raise
                time.sleep(0.2 * attempt)

    def published(self, anomaly_ids: Sequence[str]) -> set[str]:
        """Those of these ids that already have an `alerts` row."""
        if not anomaly_ids:
            return set()
        rows = self.client.query(
            f"SELECT DISTINCT anomaly_id FROM `{self.database}`.`{ALERTS_TABLE}` "
            "WHERE anomaly_id IN {ids:Array(String)}",
            parameters={"ids": sorted(set(anomaly_ids))},
        ).result_rows
        return {r[0] for r in rows}

    def write_alerts(self, anomalies: Sequence[Anomaly], channels: Sequence[str], published_at: datetime) -> None:
        """Step 1: the alert rows, then the pending row of each other channel."""
        self._insert(ALERTS_TABLE, ALERT_COLUMNS, [[*a.row(), published_at, list(channels)] for a in anomalies])
        self.write_pending([(a.anomaly_id, c) for a in anomalies for c in channels if c != CLICKHOUSE])

    def write_pending(self, deliveries: Sequence[tuple[str, str]]) -> None:
        self.record([(anomaly_id, channel, PENDING) for anomaly_id, channel in deliveries])

    def record(
        self,
        entries: Sequence[tuple[str, str, str]],
        *,
        attempts: Mapping[str, int] | None = None,
        error: str = "",
        next_attempt_at: datetime = EPOCH,
        read_from: Mapping[int, int] | None = None,
        offsets: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        """Append (anomaly_id, channel, state) rows; `offsets`: anomaly_id -> (partition, offset) of a
        delivered Kafka message; `read_from`: a `sending` row's offsets to read back from."""
        attempts = attempts or {}
        offsets = offsets or {}
        read_text = json.dumps({str(p): o for p, o in sorted((read_from or {}).items())})
        rows = []
        for anomaly_id, channel, state in entries:
            partition, offset = offsets.get(anomaly_id, (None, None))
            rows.append(
                [
                    anomaly_id,
                    channel,
                    state,
                    attempts.get(anomaly_id, 0),
                    error,
                    next_attempt_at,
                    read_text if state == SENDING else "",
                    partition,
                    offset,
                    self.seq.next(),
                ]
            )
        self._insert(DELIVERIES_TABLE, DELIVERY_COLUMNS, rows)

    def open_deliveries(self) -> list[DeliveryState]:
        """Every delivery not yet delivered, folded from its rows."""
        rows = self.client.query(
            f"""
            SELECT anomaly_id, channel,
                   groupArray((toString(state), attempts, seq, last_error, next_attempt_at, read_from))
            FROM `{self.database}`.`{DELIVERIES_TABLE}`
            GROUP BY anomaly_id, channel
            HAVING countIf(state = '{DELIVERED}') = 0
            """
        ).result_rows
        states = [
            delivery_state(
                anomaly_id,
                channel,
                (DeliveryRow(s, int(a), int(q), e, _utc(n), r) for s, a, q, e, n, r in history),
            )
            for anomaly_id, channel, history in rows
        ]
        return sorted(states, key=lambda d: (d.next_attempt_at, d.anomaly_id, d.channel))

    def deliveries_missing(self) -> list[tuple[str, str]]:
        """Deliveries an alert is owed that have no row at all (see step 1)."""
        rows = self.client.query(
            f"""
            SELECT a.anomaly_id, a.channels
            FROM `{self.database}`.`{ALERTS_TABLE}` AS a
            LEFT ANTI JOIN (SELECT DISTINCT anomaly_id, channel FROM `{self.database}`.`{DELIVERIES_TABLE}`) AS d
                ON a.anomaly_id = d.anomaly_id
            WHERE length(a.channels) > 1
            """
        ).result_rows
        # the anti join finds alerts with no row for any channel (the crash happens between two
        # inserts, so an alert has all its pending rows or none)
        return missing_deliveries({r[0]: list(r[1]) for r in rows}, set())

    def kafka_acked(self) -> dict[int, int]:
        """Per partition of `anomalies`, the offset after the last message Kafka acknowledged to us."""
        rows = self.client.query(
            f"""
            SELECT kafka_partition, max(kafka_offset) FROM `{self.database}`.`{DELIVERIES_TABLE}`
            WHERE channel = '{KAFKA}' AND state = '{DELIVERED}' AND kafka_partition IS NOT NULL
            GROUP BY kafka_partition
            """
        ).result_rows
        return {int(p): int(o) + 1 for p, o in rows}

    def alerts(self, anomaly_ids: Sequence[str]) -> dict[str, Anomaly]:
        if not anomaly_ids:
            return {}
        rows = self.client.query(
            f"SELECT {', '.join(ANOMALY_COLUMNS)} FROM `{self.database}`.`{ALERTS_TABLE}` FINAL "
            "WHERE anomaly_id IN {ids:Array(String)}",
            parameters={"ids": sorted(set(anomaly_ids))},
        ).result_rows
        return {r[0]: Anomaly.from_row(r) for r in rows}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def after(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
