"""How dbt nodes become Dagster assets: raw sources are the loader's assets, groups follow the layers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings

RAW_KEY_PREFIX = "eventhouse_raw"
DAILY_PARTITIONED_TAG = "daily_partitioned"
# The daily batch starts at 03:00 Seoul; its marts count as fresh once rebuilt by 04:00 Seoul.
DAILY_MARTS_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 4 * * *", lower_bound_delta=timedelta(hours=1), timezone="Asia/Seoul"
)


def raw_table_key(table: str) -> dg.AssetKey:
    """The asset key of a raw table; the loader's assets and dbt's sources both use it."""
    return dg.AssetKey([RAW_KEY_PREFIX, table])


def layer_group(fqn: list[str], resource_type: str) -> str:
    """staging / intermediate / core / marts_<area> / snapshots / seeds, from the node's path."""
    if resource_type == "seed":
        return "seeds"
    if resource_type == "snapshot":
        return "snapshots"
    parts = fqn[1:-1]  # drop the project name and the node name
    if not parts:
        return "warehouse"
    if parts[0] == "marts":
        area = parts[1] if len(parts) > 1 else "other"
        return "core" if area == "core" else f"marts_{area}"
    return parts[0]


class EventhouseTranslator(DagsterDbtTranslator):
    def __init__(self) -> None:
        super().__init__(DagsterDbtTranslatorSettings(enable_asset_checks=True))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return raw_table_key(dbt_resource_props["name"])
        return super().get_asset_key(dbt_resource_props)

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: Any) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if DAILY_PARTITIONED_TAG in spec.tags:
            spec = spec.replace_attributes(freshness_policy=DAILY_MARTS_FRESHNESS)
        return spec

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return layer_group(list(dbt_resource_props.get("fqn", [])), dbt_resource_props["resource_type"])

    def get_description(self, dbt_resource_props: Mapping[str, Any]) -> str:
        # The model's docs first; its SQL stays a click away in the dbt docs / code view.
        description = dbt_resource_props.get("description") or ""
        path = dbt_resource_props.get("original_file_path", "")
        return f"{description}\n\n`{path}`".strip()
