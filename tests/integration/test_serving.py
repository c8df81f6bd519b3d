"""`eventhouse serve` over HTTP on the expected-output case's warehouse (loaded through Kafka and the
loader, built by dbt): every read endpoint, its bad parameters and empty days, the API key and CORS,
and the OpenAPI contract (schemathesis).

Expected values come from tests/integration/warehouse_reference.py (plain Python over the case's
input events) where it computes the mart, and otherwise from a query of the mart written here: the
API's own job (which mart, which columns under which names, filters, order, limits) is what those
checks test; the marts' correctness is the expected-output tests'.
"""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from settings import REPO_ROOT
from tests.integration.serving_support import running_api
from tests.integration.test_warehouse_expected_output import reference_events, reference_rows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(case_api) -> httpx.Client:
    with httpx.Client(base_url=case_api, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def reference() -> dict[str, list[dict]]:
    return reference_rows()


def _close(actual: Any, expected: Any, tolerance: float = 0.005) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, float | Decimal):
        return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=tolerance)
    if isinstance(expected, dt.date):
        return actual == expected.isoformat()
    return actual == expected


def _assert_rows(actual: list[dict], expected: list[dict], fields: dict[str, str]) -> None:
    """actual (API JSON) equals expected (reference dicts) row by row; fields maps API -> reference names."""
    assert len(actual) == len(expected), (len(actual), len(expected))
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        wrong = {f: (a.get(f), e[r]) for f, r in fields.items() if not _close(a.get(f), e[r])}
        assert not wrong, f"row {i}: {wrong}"


def _mart(built_case, sql: str) -> list[dict]:
    """Rows of a query of the marts, as JSON would carry them (the test's own reading)."""
    rows = []
    for row in built_case.client.query(sql).named_results():
        rows.append(
            {
                k: (
                    float(v)
                    if isinstance(v, Decimal)
                    else v.isoformat()
                    if isinstance(v, dt.date) and not isinstance(v, dt.datetime)
                    else v
                )
                for k, v in row.items()
            }
        )
    return rows


DAILY = {
    name: name
    for name in (
        "metric_date",
        "total_clicks",
        "total_purchases",
        "unique_sessions",
        "unique_items",
        "conversion_rate",
        "avg_session_duration_sec",
        "avg_clicks_per_session",
        "total_revenue",
        "avg_order_value",
    )
}


def test_clickstream_metrics_equal_the_reference(api, reference):
    expected = reference["clickstream_daily_metrics"]
    days = [r["metric_date"] for r in expected]
    # newest first, the whole case within the default limit
    _assert_rows(api.get("/metrics/daily", params={"limit": 1000}).json(), expected[::-1], DAILY)
    # a range and a limit
    inside = [r for r in expected if days[1] <= r["metric_date"] <= days[-2]][::-1]
    page = api.get("/metrics/daily", params={"start_date": days[1], "end_date": days[-2], "limit": 2}).json()
    _assert_rows(page, inside[:2], DAILY)
    for row in expected:
        _assert_rows([api.get(f"/metrics/daily/{row['metric_date']}").json()], [row], DAILY)
    funnel = reference["clickstream_session_funnel"]
    for day in days:
        answer = api.get(f"/metrics/funnel/{day}").json()
        assert answer["metric_date"] == day.isoformat()
        stages = [r for r in funnel if r["metric_date"] == day]
        _assert_rows(
            answer["stages"],
            stages,
            {
                "stage": "funnel_stage",
                "session_count": "session_count",
                "percentage": "percentage",
                "drop_rate": "drop_rate",
            },
        )


