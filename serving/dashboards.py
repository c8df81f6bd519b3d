"""The dashboards: five pages served by the API itself, drawn in the browser with Chart.js.

Each page is declared here as panels; each panel names the API endpoint it reads and how to draw
it. `web/static/dashboards.js` renders any page from its declaration, so a page is data, not code.
The marts each page reads are listed here too: `models/exposures.yml` declares each page as a dbt
exposure with the same marts (tests/unit/test_dashboards.py keeps the two equal).

Why pages served by the API rather than Streamlit: one process and one port serve the API, the
collector and the pages, the pages read exactly the JSON the API publishes (and that its tests
check), there is no second Python server to start, pin and keep alive, and a page loads in a
browser without a websocket session: fast to open and to test in headless Chromium.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from settings import REPO_ROOT

WEB = REPO_ROOT / "serving" / "web"
CHART_JS = WEB / "node_modules" / "chart.js" / "dist"
router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    # line | bar | hbar | stacked | doughnut | heatmap | table | cards
    kind: str
    # the API path; {day} is the newest day of the page's range, {start}/{end} its bounds
    endpoint: str
    x: str = ""  # the field on the x axis (labels), or the heatmap's columns
    y: tuple[str, ...] = ()  # fields drawn as series (one dataset each), or table/cards columns
    series: str = ""  # a field whose values split rows into datasets (with one y)
    rows_key: str = ""  # where the rows are when the endpoint answers an object
    range: bool = False  # pass start_date/end_date
    wide: bool = False
    # a logarithmic y axis: replayed history (years late) beside live events (seconds late)
    log_scale: bool = False


@dataclass(frozen=True)
class Page:
    slug: str
    title: str
    description: str
    marts: tuple[str, ...]  # the dbt models the page's endpoints read (its exposure's depends_on)
    panels: tuple[Panel, ...]
    # the endpoint and field that list the page's days: {day} is the newest one in the range
    days: tuple[str, str] = ("", "")
    # dbt sources read (the loader's raw tables), for the exposure; the alert publisher's `alerts`
    # table is read too but is no dbt node
    sources: tuple[str, ...] = field(default=())


PAGES: tuple[Page, ...] = (
    Page(
        "pipeline",
        "Pipeline operations",
        "Loader throughput and lag per topic, dead letters, event-to-table latency, late events, freshness, alerts.",
        marts=("latency_daily",),
        sources=("ingest_batches", "dead_letters"),
        panels=(
            Panel("freshness", "Freshness: newest event per raw table", "table", "/pipeline/freshness",
                  y=("table", "newest_loaded_at", "age_minutes")),
            Panel("throughput", "Events loaded per second, by topic (last hour of loading)", "line",
                  "/pipeline/throughput?minutes=60", x="minute", y=("events_per_second",), series="topic",
                  rows_key="points", wide=True),
            Panel("lag", "Lag per topic (messages not yet loaded)", "bar", "/pipeline/lag", x="topic", y=("lag",)),
            Panel("dead_letters", "Dead letters by topic and reason", "hbar", "/pipeline/dead-letters?limit=20",
                  x="reason", y=("count",), series="topic"),
            Panel("latency", "Event-to-table latency p95 (ms, log scale) per day, by domain", "line",
                  "/pipeline/latency", x="event_date", y=("latency_p95_ms",), series="domain", range=True,
                  log_scale=True),
            Panel("latency_distribution", "Latency p50 / p95 / p99 (ms, log scale) on each domain's newest day",
                  "bar", "/pipeline/latency/percentiles", x="domain",
                  y=("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"), range=True, log_scale=True),
            Panel("late_events", "Late-event share per day, by domain", "line", "/pipeline/latency",
                  x="event_date", y=("late_event_share",), series="domain", range=True),
            Panel("alerts", "Alerts published", "table", "/pipeline/alerts?limit=20",
                  y=("published_at", "anomaly_type", "entity_type", "entity_id", "observed_value", "threshold_value"),
                  wide=True),
        ),
    ),
    Page(
        "clickstream",
        "Clickstream",
        "Daily metrics, the session funnel, popular and trending items, categories and the anomaly timeline.",
        marts=("clickstream_summary", "clickstream_daily_metrics", "clickstream_session_funnel",
               "clickstream_popular_items", "clickstream_popular_categories", "clickstream_trending_items",
               "fct_anomalies", "clickstream_anomalies"),
        days=("/metrics/daily?limit=1000", "metric_date"),
        panels=(
            Panel("summary", "All days", "cards", "/metrics/summary",
                  y=("total_clicks", "total_purchases", "conversion_rate", "total_revenue", "avg_order_value")),
            Panel("daily", "Clicks and purchases per day", "line", "/metrics/daily?limit=1000", x="metric_date",
                  y=("total_clicks", "total_purchases"), range=True, wide=True),
            Panel("conversion", "Conversion rate (buying sessions / sessions)", "line", "/metrics/daily?limit=1000",
                  x="metric_date", y=("conversion_rate",), range=True),
            Panel("revenue", "Revenue and average order value per day", "bar", "/metrics/daily?limit=1000",
                  x="metric_date", y=("total_revenue", "avg_order_value"), range=True),
            Panel("funnel", "Session funnel on {day}", "bar", "/metrics/funnel/{day}", x="stage",
                  y=("session_count",), rows_key="stages"),
            Panel("popular", "Top 10 items on {day}", "hbar", "/items/popular/{day}?limit=10", x="item_id",
                  y=("click_count", "purchase_count")),
            Panel("categories", "Top categories on {day}", "hbar", "/items/categories/{day}?limit=10", x="category",
                  y=("click_count",)),
            Panel("trending", "Trending items (last 3 days vs before)", "table", "/items/trending?limit=10",
                  y=("item_id", "category", "recent_clicks", "recent_purchases", "trend_score")),
            Panel("anomaly_timeline", "Anomalies per hour, by type (last 7 days of data)", "stacked",
                  "/anomalies/timeline?hours=168", x="hour", y=("count",), series="anomaly_type", rows_key="buckets",
                  wide=True),
        ),
    ),
    Page(
        "game",
        "Game",
        "Daily actives, retention, the chapter clear-rate heatmap, modes, the leaderboard, stage difficulty and the "
        "story funnel.",
        marts=("engagement_active_users", "user_retention", "game_chapter_clear_rates", "game_mode_split",
               "game_time_attack_leaderboard", "game_stage_difficulty", "game_story_funnel"),
        panels=(
            Panel("dau", "Daily, weekly and monthly active players", "line", "/game/active-users?user_type=player",
                  x="activity_date", y=("dau", "wau", "mau"), range=True, wide=True),
            Panel("retention", "D1 / D3 / D7 retention by first-seen cohort", "bar",
                  "/game/retention?user_type=player", x="cohort_date",
                  y=("d1_retention_rate", "d3_retention_rate", "d7_retention_rate")),
            Panel("clear_heatmap", "Clear rate by chapter and day", "heatmap", "/game/chapter-clear-rates",
                  x="event_date", y=("clear_rate",), series="chapter_number", range=True),
            Panel("modes", "Attempts by mode per day", "stacked", "/game/mode-split", x="event_date",
                  y=("attempts",), series="game_mode", range=True),
            Panel("leaderboard", "Time-attack leaderboard", "table", "/game/leaderboard?limit=10",
                  y=("rank", "user_id", "best_score", "chapter_number", "stage_number", "clear_time_ms")),
            Panel("difficulty", "Clear rate per stage", "bar", "/game/stage-difficulty", x="stage_name",
                  y=("clear_rate",), wide=True),
            Panel("story_funnel", "Story funnel: players reaching each stage in order", "bar", "/game/story-funnel",
                  x="stage_name", y=("players_reached_in_order",), wide=True),
        ),
    ),
    Page(
        "economy",
        "Economy",
        "Daily actives, ARPDAU, whales, and live-event and mission completion.",
        marts=("economy_daily_kpis", "economy_whales", "economy_event_completion", "economy_mission_completion"),
        panels=(
            Panel("dau", "Daily and 7-day active players", "line", "/economy/daily", x="metric_date",
                  y=("dau", "active_users_7d"), range=True),
            Panel("arpdau", "ARPDAU and ARPPU", "line", "/economy/daily", x="metric_date", y=("arpdau", "arppu"),
                  range=True),
            Panel("whales", "Whales (30-day shop spend)", "table", "/economy/whales?limit=20",
                  y=("user_id", "shop_spend_gold", "purchases", "revenue", "last_purchase_at"), wide=True),
            Panel("events", "Live-event completion (claims / progress updates)", "bar", "/economy/event-completion",
                  x="live_event_id", y=("completion_rate", "user_claim_rate")),
            Panel("missions", "Mission completion", "bar", "/economy/mission-completion", x="mission_id",
                  y=("completion_rate", "user_claim_rate")),
        ),
    ),
    Page(
        "commerce",
        "Commerce",
        "Daily and hourly sales, the status distribution, totals and the best customers.",
        marts=("commerce_stats", "commerce_daily_sales", "commerce_hourly_sales",
               "commerce_order_status_distribution", "commerce_user_orders"),
        days=("/api/analytics/daily-sales?limit=1000", "date"),
        panels=(
            Panel("totals", "Totals", "cards", "/api/analytics/stats",
                  y=("totalOrders", "totalRevenue", "averageOrderValue", "totalProducts", "totalUsers")),
            Panel("daily", "Revenue per day", "bar", "/api/analytics/daily-sales?limit=1000", x="date",
                  y=("totalRevenue",), range=True, wide=True),
            Panel("orders", "Orders per day", "line", "/api/analytics/daily-sales?limit=1000", x="date",
                  y=("totalOrders", "uniqueCustomers"), range=True),
            Panel("hourly", "Orders per hour on {day}", "bar", "/api/analytics/hourly-sales?date={day}",
                  x="hourOfDay", y=("totalOrders",)),
            Panel("status", "Orders by status", "doughnut", "/api/analytics/order-status", x="status", y=("count",)),
            Panel("customers", "Best customers", "table", "/api/analytics/users?limit=10",
                  y=("userId", "totalOrders", "totalRevenue", "averageOrderValue", "lastOrderAt")),
        ),
    ),
)
PAGES_BY_SLUG = {page.slug: page for page in PAGES}

PAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · eventhouse</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboards/static/dashboards.css">
<script src="/dashboards/vendor/chart.umd.min.js"></script>
<script src="/dashboards/static/dashboards.js" defer></script>
</head><body>
<header><nav>{nav}</nav>
<form id="range"><label>From <input type="date" name="start"></label>
<label>to <input type="date" name="end"></label><button type="submit">Apply</button>
<span id="refreshed"></span></form></header>
<main><h1>{title}</h1><p class="description">{description}</p><section id="panels"></section></main>
<script id="page-config" type="application/json">{config}</script>
</body></html>"""


