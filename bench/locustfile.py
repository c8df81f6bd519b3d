"""Locust users of the KPI API (bench/api.py runs it: 100 users for 60 s, headless).

Each user opens a dashboard's worth of endpoints in turn, with a second or so between requests,
as a person reading the pages (and their 30-second refresh) would. Days come from
EVENTHOUSE_BENCH_DAYS (comma-separated), which bench/api.py reads from the marts.
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

DAYS = [d for d in os.environ.get("EVENTHOUSE_BENCH_DAYS", "").split(",") if d]
PATHS = [
    "/metrics/daily",
    "/metrics/summary",
    "/stats",
    "/items/trending",
    "/anomalies?limit=100",
    "/anomalies/types",
    "/anomalies/timeline?hours=168",
    "/anomalies/live?minutes=1",
    "/api/analytics/daily-sales",
    "/api/analytics/hourly-sales",
    "/api/analytics/order-status",
    "/api/analytics/stats",
    "/api/analytics/users?limit=10",
    "/game/active-users",
    "/game/retention",
    "/game/chapter-clear-rates",
    "/game/mode-split",
    "/game/stage-difficulty",
    "/game/leaderboard",
    "/game/story-funnel",
    "/economy/daily",
    "/economy/whales",
    "/economy/event-completion",
    "/economy/mission-completion",
    "/pipeline/throughput",
    "/pipeline/lag",
    "/pipeline/latency",
    "/pipeline/latency/percentiles",
    "/pipeline/dead-letters",
    "/pipeline/freshness",
    "/pipeline/alerts",
    "/health",
]
DAY_PATHS = ["/metrics/daily/{day}", "/metrics/funnel/{day}", "/items/popular/{day}", "/items/categories/{day}"]


class DashboardReader(HttpUser):
    wait_time = between(0.5, 1.5)

    @task(6)
    def endpoint(self) -> None:
        path = random.choice(PATHS)
        self.client.get(path, name=path)

    @task(2)
    def day_endpoint(self) -> None:
        path = random.choice(DAY_PATHS)
        self.client.get(path.format(day=random.choice(DAYS)), name=path)