def test_popular_items_and_categories(api, reference, built_case):
    items = reference["clickstream_popular_items"]
    for day in sorted({r["metric_date"] for r in items}):
        expected = sorted(
            (r for r in items if r["metric_date"] == day and r["click_rank"] <= 100), key=lambda r: r["click_rank"]
        )
        fields = {
            "item_id": "item_id",
            "category": "category",
            "click_count": "click_count",
            "purchase_count": "purchase_count",
            "revenue": "revenue",
            "rank": "click_rank",
            "click_to_purchase_ratio": "click_to_purchase_ratio",
        }
        _assert_rows(api.get(f"/items/popular/{day}").json(), expected, fields)
        _assert_rows(api.get(f"/items/popular/{day}", params={"limit": 1}).json(), expected[:1], fields)
        categories = _mart(
            built_case,
            "SELECT category, click_count, purchase_count, revenue, category_rank AS rank"
            f" FROM clickstream_popular_categories WHERE metric_date = '{day}' ORDER BY category_rank LIMIT 20",
        )
        assert categories, day
        _assert_rows(api.get(f"/items/categories/{day}").json(), categories, {k: k for k in categories[0]})
    trending = _mart(
        built_case,
        "SELECT item_id, category, recent_clicks, recent_purchases, trend_score FROM clickstream_trending_items"
        " WHERE as_of_date = (SELECT max(as_of_date) FROM clickstream_trending_items) ORDER BY trend_rank LIMIT 10",
    )
    _assert_rows(api.get("/items/trending").json(), trending, {k: k for k in trending[0]})


def test_anomalies(api, reference, built_case):
    # the clickstream rules against the reference, with reference system 2's field names
    expected = reference["clickstream_anomalies"]
    answer = []
    for kind in ("HIGH_FREQUENCY", "BOT_LIKE"):
        answer += api.get("/anomalies", params={"anomaly_type": kind, "limit": 1000}).json()
    key = lambda r: (r["session_id"], r["anomaly_type"], str(r["window_start"])[:19])  # noqa: E731
    assert sorted((r["session_id"], r["anomaly_type"], r["click_count"], r["unique_items"]) for r in answer) == sorted(
        (r["session_id"], r["anomaly_type"], r["click_count"], r["unique_items"]) for r in expected
    )
    assert len({key(r) for r in answer}) == len(answer)
    # every type is listed, counted as the mart counts it
    counts = {
        r["anomaly_type"]: r["count"]
        for r in _mart(built_case, "SELECT anomaly_type, count() AS count FROM fct_anomalies GROUP BY anomaly_type")
    }
    types = api.get("/anomalies/types").json()
    assert {r["anomaly_type"] for r in types} >= set(counts)
    assert {r["anomaly_type"]: r["count"] for r in types if r["count"]} == counts
    # newest first, limited
    newest = api.get("/anomalies", params={"limit": 3}).json()
    assert len(newest) == 3
    assert [r["window_start"] for r in newest] == sorted((r["window_start"] for r in newest), reverse=True)
    # one session's anomalies
    session = expected[0]["session_id"]
    mine = api.get(f"/anomalies/{session}").json()
    assert {r["anomaly_type"] for r in mine} == {r["anomaly_type"] for r in expected if r["session_id"] == session}
    # the timeline counts what the mart holds in the hours before its newest anomaly
    window = _mart(
        built_case,
        "SELECT count() AS n FROM fct_anomalies"
        " WHERE window_start > (SELECT max(window_start) FROM fct_anomalies) - INTERVAL 24 HOUR",
    )[0]["n"]
    timeline = api.get("/anomalies/timeline", params={"hours": 24}).json()
    assert sum(b["count"] for b in timeline["buckets"]) == window > 0
    # the live view: the five bot rules of the entities inserted in the last hour (all of the case's,
    # inserted minutes ago), as many as live_anomalies holds; none inserted in the last minute
    live = api.get("/anomalies/live", params={"limit": 1000, "minutes": 60}).json()
    assert len(live) == built_case.client.command("SELECT count() FROM live_anomalies") > 0
    assert {r["anomaly_id"] for r in live} == {
        r["anomaly_id"] for r in _mart(built_case, "SELECT anomaly_id FROM live_anomalies")
    }


def test_stats_and_summary(api, reference):
    # /stats: what the warehouse holds, bots included; /metrics/summary: the KPIs, bots left out
    clickstream = [e for e in reference_events() if e.domain == "clickstream"]
    daily = reference["clickstream_daily_metrics"]
    assert api.get("/stats").json() == {
        "total_anomalies": len(reference["clickstream_anomalies"]),
        "days_processed": len(daily),
        "total_clicks": sum(e.event_type == "clickstream.click" for e in clickstream),
        "total_purchases": sum(e.event_type == "clickstream.purchase" for e in clickstream),
        "total_sessions": len({e.session_id for e in clickstream}),
    }
    summary = api.get("/metrics/summary").json()
    assert summary["total_clicks"] == sum(r["total_clicks"] for r in daily)
    assert summary["total_purchases"] == sum(r["total_purchases"] for r in daily)
    revenue = sum(r["total_revenue"] for r in daily)
    assert _close(summary["total_revenue"], revenue)
    assert _close(summary["avg_order_value"], revenue / summary["total_purchases"])


