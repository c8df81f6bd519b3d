"""How the dbt project splits into `@dbt_assets` definitions that never depend on each other both ways.

One `@dbt_assets` holds nodes of one partitioning only: day-partitioned marts (tag
`daily_partitioned`) or unpartitioned models, seeds and snapshots. Two definitions alone would
depend on each other both ways (daily marts read the core models, and a few marts read daily
marts), and Dagster would then run the unpartitioned one in pieces around the other. So the nodes
go into stages instead, computed from each node's parents in the manifest: a node's stage is the
lowest one at or after each of its parents' whose partitioning is its own (even stages
unpartitioned, odd ones daily). Stage 0 is the foundation (seeds, staging, intermediate, core and
every mart that reads no daily mart), stage 1 the daily marts, stage 2 the marts that read daily
marts, and so on if a daily mart ever reads one of those. Every parent is in the node's stage or an
earlier one, so each stage's definition depends only on earlier ones.

A dbt test runs in the stage of its latest parent: with dbt's default (eager) indirect selection a
stage's `dbt build` selects every test of one of its nodes, and excluding the later stages' nodes
removes the tests that also read those (dbt's exclusion is eager too), so each test runs once, when
all it reads has been built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestration.translator import DAILY_PARTITIONED_TAG

# What `dbt build` builds; tests, analyses and hooks hang off these.
BUILT_RESOURCE_TYPES = ("model", "seed", "snapshot")


@dataclass(frozen=True)
class DbtStage:
    index: int
    unique_ids: frozenset[str]

    @property
    def daily(self) -> bool:
        return self.index % 2 == 1

    @property
    def name(self) -> str:
        """dbt_foundation, dbt_daily_marts, dbt_daily_mart_readers, then _2, _3 ... for later rounds."""
        if self.index == 0:
            return "dbt_foundation"
        base = "dbt_daily_marts" if self.daily else "dbt_daily_mart_readers"
        round_ = (self.index + 1) // 2
        return base if round_ == 1 else f"{base}_{round_}"


def is_daily(node: Mapping[str, Any]) -> bool:
    return DAILY_PARTITIONED_TAG in node.get("tags", [])


def built_nodes(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {uid: node for uid, node in manifest["nodes"].items() if node["resource_type"] in BUILT_RESOURCE_TYPES}


def stage_of_each_node(manifest: Mapping[str, Any]) -> dict[str, int]:
    """unique_id -> stage for every model, seed and snapshot (see the module's docstring)."""
    nodes = built_nodes(manifest)
    parents = {uid: [p for p in manifest["parent_map"].get(uid, []) if p in nodes] for uid in nodes}
    stages: dict[str, int] = {}

    def stage(uid: str, path: tuple[str, ...] = ()) -> int:
        if uid in stages:
            return stages[uid]
        if uid in path:  # dbt refuses cycles; a hand-made manifest might not
            raise ValueError(f"dbt nodes depend on each other in a cycle: {' -> '.join((*path, uid))}")
        parity = 1 if is_daily(nodes[uid]) else 0
        lowest = max((stage(p, (*path, uid)) for p in parents[uid]), default=0)
        stages[uid] = lowest if lowest % 2 == parity else lowest + 1
        return stages[uid]

    for uid in nodes:
        stage(uid)
    return stages


def is_ephemeral(node: Mapping[str, Any]) -> bool:
    return node.get("config", {}).get("materialized") == "ephemeral"


def plan_stages(manifest: Mapping[str, Any]) -> list[DbtStage]:
    """The stages that hold at least one node, in build order.

    An ephemeral model is no asset and builds nothing (its SQL is inlined into its children): it
    belongs to no stage, but its stage still orders its children, as what it reads they read.
    """
    nodes = manifest["nodes"]
    by_stage: dict[int, set[str]] = {}
    for uid, index in stage_of_each_node(manifest).items():
        if not is_ephemeral(nodes[uid]):
            by_stage.setdefault(index, set()).add(uid)
    return [DbtStage(index, frozenset(by_stage[index])) for index in sorted(by_stage)]


def dbt_selection(manifest: Mapping[str, Any], stages: list[DbtStage], stage: DbtStage) -> tuple[str, str]:
    """(select, exclude) for the stage's `dbt build`: its nodes by name, minus the later stages' nodes
    (which takes the tests that also read those along, to run in a later stage)."""
    nodes = manifest["nodes"]

    def names(unique_ids: frozenset[str] | set[str]) -> str:
        return " ".join(sorted(nodes[uid]["name"] for uid in unique_ids))

    later = {uid for other in stages if other.index > stage.index for uid in other.unique_ids}
    return names(stage.unique_ids), names(later)
