"""The Dagster UI's server (`dagster-webserver -m orchestration.definitions`) serves eventhouse's definitions.

One webserver on a free port with a temporary DAGSTER_HOME, asked over its GraphQL API (what the UI
itself asks): the assets with their groups, partitions and lineage from the Kafka topics through the
raw tables, staging and the core facts to the marts; the jobs, schedules and sensor. Loading the
definitions needs neither ClickHouse nor Kafka, so no stack is started.
"""

from __future__ import annotations

import json

import pytest

from ingestion.cdc_tables import CDC_TABLES
from ingestion.topics import DOMAINS, TOPICS
from orchestration.instance import running_webserver
from orchestration.project import prepare_dbt_project
from orchestration.translator import DAILY_PARTITIONED_TAG, layer_group

pytestmark = pytest.mark.integration

ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    isObservable
    isPartitioned
    partitionDefinition { type fmt description }
    dependencyKeys { path }
  }
}
"""

AUTOMATION_QUERY = """
{
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        jobs { name }
        schedules { name cronSchedule executionTimezone pipelineName }
        sensors { name }
      }
    }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture(scope="module")
def manifest() -> dict:
    # dagster-webserver (not dagster dev) reads the prepared manifest
    return json.loads(prepare_dbt_project().read_text())


def _dbt_nodes(manifest: dict) -> list[dict]:
    """The models, seeds and snapshots: dbt's assets (ephemeral models are inlined, not assets)."""
    return [
        n
        for n in manifest["nodes"].values()
        if n["resource_type"] in ("model", "seed", "snapshot") and n["config"].get("materialized") != "ephemeral"
    ]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory, manifest):
    with running_webserver(tmp_path_factory.mktemp("dagster-home"), timeout=90) as server:
        yield server


@pytest.fixture(scope="module")
def assets(webserver) -> dict[str, dict]:
    nodes = webserver.graphql(ASSETS_QUERY)["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node for node in nodes}


def _deps(node: dict) -> set[str]:
    return {"/".join(key["path"]) for key in node["dependencyKeys"]}


def test_server_info(webserver):
    import urllib.request

    with urllib.request.urlopen(f"{webserver.url}/server_info", timeout=10) as response:
        info = json.loads(response.read())
    assert info["dagster_webserver_version"] == info["dagster_version"] == "1.13.27"


def test_kafka_topics_and_raw_tables(assets):
    topics = {f"kafka/{spec.name}" for spec in TOPICS} | {f"kafka/{table.topic}" for table in CDC_TABLES}
    assert {key for key in assets if key.startswith("kafka/")} == topics
    for key in topics:
        assert assets[key]["groupName"] == "kafka", key
        assert assets[key]["isObservable"], f"{key} should be an observable source"
    raw_tables = {f"eventhouse_raw/raw_{domain}_events" for domain in DOMAINS}
    raw_tables |= {f"eventhouse_raw/{table.clickhouse_table}" for table in CDC_TABLES}
    assert {key for key in assets if key.startswith("eventhouse_raw/")} == raw_tables | {
        "eventhouse_raw/dead_letters",
        "eventhouse_raw/alerts",
    }
    for key in [*raw_tables, "eventhouse_raw/dead_letters"]:
        assert assets[key]["groupName"] == "ingestion", key
    # the alerts the publisher raised from the live anomalies: observed, in a group of their own
    alerts = assets["eventhouse_raw/alerts"]
    assert (alerts["groupName"], alerts["isObservable"], _deps(alerts)) == ("alerting", True, {"live_anomalies"})
    # every raw table reads at least one topic, and every topic feeds a raw table
    fed = set()
    for key in raw_tables:
        upstream = _deps(assets[key])
        assert upstream and upstream <= topics, (key, upstream)
        fed |= upstream
    assert fed == topics


def test_lineage_topic_to_marts(assets):
    """kafka/game.events -> raw_game_events -> base_game__events (adds the quarantine reasons)
    -> stg_game__events -> int_events_unioned -> fct_events -> kpi_daily, one hop at a time."""
    assert _deps(assets["eventhouse_raw/raw_game_events"]) == {"kafka/game.events"}
    assert "eventhouse_raw/raw_game_events" in _deps(assets["base_game__events"])
    assert "base_game__events" in _deps(assets["stg_game__events"])
    assert "stg_game__events" in _deps(assets["int_events_unioned"])
    assert "int_events_unioned" in _deps(assets["fct_events"])
    assert "fct_events" in _deps(assets["kpi_daily"])
    assert "eventhouse_raw/raw_orders_events" in _deps(assets["base_orders__order_events"])
    assert "base_orders__order_events" in _deps(assets["stg_orders__order_events"])
    assert "kafka/orders" in _deps(assets["eventhouse_raw/raw_orders_events"])


def test_dbt_groups(assets, manifest):
    expected = {
        "stg_game__events": "staging",
        "stg_orders__order_events": "staging",
        "fct_events": "core",
        "kpi_daily": "marts_anomalies",
        "commerce_daily_sales": "marts_commerce",
        "game_stages": "seeds",
        "snp_users": "snapshots",
    }
    assert {key: assets[key]["groupName"] for key in expected} == expected
    groups = {node["groupName"] for node in assets.values()}
    layers = {layer_group(node["fqn"], node["resource_type"]) for node in _dbt_nodes(manifest)}
    assert {"seeds", "staging", "intermediate", "core", "snapshots"} <= layers
    assert groups == {"kafka", "ingestion", "alerting", "archive"} | layers
    assert {key for key, node in assets.items() if node["groupName"] in layers} == {
        node["name"] for node in _dbt_nodes(manifest)
    }
    # every dbt model depends on something that is served too: no dangling lineage
    for key, node in assets.items():
        assert _deps(node) <= assets.keys(), key


def test_daily_partitioned_marts(assets, manifest):
    tagged = {node["name"] for node in _dbt_nodes(manifest) if DAILY_PARTITIONED_TAG in node["tags"]}
    assert {"kpi_daily", "commerce_daily_sales"} <= tagged
    # and the hourly raw archive
    assert {key for key, node in assets.items() if node["isPartitioned"]} == tagged | {"archive/raw_hourly"}
    for key in tagged:
        definition = assets[key]["partitionDefinition"]
        assert definition["type"] == "TIME_WINDOW", key
        assert definition["fmt"] == "%Y-%m-%d", key
        assert definition["description"].startswith("Daily"), definition


def test_jobs_schedules_and_sensors(webserver):
    from orchestration.jobs import JOBS

    answer = webserver.graphql(AUTOMATION_QUERY)["repositoriesOrError"]
    assert answer["__typename"] == "RepositoryConnection", answer
    (repository,) = answer["nodes"]
    assert repository["location"]["name"] == "orchestration.definitions"
    jobs = {job["name"] for job in repository["jobs"] if not job["name"].startswith("__")}  # not Dagster's own
    assert {"ingestion", "hourly_refresh", "daily_partitions"} <= jobs
    assert jobs == {job.name for job in JOBS}

    schedules = {schedule["name"]: schedule for schedule in repository["schedules"]}
    daily = schedules["daily_partitions_schedule"]
    assert (daily["cronSchedule"], daily["executionTimezone"], daily["pipelineName"]) == (
        "0 3 * * *",
        "Asia/Seoul",
        "daily_partitions",
    )
    hourly = schedules["hourly_refresh_schedule"]
    assert (hourly["cronSchedule"], hourly["pipelineName"]) == ("0 * * * *", "hourly_refresh")

    assert {sensor["name"] for sensor in repository["sensors"]} == {"kafka_lag_sensor"}
