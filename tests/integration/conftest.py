"""Fixtures shared by the integration tests."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventhouse.demo import DBT_PREPARE_STEPS
from ingestion.raw_tables import ensure_tables
from tests.integration.dbt_support import run_dbt
from tests.integration.serving_support import running_api
from tests.integration.test_warehouse_expected_output import BuiltCase, build_case


def _dbt_database_env(embedded_stack, database: str) -> dict[str, str]:
    env = embedded_stack.env
    env["EVENTHOUSE_CLICKHOUSE_DATABASE"] = database
    env["EVENTHOUSE_RAW_DATABASE"] = f"raw_{database}"
    return env


def _drop(embedded_stack, database: str) -> None:
    client = embedded_stack.client()
    for name in (database, f"raw_{database}"):
        client.command(f"DROP DATABASE IF EXISTS `{name}`")


@dataclass(frozen=True)
class PreparedTemplate:
    """A database prepared once per session as DBT_PREPARE_STEPS prepare one (seeds, and the
    incremental models with their parents created empty), to copy from."""

    database: str
    # (name, engine, CREATE statement) in the order to create them
    relations: list[tuple[str, str, str]]
    # dbt's partial parse of the project for WORK_DATABASE (dbt_env's): the project as it is
    # parsed for the profile's database, which a test's target directory starts from
    work_parse: Path


# The database of every dbt_env, one test after another (pytest runs them in turn): dbt parses
# the project in full whenever the profile's database changes, so one name for all of them lets
# each test start from the session's parse, where a name per test cost a full parse each.
WORK_DATABASE = "dbt_work"


@pytest.fixture(scope="session")
def prepared_template(embedded_stack, tmp_path_factory) -> Iterator[PreparedTemplate]:
    # a name no SQL text contains by accident: copies replace it in the views' definitions
    database = f"dbt_template_{uuid.uuid4().hex[:12]}"
    env = _dbt_database_env(embedded_stack, database)
    ensure_tables(embedded_stack.client(), env["EVENTHOUSE_RAW_DATABASE"])
    target = tmp_path_factory.mktemp("dbt-template")
    work_target = tmp_path_factory.mktemp("dbt-work-parse")
    # the parse for WORK_DATABASE (CPU-bound dbt) beside the preparation (much of it waiting for
    # ClickHouse): they share nothing
    with ThreadPoolExecutor(max_workers=1) as pool:
        work_parse = pool.submit(run_dbt, ["parse"], _dbt_database_env(embedded_stack, WORK_DATABASE), work_target)
        for step in DBT_PREPARE_STEPS:
            prepared = run_dbt(step, env, target)
            assert prepared.returncode == 0, prepared.stdout[-3000:]
        parsed = work_parse.result()
    assert parsed.returncode == 0, parsed.stdout[-3000:]
    # creation order: dbt finished each node after its parents (the last step's run_results
    # lists them in that order)
    order = [r["unique_id"].split(".")[2] for r in json.loads((target / "run_results.json").read_text())["results"]]
    rows = (
        embedded_stack.client()
        .query(
            "SELECT name, engine, create_table_query FROM system.tables WHERE database = {db:String}",
            parameters={"db": database},
        )
        .result_rows
    )
    # tables first (no dependencies), then views and materialized views in dbt's order
    rank = {name: i for i, name in enumerate(order)}
    relations = sorted(rows, key=lambda r: ("View" in r[1], rank.get(r[0], -1)))
    try:
        yield PreparedTemplate(database, relations, work_target / "partial_parse.msgpack")
    finally:
        _drop(embedded_stack, database)


def _copy_prepared(client, template: PreparedTemplate, database: str) -> None:
    """The template's relations into `database`: tables with their rows (the seeds'), views
    re-created reading `database` and its raw database instead of the template's."""
    for name, engine, create in template.relations:
        if "View" in engine:
            client.command(create.replace(template.database, database))
        else:
            client.command(f"CREATE TABLE `{database}`.`{name}` AS `{template.database}`.`{name}`")
            client.command(f"INSERT INTO `{database}`.`{name}` SELECT * FROM `{template.database}`.`{name}`")


@contextmanager
def prepared_database(
    embedded_stack, template: PreparedTemplate, database: str | None = None
) -> Iterator[tuple[dict[str, str], str]]:
    """A dbt database (`database`, or a new name) and an (empty) raw database, prepared for
    `dbt build` as DBT_PREPARE_STEPS prepare one: a copy of the session's template, which takes a
    second where the two dbt commands take half a minute. Yields (env, database); dropped
    afterwards."""
    database = database or f"dbt_{uuid.uuid4().hex[:8]}"
    env = _dbt_database_env(embedded_stack, database)
    client = embedded_stack.client()
    _drop(embedded_stack, database)  # what a test stopped before its teardown may have left
    ensure_tables(client, env["EVENTHOUSE_RAW_DATABASE"])
    client.command(f"CREATE DATABASE `{database}`")
    try:
        _copy_prepared(client, template, database)
        yield env, database
    finally:
        _drop(embedded_stack, database)


@pytest.fixture()
def dbt_env(embedded_stack, prepared_template, tmp_path) -> Iterator[tuple[dict[str, str], str, Path]]:
    """A prepared dbt database of the test's own (prepared_database), WORK_DATABASE, and a target
    directory that starts from the session's parse of the project for it.

    Yields (env, database, target_path); pass env and target_path to `run_dbt`.
    """
    shutil.copy(prepared_template.work_parse, tmp_path / "partial_parse.msgpack")
    with prepared_database(embedded_stack, prepared_template, WORK_DATABASE) as (env, database):
        yield env, database, tmp_path


@pytest.fixture(scope="session")
def built_case(tmp_path_factory) -> Iterator[BuiltCase]:
    """The expected-output case's warehouse, built once per session: its own tests check it, and the
    API and dashboard tests read it (a second loaded warehouse would cost another 90 s)."""
    yield from build_case(tmp_path_factory)


@pytest.fixture(scope="session")
def case_api(built_case, tmp_path_factory) -> Iterator[str]:
    """`eventhouse serve` on the expected-output case's warehouse (read-only use): its base URL."""
    with running_api(built_case.env, tmp_path_factory.mktemp("case-api")) as base:
        yield base
