"""Pipeline alerts: the loader and the deliveries checked against thresholds (settings.AlertSettings).

- DEAD_LETTER_RATE (per topic): dead letters / (rows loaded + dead letters) in the loader's `done`
  batches of the last `pipeline_window_minutes`, above `dead_letter_rate` (1%).
- INSERT_LATENCY (the loader): p95 of those batches' `insert_ms`, above `insert_p95_seconds` (2 s).
- LOADER_LAG (per domain): the loader group's Kafka lag above `lag_threshold` (as the sensor sees it).
- STALE_DATA (per raw table with rows): the newest `loaded_at` older than `freshness_hours`.
- DELIVERY_FAILING (per channel): deliveries that failed `delivery_failures` times and are not delivered.
- OUTBOX_PENDING (the orders outbox): unpublished outbox rows in PostgreSQL above `outbox_pending_threshold`
  (10,000): the relay (`eventhouse relay`) is down or cannot reach Kafka.

Each breach is an anomaly of family 'pipeline' whose window is the bucket of `pipeline_repeat_minutes`
(an hour by default) it was seen in, and whose id is stable per type, entity and bucket: a breach seen
at every check of the bucket is one alert; one that lasts into the next bucket alerts again, once.
The decisions are pure functions of the measured numbers (unit-tested); `measure_*` read them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from alerting.anomaly import PIPELINE_FAMILY, Anomaly, pipeline_anomaly_id
from alerting.state import DeliveryState
from ingestion.lag import GroupLag
from settings import AlertSettings, KafkaConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Breach:
    anomaly_type: str
    domain: str
    entity_type: str
    entity_id: str
    observed: float
    threshold: float


def dead_letter_breaches(by_topic: Mapping[str, tuple[int, int]], threshold: float) -> list[Breach]:
    """by_topic: topic -> (rows loaded, dead letters) over the window. Strictly above the threshold."""
    out = []
    for topic, (rows, dead) in sorted(by_topic.items()):
        total = rows + dead
        if total and dead / total > threshold:
            out.append(Breach("DEAD_LETTER_RATE", _domain(topic), "topic", topic, dead / total, threshold))
    return out


def latency_breaches(p95_seconds: float | None, threshold: float) -> list[Breach]:
    """p95_seconds: the loader's insert latency p95 over the window, None when it wrote nothing."""
    if p95_seconds is not None and p95_seconds > threshold:
        return [Breach("INSERT_LATENCY", "", "pipeline", "loader", p95_seconds, threshold)]
    return []


def lag_breaches(lag_by_domain: Mapping[str, int], threshold: int) -> list[Breach]:
    return [
        Breach("LOADER_LAG", domain, "domain", domain, float(lag), float(threshold))
        for domain, lag in sorted(lag_by_domain.items())
        if lag > threshold
    ]


def freshness_breaches(newest_by_table: Mapping[str, datetime | None], now: datetime, hours: float) -> list[Breach]:
    """newest_by_table: raw table -> newest loaded_at (None: the table has no rows, nothing to be stale)."""
    out = []
    for table, newest in sorted(newest_by_table.items()):
        if newest is None:
            continue
        age_hours = (now - newest).total_seconds() / 3600
        if age_hours > hours:
            domain = table.removeprefix("raw_").removesuffix("_events")
            out.append(Breach("STALE_DATA", domain, "table", table, age_hours, hours))
    return out


def delivery_breaches(open_deliveries: Iterable[DeliveryState], failures: int) -> list[Breach]:
    """Per channel, how many open deliveries have failed at least `failures` times (observed: the most attempts)."""
    worst: dict[str, int] = {}
    for d in open_deliveries:
        if d.attempts >= failures:
            worst[d.channel] = max(worst.get(d.channel, 0), d.attempts)
    return [Breach("DELIVERY_FAILING", "", "channel", c, float(n), float(failures)) for c, n in sorted(worst.items())]


def outbox_breaches(pending: int | None, threshold: int) -> list[Breach]:
    """pending: unpublished outbox rows, None when the database has no outbox. Strictly above the threshold."""
    if pending is not None and pending > threshold:
        return [Breach("OUTBOX_PENDING", "orders", "outbox", "outbox", float(pending), float(threshold))]
    return []


