"""Order analytics as reference system 4's API publishes them (/api/analytics/*, camelCase fields).

Each endpoint reads one mart of models/marts/commerce; soft-deleted orders are already out of them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from serving.app import warehouse
from serving.health import health_report
from serving.params import EndDate, StartDate, date_bounds, limit_query
from serving.warehouse import Warehouse, missing_day

router = APIRouter(prefix="/api/analytics", tags=["commerce"])
Db = Annotated[Warehouse, Depends(warehouse)]


@router.get("/daily-sales", summary="Orders and revenue per day, newest first")
def daily_sales(
    db: Db, start_date: StartDate = None, end_date: EndDate = None, limit: int = limit_query(30)
) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT order_date AS date, orders AS totalOrders, revenue_orders AS revenueOrders, revenue AS totalRevenue,"
        " average_order_value AS averageOrderValue, customers AS uniqueCustomers FROM commerce_daily_sales"
        " WHERE order_date BETWEEN {start:Date} AND {end:Date} ORDER BY order_date DESC LIMIT {limit:UInt32}",
        {**date_bounds(start_date, end_date), "limit": limit},
    )


@router.get(
    "/hourly-sales",
    summary="Orders and revenue per hour of one day",
    responses={404: {"description": "no orders that day"}},
)
def hourly_sales(
    db: Db, date: Annotated[dt.date | None, Query(description="the day (default: the newest with orders)")] = None
) -> list[dict[str, Any]]:
    rows = db.rows(
        "SELECT order_hour AS hour, order_date AS date, hour_of_day AS hourOfDay, orders AS totalOrders,"
        " revenue AS totalRevenue, average_order_value AS averageOrderValue, customers AS uniqueCustomers"
        " FROM commerce_hourly_sales"
        " WHERE order_date = ifNull({day:Nullable(Date)}, (SELECT max(order_date) FROM commerce_hourly_sales))"
        " ORDER BY order_hour",
        {"day": date},
    )
    if not rows and date is not None:
        raise missing_day(db, "hourly sales", date, "commerce_hourly_sales", "order_date")
    return rows


@router.get("/order-status", summary="Orders by current status")
def order_status(db: Db) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT order_status AS status, orders AS count, order_share AS share, order_amount AS totalAmount"
        " FROM commerce_order_status_distribution ORDER BY orders DESC, order_status"
    )


@router.get("/users", summary="Per-customer order analytics, biggest spenders first")
def users(db: Db, limit: int = limit_query(100)) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT customer_id AS userId, orders AS totalOrders, revenue_orders AS revenueOrders, revenue AS totalRevenue,"
        " average_order_value AS averageOrderValue, cancelled_orders AS cancelledOrders,"
        " refunded_orders AS refundedOrders, failed_orders AS failedOrders, first_order_at AS firstOrderAt,"
        " last_order_at AS lastOrderAt, days_between_first_and_last AS daysBetweenFirstAndLast"
        " FROM commerce_user_orders ORDER BY revenue DESC, customer_id LIMIT {limit:UInt32}",
        {"limit": limit},
    )


@router.get("/stats", summary="Totals: orders, revenue, average order value, products, users")
def stats(db: Db) -> dict[str, Any]:
    return db.one(
        "SELECT total_orders AS totalOrders, total_revenue AS totalRevenue, average_order_value AS averageOrderValue,"
        " total_products AS totalProducts, total_users AS totalUsers FROM commerce_stats"
    ) or {"totalOrders": 0, "totalRevenue": 0, "averageOrderValue": None, "totalProducts": 0, "totalUsers": 0}


router.add_api_route(
    "/health",
    health_report,
    methods=["GET"],
    summary="The same checks as /health",
    responses={503: {"description": "a check failed"}},
)
