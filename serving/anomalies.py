"""Anomalies as reference system 2's API publishes them, over every rule of the warehouse.

`/anomalies*` read `fct_anomalies` (every family: the clickstream and game bot rules, late events,
KPI spikes and drops; rebuilt by the hourly dbt run); `/anomalies/live` reads `live_anomalies`
(the five bot rules at insert time) beside the `alerts` the publisher sent for them.
"""

from __future__ import annotations

import enum
from functools import cache
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Query

from serving.app import warehouse
from serving.params import limit_query
from serving.warehouse import Warehouse, not_found
from settings import REPO_ROOT

router = APIRouter(tags=["anomalies"])
Db = Annotated[Warehouse, Depends(warehouse)]
MODELS_YAML = REPO_ROOT / "models" / "marts" / "anomalies" / "_anomalies__models.yml"


@cache
def known_anomaly_types() -> tuple[str, ...]:
    """fct_anomalies.anomaly_type's accepted values, read from the dbt YAML that tests them: one list."""
    models = yaml.safe_load(MODELS_YAML.read_text())["models"]
    columns = next(m for m in models if m["name"] == "fct_anomalies")["columns"]
    tests = next(c for c in columns if c["name"] == "anomaly_type")["data_tests"]
    return tuple(next(t["accepted_values"]["arguments"]["values"] for t in tests if "accepted_values" in t))


AnomalyType = enum.StrEnum("AnomalyType", {name: name for name in known_anomaly_types()})

# fct_anomalies' columns with reference system 2's names beside them: a clickstream anomaly's
# session_id, click_count and unique_items (null for other families).
ANOMALY_COLUMNS = """a.anomaly_id AS anomaly_id, a.anomaly_type AS anomaly_type, a.anomaly_family AS anomaly_family,
    a.domain AS domain, a.entity_type AS entity_type, a.entity_id AS entity_id,
    if(a.entity_type = 'session', a.entity_id, NULL) AS session_id,
    if(a.anomaly_family = 'clickstream', c.click_count, NULL) AS click_count,
    if(a.anomaly_family = 'clickstream', c.unique_items, NULL) AS unique_items,
    a.window_start AS window_start, a.window_end AS window_end, a.observed_value AS observed_value,
    a.threshold_value AS threshold_value, a.detected_at AS detected_at"""
ANOMALY_SOURCE = """fct_anomalies AS a LEFT JOIN clickstream_anomalies AS c
    ON c.session_id = a.entity_id AND c.anomaly_type = a.anomaly_type AND c.window_start = a.window_start"""


@router.get("/anomalies", summary="The newest anomalies, of one type or all")
def anomalies(
    db: Db,
    limit: int = limit_query(100),
    anomaly_type: Annotated[AnomalyType | None, Query(description="one of /anomalies/types")] = None,
) -> list[dict[str, Any]]:
    return db.rows(
        f"SELECT {ANOMALY_COLUMNS} FROM {ANOMALY_SOURCE}"
        " WHERE {type:Nullable(String)} IS NULL OR a.anomaly_type = {type:Nullable(String)}"
        " ORDER BY a.window_start DESC, a.anomaly_id LIMIT {limit:UInt32}",
        {"limit": limit, "type": anomaly_type.value if anomaly_type else None},
    )


@router.get("/anomalies/types", summary="Every anomaly type and how many there are")
def anomaly_types(db: Db) -> list[dict[str, Any]]:
    counts = {
        r["anomaly_type"]: r for r in db.rows(
            "SELECT anomaly_type, anomaly_family, count() AS count, max(window_start) AS latest"
            " FROM fct_anomalies GROUP BY anomaly_type, anomaly_family"
        )
    }
    return [
        counts.get(name, {"anomaly_type": name, "anomaly_family": None, "count": 0, "latest": None})
        for name in known_anomaly_types()
    ]


@router.get("/anomalies/timeline", summary="Anomalies per hour and type over the last hours of data")
def timeline(
    db: Db, hours: int = Query(24, ge=1, le=24 * 90, description="hours back from the newest anomaly, 1..2160")
) -> dict[str, Any]:
    # the hours before the newest anomaly (event time), not before the wall clock: a replay of
    # 2014 data has a timeline too
    rows = db.rows(
        "WITH (SELECT max(window_start) FROM fct_anomalies) AS newest"
        " SELECT toStartOfHour(window_start) AS hour, anomaly_type, count() AS count FROM fct_anomalies"
        " WHERE window_start > newest - toIntervalHour({hours:UInt32})"
        " GROUP BY hour, anomaly_type ORDER BY hour, anomaly_type",
        {"hours": hours},
    )
    return {"hours": hours, "buckets": rows}


@router.get("/anomalies/live", summary="Bot anomalies detected at insert time, with their alerts")
def live(
    db: Db,
    limit: int = limit_query(100),
    minutes: int = Query(
        10, ge=1, le=60, description="entities with events inserted in the last minutes (1..60, the live horizon)"
    ),
) -> list[dict[str, Any]]:
    """The live anomalies of the sessions and players whose events were inserted in the last `minutes`
    (what is happening now; older ones are in /anomalies and /pipeline/alerts). Read as the alert
    publisher reads them: live_anomaly_entities, sorted by insert time, says which entities to
    evaluate, so the cost follows recent inserts, not the hour the live tables hold."""
    # no `alerts` table until `eventhouse alerts` first ran: every detection is then unalerted
    alerts = (
        f"SELECT anomaly_id, published_at, channels FROM `{db.raw_database}`.alerts"
        if db.has_table(db.raw_database, "alerts")
        else "SELECT '' AS anomaly_id, NULL AS published_at, [] AS channels WHERE 0"
    )
    return db.rows(
        "SELECT l.anomaly_id AS anomaly_id, l.anomaly_type AS anomaly_type, l.domain AS domain,"
        " l.entity_type AS entity_type, l.entity_id AS entity_id, l.window_start AS window_start,"
        " l.window_end AS window_end, l.observed_value AS observed_value, l.threshold_value AS threshold_value,"
        " l.detected_at AS detected_at, a.published_at AS alerted_at, a.channels AS alert_channels"
        f" FROM live_anomalies AS l LEFT JOIN ({alerts}) AS a"
        " ON a.anomaly_id = l.anomaly_id"
        " WHERE l.entity_id IN (SELECT entity_id FROM live_anomaly_entities"
        " WHERE inserted_at >= now64(3) - toIntervalMinute({minutes:UInt32}))"
        " ORDER BY l.detected_at DESC, l.anomaly_id LIMIT {limit:UInt32}",
        {"limit": limit, "minutes": minutes},
        settings={"join_use_nulls": 1},
    )


@router.get(
    "/anomalies/{session_id}",
    summary="The anomalies of one session (or player, or event)",
    responses={404: {"description": "no anomaly of that entity"}},
)
def anomalies_of(db: Db, session_id: str, limit: int = limit_query(100)) -> list[dict[str, Any]]:
    rows = db.rows(
        f"SELECT {ANOMALY_COLUMNS} FROM {ANOMALY_SOURCE} WHERE a.entity_id = {{entity:String}}"
        " ORDER BY a.window_start LIMIT {limit:UInt32}",
        {"entity": session_id, "limit": limit},
    )
    if not rows:
        raise not_found(f"no anomaly of session (or player, event) {session_id!r} in fct_anomalies")
    return rows
