"""Clickstream KPIs as reference system 2's API publishes them: /metrics, /items and /stats.

Field names are the reference's; each endpoint reads one dbt mart (models/marts/clickstream).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from serving.app import warehouse
from serving.params import EndDate, StartDate, date_bounds, limit_query
from serving.warehouse import Warehouse, missing_day

router = APIRouter(tags=["clickstream"])
NOT_FOUND = {404: {"description": "the mart has no row for that day"}}
Db = Annotated[Warehouse, Depends(warehouse)]

DAILY_COLUMNS = """metric_date, total_clicks, total_purchases, unique_sessions, unique_items, conversion_rate,
    avg_session_duration_sec, avg_clicks_per_session, total_revenue, avg_order_value, revenue_per_buying_session"""


@router.get("/metrics/daily", summary="Daily clickstream metrics, newest first")
def daily_metrics(
    db: Db, start_date: StartDate = None, end_date: EndDate = None, limit: int = limit_query(30)
) -> list[dict[str, Any]]:
    return db.rows(
        f"SELECT {DAILY_COLUMNS} FROM clickstream_daily_metrics"
        " WHERE metric_date BETWEEN {start:Date} AND {end:Date} ORDER BY metric_date DESC LIMIT {limit:UInt32}",
        {**date_bounds(start_date, end_date), "limit": limit},
    )


@router.get("/metrics/daily/{date}", summary="One day's clickstream metrics", responses=NOT_FOUND)
def daily_metrics_of(db: Db, date: dt.date) -> dict[str, Any]:
    row = db.one(
        f"SELECT {DAILY_COLUMNS} FROM clickstream_daily_metrics WHERE metric_date = {{day:Date}}", {"day": date}
    )
    if row is None:
        raise missing_day(db, "daily metrics", date, "clickstream_daily_metrics", "metric_date")
    return row


@router.get("/metrics/funnel/{date}", summary="Single view -> multi view -> purchase sessions", responses=NOT_FOUND)
def funnel(db: Db, date: dt.date) -> dict[str, Any]:
    stages = db.rows(
        "SELECT funnel_stage AS stage, session_count, percentage, drop_rate, share_of_clicking_sessions"
        " FROM clickstream_session_funnel WHERE metric_date = {day:Date} ORDER BY stage_order",
        {"day": date},
    )
    if not stages:
        raise missing_day(db, "session funnel", date, "clickstream_session_funnel", "metric_date")
    return {"metric_date": date.isoformat(), "stages": stages}


@router.get("/metrics/summary", summary="Totals over every day loaded")
def summary(db: Db) -> dict[str, Any]:
    return db.one(
        "SELECT total_clicks, total_purchases, unique_sessions, conversion_rate, purchases_per_click,"
        " avg_order_value, total_revenue FROM clickstream_summary"
    ) or {}


@router.get("/stats", summary="Anomalies, days processed and totals")
def stats(db: Db) -> dict[str, Any]:
    return db.one(
        "SELECT total_anomalies, days_processed, total_clicks, total_purchases, total_sessions FROM clickstream_stats"
    ) or {}


@router.get("/items/popular/{date}", summary="The day's most clicked items (top 100)", responses=NOT_FOUND)
def popular_items(db: Db, date: dt.date, limit: int = limit_query(100)) -> list[dict[str, Any]]:
    rows = db.rows(
        "SELECT metric_date, item_id, category, click_count, purchase_count, revenue, click_rank AS rank,"
        " click_to_purchase_ratio FROM clickstream_popular_items WHERE metric_date = {day:Date}"
        " ORDER BY click_rank LIMIT {limit:UInt32}",
        {"day": date, "limit": limit},
    )
    if not rows:
        raise missing_day(db, "popular items", date, "clickstream_popular_items", "metric_date")
    return rows


@router.get("/items/categories/{date}", summary="The day's most clicked categories (top 20)", responses=NOT_FOUND)
def popular_categories(db: Db, date: dt.date, limit: int = limit_query(20)) -> list[dict[str, Any]]:
    rows = db.rows(
        "SELECT metric_date, category, click_count, purchase_count, revenue, category_rank AS rank"
        " FROM clickstream_popular_categories WHERE metric_date = {day:Date}"
        " ORDER BY category_rank LIMIT {limit:UInt32}",
        {"day": date, "limit": limit},
    )
    if not rows:
        raise missing_day(db, "popular categories", date, "clickstream_popular_categories", "metric_date")
    return rows


@router.get(
    "/items/trending",
    summary="Items clicked more in the last 3 days than before",
    responses={404: {"description": "no trending items for that as_of_date"}},
)
def trending_items(
    db: Db,
    limit: int = limit_query(10),
    as_of_date: Annotated[dt.date | None, Query(description="the day the 3 days end (default: the newest)")] = None,
) -> list[dict[str, Any]]:
    if as_of_date is None:
        return db.rows(
            "SELECT as_of_date, item_id, category, recent_clicks, recent_purchases, trend_score"
            " FROM clickstream_trending_items"
            " WHERE as_of_date = (SELECT max(as_of_date) FROM clickstream_trending_items)"
            " ORDER BY trend_rank LIMIT {limit:UInt32}",
            {"limit": limit},
        )
    rows = db.rows(
        "SELECT as_of_date, item_id, category, recent_clicks, recent_purchases, trend_score"
        " FROM clickstream_trending_items WHERE as_of_date = {day:Date} ORDER BY trend_rank LIMIT {limit:UInt32}",
        {"day": as_of_date, "limit": limit},
    )
    if not rows:
        raise missing_day(db, "trending items", as_of_date, "clickstream_trending_items", "as_of_date")
    return rows
