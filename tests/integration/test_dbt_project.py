"""dbt against the embedded server: one `dbt build` of the whole project on a prepared database,
shared by the tests that read it; a failing test fails.

The build leaves the dbt unit tests out: they replace every input with their own rows, so the data
here changes nothing for them, and `make dbt-checks` (in `make test`, before pytest) runs every one
of them in its `dbt build` and fails on any that does not pass."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventhouse.demo import DBT_PREPARE_STEPS
from ingestion.contract import make_event
from ingestion.raw_tables import ensure_tables
from ingestion.raw_writer import RawWriter
from tests.integration.conftest import WORK_DATABASE, prepared_database
from tests.integration.dbt_support import run_dbt as _dbt

pytestmark = pytest.mark.integration


# every node but the unit tests (see the module's docstring)
BUILD = ["build", "--exclude-resource-type", "unit_test"]


@dataclass(frozen=True)
class Built:
    env: dict[str, str]
    database: str
    target: Path  # the build's artifacts: manifest.json, run_results.json, partial_parse.msgpack
    results: list[dict]


@pytest.fixture(scope="module")
def built(embedded_stack, prepared_template, tmp_path_factory) -> Iterator[Built]:
    """The whole project built once with `dbt build` over events that are odd but break no
    staging invariant (the empty-database build, unit tests included, is `make dbt-checks`'s)."""
    target = tmp_path_factory.mktemp("dbt-build")
    with prepared_database(embedded_stack, prepared_template) as (env, database):
        RawWriter(embedded_stack.client(), env["EVENTHOUSE_RAW_DATABASE"]).add_all(_odd_but_clean_events()).flush()
        result = _dbt(BUILD, env, target)
        assert result.returncode == 0, result.stdout[-5000:]
        yield Built(env, database, target, json.loads((target / "run_results.json").read_text())["results"])


def _own_target(built: Built, tmp_path: Path) -> Path:
    """A target directory of the test's own holding the build's parse, so dbt parses partially."""
    target = tmp_path / "target"
    target.mkdir()
    for name in ("partial_parse.msgpack", "manifest.json"):
        shutil.copy(built.target / name, target / name)
    return target


def test_dbt_debug_connects(built, tmp_path):
    result = _dbt(["debug"], built.env, _own_target(built, tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "All checks passed!" in result.stdout


def test_dbt_build_builds_and_tests_every_node(embedded_stack, built):
    manifest = json.loads((built.target / "manifest.json").read_text())
    buildable = {"model", "seed", "snapshot", "test"}
    every_node = {uid for uid, node in manifest["nodes"].items() if node["resource_type"] in buildable}
    # (the project's on-run-start hooks report as operations; the dashboards' exposures as exposures)
    statuses = {
        r["unique_id"]: r["status"] for r in built.results if not r["unique_id"].startswith(("operation.", "exposure."))
    }
    # every node of the manifest ran, and nothing else (the unit tests are make dbt-checks')
    assert set(statuses) == every_node
    assert {s for uid, s in statuses.items() if not uid.startswith("test.")} == {"success"}
    # Only the completion rates above 1 (claims beyond the progress seen) warn; every other
    # test passes.
    warned = {uid.split(".")[2] for uid, s in statuses.items() if s == "warn"}
    assert warned == {
        f"expression_is_true_economy_{entity}_completion_{rate}__between_0_and_1"
        for entity in ("event", "mission")
        for rate in ("completion_rate", "user_claim_rate")
    }
    assert {s for uid, s in statuses.items() if uid.startswith("test.")} == {"pass", "warn"}

    client = embedded_stack.client(database=built.database)
    engines = dict(
        client.query(
            "SELECT name, engine FROM system.tables WHERE database = {db:String}", parameters={"db": built.database}
        ).result_rows
    )
    assert engines["stg_game_catalog__stages"] == "View"
    assert engines["dim_stages"] == "MergeTree"
    # seeds/game_stages.csv: 5 chapters of 10 stages, the last stage's max score 3900
    assert client.command("SELECT count(), countIf(is_chapter_finale), max(max_score) FROM dim_stages") == [
        "50",
        "5",
        "3900",
    ]
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
    # the two chains the test breaks, built and tested (the whole project's build is the
    # session's `built` warehouse)
    chains = ["+stg_game_catalog__stages", "+stg_orders__order_events"]
    # (cautious: not the tests of other models that read these, like dim_stages')
    built = _dbt(["build", "--select", *chains, "--indirect-selection", "cautious"], env, target)
    assert built.returncode == 0, built.stdout[-5000:]
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
    # (staging reads the base models, incremental tables: the run that follows a load brings it in)
    ran = _dbt(["run", "--select", "base_orders__order_events"], env, target)
    assert ran.returncode == 0, ran.stdout[-3000:]
    client.command("ALTER TABLE event_types DELETE WHERE event_type = 'order.created' SETTINGS mutations_sync = 2")
    result = _dbt(["test", "--select", "stg_orders__order_events,test_name:registered_event_type"], env, target)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "FAIL 1 registered_event_type_stg_orders__order_events_event_type__orders" in result.stdout


def test_dbt_docs_generate_documents_every_model(built, tmp_path):
    target = _own_target(built, tmp_path)
    result = _dbt(["docs", "generate"], built.env, target)
    assert result.returncode == 0, result.stdout[-3000:]
    manifest = json.loads((target / "manifest.json").read_text())
    catalog = json.loads((target / "catalog.json").read_text())
    models = {uid: node for uid, node in manifest["nodes"].items() if node["resource_type"] == "model"}
    assert set(models) <= set(catalog["nodes"]), set(models) - set(catalog["nodes"])
    for uid, node in models.items():
        assert node["description"].strip(), f"{uid} has no description"
        built_columns = catalog["nodes"][uid]["columns"]
        undocumented = [c for c in built_columns if not node["columns"].get(c, {}).get("description")]
        assert not undocumented, f"{uid}: columns without a description: {undocumented}"


def test_a_build_on_a_brand_new_database_stops_at_once_naming_the_command_to_run_first(
    embedded_stack, prepared_template, tmp_path
):
    """`dbt build` as an analyst or a CI job runs it on a new database: the unit tests of an
    incremental model read its table, so the on-run-start hook stops the run before any node
    with one line naming the command that creates them (`make dbt-checks` runs them)."""
    # WORK_DATABASE (no dbt_env is open meanwhile), dropped first so that it is brand new: the
    # session's parse of the project for it spares dbt a full parse
    database = WORK_DATABASE
    env = {
        **embedded_stack.env,
        "EVENTHOUSE_CLICKHOUSE_DATABASE": database,
        "EVENTHOUSE_RAW_DATABASE": f"raw_{database}",
    }
    client = embedded_stack.client()
    client.command(f"DROP DATABASE IF EXISTS `{database}`")
    client.command(f"DROP DATABASE IF EXISTS `raw_{database}`")
    ensure_tables(client, env["EVENTHOUSE_RAW_DATABASE"])
    shutil.copy(prepared_template.work_parse, tmp_path / "partial_parse.msgpack")
    try:
        result = _dbt(["build"], env, tmp_path)
        assert result.returncode != 0
        # the commands DBT_PREPARE_STEPS (and `make dbt-checks`) run, in their order
        first = " and ".join(f"`dbt {' '.join(step)}`" for step in DBT_PREPARE_STEPS)
        named = [line for line in result.stdout.splitlines() if f"run {first} first" in line]
        assert len(named) == 1, result.stdout[-3000:]
        assert "fct_sessions" in named[0]
        # no node ran: nothing was built, and the incremental models' unit tests never started
        started = [line for line in result.stdout.splitlines() if " START " in line and " hook: " not in line]
        assert started == [], result.stdout[-3000:]
        built = client.query(
            "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": database}
        ).result_rows
        assert built == []
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{database}`")
        client.command(f"DROP DATABASE IF EXISTS `raw_{database}`")
