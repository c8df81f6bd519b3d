"""The dbt project as assets: one `@dbt_assets` per stage of orchestration/dbt_stages.py.

The foundation (everything that reads no day-partitioned mart), the day-partitioned marts, then the
marts that read those: each depends only on the ones before it. Each runs `dbt build` of its nodes,
so a model's tests run right after it and a failing error-severity test stops what depends on it (in
dbt, and in Dagster: the op fails and the later ones do not run). dbt's indirect selection stays at
its default (eager), which is also what dagster-dbt expects: it derives an op's asset checks from
the same select/exclude with eager selection, so every check gets a result (a check left without
one, as under `cautious` or `buildable`, makes Dagster skip what is downstream of its asset while
the run still succeeds: dagster-io/dagster#33351). dbt unit tests are left to CI (`make test`):
they test SQL logic, not the data a run produces.
"""

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DbtCliResource, dbt_assets

from orchestration.dbt_stages import DbtStage, built_nodes, dbt_selection, plan_stages
from orchestration.partitions import daily_partitions, vars_for_time_window
from orchestration.project import DBT_PROJECT, DBT_TARGET_DIR, manifest_path
from orchestration.resources import EventhouseResource
from orchestration.translator import EventhouseTranslator

MANIFEST: dict[str, Any] = json.loads(manifest_path().read_text())
MANIFEST_NODES = built_nodes(MANIFEST)
STAGES = plan_stages(MANIFEST)
TRANSLATOR = EventhouseTranslator()
DAILY_PARTITIONS = daily_partitions()
BUILD_ARGS = ["build", "--exclude-resource-type", "unit_test"]


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


def _with_row_counts(events: Iterator[Any], eventhouse: EventhouseResource) -> Iterator[Any]:
    """Each built table's row count as `dagster/row_count`, counted when it is built.

    dagster-dbt's fetch_row_counts() would do this too, but it first opens a dbt adapter of its own
    (about 10 s of project loading per dbt invocation, and a run makes several); one count() per
    model here costs a few milliseconds. Not system.tables' total_rows: it includes the rows an
    incremental model's delete+insert deleted (lightweight deletes) until a merge drops them, so a
    rebuilt fct_events read twice its size. Column schemas come from the dbt docs in the manifest.
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
                table = node.get("alias") or node["name"]
                built = client.query(
                    "SELECT 1 FROM system.tables WHERE database = {db:String} AND name = {name:String}",
                    parameters={"db": database, "name": table},
                ).result_rows
                if built:
                    rows = int(client.command(f"SELECT count() FROM `{database}`.`{table}`"))
                    event = event.with_metadata({**event.metadata, "dagster/row_count": dg.MetadataValue.int(rows)})
        yield event


def _stage_assets(stage: DbtStage) -> dg.AssetsDefinition:
    select, exclude = dbt_selection(MANIFEST, STAGES, stage)

    @dbt_assets(
        manifest=DBT_PROJECT.manifest_path,
        project=DBT_PROJECT,
        dagster_dbt_translator=TRANSLATOR,
        select=select,
        exclude=exclude,
        name=stage.name,
        partitions_def=DAILY_PARTITIONS if stage.daily else None,
        # a backfill of a range of days is one dbt invocation (the models take the range as vars)
        backfill_policy=dg.BackfillPolicy.single_run() if stage.daily else None,
    )
    def _assets(context: AssetExecutionContext, dbt: DbtCliResource, eventhouse: EventhouseResource):
        eventhouse.ensure_stack(context.log)
        args = list(BUILD_ARGS)
        if stage.daily:  # recompute exactly the run's days
            dbt_vars = vars_for_time_window(context.partition_time_window)
            context.log.info(f"recomputing days {dbt_vars['partition_start_date']} .. {dbt_vars['partition_end_date']}")
            args += ["--vars", json.dumps(dbt_vars)]
        prune_invocation_dirs()
        yield from _with_row_counts(dbt.cli(args, context=context).stream(), eventhouse)

    return _assets


DBT_ASSETS: list[dg.AssetsDefinition] = [_stage_assets(stage) for stage in STAGES]
DAILY_DBT_ASSETS = [assets for assets, stage in zip(DBT_ASSETS, STAGES, strict=True) if stage.daily]
