"""The warehouse against checked-in expected output, in the style of Snowplow's dbt packages.

Fixed small input events go through the real broker and loader: a first batch, then a full
refresh; a batch of late events (one bridges two game sessions, others extend clickstream
sessions and days), then an incremental run; a batch that re-delivers events already loaded
(same event_ids) plus a new day, then another incremental run. After that every mart must equal
`warehouse_case/expected/<model>.csv`, and a full refresh must give exactly the same tables.

Regenerate the expected files (then read the diff!) with:
    EVENTHOUSE_UPDATE_EXPECTED=1 pytest tests/integration/test_warehouse_expected_output.py
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
from pathlib import Path

import orjson
import pytest

from eventhouse.config import REPO_ROOT, load_settings
from eventhouse.demo import DBT_PREPARE_STEPS
from ingestion.loader import Loader, LoaderConfig
from ingestion.publisher import Publisher
from orchestration.project import dbt_executable

pytestmark = pytest.mark.integration

CASE = Path(__file__).parent / "warehouse_case"
BATCHES = ["batch_1.jsonl", "batch_2_late.jsonl", "batch_3_redelivered.jsonl"]
UPDATE = os.environ.get("EVENTHOUSE_UPDATE_EXPECTED") == "1"

# Every mart, with a deterministic order; columns that record when something ran are left out.
MARTS = {
    "fct_events": "event_id",
    "fct_sessions": "session_id",
    "dim_users": "user_id",
    "dim_items": "item_id",
    "dim_products": "product_id",
    "clickstream_daily_metrics": "metric_date",
    "clickstream_session_funnel": "metric_date, stage_order",
    "clickstream_popular_items": "metric_date, item_id",
    "clickstream_popular_categories": "metric_date, category",
    "clickstream_trending_items": "as_of_date, trend_rank",
    "clickstream_anomalies": "session_id, anomaly_type, window_start",
    "game_anomalies": "anomaly_type, user_id, window_start, event_id",
    "latency_daily": "event_date, domain",
    "latency_late_events": "event_id",
    "game_pipeline_data_quality": "event_date",
    "kpi_daily": "metric_date",
    "kpi_anomalies": "metric_date, kpi_name",
    "fct_anomalies": "anomaly_id",
    "economy_daily_kpis": "metric_date",
    "economy_user_daily_gold": "activity_date, user_id",
    "economy_event_completion": "live_event_id",
    "economy_mission_completion": "mission_id",
    "economy_whales": "user_id",
    "economy_duplicate_claims": "claim_event_type, user_id, claim_entity_id, progress_version",
    "fct_orders": "order_id",
    "commerce_daily_sales": "order_date",
    "commerce_hourly_sales": "order_hour",
    "commerce_order_status_distribution": "order_status",
    "commerce_stats": "total_orders",
    "user_retention": "user_type, cohort_date",
    "user_retention_weekly": "user_type, cohort_week, weeks_since_first_seen",
    "engagement_active_users": "user_type, activity_date",
    "game_stage_difficulty": "stage_key",
    "game_mode_split": "event_date, game_mode",
    "game_time_attack_leaderboard": "leaderboard_rank",
    "game_daily_user_summary": "event_date, user_id",
    "game_chapter_clear_rates": "event_date, chapter_number",
    "snp_users": "user_id, dbt_valid_from",
    "snp_order_status": "order_id, dbt_valid_from",
}
# When a row was computed, not what it says. (The insert-time aggregates count deliveries, and
# this case re-delivers events on purpose: tests/integration/test_realtime_aggregates.py.)
RUN_TIME_COLUMNS = {"loaded_at", "max_loaded_at", "detected_at"}


def _dbt(args: list[str], env: dict[str, str], target: Path) -> None:
    run_env = {**env, "DBT_TARGET_PATH": str(target), "DBT_LOG_PATH": str(target / "logs")}
    result = subprocess.run(
        [dbt_executable(), *args, "--project-dir", str(REPO_ROOT), "--profiles-dir", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=REPO_ROOT,
        timeout=900,
    )
    assert result.returncode == 0, f"dbt {' '.join(args)} failed:\n{result.stdout[-6000:]}"


def _load(batch: str, env: dict[str, str]) -> dict:
    settings = load_settings(env)
    publisher = Publisher(settings.kafka, client_id="warehouse-case")
    try:
        for line in (CASE / batch).read_bytes().splitlines():
            publisher.publish(orjson.loads(line))
    finally:
        publisher.close()
    config = LoaderConfig(until_caught_up=True, max_seconds=120, group_id="warehouse-case", session_timeout_ms=6000)
    return Loader(settings, config).run().summary()


def _table_csv(client, table: str, order_by: str) -> str:
    columns = [
        row[0] for row in client.query(f"DESCRIBE TABLE `{table}`").result_rows if row[0] not in RUN_TIME_COLUMNS
    ]
    result = client.query(f"SELECT {', '.join(columns)} FROM `{table}` ORDER BY {order_by}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in result.result_rows:
        writer.writerow(["" if v is None else str(v) for v in row])
    return out.getvalue()


def test_marts_match_expected_output_through_late_and_redelivered_batches(own_stack, tmp_path):
    env = own_stack.env
    client = own_stack.client(database="eventhouse")

    # (a restarted loader may re-read a message it had already written; ClickHouse drops the
    # repeat by its deduplication token, so the distinct events below are what must add up)
    assert _load(BATCHES[0], env)["rows_loaded"] >= 164
    for step in DBT_PREPARE_STEPS:
        _dbt(step, env, tmp_path)
    _dbt(["build", "--full-refresh"], env, tmp_path)
    sessions_before = client.command("SELECT count() FROM fct_sessions WHERE domain = 'game'")

    assert _load(BATCHES[1], env)["rows_loaded"] >= 8
    _dbt(["build"], env, tmp_path)
    # The late heartbeat bridged u1's two game sessions into one.
    assert client.command("SELECT count() FROM fct_sessions WHERE domain = 'game'") == sessions_before - 1

    assert _load(BATCHES[2], env)["rows_loaded"] >= 9
    _dbt(["build"], env, tmp_path)
    # 181 lines, 3 of them re-deliveries of events already loaded: 178 distinct events
    assert client.command("SELECT count() FROM fct_events") == 178

    incremental = {table: _table_csv(client, table, order) for table, order in MARTS.items()}
    _dbt(["build", "--full-refresh"], env, tmp_path)
    refreshed = {table: _table_csv(client, table, order) for table, order in MARTS.items()}
    for table in MARTS:
        assert incremental[table] == refreshed[table], f"{table}: incremental runs differ from a full refresh"

    expected_dir = CASE / "expected"
    if UPDATE:
        for table, text in refreshed.items():
            (expected_dir / f"{table}.csv").write_text(text)
    for table, text in refreshed.items():
        expected = (expected_dir / f"{table}.csv").read_text()
        assert text == expected, f"{table} differs from warehouse_case/expected/{table}.csv:\n{text}"
