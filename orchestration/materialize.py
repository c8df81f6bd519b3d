"""Materialize the whole graph in-process: what `eventhouse demo` and the end-to-end tests run.

1. the ingestion job (every raw table, loader until caught up) and an observation of the sources;
2. `build_warehouse` with the first run of consecutive days that have data as its partition range;
3. `daily_partitions` once for every further run of days (replayed clickstream is from 2014, the
   simulated players from this month: one range across both would be 4,600 partitions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg

from orchestration.partitions import contiguous_ranges

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass
class RunSummary:
    job: str
    run_id: str
    success: bool
    seconds: float
    partition_range: tuple[str, str] | None = None
    materializations: int = 0
    materialized: set[dg.AssetKey] = field(default_factory=set)
    checks_passed: int = 0
    checks_evaluated: set[dg.AssetCheckKey] = field(default_factory=set)
    checks_failed: dict[str, list[str]] = field(default_factory=dict)  # severity -> "asset:check"
    row_counts: dict[dg.AssetKey, int] = field(default_factory=dict)
    # each materialization's metadata values (the latest per asset), for summaries such as the demo's
    metadata: dict[dg.AssetKey, dict[str, object]] = field(default_factory=dict)
    step_failures: list[str] = field(default_factory=list)


def summarize(job: str, result: dg.ExecuteInProcessResult, seconds: float, partition_range=None) -> RunSummary:
    summary = RunSummary(job, result.run_id, result.success, seconds, partition_range)
    for event in result.all_events:
        kind = event.event_type_value
        if kind == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            summary.materializations += 1
            summary.materialized.add(materialization.asset_key)
            summary.metadata[materialization.asset_key] = {
                name: value.value for name, value in materialization.metadata.items()
            }
            rows = materialization.metadata.get("dagster/row_count")
            if rows is not None:
                summary.row_counts[materialization.asset_key] = int(rows.value)
        elif kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            summary.checks_evaluated.add(evaluation.asset_check_key)
            if evaluation.passed:
                summary.checks_passed += 1
            else:
                severity = evaluation.severity.value if evaluation.severity else "ERROR"
                summary.checks_failed.setdefault(severity, []).append(
                    f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
                )
        elif kind == "STEP_FAILURE":
            summary.step_failures.append(f"{event.step_key}: {event.message}")
    return summary


def data_days(client: Any, raw_database: str) -> list[date]:
    """The UTC days the raw tables hold events for."""
    from ingestion.raw_tables import raw_table
    from ingestion.topics import DOMAINS

    union = " UNION DISTINCT ".join(
        f"SELECT DISTINCT toDate(ts, 'UTC') AS day FROM `{raw_database}`.`{raw_table(domain)}`" for domain in DOMAINS
    )
    return [row[0] for row in client.query(f"SELECT day FROM ({union}) ORDER BY day").result_rows]


def materialize_everything(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    client: Any,
    raw_database: str,
    on_run: Callable[[RunSummary], None] | None = None,
    on_start: Callable[[str, tuple[str, str] | None], None] | None = None,
    log_level: str = "DEBUG",
) -> list[RunSummary]:
    import time

    runs: list[RunSummary] = []
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}

    def execute(
        job_name: str, tags: dict[str, str] | None = None, partition_range=None, partition_key: str | None = None
    ) -> RunSummary:
        if on_start is not None:
            on_start(job_name, partition_range)
        started = time.monotonic()
        result = defs.resolve_job_def(job_name).execute_in_process(
            run_config=run_config,
            instance=instance,
            tags=tags or {},
            raise_on_error=False,
            partition_key=partition_key,
        )
        summary = summarize(job_name, result, time.monotonic() - started, partition_range)
        runs.append(summary)
        if on_run is not None:
            on_run(summary)
        return summary

    first = execute("ingestion")
    execute("observe_sources")
    if not first.success:
        return runs
    partitions = defs.resolve_job_def("build_warehouse").partitions_def
    valid = set(partitions.get_partition_keys())
    # days outside the partitions (before EVENTHOUSE_PARTITIONS_START) are built, not tracked
    ranges = contiguous_ranges([d for d in data_days(client, raw_database) if d.isoformat() in valid])
    if not ranges:  # nothing loaded: build the (empty) warehouse for today's partition
        ranges = [(date.today(), date.today())]
    for index, (start, end) in enumerate(ranges):
        tags = {RANGE_START_TAG: start.isoformat(), RANGE_END_TAG: end.isoformat()}
        job = "build_warehouse" if index == 0 else "daily_partitions"
        if not execute(job, tags, (start.isoformat(), end.isoformat())).success:
            break
    # the raw archive of the hour just loaded (archive/); the retention purge deletes data, so it is
    # left to its daily schedule
    from orchestration.assets.archive import hour_partition_key

    execute("archive_raw", partition_key=hour_partition_key(datetime.now(UTC)))
    return runs