def _nav(current: str) -> str:
    links = [
        f'<a href="/dashboards/{p.slug}"{" class=current" if p.slug == current else ""}>{html.escape(p.title)}</a>'
        for p in PAGES
    ]
    return '<a href="/docs">API</a> · ' + " ".join(links)


def page_config(page: Page, refresh_seconds: int) -> dict[str, Any]:
    return {**asdict(page), "refresh_seconds": refresh_seconds}


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboards/")


@router.get("/dashboards/")
def index() -> RedirectResponse:
    return RedirectResponse(f"/dashboards/{PAGES[0].slug}")


@router.get("/dashboards/{slug}", response_class=HTMLResponse)
def page(request: Request, slug: str) -> HTMLResponse:
    found = PAGES_BY_SLUG.get(slug)
    if found is None:
        raise HTTPException(404, f"no dashboard {slug!r}: there are {', '.join(PAGES_BY_SLUG)}")
    config = json.dumps(page_config(found, request.app.state.serve.dashboard_refresh_seconds))
    return HTMLResponse(
        PAGE_HTML.format(
            title=html.escape(found.title),
            description=html.escape(found.description),
            nav=_nav(slug),
            # JSON inside <script>: "</" must not close the element
            config=config.replace("</", "<\\/"),
        )
    )


def mount_static(app: Any) -> None:
    app.mount("/dashboards/static", StaticFiles(directory=WEB / "static"), name="dashboard-static")
    # Chart.js as npm installed it (make installs serving/web/node_modules from package-lock.json)
    app.mount("/dashboards/vendor", StaticFiles(directory=CHART_JS, check_dir=False), name="dashboard-vendor")
