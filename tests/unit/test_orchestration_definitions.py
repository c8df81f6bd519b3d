"""The Dagster definitions load, and their pure parts (schedules, partitions, groups) do what they say.

These need neither ClickHouse nor Kafka: loading the definitions only needs the dbt project parsed.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from orchestration.dbt_stages import DbtStage, dbt_selection, plan_stages, stage_of_each_node
from orchestration.partitions import contiguous_ranges, dbt_partition_vars, vars_for_time_window
from orchestration.project import prepare_dbt_project
from orchestration.translator import layer_group

SEOUL = ZoneInfo("Asia/Seoul")


@pytest.fixture(scope="module")
def manifest():
    return json.loads(prepare_dbt_project().read_text())


@pytest.fixture(scope="module")
def defs(manifest):
    from orchestration.definitions import defs

    return defs


@pytest.fixture(scope="module")
def graph(defs):
    return defs.resolve_asset_graph()


def _asset_nodes(manifest) -> dict[str, dict]:
    """The manifest's models, seeds and snapshots Dagster makes assets of (ephemeral models are inlined)."""
    return {
        uid: node
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] in ("model", "seed", "snapshot") and node["config"].get("materialized") != "ephemeral"
    }


def _dbt_assets_defs(graph) -> list[dg.AssetsDefinition]:
    return [a for a in graph.assets_defs if a.is_executable and a.node_def.name.startswith("dbt_")]


def test_lineage_runs_from_kafka_topics_to_marts(graph):
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"kafka/game.events", "kafka/clickstream", "kafka/orders", "kafka/shop.purchase"} <= keys
    assert {key for key in keys if key.startswith("eventhouse_raw/")} == {
        *(f"eventhouse_raw/raw_{d}_events" for d in ("clickstream", "game", "economy", "orders")),
        "eventhouse_raw/dead_letters",
        "eventhouse_raw/alerts",
        # the CDC tables (dbt source `oltp`), loaded by `eventhouse load` from the topics `eventhouse cdc` writes
        *(f"eventhouse_raw/cdc_{table}" for table in ("users", "products", "leaderboard")),
    }
    raw_game = graph.get(dg.AssetKey(["eventhouse_raw", "raw_game_events"]))
    assert dg.AssetKey(["kafka", "game.events"]) in raw_game.parent_keys
    # raw table -> base view (adds the quarantine reasons) -> staging view -> the event union -> fct_events
    base = graph.get(dg.AssetKey(["base_game__events"]))
    assert dg.AssetKey(["eventhouse_raw", "raw_game_events"]) in base.parent_keys
    assert dg.AssetKey(["base_game__events"]) in graph.get(dg.AssetKey(["stg_game__events"])).parent_keys
    assert dg.AssetKey(["stg_game__events"]) in graph.get(dg.AssetKey(["int_events_unioned"])).parent_keys
    assert dg.AssetKey(["int_events_unioned"]) in graph.get(dg.AssetKey(["fct_events"])).parent_keys
    # raw table -> live anomalies (insert-time) -> the alerts the publisher raised, observed
    assert dg.AssetKey(["live_anomalies"]) in graph.get(dg.AssetKey(["eventhouse_raw", "alerts"])).parent_keys


def test_every_dbt_node_is_an_asset_in_its_layer_group(graph, manifest):
    wanted = {node["name"]: layer_group(node["fqn"], node["resource_type"]) for node in _asset_nodes(manifest).values()}
    dbt_keys = {key for assets in _dbt_assets_defs(graph) for key in assets.keys}
    assert {key.to_user_string() for key in dbt_keys} == set(wanted)
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
    checks = {spec.key.name: spec.key for assets in _dbt_assets_defs(graph) for spec in assets.check_specs}
    assert set(checks) == set(tests), sorted(set(tests) ^ set(checks))[:10]
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
    partitioned = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).partitions_def}
    # besides the daily marts, only the raw archive, by ingest hour
    assert partitioned == tagged | {"archive/raw_hourly"}
    assert isinstance(graph.get(dg.AssetKey(["archive", "raw_hourly"])).partitions_def, dg.HourlyPartitionsDefinition)
    for name in tagged:
        asset = graph.get(dg.AssetKey([name]))
        assert isinstance(asset.partitions_def, dg.DailyPartitionsDefinition), name
        assert asset.partitions_def.start == datetime(2014, 4, 1, tzinfo=UTC)
        assert asset.freshness_policy is not None
    assert graph.get(dg.AssetKey(["fct_events"])).partitions_def is None


