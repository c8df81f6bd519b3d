"""Dagster end to end on a real embedded stack: the demo's events published to Kafka, every asset
materialized in-process, checks evaluated, one day's partition recomputed, a failing dbt test
blocking what is downstream of it, and the Kafka lag sensor before and after loading.

One stack and one Dagster instance for the module (materializing the whole graph takes minutes). The
`world` fixture records what the tests that only read check (runs, sensor ticks, row counts) right
after materializing, so tests that change the data afterwards can run in any order.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

import dagster as dg
import pytest

from ingestion.contract import make_event
from ingestion.topics import DOMAINS
from orchestration.assets.archive import deleted_orders_retention
from settings import load_settings
from tests.conftest import running_stack

pytestmark = pytest.mark.integration

DAY1, DAY2 = date(2026, 11, 3), date(2026, 11, 4)
# the console gets warnings only: every dbt event at DEBUG is thousands of lines
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture(scope="module")
def world():
    """An own stack and databases, the demo published, the lag sensor read, everything materialized."""
    saved = dict(os.environ)
    with running_stack("eventhouse-dagster-") as stack, tempfile.TemporaryDirectory() as dagster_home:
        database = f"dg_{uuid.uuid4().hex[:8]}"
        os.environ.update(stack.env)
        os.environ.update(
            {
                "EVENTHOUSE_CLICKHOUSE_DATABASE": database,
                "EVENTHOUSE_RAW_DATABASE": f"raw_{database}",
                "DAGSTER_HOME": dagster_home,
                "EVENTHOUSE_LAG_THRESHOLD": "1000",
            }
        )
        try:
            from eventhouse.demo import produce_demo_events
            from orchestration.definitions import build_definitions
            from orchestration.materialize import materialize_everything
            from orchestration.project import DBT_PROJECT

            # Parsed again for this module's stack and databases, not only once per session
            # (prepare_dbt_project): every dbt invocation of Dagster's starts from this parse, and dbt
            # parses in full when the profile it was made with differs (here the port and database),
            # so one parse here saves one per invocation without partition vars.
            DBT_PROJECT.preparer.prepare(DBT_PROJECT)

            settings = load_settings()
            defs = build_definitions()
            produce_demo_events(settings)
            client = stack.client()
            sensor_before = _evaluate_lag_sensor(defs)
            with dg.DagsterInstance.get() as instance:
                runs = materialize_everything(
                    defs, instance, client, settings.clickhouse.raw_database, log_level="WARNING"
                )
                sensor_after = _evaluate_lag_sensor(defs, instance)
                yield {
                    "counts": _counts(client, settings),
                    "defs": defs,
                    "instance": instance,
                    "client": client,
                    "settings": settings,
                    "runs": runs,
                    "sensor_before": sensor_before,
                    "sensor_after": sensor_after,
                    "publish": lambda events: _publish(settings, events),
                }
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _counts(client, settings) -> dict[str, int]:
    """Rows of fct_events and of each raw table, distinct event ids over the raw tables, and days
    kpi_anomalies flags, as ClickHouse counts them."""
    database, raw = settings.clickhouse.database, settings.clickhouse.raw_database
    tables = [f"raw_{d}_events" for d in DOMAINS]
    counts = {table: int(client.command(f"SELECT count() FROM `{raw}`.`{table}`")) for table in tables}
    counts["fct_events"] = int(client.command(f"SELECT count() FROM `{database}`.fct_events"))
    counts["kpi_anomalies_flagged"] = int(client.command(f"SELECT countIf(is_anomaly) FROM `{database}`.kpi_anomalies"))
    counts["distinct_raw_event_ids"] = sum(
        int(client.command(f"SELECT uniqExact(event_id) FROM `{raw}`.`{table}`")) for table in tables
    )
    return counts


def _evaluate_lag_sensor(defs: dg.Definitions, instance: dg.DagsterInstance | None = None):
    sensor = defs.resolve_sensor_def("kafka_lag_sensor")
    with dg.build_sensor_context(
        instance=instance, repository_def=defs.get_repository_def(), resources=defs.resources
    ) as context:
        return sensor.evaluate_tick(context)


def _publish(settings, events: list[dict]) -> None:
    from ingestion.publisher import Publisher

    publisher = Publisher(settings.kafka, client_id="dagster-test")
    try:
        for event in events:
            publisher.publish(event)
    finally:
        publisher.close()


def _purchase(day: date, tag: str) -> dict:
    return make_event(
        "shop.purchase",
        f"dagster-test-{tag}-{day:%Y%m%d}",
        datetime.combine(day, time(12), tzinfo=UTC),
        {
            "tx_id": f"tx-{tag}-{day:%Y%m%d}",
            "status": "completed",
            "product_id": "gold_500",
            "amount_gold": 500,
            "price_cents": 99,
        },
        user_id="player_dagster_test",
    )


def _revenue(world, day: date) -> Decimal:
    database = world["settings"].clickhouse.database
    return (
        world["client"]
        .query(f"SELECT sum(revenue) FROM `{database}`.economy_daily_kpis WHERE metric_date = %(day)s", {"day": day})
        .result_rows[0][0]
    )


def _materialized(result: dg.ExecuteInProcessResult) -> dict[str, set[str | None]]:
    """asset -> partitions materialized in this run (None for unpartitioned assets)."""
    done: dict[str, set[str | None]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        done.setdefault(materialization.asset_key.to_user_string(), set()).add(materialization.partition)
    return done


def test_lag_sensor_launches_ingestion_for_the_lagging_domains_only(world):
    [request] = world["sensor_before"].run_requests
    # The demo put thousands of messages in every domain and nothing was loaded yet.
    assert {key.to_user_string() for key in request.asset_selection} == {
        f"eventhouse_raw/raw_{d}_events" for d in DOMAINS
    }
    assert request.tags["eventhouse/trigger"] == "kafka_lag"
    after = world["sensor_after"]
    assert not after.run_requests
    assert "at or below 1000" in after.skip_message


def test_whole_graph_materializes_with_every_check_evaluated(world):
    runs, defs = world["runs"], world["defs"]
    assert [r.job for r in runs] == [
        "ingestion",
        "observe_sources",
        "build_warehouse",
        "daily_partitions",
        "archive_raw",
    ]
    assert all(r.success for r in runs), [r.step_failures for r in runs]
    graph = defs.resolve_asset_graph()
    materialized = {key for r in runs for key in r.materialized}
    materializable = {key for key in graph.get_all_asset_keys() if graph.get(key).is_materializable}
    # the retention purge deletes data: materialize_everything leaves it to its daily schedule
    materializable.discard(deleted_orders_retention.key)
    assert materialized == materializable
    assert "ERROR" not in {sev for r in runs for sev in r.checks_failed}, [r.checks_failed for r in runs]
    # Warn-level findings are data, not breakage: only the KPI z-score test may flag, and exactly
    # when the kpi_anomalies mart found a spike or drop in this data.
    warned = {name for r in runs for name in r.checks_failed.get("WARN", [])}
    assert all(name.startswith("kpi_daily:kpi_anomaly_") for name in warned), warned
    assert bool(warned) == (world["counts"]["kpi_anomalies_flagged"] > 0)
    # every check was evaluated (a daily mart's once per range of days), and each passed or warned
    assert {key for r in runs for key in r.checks_evaluated} == set(graph.asset_check_keys)


def test_row_counts_are_recorded_and_true(world):
    latest = {}
    for run in world["runs"]:
        latest.update(run.row_counts)
    counts = world["counts"]
    assert latest[dg.AssetKey(["fct_events"])] == counts["fct_events"] == counts["distinct_raw_event_ids"]
    loaded = world["runs"][0]
    for domain in DOMAINS:
        table = f"raw_{domain}_events"
        assert loaded.row_counts[dg.AssetKey(["eventhouse_raw", table])] == counts[table], table


def _run_part(world, job_name: str, day: date, selection: dg.AssetSelection) -> dg.ExecuteInProcessResult:
    """A run of `job_name` for `day`'s partition, of its assets in `selection` only: what the test
    looks at, not the whole warehouse again."""
    job = world["defs"].resolve_job_def(job_name)
    keys = selection.resolve(world["defs"].resolve_asset_graph()) & job.asset_layer.executable_asset_keys
    assert keys, selection
    return job.execute_in_process(
        instance=world["instance"],
        partition_key=day.isoformat(),
        asset_selection=sorted(keys),
        raise_on_error=False,
        run_config=QUIET,
    )


def test_a_partition_run_recomputes_exactly_its_day(world):
    before1, before2 = _revenue(world, DAY1), _revenue(world, DAY2)
    world["publish"]([_purchase(DAY1, "late"), _purchase(DAY2, "late")])
    # the hourly run for DAY1, of what economy_daily_kpis reads and of it, with the economy loader:
    # the late purchases are economy events, so the other domains' loaders would find nothing to load
    # (each still joins its consumer group, seconds of waiting)
    others = [dg.AssetKey(["eventhouse_raw", f"raw_{d}_events"]) for d in DOMAINS if d != "economy"]
    selection = dg.AssetSelection.assets("economy_daily_kpis").upstream() - dg.AssetSelection.assets(*others)
    result = _run_part(world, "hourly_refresh", DAY1, selection)
    assert result.success
    done = _materialized(result)
    assert done["economy_daily_kpis"] == {DAY1.isoformat()}
    assert done["fct_events"] == done["eventhouse_raw/raw_economy_events"] == {None}
    # both late purchases reached fct_events; only day 1's partition of the daily mart was rebuilt
    assert _revenue(world, DAY1) == before1 + Decimal("0.99")
    assert _revenue(world, DAY2) == before2
    result = _run_part(world, "daily_partitions", DAY2, dg.AssetSelection.assets("economy_daily_kpis"))
    assert result.success
    assert _materialized(result) == {"economy_daily_kpis": {DAY2.isoformat()}}
    assert _revenue(world, DAY2) == before2 + Decimal("0.99")
    assert _revenue(world, DAY1) == before1 + Decimal("0.99")


def test_a_failing_error_test_fails_its_check_and_blocks_downstream(world):
    raw = world["settings"].clickhouse.raw_database
    client = world["client"]
    # an event type the contract does not know, written past the loader
    client.command(
        f"INSERT INTO `{raw}`.raw_game_events SELECT * REPLACE ('game.bogus' AS event_type, "
        f"'dagster-test-bogus' AS event_id) FROM `{raw}`.raw_game_events LIMIT 1"
    )
    # the game events' staging view, what is built from it in the foundation (fct_events,
    # fct_sessions) and in the daily marts, and a staging view that does not read the game events
    blocked = ["fct_events", "fct_sessions", "economy_daily_kpis", "game_daily_user_summary"]
    # (staging reads the base models, incremental tables: the run brings the row into base_game__events)
    selection = dg.AssetSelection.assets(
        "base_game__events", "stg_game__events", "stg_orders__order_events", *blocked
    )
    try:
        result = _run_part(world, "build_warehouse", DAY1, selection)
        assert not result.success
        evaluations = {
            e.event_specific_data.check_name: e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        }
        # the event types the registry gives the game domain (seed event_types)
        failed = evaluations["registered_event_type_stg_game__events_event_type__game"]
        assert not failed.passed
        assert failed.severity == dg.AssetCheckSeverity.ERROR
        done = _materialized(result)
        assert "stg_game__events" in done  # the view was built, then its test failed
        for downstream in blocked:  # dbt skipped the first two; Dagster did not start the daily marts' op
            assert downstream not in done, downstream
        # models that do not depend on the game events were still built
        assert "stg_orders__order_events" in done
    finally:
        warehouse = world["settings"].clickhouse.database
        for table in (f"`{raw}`.raw_game_events", f"`{warehouse}`.base_game__events"):
            client.command(
                f"ALTER TABLE {table} DELETE WHERE event_id = 'dagster-test-bogus'",
                settings={"mutations_sync": 2},
            )
