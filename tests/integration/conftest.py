"""Fixtures shared by the integration tests."""

from __future__ import annotations

import uuid

import pytest

from eventhouse.demo import DBT_PREPARE_STEPS
from ingestion.raw_tables import ensure_tables
from tests.integration.dbt_support import run_dbt


@pytest.fixture()
def dbt_env(embedded_stack, tmp_path):
    """A dbt database and an (empty) raw database of the test's own, prepared for `dbt build`.

    Yields (env, database, target_path); pass env and target_path to `run_dbt`.
    """
    database = f"dbt_{uuid.uuid4().hex[:8]}"
    env = embedded_stack.env
    env["EVENTHOUSE_CLICKHOUSE_DATABASE"] = database
    env["EVENTHOUSE_RAW_DATABASE"] = f"raw_{database}"
    ensure_tables(embedded_stack.client(), env["EVENTHOUSE_RAW_DATABASE"])
    for step in DBT_PREPARE_STEPS:
        prepared = run_dbt(step, env, tmp_path)
        assert prepared.returncode == 0, prepared.stdout[-3000:]
    yield env, database, tmp_path
    embedded_stack.client().command(f"DROP DATABASE IF EXISTS {database}")
    embedded_stack.client().command(f"DROP DATABASE IF EXISTS raw_{database}")
