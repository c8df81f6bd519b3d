"""The Dagster definitions load, and their pure parts (schedules, partitions, groups) do what they say.

These need neither ClickHouse nor Kafka: loading the definitions only parses the dbt project.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from orchestration.definitions import defs
from orchestration.partitions import contiguous_ranges, dbt_partition_vars, vars_for_time_window
from orchestration.project import MANIFEST_PATH
from orchestration.translator import layer_group

SEOUL = ZoneInfo("Asia/Seoul")


@pytest.fixture(scope="module")
def graph():
    return defs.resolve_asset_graph()


@pytest.fixture(scope="module")
def manifest():
    return json.loads(MANIFEST_PATH.read_text())


def test_lineage_runs_from_kafka_topics_to_marts(graph):
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"kafka/game.events", "kafka/clickstream", "kafka/orders", "kafka/shop.purchase"} <= keys
    assert {f"eventhouse_raw/raw_{d}_events" for d in ("clickstream", "game", "economy", "orders")} <= keys
    raw_game = graph.get(dg.AssetKey(["eventhouse_raw", "raw_game_events"]))
    assert dg.AssetKey(["kafka", "game.events"]) in raw_game.parent_keys
    # raw table -> base view (adds the quarantine reasons) -> staging view
    base = graph.get(dg.AssetKey(["base_game__events"]))
    assert dg.AssetKey(["eventhouse_raw", "raw_game_events"]) in base.parent_keys
    assert dg.AssetKey(["base_game__events"]) in graph.get(dg.AssetKey(["stg_game__events"])).parent_keys
    assert dg.AssetKey(["stg_game__events"]) in graph.get(dg.AssetKey(["fct_events"])).parent_keys


def test_every_dbt_node_is_an_asset_in_its_layer_group(graph, manifest):
    wanted = {
        node["name"]: layer_group(node["fqn"], node["resource_type"])
        for node in manifest["nodes"].values()
        if node["resource_type"] in ("model", "seed", "snapshot")
    }
    got = {name: graph.get(dg.AssetKey([name])).group_name for name in wanted}
    assert got == wanted
    assert got["stg_game__events"] == "staging"
    assert got["fct_events"] == "core"
    assert got["economy_daily_kpis"] == "marts_economy"
    assert got["snp_users"] == "snapshots"
    assert graph.get(dg.AssetKey(["eventhouse_raw", "raw_game_events"])).group_name == "ingestion"


def test_quarantine_checks_warn_on_their_quarantine_assets_and_do_not_block(graph):
    for source in ("clickstream", "game", "economy", "orders"):
        key = dg.AssetCheckKey(dg.AssetKey([f"stg_{source}__quarantined_events"]), f"no_quarantined_{source}_events")
        spec = graph.get_check_spec(key)
        assert not spec.blocking, key
        assert "held back from staging" in spec.description
    # what staging guarantees once the quarantine holds the odd events back still blocks
    orders = dg.AssetKey(["stg_orders__order_events"])
    unique_versions = "unique_combination_of_columns_stg_orders__order_events_order_id__order_version"
    assert graph.get_check_spec(dg.AssetCheckKey(orders, unique_versions)).blocking


def test_descriptions_and_column_schemas_come_from_the_dbt_docs(graph, manifest):
    node = next(n for n in manifest["nodes"].values() if n["name"] == "fct_events")
    asset = graph.get(dg.AssetKey(["fct_events"]))
    assert node["description"].split("\n")[0] in asset.description
    schema = asset.metadata["dagster/column_schema"]
    assert {c.name for c in schema.columns} == set(node["columns"])
    assert all(c.description for c in schema.columns)


def test_every_dbt_test_is_an_asset_check_and_errors_block(graph, manifest):
    tests = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "test"}
    checks = {key.name: key for key in graph.asset_check_keys}
    assert set(tests) <= set(checks), sorted(set(tests) - set(checks))[:10]
    for name, test in tests.items():
        spec = graph.get_check_spec(checks[name])
        assert spec.blocking == ((test["config"].get("severity") or "error").lower() == "error"), name
    # the freshness checks dbt cannot express
    for table in ("raw_game_events", "raw_orders_events"):
        assert dg.AssetCheckKey(dg.AssetKey(["eventhouse_raw", table]), "newest_row_is_fresh") in graph.asset_check_keys
    assert dg.AssetCheckKey(dg.AssetKey(["fct_events"]), "newest_row_is_fresh") in graph.asset_check_keys


def test_date_based_marts_are_daily_partitioned_with_a_freshness_policy(graph, manifest):
    tagged = {n["name"] for n in manifest["nodes"].values() if "daily_partitioned" in n.get("tags", [])}
    assert {"kpi_daily", "economy_daily_kpis", "commerce_daily_sales", "clickstream_daily_metrics"} <= tagged
    for name in tagged:
        asset = graph.get(dg.AssetKey([name]))
        assert isinstance(asset.partitions_def, dg.DailyPartitionsDefinition), name
        assert asset.partitions_def.start == datetime(2014, 4, 1, tzinfo=UTC)
        assert asset.freshness_policy is not None
    assert graph.get(dg.AssetKey(["fct_events"])).partitions_def is None


def test_daily_schedule_runs_the_previous_utc_day_at_three_in_seoul():
    schedule = defs.resolve_schedule_def("daily_partitions_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 3 * * *", "Asia/Seoul")
    # 03:00 in Seoul on 2026-11-23 is 18:00 UTC on 2026-11-22: the last UTC day that has ended is the 21st
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 23, 3, 0, tzinfo=SEOUL), repository_def=defs.get_repository_def()
    )
    [request] = list(schedule.evaluate_tick(context).run_requests)
    assert request.partition_key == "2026-11-21"
    job = defs.resolve_job_def(schedule.job_name)
    policy = job.graph.node_defs[0].retry_policy or job._op_retry_policy  # noqa: SLF001
    assert (policy.max_retries, policy.delay) == (3, 300)


def test_hourly_schedule_refreshes_todays_partition():
    schedule = defs.resolve_schedule_def("hourly_refresh_schedule")
    assert schedule.cron_schedule == "0 * * * *"
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 23, 0, 0, tzinfo=UTC), repository_def=defs.get_repository_def()
    )
    [request] = list(schedule.evaluate_tick(context).run_requests)
    assert request.partition_key == "2026-11-23"
    job = defs.resolve_job_def("hourly_refresh")
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert {"eventhouse_raw/raw_game_events", "fct_events", "kpi_daily"} <= selected


def test_partition_windows_become_inclusive_dbt_vars():
    window = dg.TimeWindow(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 8, tzinfo=UTC))
    assert vars_for_time_window(window) == {"partition_start_date": "2026-11-01", "partition_end_date": "2026-11-07"}
    assert dbt_partition_vars(date(2026, 11, 3), date(2026, 11, 3))["partition_end_date"] == "2026-11-03"


def test_contiguous_ranges():
    days = [date(2014, 4, 2), date(2014, 4, 1), date(2026, 11, 1), date(2014, 4, 3), date(2026, 11, 1)]
    assert contiguous_ranges(days) == [
        (date(2014, 4, 1), date(2014, 4, 3)),
        (date(2026, 11, 1), date(2026, 11, 1)),
    ]
    assert contiguous_ranges([]) == []


def test_layer_groups():
    assert layer_group(["eventhouse", "staging", "game", "stg_game__events"], "model") == "staging"
    assert layer_group(["eventhouse", "marts", "core", "fct_events"], "model") == "core"
    assert layer_group(["eventhouse", "marts", "game", "dim_stages"], "model") == "marts_game"
    assert layer_group(["eventhouse", "game_stages"], "seed") == "seeds"


def test_old_dbt_invocation_directories_are_pruned(tmp_path):
    import os

    from orchestration.assets.dbt import prune_invocation_dirs

    for index in range(5):
        path = tmp_path / f"warehouse_2-{index:07x}-abcdef{index}"
        path.mkdir()
        os.utime(path, (1_000 + index, 1_000 + index))
    (tmp_path / "compiled").mkdir()  # dbt's own folders are never touched
    (tmp_path / "manifest.json").write_text("{}")
    removed = prune_invocation_dirs(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == [f"warehouse_2-{i:07x}-abcdef{i}" for i in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "compiled",
        "manifest.json",
        "warehouse_2-0000003-abcdef3",
        "warehouse_2-0000004-abcdef4",
    ]