def _depends_on(graph, assets_defs: list[dg.AssetsDefinition]) -> dict[str, set[str]]:
    """Each definition's name -> the names of the other definitions among `assets_defs` it reads from
    (its assets' parents, and what its checks read besides their asset)."""
    owner = {key: assets.node_def.name for assets in assets_defs for key in assets.keys}
    depends_on: dict[str, set[str]] = {}
    for assets in assets_defs:
        upstream = {parent for key in assets.keys for parent in graph.get(key).parent_keys}
        upstream |= {dep.asset_key for spec in assets.check_specs for dep in spec.additional_deps}
        depends_on[assets.node_def.name] = {owner[key] for key in upstream if key in owner} - {assets.node_def.name}
    return depends_on


def _both_ways(depends_on: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a in depends_on for b in depends_on[a] if a < b and a in depends_on.get(b, set()))


def test_no_two_dbt_asset_definitions_depend_on_each_other_both_ways(graph, manifest):
    depends_on = _depends_on(graph, _dbt_assets_defs(graph))
    assert _both_ways(depends_on) == []
    # each reads only the ones before it, in the order of the stages
    order = [stage.name for stage in plan_stages(manifest)]
    assert set(depends_on) == set(order)
    for name, upstream in depends_on.items():
        assert all(order.index(other) < order.index(name) for other in upstream), (name, upstream)


def test_the_old_two_way_split_is_caught(manifest):
    """The check above can fail: the former split (everything but the daily marts, and the daily marts)."""
    from dagster_dbt import dbt_assets

    from orchestration.project import DBT_PROJECT

    @dbt_assets(manifest=manifest, project=DBT_PROJECT, exclude="tag:daily_partitioned", name="warehouse")
    def warehouse(): ...

    @dbt_assets(manifest=manifest, project=DBT_PROJECT, select="tag:daily_partitioned", name="daily_marts")
    def daily_marts(): ...

    graph = dg.Definitions(assets=[warehouse, daily_marts]).resolve_asset_graph()
    assert _both_ways(_depends_on(graph, [warehouse, daily_marts])) == [("daily_marts", "warehouse")]


def test_the_split_follows_the_daily_tag_and_the_parents(graph, manifest):
    stages = plan_stages(manifest)
    by_name = {assets.node_def.name: assets for assets in _dbt_assets_defs(graph)}
    assert set(by_name) == {stage.name for stage in stages}
    nodes = _asset_nodes(manifest)
    for stage in stages:
        assets = by_name[stage.name]
        assert {key.to_user_string() for key in assets.keys} == {nodes[uid]["name"] for uid in stage.unique_ids}
        assert (assets.partitions_def is not None) == stage.daily
        assert all(("daily_partitioned" in nodes[uid]["tags"]) == stage.daily for uid in stage.unique_ids)
    assert {uid for stage in stages for uid in stage.unique_ids} == set(nodes)
    # every parent of a node is in its stage or an earlier one
    stage_of = stage_of_each_node(manifest)
    for uid, index in stage_of.items():
        assert all(stage_of[p] <= index for p in manifest["parent_map"][uid] if p in stage_of), uid


def test_each_dbt_test_runs_once_all_it_reads_is_built(graph, manifest):
    """A test's check belongs to the definition that builds the latest of the nodes it reads: dbt runs
    it there, after everything it reads (a check elsewhere would get no result, or read old data)."""
    stage_of = stage_of_each_node(manifest)
    for assets in _dbt_assets_defs(graph):
        index = next(stage.index for stage in plan_stages(manifest) if stage.name == assets.node_def.name)
        for spec in assets.check_specs:
            test = manifest["nodes"][spec.metadata["dagster_dbt/unique_id"]]
            read = [stage_of[uid] for uid in test["depends_on"]["nodes"] if uid in stage_of]
            assert max(read, default=index) == index, (test["name"], assets.node_def.name, read)


