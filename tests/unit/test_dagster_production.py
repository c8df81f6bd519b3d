"""Dagster's production instance without a server: where its storage URL comes from, and deploy/dagster.yaml.

tests/integration/test_dagster_production.py runs it against the embedded PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.production import (
    DAGSTER_YAML_EXAMPLE,
    URL_VARIABLE,
    check_postgres_storage,
    libpq_url,
    postgres_dagster_home,
    prepare_home,
    production_env,
)
from settings import ConfigError, dagster_postgres_url


@pytest.mark.parametrize(
    ("env", "url"),
    [
        # the embedded stack's server, a database of Dagster's own
        ({}, "postgresql+psycopg2://eventhouse@127.0.0.1:15432/dagster"),
        (
            {"EVENTHOUSE_POSTGRES_DSN": "postgresql://eventhouse@127.0.0.1:25432/eventhouse"},
            "postgresql+psycopg2://eventhouse@127.0.0.1:25432/dagster",
        ),
        # a libpq key=value DSN: the password quoted into the URL, the other options kept
        (
            {
                "EVENTHOUSE_POSTGRES_DSN": "host=db.example.com port=5433 user=app password=p@ss/w dbname=orders "
                "sslmode=require"
            },
            "postgresql+psycopg2://app:p%40ss%2Fw@db.example.com:5433/dagster?sslmode=require",
        ),
        (
            {"EVENTHOUSE_POSTGRES_DSN": "host=/run/postgresql dbname=x"},
            "postgresql+psycopg2:///dagster?host=%2Frun%2Fpostgresql",
        ),
        # given, it is used as it is
        (
            {URL_VARIABLE: "postgresql+psycopg2://dagster:pw@pg.internal:5432/dagster_prod"},
            "postgresql+psycopg2://dagster:pw@pg.internal:5432/dagster_prod",
        ),
    ],
)
def test_the_storage_url_is_derived_from_the_orders_server_unless_given(env, url):
    assert dagster_postgres_url(env) == url


@pytest.mark.parametrize(
    ("given", "message"),
    [
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, with which dagster-postgres cannot NOTIFY
        ("postgresql://u@h/dagster", "not a postgresql:// URL"),
        ("postgres://u@h/dagster", "not a postgres:// URL"),
        ("host=h dbname=dagster", "not a key=value string"),
    ],
)
def test_a_storage_url_without_the_psycopg2_driver_is_refused(given, message):
    with pytest.raises(ConfigError, match=message):
        dagster_postgres_url({URL_VARIABLE: given})


def test_libpq_reads_the_url_without_its_driver():
    assert libpq_url("postgresql+psycopg2://u:p@h:1/d?sslmode=require") == "postgresql://u:p@h:1/d?sslmode=require"


def test_the_example_is_a_valid_instance_with_postgres_storage_the_queue_and_the_daemon(tmp_path: Path):
    from dagster._core.instance.config import dagster_instance_config

    home = prepare_home(tmp_path / "home")
    assert (home / "dagster.yaml").read_text() == DAGSTER_YAML_EXAMPLE.read_text()
    config, _ = dagster_instance_config(str(home))  # Dagster's own schema check
    assert config["storage"] == {"postgres": {"postgres_url": {"env": URL_VARIABLE}}}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
    assert config["run_monitoring"]["enabled"] is True
    assert "postgresql" not in DAGSTER_YAML_EXAMPLE.read_text().split("storage:", 1)[1], "no URL in the file"


def test_an_existing_dagster_yaml_is_kept_but_must_use_postgres(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("storage:\n  sqlite:\n    base_dir: /tmp/x\n")
    with pytest.raises(ConfigError, match="does not keep Dagster's storage in PostgreSQL"):
        prepare_home(home)
    custom = "storage:\n  postgres:\n    postgres_url: {env: SOMEWHERE}\ntelemetry:\n  enabled: false\n"
    (home / "dagster.yaml").write_text(custom)
    prepare_home(home)
    assert (home / "dagster.yaml").read_text() == custom
    (home / "dagster.yaml").write_text(
        "".join(
            f"{part}:\n  module: dagster_postgres\n  class: Postgres{cls}\n  config: {{postgres_url: x}}\n"
            for part, cls in (("run_storage", "Run"), ("event_log_storage", "EventLog"), ("schedule_storage", "S"))
        )
    )
    check_postgres_storage(home / "dagster.yaml")


def test_the_processes_get_dagster_home_and_the_url(tmp_path: Path):
    env = production_env(tmp_path, {"EVENTHOUSE_HOME": str(tmp_path / "eh"), "PATH": "/usr/bin"})
    assert env["DAGSTER_HOME"] == str(tmp_path)
    assert env[URL_VARIABLE] == "postgresql+psycopg2://eventhouse@127.0.0.1:15432/dagster"
    assert postgres_dagster_home({"EVENTHOUSE_HOME": str(tmp_path)}) == tmp_path / "dagster-postgres"
