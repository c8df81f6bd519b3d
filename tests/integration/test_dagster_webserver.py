"""The Dagster UI's server (`dagster-webserver -m orchestration.definitions`) serves eventhouse's definitions.

One webserver on a free port with a temporary DAGSTER_HOME, asked over its GraphQL API (what the UI
itself asks): the assets with their groups, partitions and lineage from the Kafka topics through the
raw tables, staging and the core facts to the marts; the jobs, schedules and sensor. Loading the
definitions needs neither ClickHouse nor Kafka, so no stack is started.
"""

from __future__ import annotations

import pytest

from ingestion.topics import DOMAINS, TOPICS
from orchestration.instance import running_webserver
from orchestration.project import prepare_dbt_project

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
def webserver(tmp_path_factory):
    prepare_dbt_project()  # dagster-webserver (not dagster dev) reads the prepared manifest
    with running_webserver(tmp_path_factory.mktemp("dagster-home"), timeout=90) as server:
        yield server


@pytest.fixture(scope="module")
def assets(webserver) -> dict[str, dict]:
    nodes = webserver.graphql(ASSETS_QUERY)["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node for node in nodes}


def _deps(node: dict) -> set[str]:
    return {"/".join(key["path"]) for key in node["dependencyKeys"]}


def test_server_info(webserver):
    import json
    import urllib.request

    with urllib.request.urlopen(f"{webserver.url}/server_info", timeout=10) as response:
        info = json.loads(response.read())
    assert info["dagster_webserver_version"] == info["dagster_version"] == "1.13.27"


def test_kafka_topics_and_raw_tables(assets):
    topics = {f"kafka/{spec.name}" for spec in TOPICS}
    assert "kafka/game.events" in topics and "kafka/orders" in topics
    for key in topics:
        assert assets[key]["groupName"] == "kafka", key
        assert assets[key]["isObservable"], f"{key} should be an observable source"
    raw_tables = {f"eventhouse_raw/raw_{domain}_events" for domain in DOMAINS}
    assert len(raw_tables) == 4
    for key in [*raw_tables, "eventhouse_raw/dead_letters"]:
        assert assets[key]["groupName"] == "ingestion", key
    # every raw table reads at least one topic, and every topic feeds a raw table
    fed = set()
    for key in raw_tables:
        upstream = _deps(assets[key])
        assert upstream and upstream <= topics, (key, upstream)
        fed |= upstream
    assert fed == topics


def test_lineage_topic_to_marts(assets):
    """kafka/game.events -> raw_game_events -> base_game__events (adds the quarantine reasons)
    -> stg_game__events -> fct_events -> kpi_daily, one hop at a time."""
    assert _deps(assets["eventhouse_raw/raw_game_events"]) == {"kafka/game.events"}
    assert "eventhouse_raw/raw_game_events" in _deps(assets["base_game__events"])
    assert "base_game__events" in _deps(assets["stg_game__events"])
    assert "stg_game__events" in _deps(assets["fct_events"])
    assert "fct_events" in _deps(assets["kpi_daily"])
    assert "eventhouse_raw/raw_orders_events" in _deps(assets["base_orders__order_events"])
    assert "base_orders__order_events" in _deps(assets["stg_orders__order_events"])
    assert "kafka/orders" in _deps(assets["eventhouse_raw/raw_orders_events"])


def test_dbt_groups(assets):
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
    assert {"kafka", "ingestion", "seeds", "staging", "intermediate", "core", "snapshots"} <= groups
    assert any(group.startswith("marts_") for group in groups)
    # every dbt model depends on something that is served too: no dangling lineage
    for key, node in assets.items():
        assert _deps(node) <= assets.keys(), key


def test_daily_partitioned_marts(assets):
    for key in ("kpi_daily", "commerce_daily_sales"):
        node = assets[key]
        assert node["isPartitioned"], key
        definition = node["partitionDefinition"]
        assert definition["type"] == "TIME_WINDOW", key
        assert definition["fmt"] == "%Y-%m-%d", key
        assert definition["description"].startswith("Daily"), definition
    assert not assets["fct_events"]["isPartitioned"]
    assert not assets["kafka/game.events"]["isPartitioned"]


def test_jobs_schedules_and_sensors(webserver):
    from orchestration.jobs import JOBS

    answer = webserver.graphql(AUTOMATION_QUERY)["repositoriesOrError"]
    assert answer["__typename"] == "RepositoryConnection", answer
    (repository,) = answer["nodes"]
    assert repository["location"]["name"] == "orchestration.definitions"
    jobs = {job["name"] for job in repository["jobs"]}
    assert {"ingestion", "hourly_refresh", "daily_partitions"} <= jobs
    assert {job.name for job in JOBS} <= jobs

    schedules = {schedule["name"]: schedule for schedule in repository["schedules"]}
    daily = schedules["daily_partitions_schedule"]
    assert (daily["cronSchedule"], daily["executionTimezone"], daily["pipelineName"]) == (
        "0 3 * * *",
        "Asia/Seoul",
        "daily_partitions",
    )
    hourly = schedules["hourly_refresh_schedule"]
    assert (hourly["cronSchedule"], hourly["pipelineName"]) == ("0 * * * *", "hourly_refresh")

    assert "kafka_lag_sensor" in {sensor["name"] for sensor in repository["sensors"]}
