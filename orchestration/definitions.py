"""eventhouse's Dagster definitions: Kafka topics -> raw tables -> dbt models, checks and automation.

`dagster dev -m orchestration.definitions` (make ui) and `eventhouse demo` (make demo) both load `defs`.
Resources come from the EVENTHOUSE_* variables (settings/__init__.py), read when the definitions are built.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from orchestration.assets.alerting import alerts
from orchestration.assets.archive import ARCHIVE_ASSETS
from orchestration.assets.dbt import DBT_ASSETS
from orchestration.assets.ingestion import RAW_TABLE_ASSETS, dead_letters, kafka_topics
from orchestration.checks import DATA_FRESHNESS_CHECKS
from orchestration.jobs import JOBS
from orchestration.resources import build_resources
from orchestration.schedules import SCHEDULES
from orchestration.sensors import SENSORS


def build_definitions(env: Mapping[str, str] | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[kafka_topics, dead_letters, *RAW_TABLE_ASSETS, *DBT_ASSETS, alerts, *ARCHIVE_ASSETS],
        asset_checks=DATA_FRESHNESS_CHECKS,
        jobs=JOBS,
        schedules=SCHEDULES,
        sensors=SENSORS,
        resources=build_resources(None if env is None else dict(env)),
    )


defs = build_definitions()