def test_commerce_analytics(api, built_case):
    daily = _mart(
        built_case,
        "SELECT order_date AS date, orders AS totalOrders, revenue AS totalRevenue FROM commerce_daily_sales"
        " ORDER BY order_date DESC",
    )
    assert daily
    _assert_rows(api.get("/api/analytics/daily-sales").json(), daily, {k: k for k in daily[0]})
    newest = daily[0]["date"]
    hourly = api.get("/api/analytics/hourly-sales").json()
    assert {r["date"] for r in hourly} == {newest}
    assert sum(r["totalOrders"] for r in hourly) == daily[0]["totalOrders"]
    status = _mart(
        built_case,
        "SELECT order_status AS status, orders AS count FROM commerce_order_status_distribution"
        " ORDER BY orders DESC, order_status",
    )
    assert status
    _assert_rows(api.get("/api/analytics/order-status").json(), status, {"status": "status", "count": "count"})
    stats = api.get("/api/analytics/stats").json()
    assert set(stats) == {"totalOrders", "totalRevenue", "averageOrderValue", "totalProducts", "totalUsers"}
    assert stats["totalOrders"] == sum(r["totalOrders"] for r in daily)
    assert _close(stats["totalRevenue"], sum(r["totalRevenue"] for r in daily))


GAME_ENDPOINTS = {
    "/game/active-users": "SELECT count() FROM engagement_active_users WHERE user_type = 'player'",
    "/game/retention": "SELECT count() FROM user_retention WHERE user_type = 'player'",
    "/game/chapter-clear-rates": "SELECT count() FROM game_chapter_clear_rates",
    "/game/mode-split": "SELECT count() FROM game_mode_split",
    "/game/stage-difficulty": "SELECT count() FROM game_stage_difficulty",
    "/game/leaderboard?limit=1000": "SELECT count() FROM game_time_attack_leaderboard",
    "/game/story-funnel": "SELECT count() FROM game_story_funnel",
    "/economy/daily": "SELECT count() FROM economy_daily_kpis",
    "/economy/whales?limit=1000": "SELECT count() FROM economy_whales",
    "/economy/event-completion": "SELECT count() FROM economy_event_completion",
    "/economy/mission-completion": "SELECT count() FROM economy_mission_completion",
    "/api/analytics/users?limit=1000": "SELECT count() FROM commerce_user_orders",
    "/pipeline/lag": "SELECT uniqExact(kafka_topic) FROM eventhouse_raw.ingest_batches WHERE state = 'done'",
    "/pipeline/freshness": "SELECT 4",
    "/pipeline/latency": "SELECT count() FROM latency_daily",
    "/pipeline/latency/percentiles": "SELECT uniqExact(domain) FROM latency_daily",
}


@pytest.mark.parametrize("path", list(GAME_ENDPOINTS))
def test_game_economy_and_pipeline_endpoints_return_every_row(api, built_case, path):
    answer = api.get(path)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == built_case.client.command(GAME_ENDPOINTS[path])


def test_game_kpis_by_day(api, built_case):
    dau = _mart(
        built_case,
        "SELECT activity_date, dau, wau, mau FROM engagement_active_users WHERE user_type = 'player'"
        " ORDER BY activity_date",
    )
    first, last = dau[0]["activity_date"], dau[-1]["activity_date"]
    answer = api.get("/game/active-users", params={"start_date": first, "end_date": first}).json()
    _assert_rows(answer, dau[:1], {k: k for k in dau[0]})
    economy = _mart(built_case, "SELECT metric_date, dau, arpdau FROM economy_daily_kpis ORDER BY metric_date")
    day = economy[-1]["metric_date"]
    _assert_rows([api.get(f"/economy/daily/{day}").json()], economy[-1:], {k: k for k in economy[0]})
    assert last >= first


