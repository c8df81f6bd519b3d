"""Pipeline operations for the dashboards: throughput and lag per topic, dead letters, latency,
late events, freshness and alerts, from the loader's batch log and the raw database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from alerting.pipeline import measure_freshness
from serving.app import warehouse
from serving.params import EndDate, StartDate, date_bounds, limit_query
from serving.warehouse import Warehouse

router = APIRouter(prefix="/pipeline", tags=["pipeline"])
Db = Annotated[Warehouse, Depends(warehouse)]
Minutes = Annotated[int, Query(ge=1, le=7 * 24 * 60, description="minutes back from the newest batch, 1..10080")]


@router.get("/throughput", summary="Events loaded per second, per topic and minute")
def throughput(db: Db, minutes: Minutes = 60) -> dict[str, Any]:
    # the minutes before the loader's newest batch, so a stopped pipeline still shows its last hour
    rows = db.rows(
        f"WITH (SELECT max(recorded_at) FROM `{db.raw_database}`.ingest_batches WHERE state = 'done') AS newest"
        " SELECT toStartOfMinute(recorded_at) AS minute, kafka_topic AS topic,"
        " sum(rows_loaded) / 60 AS events_per_second, sum(dead_letters) AS dead_letters"
        f" FROM `{db.raw_database}`.ingest_batches"
        " WHERE state = 'done' AND recorded_at > newest - toIntervalMinute({minutes:UInt32})"
        " GROUP BY minute, topic ORDER BY minute, topic",
        {"minutes": minutes},
    )
    return {"minutes": minutes, "points": rows}


@router.get("/lag", summary="Messages not yet loaded per topic, as of the loader's newest batch")
def lag(db: Db) -> list[dict[str, Any]]:
    # each partition's lag as the loader measured it at its newest batch there (ingest_batches)
    return db.rows(
        "SELECT kafka_topic AS topic, sum(lag) AS lag, max(at) AS measured_at FROM ("
        " SELECT kafka_topic, kafka_partition, argMax(partition_lag, recorded_at) AS lag, max(recorded_at) AS at"
        f" FROM `{db.raw_database}`.ingest_batches WHERE state = 'done' GROUP BY kafka_topic, kafka_partition)"
        " GROUP BY topic ORDER BY topic"
    )


@router.get("/dead-letters", summary="Dead letters by topic and reason")
def dead_letters(db: Db, limit: int = limit_query(50)) -> list[dict[str, Any]]:
    # the reason up to its first ':' or '(' groups "unknown event_type 'x'" with its kind
    return db.rows(
        "SELECT kafka_topic AS topic, trimBoth(splitByRegexp('[:(]', error)[1]) AS reason, count() AS count,"
        " max(failed_at) AS last_failed_at, any(error) AS example"
        f" FROM `{db.raw_database}`.dead_letters GROUP BY topic, reason ORDER BY count DESC, topic, reason"
        " LIMIT {limit:UInt32}",
        {"limit": limit},
    )


@router.get("/latency", summary="Event-to-table latency percentiles and late-event share per day and domain")
def latency(db: Db, start_date: StartDate = None, end_date: EndDate = None) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT event_date, domain, event_count, late_event_count, late_event_share, latency_p50_ms, latency_p95_ms,"
        " latency_p99_ms, latency_max_ms FROM latency_daily WHERE event_date BETWEEN {start:Date} AND {end:Date}"
        " ORDER BY event_date, domain",
        date_bounds(start_date, end_date),
    )


@router.get("/latency/percentiles", summary="Each domain's latency distribution on its newest day")
def latency_percentiles(db: Db, start_date: StartDate = None, end_date: EndDate = None) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT l.domain AS domain, max(l.event_date) AS newest_day,"
        " argMax(l.event_count, l.event_date) AS event_count,"
        " argMax(l.latency_p50_ms, l.event_date) AS latency_p50_ms,"
        " argMax(l.latency_p95_ms, l.event_date) AS latency_p95_ms,"
        " argMax(l.latency_p99_ms, l.event_date) AS latency_p99_ms,"
        " argMax(l.latency_max_ms, l.event_date) AS latency_max_ms"
        " FROM latency_daily AS l WHERE l.event_date BETWEEN {start:Date} AND {end:Date}"
        " GROUP BY l.domain ORDER BY l.domain",
        date_bounds(start_date, end_date),
    )


@router.get("/freshness", summary="When each raw table last received an event")
def freshness(db: Db) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "table": table,
            "newest_loaded_at": newest.isoformat(timespec="seconds") if newest else None,
            "age_minutes": round((now - newest).total_seconds() / 60, 1) if newest else None,
        }
        for table, newest in measure_freshness(db.client, db.raw_database).items()
    ]


@router.get("/alerts", summary="The alerts published (eventhouse alerts), newest first")
def alerts(db: Db, limit: int = limit_query(50)) -> list[dict[str, Any]]:
    if not db.has_table(db.raw_database, "alerts"):
        return []  # the publisher has not run yet
    return db.rows(
        "SELECT anomaly_id, anomaly_family, anomaly_type, domain, entity_type, entity_id, window_start, window_end,"
        f" observed_value, threshold_value, detected_at, published_at, channels FROM `{db.raw_database}`.alerts"
        " ORDER BY published_at DESC, anomaly_id LIMIT {limit:UInt32}",
        {"limit": limit},
    )
