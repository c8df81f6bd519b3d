"""Freshness checks: has new data reached the raw tables and key marts, and were yesterday's days built?

dbt's own tests become asset checks through dagster-dbt (see assets/dbt.py); these are the checks dbt
cannot express: how old the newest loaded row is. The daily marts carry a FreshnessPolicy instead
(translator.py): rebuilt by 04:00 Seoul each day.
"""

import dagster as dg

from orchestration.assets.ingestion import EVENT_RAW_TABLE_KEYS
from orchestration.resources import EventhouseResource
from settings import DEFAULT_FRESHNESS_HOURS, freshness_hours

# Key marts and the column that says when the loader inserted their newest event.
KEY_MART_LOADED_AT = {dg.AssetKey(["fct_events"]): "loaded_at", dg.AssetKey(["fct_sessions"]): "max_loaded_at"}


def _loaded_at_check(key: dg.AssetKey, column: str = "loaded_at") -> dg.AssetChecksDefinition:
    table = key.path[-1]
    in_raw = len(key.path) > 1

    @dg.asset_check(
        asset=key,
        name="newest_row_is_fresh",
        description=f"The newest row of `{table}` was loaded within EVENTHOUSE_FRESHNESS_HOURS "
        f"(default {DEFAULT_FRESHNESS_HOURS:g} h): events are still arriving.",
    )
    def newest_row_is_fresh(eventhouse: EventhouseResource) -> dg.AssetCheckResult:
        settings = eventhouse.ensure_stack()
        database = settings.clickhouse.raw_database if in_raw else settings.clickhouse.database
        newest, age_s, rows = (
            eventhouse.client()
            .query(
                f"SELECT max({column}), dateDiff('second', max({column}), now64(3)), count() "
                f"FROM `{database}`.`{table}`"
            )
            .result_rows[0]
        )
        limit_h = freshness_hours()
        passed = rows > 0 and age_s <= limit_h * 3600
        return dg.AssetCheckResult(
            passed=bool(passed),
            severity=dg.AssetCheckSeverity.WARN,
            description=None
            if passed
            else (
                f"`{table}` is empty"
                if rows == 0
                else f"the newest row of `{table}` was loaded {age_s / 3600:.1f} h ago (limit {limit_h:g} h)"
            ),
            metadata={
                "newest_loaded_at": dg.MetadataValue.text(str(newest)),
                "age_hours": dg.MetadataValue.float(round(age_s / 3600, 3) if rows else -1.0),
                "rows": dg.MetadataValue.int(int(rows)),
            },
        )

    return newest_row_is_fresh


DATA_FRESHNESS_CHECKS = [
    *(_loaded_at_check(key) for key in EVENT_RAW_TABLE_KEYS),
    *(_loaded_at_check(key, column) for key, column in KEY_MART_LOADED_AT.items()),
]
