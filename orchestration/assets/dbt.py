"""The dbt project as assets: everything but the day-partitioned marts, and those marts by day.

Both run `dbt build` for the selected nodes, so each model's tests run right after it and a failing
error-severity test stops what depends on it (in dbt, and in Dagster as a blocking check). dbt unit
tests are left to CI (`make test`): they test SQL logic, not the data a run produces.
"""

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DbtCliResource, dbt_assets

from orchestration.partitions import daily_partitions, vars_for_time_window
from orchestration.project import DBT_TARGET_DIR, ensure_manifest
from orchestration.resources import EventhouseResource
from orchestration.translator import DAILY_PARTITIONED_TAG, EventhouseTranslator

MANIFEST = ensure_manifest()
MANIFEST_NODES: dict[str, Any] = {
    unique_id: node
    for unique_id, node in json.loads(MANIFEST.read_text())["nodes"].items()
    if node["resource_type"] in ("model", "seed", "snapshot")
}
TRANSLATOR = EventhouseTranslator()
DAILY_PARTITIONS = daily_partitions()
BUILD_ARGS = ["build", "--exclude-resource-type", "unit_test"]
DBT_INDIRECT_SELECTION_ENV = "DBT_INDIRECT_SELECTION"


# dagster-dbt gives every dbt invocation a target directory of its own, "<op>-<run id>-<uuid>"
# under target/ (~7 MB each: manifest, compiled SQL, run_results); an hourly schedule would make
# hundreds a day. The newest ones stay for looking into a failure.
KEEP_INVOCATION_DIRS = 30
_INVOCATION_DIR = re.compile(r"^[A-Za-z0-9_]+-[0-9a-f]{7}-[0-9a-f]{7}$")


def prune_invocation_dirs(target: Path = DBT_TARGET_DIR, keep: int = KEEP_INVOCATION_DIRS) -> list[Path]:
    """Remove all but the `keep` newest per-invocation target directories; returns those removed."""
    if not target.is_dir():
        return []
    dirs = [p for p in target.iterdir() if p.is_dir() and _INVOCATION_DIR.match(p.name)]
    dirs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    removed = dirs[keep:]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _build(
    context: AssetExecutionContext,
    dbt: DbtCliResource,
    eventhouse: EventhouseResource,
    args: list[str],
    indirect_selection: str | None,
) -> Iterator[Any]:
    """`dbt build` of the op's selection, with each built table's row count.

    The two dbt ops depend on each other (daily marts read core models, a few marts read daily
    marts), so Dagster runs the warehouse op in pieces around the daily one. In those pieces
    dbt's default (eager) indirect selection would also run tests of daily marts that merely
    reference a selected model (relationships to dim_date), before those marts exist; `buildable`
    keeps each piece to tests whose every parent it builds or has already built.
    """
    prune_invocation_dirs()
    previous = os.environ.get(DBT_INDIRECT_SELECTION_ENV)
    if indirect_selection:
        os.environ[DBT_INDIRECT_SELECTION_ENV] = indirect_selection
    else:
        os.environ.pop(DBT_INDIRECT_SELECTION_ENV, None)
    try:
        invocation = dbt.cli([*BUILD_ARGS, *args], context=context)
    finally:
        if previous is None:
            os.environ.pop(DBT_INDIRECT_SELECTION_ENV, None)
        else:
            os.environ[DBT_INDIRECT_SELECTION_ENV] = previous
    yield from _with_row_counts(invocation.stream(), eventhouse)


def _with_row_counts(events: Iterator[Any], eventhouse: EventhouseResource) -> Iterator[Any]:
    """Each built table's row count as `dagster/row_count`, read from system.tables when it is built.

    dagster-dbt's fetch_row_counts() would do this too, but it first opens a dbt adapter of its own
    (about 10 s of project loading per dbt invocation, and a run makes several); one query per model
    here costs a few milliseconds. Column schemas come from the dbt docs in the manifest.
    """
    client = eventhouse.client()
    # Every node builds into the target's database (none sets a custom schema); the manifest holds
    # the database of whoever parsed it, so take the one this run builds in.
    database = eventhouse.settings().clickhouse.database
    for event in events:
        if isinstance(event, dg.Output | dg.AssetMaterialization):
            unique_id = event.metadata.get("unique_id")
            node = MANIFEST_NODES.get(unique_id.value if unique_id is not None else "")
            if node is not None and node.get("config", {}).get("materialized") not in ("view", "ephemeral"):
                rows = client.query(
                    "SELECT total_rows FROM system.tables WHERE database = {db:String} AND name = {name:String}",
                    parameters={"db": database, "name": node.get("alias") or node["name"]},
                ).result_rows
                if rows and rows[0][0] is not None:
                    row_count = dg.MetadataValue.int(int(rows[0][0]))
                    event = event.with_metadata({**event.metadata, "dagster/row_count": row_count})
        yield event


@dbt_assets(
    manifest=MANIFEST,
    dagster_dbt_translator=TRANSLATOR,
    exclude=f"tag:{DAILY_PARTITIONED_TAG}",
    name="warehouse",
)
def warehouse_dbt_assets(context: AssetExecutionContext, dbt: DbtCliResource, eventhouse: EventhouseResource):
    """Seeds, staging, intermediate, core marts, snapshots and every mart not partitioned by day."""
    eventhouse.ensure_stack(context.log)
    yield from _build(context, dbt, eventhouse, [], indirect_selection="buildable")


@dbt_assets(
    manifest=MANIFEST,
    dagster_dbt_translator=TRANSLATOR,
    select=f"tag:{DAILY_PARTITIONED_TAG}",
    partitions_def=DAILY_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    name="daily_marts",
)
def daily_dbt_assets(context: AssetExecutionContext, dbt: DbtCliResource, eventhouse: EventhouseResource):
    """Marts keyed by day; a run (or a backfill of a range, in one run) recomputes exactly its days."""
    eventhouse.ensure_stack(context.log)
    dbt_vars = vars_for_time_window(context.partition_time_window)
    context.log.info(f"recomputing days {dbt_vars['partition_start_date']} .. {dbt_vars['partition_end_date']}")
    yield from _build(context, dbt, eventhouse, ["--vars", json.dumps(dbt_vars)], indirect_selection=None)
