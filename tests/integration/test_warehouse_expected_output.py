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
from eventhouse.demo import DBT_PREPARE_STEPS, dbt_executable
from ingestion.loader import Loader, LoaderConfig
from ingestion.publisher import Publisher

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
}
RUN_TIME_COLUMNS = {"loaded_at", "max_loaded_at"}


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

    assert _load(BATCHES[0], env)["rows_loaded"] == 17
    for step in DBT_PREPARE_STEPS:
        _dbt(step, env, tmp_path)
    _dbt(["build", "--full-refresh"], env, tmp_path)
    sessions_before = client.command("SELECT count() FROM fct_sessions WHERE domain = 'game'")

    assert _load(BATCHES[1], env)["rows_loaded"] == 5
    _dbt(["build"], env, tmp_path)
    # The late heartbeat bridged u1's two game sessions into one.
    assert client.command("SELECT count() FROM fct_sessions WHERE domain = 'game'") == sessions_before - 1

    assert _load(BATCHES[2], env)["rows_loaded"] == 6
    _dbt(["build"], env, tmp_path)

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
