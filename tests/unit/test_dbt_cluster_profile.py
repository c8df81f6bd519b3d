"""profiles.yml on a cluster (docs/cluster.md): dbt's `cluster` is the loader's
(settings.clickhouse_cluster, the same EVENTHOUSE_CLICKHOUSE_CLUSTER), and unset it is no cluster
to dbt-clickhouse at all."""

from __future__ import annotations

import pytest

from settings import REPO_ROOT, clickhouse_cluster


def _dbt_credentials(target: str, env: dict[str, str]):
    """profiles.yml's target rendered by dbt's own profile renderer under `env`, as dbt-clickhouse's
    credentials."""
    from argparse import Namespace

    from dbt.adapters.clickhouse.credentials import ClickHouseCredentials
    from dbt.config.profile import read_profile
    from dbt.config.renderer import ProfileRenderer
    from dbt.flags import set_from_args
    from dbt_common.context import set_invocation_context

    set_invocation_context(env)
    set_from_args(Namespace(), None)
    output = ProfileRenderer({}).render_data(read_profile(str(REPO_ROOT))["eventhouse"]["outputs"][target])
    output.pop("type")
    output.pop("threads")
    return ClickHouseCredentials.from_dict(output)


@pytest.mark.parametrize("target", ["embedded", "prod"])
@pytest.mark.parametrize("env", [{}, {"EVENTHOUSE_CLICKHOUSE_CLUSTER": ""}, {"EVENTHOUSE_CLICKHOUSE_CLUSTER": "  "}])
def test_without_a_cluster_dbt_clickhouse_sees_none(target, env):
    from dbt.adapters.clickhouse.relation import ClickHouseRelation

    credentials = _dbt_credentials(target, env)
    assert clickhouse_cluster(env) is None
    # dbt-clickhouse asks `if credentials.cluster` (adapter.get_clickhouse_cluster_name, the relation's
    # can_on_cluster) and `cluster.strip() != ''` (the database it creates): both read as no cluster
    assert not credentials.cluster and not credentials.database_engine
    assert not ClickHouseRelation.get_on_cluster(credentials.cluster or "", credentials.database_engine)


@pytest.mark.parametrize("target", ["embedded", "prod"])
def test_dbt_runs_on_the_loaders_cluster(target):
    from dbt.adapters.clickhouse.relation import ClickHouseRelation

    env = {"EVENTHOUSE_CLICKHOUSE_CLUSTER": " eventhouse ", "EVENTHOUSE_CLICKHOUSE_DATABASE_ENGINE": ""}
    credentials = _dbt_credentials(target, env)
    assert credentials.cluster == clickhouse_cluster(env) == "eventhouse"
    assert ClickHouseRelation.get_on_cluster(credentials.cluster, credentials.database_engine)
    # a Replicated database replicates the DDL itself: dbt-clickhouse then leaves ON CLUSTER out
    replicated = _dbt_credentials(target, {**env, "EVENTHOUSE_CLICKHOUSE_DATABASE_ENGINE": "Replicated"})
    assert not ClickHouseRelation.get_on_cluster(replicated.cluster, replicated.database_engine)
    assert _dbt_credentials(target, {"EVENTHOUSE_CLICKHOUSE_DATABASE_ENGINE": "Shared"}).database_engine == "Shared"
