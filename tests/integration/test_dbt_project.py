"""dbt debug and dbt build against the embedded server, in a database of the test's own."""

from __future__ import annotations

import json

import pytest

from tests.integration.dbt_support import run_dbt as _dbt

pytestmark = pytest.mark.integration


def test_dbt_debug_connects(dbt_env):
    env, _, target = dbt_env
    result = _dbt(["debug"], env, target)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "All checks passed!" in result.stdout


def test_dbt_build_creates_and_tests_the_first_chain(embedded_stack, dbt_env):
    env, database, target = dbt_env
    result = _dbt(["build"], env, target)
    assert result.returncode == 0, result.stdout[-5000:]
    run_results = json.loads((target / "run_results.json").read_text())["results"]
    statuses = {r["unique_id"]: r["status"] for r in run_results}
    assert statuses["seed.eventhouse.game_stages"] == "success"
    assert statuses["model.eventhouse.stg_game_catalog__stages"] == "success"
    assert statuses["model.eventhouse.dim_stages"] == "success"
    tests = {uid: s for uid, s in statuses.items() if uid.startswith(("test.", "unit_test."))}
    # The raw tables are empty here, so only the recency check (severity warn) may complain.
    warned = {uid for uid, s in tests.items() if s == "warn"}
    assert all(uid.startswith("test.eventhouse.recency_fct_events") for uid in warned), warned
    assert len(tests) >= 100 and set(tests.values()) - {"warn"} == {"pass"}

    client = embedded_stack.client(database=database)
    engines = dict(
        client.query(
            "SELECT name, engine FROM system.tables WHERE database = {db:String}", parameters={"db": database}
        ).result_rows
    )
    assert engines["stg_game_catalog__stages"] == "View"
    assert engines["dim_stages"] == "MergeTree"
    assert client.command("SELECT count(), countIf(is_chapter_finale), max(max_score) FROM dim_stages") == [
        "50",
        "5",
        "3900",
    ]

    # A second build replaces the tables in place and gives the same result.
    again = _dbt(["build"], env, target)
    assert again.returncode == 0, again.stdout[-5000:]
    assert client.command("SELECT count() FROM dim_stages") == 50


def test_failing_dbt_test_fails_the_build(embedded_stack, dbt_env):
    env, database, target = dbt_env
    assert _dbt(["build"], env, target).returncode == 0
    client = embedded_stack.client(database=database)
    # Break the data under the staging view: a duplicated stage must trip the unique test.
    client.command("INSERT INTO game_stages VALUES (1, 1, 4, 7, 1000)")
    result = _dbt(["test", "--select", "stg_game_catalog__stages"], env, target)
    assert result.returncode == 1
    assert "unique_stg_game_catalog__stages_stage_key" in result.stdout
    assert "FAIL 1" in result.stdout


def test_dbt_docs_generate_documents_every_model(dbt_env):
    env, _, target = dbt_env
    assert _dbt(["build"], env, target).returncode == 0
    result = _dbt(["docs", "generate"], env, target)
    assert result.returncode == 0, result.stdout[-3000:]
    manifest = json.loads((target / "manifest.json").read_text())
    catalog = json.loads((target / "catalog.json").read_text())
    models = {uid: node for uid, node in manifest["nodes"].items() if node["resource_type"] == "model"}
    assert len(models) >= 17
    for uid, node in models.items():
        assert node["description"].strip(), f"{uid} has no description"
        built = catalog["nodes"][uid]["columns"]
        undocumented = [c for c in built if not node["columns"].get(c, {}).get("description")]
        assert not undocumented, f"{uid}: columns without a description: {undocumented}"