def bucket(now: datetime, minutes: float) -> tuple[datetime, datetime]:
    """The bucket of `minutes` aligned to the epoch that holds `now`."""
    size = minutes * 60
    start = datetime.fromtimestamp((now.timestamp() // size) * size, UTC)
    return start, start + timedelta(seconds=size)


def to_anomalies(breaches: Iterable[Breach], now: datetime, repeat_minutes: float) -> list[Anomaly]:
    start, end = bucket(now, repeat_minutes)
    return [
        Anomaly(
            anomaly_id=pipeline_anomaly_id(b.anomaly_type, b.entity_type, b.entity_id, start),
            anomaly_family=PIPELINE_FAMILY,
            anomaly_type=b.anomaly_type,
            domain=b.domain,
            entity_type=b.entity_type,
            entity_id=b.entity_id,
            event_id=None,
            window_start=start,
            window_end=end,
            observed_value=float(b.observed),
            threshold_value=float(b.threshold),
            detected_at=now,
        )
        for b in breaches
    ]


def _domain(topic: str) -> str:
    from ingestion.topics import TOPICS_BY_NAME

    spec = TOPICS_BY_NAME.get(topic)
    return spec.domain if spec else ""


# ---- measuring ----------------------------------------------------------------------------------


def measure_batches(client: Any, raw_database: str, minutes: float) -> tuple[dict[str, tuple[int, int]], float | None]:
    """(topic -> (rows loaded, dead letters), insert p95 in seconds or None) over the loader's recent `done` batches."""
    rows = client.query(
        f"""
        SELECT kafka_topic, sum(rows_loaded), sum(dead_letters), groupArray(insert_ms)
        FROM `{raw_database}`.ingest_batches
        WHERE state = 'done' AND recorded_at >= now64(3) - toIntervalMillisecond({{ms:UInt64}})
        GROUP BY kafka_topic
        """,
        parameters={"ms": int(minutes * 60_000)},
    ).result_rows
    by_topic = {topic: (int(loaded), int(dead)) for topic, loaded, dead, _ in rows}
    latencies = sorted(float(ms) for *_, values in rows for ms in values)
    return by_topic, (p95(latencies) / 1000 if latencies else None)


def p95(sorted_values: list[float]) -> float:
    """The nearest-rank 95th percentile (the smallest value with 95% of the values at or below it)."""
    rank = -(-95 * len(sorted_values) // 100)  # ceil(0.95 n)
    return sorted_values[max(rank, 1) - 1]


def measure_freshness(client: Any, raw_database: str) -> dict[str, datetime | None]:
    from ingestion.raw_tables import raw_table
    from ingestion.topics import DOMAINS

    out: dict[str, datetime | None] = {}
    for domain in DOMAINS:
        table = raw_table(domain)
        count, newest = client.query(f"SELECT count(), max(loaded_at) FROM `{raw_database}`.`{table}`").result_rows[0]
        out[table] = (newest.replace(tzinfo=UTC) if newest.tzinfo is None else newest) if count else None
    return out


def loader_lag_by_domain(lags: Iterable[GroupLag]) -> dict[str, int]:
    """Each domain's loader lag, from the lag of every group that may load it.

    The loader runs under `eventhouse load --group-id` (one group for every domain) or under
    Dagster's per-domain groups (`<group>-<domain>`): a domain's lag is the smallest among the
    groups that have committed on its topics, since one of them is the loader that keeps up. When
    none has, nothing of it was ever loaded and the lag is all its messages.
    """
    from ingestion.topics import TOPICS_BY_NAME

    committed: dict[str, list[int]] = {}
    uncommitted: dict[str, int] = {}
    for lag in lags:
        by_domain: dict[str, int] = {}
        started: set[str] = set()
        for p in lag.partitions:
            domain = TOPICS_BY_NAME[p.topic].domain
            by_domain[domain] = by_domain.get(domain, 0) + p.lag
            if p.committed is not None:
                started.add(domain)
        for domain, value in by_domain.items():
            if domain in started:
                committed.setdefault(domain, []).append(value)
            else:
                uncommitted[domain] = max(uncommitted.get(domain, 0), value)
    return {
        domain: min(committed[domain]) if domain in committed else uncommitted[domain]
        for domain in {*committed, *uncommitted}
    }


def measure_lag(kafka: KafkaConfig, group_id: str) -> dict[str, int]:
    """The loader's lag per domain (topics that do not exist yet count nothing), whether it runs as
    `eventhouse load --group-id <group_id>` or as Dagster's per-domain groups (`<group_id>-<domain>`)."""
    from ingestion.lag import group_lag
    from ingestion.topics import DOMAINS, TOPICS, TOPICS_BY_NAME

    lags = [group_lag(kafka, group_id, list(TOPICS_BY_NAME))]
    for domain in DOMAINS:
        topics = [spec.name for spec in TOPICS if spec.domain == domain]
        lags.append(group_lag(kafka, f"{group_id}-{domain}", topics))
    return loader_lag_by_domain(lags)


def measure_outbox_pending(dsn: str) -> int | None:
    """The orders outbox's unpublished rows (PostgreSQL, EVENTHOUSE_POSTGRES_DSN); None without an outbox table."""
    from oltp.connection import connect

    with connect(dsn, connect_timeout=3) as conn:
        if conn.execute("SELECT to_regclass('outbox')").fetchone()[0] is None:
            return None
        return int(conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0])


def check_pipeline(
    client: Any,
    kafka: KafkaConfig,
    raw_database: str,
    config: AlertSettings,
    open_deliveries: list[DeliveryState],
    now: datetime,
) -> list[Anomaly]:
    """Every pipeline check; one that cannot measure (a server down) is logged and skipped, not fatal."""
    breaches: list[Breach] = []
    try:
        by_topic, latency = measure_batches(client, raw_database, config.pipeline_window_minutes)
        breaches += dead_letter_breaches(by_topic, config.dead_letter_rate)
        breaches += latency_breaches(latency, config.insert_p95_seconds)
        breaches += freshness_breaches(measure_freshness(client, raw_database), now, config.freshness_hours)
    except Exception as exc:  # noqa: BLE001 - the other checks still run; the next check retries
        log.warning("pipeline checks on ClickHouse skipped: %s", exc)
    try:
        breaches += lag_breaches(measure_lag(kafka, config.loader_group_id), config.lag_threshold)
    except Exception as exc:  # noqa: BLE001
        log.warning("loader lag check skipped: %s", exc)
    try:
        from settings import postgres_dsn

        breaches += outbox_breaches(measure_outbox_pending(postgres_dsn()), config.outbox_pending_threshold)
    except Exception as exc:  # noqa: BLE001
        log.warning("outbox pending check skipped: %s", exc)
    breaches += delivery_breaches(open_deliveries, config.delivery_failures)
    return to_anomalies(breaches, now, config.pipeline_repeat_minutes)