def _manifest(nodes: dict[str, tuple[list[str], bool]]) -> dict:
    """A hand-made manifest: model name -> (parent names, daily-partitioned); names starting with
    `eph_` are ephemeral models."""
    return {
        "nodes": {
            f"model.p.{name}": {
                "name": name,
                "resource_type": "model",
                "tags": ["daily_partitioned"] if daily else [],
                "config": {"materialized": "ephemeral" if name.startswith("eph_") else "table"},
            }
            for name, (_parents, daily) in nodes.items()
        },
        "parent_map": {f"model.p.{name}": [f"model.p.{p}" for p in parents] for name, (parents, _d) in nodes.items()},
    }


def test_stages_of_a_hand_made_project():
    manifest = _manifest(
        {
            "seed": ([], False),
            "fct": (["seed"], False),
            "daily": (["fct"], True),
            "daily_of_daily": (["daily", "seed"], True),
            "reader": (["daily", "fct"], False),
            "daily_of_reader": (["reader"], True),
            "dim": (["seed"], False),
            "daily_of_source": ([], True),
            # inlined into its child: no stage of its own, but the child reads a daily mart through it
            "eph_of_daily": (["daily"], False),
            "reader_through_eph": (["eph_of_daily"], False),
        }
    )
    assert {uid.split(".")[-1]: stage for uid, stage in stage_of_each_node(manifest).items()} == {
        "seed": 0,
        "fct": 0,
        "dim": 0,
        "daily": 1,
        "daily_of_daily": 1,
        "daily_of_source": 1,
        "reader": 2,
        "daily_of_reader": 3,
        "eph_of_daily": 2,
        "reader_through_eph": 2,
    }
    stages = plan_stages(manifest)
    assert [(stage.name, stage.daily) for stage in stages] == [
        ("dbt_foundation", False),
        ("dbt_daily_marts", True),
        ("dbt_daily_mart_readers", False),
        ("dbt_daily_marts_2", True),
    ]
    select, exclude = dbt_selection(manifest, stages, stages[1])
    assert (select, exclude) == ("daily daily_of_daily daily_of_source", "daily_of_reader reader reader_through_eph")
    assert dbt_selection(manifest, stages, stages[3]) == ("daily_of_reader", "")
    assert DbtStage(4, frozenset()).name == "dbt_daily_mart_readers_2"


def test_a_cycle_in_a_hand_made_manifest_is_refused():
    with pytest.raises(ValueError, match="cycle"):
        stage_of_each_node(_manifest({"a": (["b"], False), "b": (["a"], True)}))


def test_daily_schedule_runs_the_previous_utc_day_at_three_in_seoul(defs):
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


def test_hourly_schedule_refreshes_todays_partition(defs, manifest):
    schedule = defs.resolve_schedule_def("hourly_refresh_schedule")
    assert schedule.cron_schedule == "0 * * * *"
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 23, 0, 0, tzinfo=UTC), repository_def=defs.get_repository_def()
    )
    [request] = list(schedule.evaluate_tick(context).run_requests)
    assert request.partition_key == "2026-11-23"
    job = defs.resolve_job_def("hourly_refresh")
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    raw_tables = {f"eventhouse_raw/raw_{domain}_events" for domain in ("clickstream", "game", "economy", "orders")}
    raw_tables |= {f"eventhouse_raw/cdc_{table}" for table in ("users", "products", "leaderboard")}
    assert selected == raw_tables | {node["name"] for node in _asset_nodes(manifest).values()}


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


def test_the_archive_schedule_archives_the_hour_that_ended():
    from orchestration.schedules import previous_hour_partition

    # at 10:15 UTC (the tick), the hour 09:00-10:00
    assert previous_hour_partition(datetime(2026, 3, 1, 10, 15, tzinfo=UTC)) == "2026-03-01-09:00"
    assert previous_hour_partition(datetime(2026, 3, 1, 0, 15, tzinfo=UTC)) == "2026-02-28-23:00"