EMPTY_DAY = "2001-01-01"  # before every event of the case


@pytest.mark.parametrize(
    "path",
    [
        f"/metrics/daily/{EMPTY_DAY}",
        f"/metrics/funnel/{EMPTY_DAY}",
        f"/items/popular/{EMPTY_DAY}",
        f"/items/categories/{EMPTY_DAY}",
        f"/items/trending?as_of_date={EMPTY_DAY}",
        f"/economy/daily/{EMPTY_DAY}",
        f"/api/analytics/hourly-sales?date={EMPTY_DAY}",
        "/anomalies/no-such-session",
    ],
)
def test_a_day_without_rows_is_404_with_a_clear_body(api, path):
    answer = api.get(path)
    assert answer.status_code == 404
    detail = answer.json()["detail"]
    assert (EMPTY_DAY in detail or "no-such-session" in detail) and detail.startswith("no ")


@pytest.mark.parametrize(
    ("path", "parameter", "words"),
    [
        ("/metrics/daily?limit=0", "limit", "greater than or equal to 1"),
        ("/metrics/daily?limit=1001", "limit", "less than or equal to 1000"),
        ("/metrics/daily?start_date=2014-13-01", "start_date", "valid date"),
        ("/metrics/daily?start_date=2014-04-05&end_date=2014-04-01", "start_date", "after end_date"),
        ("/metrics/daily/yesterday", "date", "valid date"),
        ("/anomalies?anomaly_type=EVIL", "anomaly_type", "HIGH_FREQUENCY"),
        ("/anomalies/timeline?hours=0", "hours", "greater than or equal to 1"),
        ("/game/retention?user_type=robot", "user_type", "player"),
        ("/items/popular/2014-04-01?limit=abc", "limit", "valid integer"),
    ],
)
def test_bad_parameters_get_a_422_naming_them(api, path, parameter, words):
    answer = api.get(path)
    assert answer.status_code == 422
    problems = answer.json()["detail"]
    assert any(p["loc"][-1] == parameter and words in p["msg"] for p in problems), problems


def test_health_reports_each_check(api):
    answer = api.get("/health")
    assert answer.status_code == 200, answer.text
    checks = answer.json()["checks"]
    assert {name: c["ok"] for name, c in checks.items()} == {"clickhouse": True, "kafka": True, "freshness": True}
    assert api.get("/api/analytics/health").status_code == 200


def test_no_cors_by_default(api):
    answer = api.get("/stats", headers={"Origin": "http://evil.example"})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_an_api_key_guards_everything_but_health(built_case, tmp_path):
    env = {**built_case.env, "EVENTHOUSE_API_KEY": "s3cret-key", "EVENTHOUSE_API_CORS_ORIGINS": "http://ok.example"}
    with running_api(env, tmp_path) as base, httpx.Client(base_url=base) as client:
        assert client.get("/health").status_code == 200
        refused = client.get("/stats")
        assert refused.status_code == 401
        assert "API key" in refused.json()["detail"]
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert client.get("/stats", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/stats", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert client.get("/stats", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert client.get("/dashboards/clickstream", auth=("anyone", "s3cret-key")).status_code == 200
        assert client.get("/dashboards/clickstream").status_code == 401
        # configured CORS: the configured origin only
        allowed = client.get("/stats", headers={"X-API-Key": "s3cret-key", "Origin": "http://ok.example"})
        assert allowed.headers["access-control-allow-origin"] == "http://ok.example"
        other = client.get("/stats", headers={"X-API-Key": "s3cret-key", "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_binding_beyond_loopback_without_a_key_is_refused(built_case):
    env = {k: v for k, v in built_case.env.items() if k != "EVENTHOUSE_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "needs an API key: set EVENTHOUSE_API_KEY" in done.stderr


def test_openapi_contract_of_the_read_endpoints(case_api, tmp_path):
    """schemathesis generates requests for every GET endpoint from /openapi.json and checks each
    answer: no 5xx, status codes and bodies as documented, content types."""
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{case_api}/openapi.json",
            "--include-method",
            "GET",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "3",
            "--workers",
            "2",
            "--seed",
            "1",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
