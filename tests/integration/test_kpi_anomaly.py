"""The `kpi_anomaly` generic test can fail: it returns a day that spikes and nothing for a flat series.

Two levels: the test's SQL (the `test_kpi_anomaly` macro, rendered by `dbt show --inline`) on small
tables of the test's own, and `dbt test` of the tests applied to `kpi_daily`, built from raw
events written straight into the raw tables (`RawWriter`, the loader's row format).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from ingestion.contract import make_event
from ingestion.raw_writer import RawWriter
from tests.integration.dbt_support import run_dbt
from tests.integration.warehouse_reference import dbt_vars

pytestmark = pytest.mark.integration

START = date(2026, 3, 2)
DBT_VARS = dbt_vars()


def _ok(args: list[str], env: dict, target) -> str:
    result = run_dbt(args, env, target)
    assert result.returncode == 0, result.stdout[-5000:]
    return result.stdout


def _series_table(client, database: str, table: str, values: list[float]) -> None:
    client.command(
        f"CREATE TABLE {database}.{table} (metric_date Date, kpi_value Float64) ENGINE = MergeTree ORDER BY metric_date"
    )
    rows = [(START + timedelta(days=i), float(v)) for i, v in enumerate(values)]
    client.insert(f"{database}.{table}", rows, column_names=["metric_date", "kpi_value"])


def _failing_rows(env: dict, target, database: str, cases: dict[str, tuple[str, dict]]) -> dict[str, list[dict]]:
    """Per case name, the rows the generic test returns (its failures) for a table's kpi_value with
    some arguments: case -> (table, arguments). One `dbt show` renders every case (a dbt process
    costs seconds), each case's rows labelled with its name."""
    renders = []
    for name, (table, arguments) in cases.items():
        extra = "".join(f", {argument}={value!r}" for argument, value in arguments.items())
        relation = f"api.Relation.create(schema='{database}', identifier='{table}')"
        test_sql = (
            f"{{{{ test_kpi_anomaly(model={relation}, column_name='kpi_value', date_column='metric_date'{extra}) }}}}"
        )
        renders.append(f"select '{name}' as case_name, * from ({test_sql})")
    sql = " union all ".join(renders)
    stdout = _ok(["--quiet", "show", "--inline", sql, "--output", "json", "--limit", "1000"], env, target)
    rows = json.loads(stdout[stdout.index("{") :])["show"]
    by_case: dict[str, list[dict]] = {name: [] for name in cases}
    for row in sorted(rows, key=lambda row: row["metric_date"]):
        by_case[row.pop("case_name")].append(row)
    return by_case


def test_the_kpi_anomaly_sql_returns_the_spike_and_nothing_for_a_flat_series(embedded_stack, dbt_env):
    env, database, target = dbt_env
    client = embedded_stack.client()
    normal = [10 + i % 2 for i in range(20)]  # 10, 11, 10, ... : mean 10.5, stddev ~0.51
    _series_table(client, database, "flat_series", [*normal, 11])
    _series_table(client, database, "spiking_series", [*normal, 100, 10, 11])
    _series_table(client, database, "dropping_series", [*normal, 0])
    # The spike's z-score, worked out by hand: (100 - 10.5) / stdev of the 14 days before it (7 x 10,
    # 7 x 11: sample stddev sqrt(14 x 0.25 / 13) = 0.5189), i.e. ~172.5; a threshold above it passes.
    failing = _failing_rows(
        env,
        target,
        database,
        {
            "flat": ("flat_series", {}),
            "spike": ("spiking_series", {}),
            "drop": ("dropping_series", {}),
            # The optional arguments are used: a threshold above the spike's z-score passes it, and a
            # window of 1 day has too few prior days for any z-score.
            "spike_above_threshold": ("spiking_series", {"z_threshold": 200}),
            "spike_one_day_window": ("spiking_series", {"trailing_days": 1}),
        },
    )

    assert failing["flat"] == []

    spike = failing["spike"]
    assert [row["metric_date"] for row in spike] == [str(START + timedelta(days=20))]
    assert spike[0]["kpi_value"] == 100 and spike[0]["prior_days"] == DBT_VARS["kpi_anomaly_trailing_days"]
    assert spike[0]["trailing_mean"] == pytest.approx(10.5)
    assert spike[0]["z_score"] == pytest.approx((100 - 10.5) / (14 * 0.25 / 13) ** 0.5, rel=1e-6)
    assert spike[0]["z_score"] > DBT_VARS["kpi_anomaly_z_threshold"] and spike[0]["is_anomaly"] is True

    drop = failing["drop"]
    assert [row["metric_date"] for row in drop] == [str(START + timedelta(days=20))]
    assert drop[0]["z_score"] < -DBT_VARS["kpi_anomaly_z_threshold"]

    assert failing["spike_above_threshold"] == []
    assert failing["spike_one_day_window"] == []


def _logins(day: int, users: int) -> list[dict]:
    at = datetime.combine(START + timedelta(days=day), datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
    return [
        make_event("auth.login", f"login-{day}-{n}", at + timedelta(seconds=n), {}, user_id=f"user_{n:05d}")
        for n in range(users)
    ]


def _kpi_anomaly_results(env: dict, target) -> dict[str, tuple[str, int]]:
    """Status and failure count of each kpi_anomaly test on kpi_daily, by KPI column."""
    run_dbt(["test", "--select", "kpi_daily,test_name:kpi_anomaly"], env, target)
    results = json.loads((target / "run_results.json").read_text())["results"]
    prefix = "test.eventhouse.kpi_anomaly_kpi_daily_"
    return {
        r["unique_id"][len(prefix) :].split("__")[0]: (r["status"], r["failures"])
        for r in results
        if r["unique_id"].startswith(prefix)
    }


def test_dbt_test_warns_on_the_day_a_kpi_spikes(embedded_stack, dbt_env):
    env, database, target = dbt_env
    writer = RawWriter(embedded_stack.client(database=database), env["EVENTHOUSE_RAW_DATABASE"])
    # 15 ordinary days: 20 or 21 players log in once each (events and DAU alternate 20/21).
    for day in range(15):
        writer.add_all(_logins(day, 20 + day % 2))
    writer.flush()
    _ok(["run", "--select", "+kpi_anomalies"], env, target)

    flat = _kpi_anomaly_results(env, target)
    assert flat == {kpi: ("pass", 0) for kpi in ["event_count", "dau", "conversion_rate", "revenue"]}

    # Day 16: 200 players log in. Events and DAU spike; there is no clickstream or revenue.
    writer.add_all(_logins(15, 200)).flush()
    _ok(["run", "--select", "+kpi_anomalies"], env, target)

    spiked = _kpi_anomaly_results(env, target)
    assert spiked["event_count"] == ("warn", 1)
    assert spiked["dau"] == ("warn", 1)
    assert spiked["conversion_rate"] == ("pass", 0)
    assert spiked["revenue"] == ("pass", 0)

    client = embedded_stack.client(database=database)
    assert client.query(
        "SELECT metric_date, kpi_name FROM kpi_anomalies WHERE is_anomaly ORDER BY kpi_name"
    ).result_rows == [(START + timedelta(days=15), "dau"), (START + timedelta(days=15), "event_count")]
