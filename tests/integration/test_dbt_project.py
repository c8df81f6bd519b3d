"""dbt debug and dbt build against the embedded server, in a database of the test's own."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ingestion.contract import make_event
from ingestion.raw_writer import RawWriter
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

    # A second build replaces the tables in place, here after events that are odd but break no
    # staging invariant: it completes, and the tests they concern warn or pass.
    RawWriter(embedded_stack.client(), env["EVENTHOUSE_RAW_DATABASE"]).add_all(_odd_but_clean_events()).flush()
    again = _dbt(["build"], env, target)
    assert again.returncode == 0, again.stdout[-5000:]
    results = json.loads((target / "run_results.json").read_text())["results"]
    assert not [r["unique_id"] for r in results if r["status"] in ("error", "fail", "skipped")]
    warned = {r["unique_id"].split(".")[2] for r in results if r["status"] == "warn"}
    assert warned == {
        f"expression_is_true_economy_{entity}_completion_{rate}__between_0_and_1"
        for entity in ("event", "mission")
        for rate in ("completion_rate", "user_claim_rate")
    }
    assert client.command("SELECT count() FROM dim_stages") == 50
    # one id, a product of each catalog
    assert client.query("SELECT product_source FROM dim_products WHERE product_id = 'p1' ORDER BY 1").result_rows == [
        ("commerce",),
        ("shop",),
    ]


def _odd_but_clean_events() -> list[dict]:
    """A product id used by both catalogs (two products), and claims beyond the progress seen
    (a progress event late or lost): completion rates above 1, a warning, not a broken build."""
    at = datetime(2024, 3, 1, 12, tzinfo=UTC)
    events = [
        make_event(
            "order.created",
            "dbt-odd-order",
            at,
            {
                "order_id": "o1",
                "status": "PENDING",
                "version": 1,
                "amount_cents": 500,
                "product_ids": ["p1"],
                "items": [{"product_id": "p1", "quantity": 1, "price_cents": 500}],
            },
            user_id="customer_1",
        ),
        make_event(
            "shop.purchase",
            "dbt-odd-shop",
            at,
            {"tx_id": "t1", "status": "completed", "product_id": "p1", "amount_gold": 100, "price_cents": 99},
            user_id="player_1",
        ),
    ]
    for kind, entity in (("event", "live_event_id"), ("mission", "mission_id")):
        # player_1 progressed once (version 1) and claimed versions 1 and 2; player_2 claimed
        # without any progress: completion 3 claims / 1 update, user claim rate 2 / 1
        events.append(
            make_event(
                f"{kind}.progress",
                f"dbt-odd-{kind}-p1",
                at,
                {entity: "x", "progress_version": 1, "progress": 10},
                user_id="player_1",
            )
        )
        for n, user in ((1, "player_1"), (2, "player_1"), (1, "player_2")):
            events.append(
                make_event(
                    f"{kind}.claim",
                    f"dbt-odd-{kind}-c{n}-{user}",
                    at,
                    {entity: "x", "progress_version": n},
                    user_id=user,
                )
            )
    return events


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

    # An order event whose type the seed of registered types no longer gives to orders.
    order = _odd_but_clean_events()[0]
    RawWriter(embedded_stack.client(), env["EVENTHOUSE_RAW_DATABASE"]).add_all([order]).flush()
    client.command("ALTER TABLE event_types DELETE WHERE event_type = 'order.created' SETTINGS mutations_sync = 2")
    result = _dbt(["test", "--select", "stg_orders__order_events,test_name:registered_event_type"], env, target)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "FAIL 1 registered_event_type_stg_orders__order_events_event_type__orders" in result.stdout


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
