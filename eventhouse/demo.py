"""`eventhouse demo` (what `make demo` runs): the main job end to end, through Dagster, on the embedded stack.

Start the embedded stack, publish a realistic demo into Kafka (the generated YOOCHOOSE-layout
sample, simulated game/economy players with bots, commerce orders), materialize every asset of
orchestration/definitions.py in-process (loader assets, then dbt with its tests as asset checks),
and print a short summary. The runs land in the Dagster instance under $EVENTHOUSE_HOME/dagster,
so `make ui` afterwards shows them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from settings import REPO_ROOT, Settings, load_settings, stack_env
from stack.lifecycle import EmbeddedStack

# What a database needs before its first plain `dbt build` (CI and tests run dbt directly): seeds,
# and the incremental models created empty, because dbt unit tests of an incremental model read
# the columns of `this`. Dagster runs leave unit tests out and need neither.
DBT_PREPARE_STEPS: list[list[str]] = [
    ["seed"],
    ["run", "--empty", "--select", "+config.materialized:incremental"],
]


def produce_demo_events(settings: Settings) -> None:
    """The demo's three sources: producers publishing to Kafka (clickstream, game and economy), the
    orders service's PostgreSQL with its transactional outbox and relay (orders), and CDC of its
    dimension tables (users, products, and the leaderboard the game writes)."""
    from ingestion.producers.delivery import ProduceSummary, publish_all
    from ingestion.producers.game_sim import SimulationConfig, simulate
    from ingestion.producers.orders import OrdersConfig
    from ingestion.producers.yoochoose import replay
    from ingestion.publisher import Publisher
    from oltp.cdc import CdcCapture, CdcConfig
    from oltp.leaderboard import write_through
    from oltp.outbox_writer import OutboxWriterConfig, write_orders_via_outbox
    from oltp.relay import RelayConfig, relay_outbox
    from settings import outbox_pending_threshold, postgres_dsn

    dsn = postgres_dsn()
    samples = REPO_ROOT / "ingestion" / "samples"
    publisher = Publisher(settings.kafka, client_id="demo-producer")
    try:
        replayed = replay(publisher, samples / "yoochoose-clicks.dat", samples / "yoochoose-buys.dat")
        print(f"   clickstream: replayed {replayed.produced} events ({replayed.rejected} lines rejected)")
        game = ProduceSummary()
        events = write_through(simulate(SimulationConfig(), game), dsn, game.extra)
        publish_all(events, publisher.publish, game, "game + economy events")
        print(
            f"   game + economy: {game.produced} events from {SimulationConfig().users} simulated players; "
            f"{game.extra['leaderboard']['rows_written']} best times upserted into PostgreSQL's leaderboard"
        )
    finally:
        publisher.close()
    written = write_orders_via_outbox(dsn, OutboxWriterConfig(orders=OrdersConfig()))
    print(
        f"   orders: {written.committed} changes of {OrdersConfig().orders} orders committed to PostgreSQL, "
        "each with its outbox row in one transaction"
    )
    relayed = relay_outbox(dsn, settings.kafka, RelayConfig(pending_threshold=outbox_pending_threshold()), once=True)
    print(f"   outbox relay: {relayed.published} published to Kafka and marked, {relayed.pending} pending")
    captured = CdcCapture(settings, CdcConfig(dsn=dsn, once=True)).run().summary()
    print(
        f"   CDC: {captured['published']} change events published to cdc.public.* (the initial snapshot's "
        f"{captured['snapshot_rows']} rows, then the slot's changes; slot confirmed at {captured['confirmed_lsn']})"
    )


def _print_run(run: Any) -> None:
    what = f" days {run.partition_range[0]}..{run.partition_range[1]}" if run.partition_range else ""
    # a warn-severity check that finds rows warned; only an error-severity one failed
    failed = len(run.checks_failed.get("ERROR", []))
    warned = len(run.checks_failed.get("WARN", []))
    status = "ok" if run.success else "FAILED"
    print(
        f"   {run.job}{what}: {status} in {run.seconds:.1f} s, {run.materializations} materializations, "
        f"checks {run.checks_passed} passed / {failed} failed / {warned} warned",
        flush=True,
    )
    for failure in run.step_failures:
        print(f"     step failed: {failure.splitlines()[0][:300]}")


def print_summary(defs: Any, runs: list[Any], client: Any, settings: Settings) -> None:
    graph = defs.resolve_asset_graph()
    rows_by_group: dict[str, int] = {}
    assets_by_group: dict[str, int] = {}
    latest: dict[Any, int] = {}
    for run in runs:
        latest.update(run.row_counts)
    for key, rows in latest.items():
        group = graph.get(key).group_name or "default"
        rows_by_group[group] = rows_by_group.get(group, 0) + rows
        assets_by_group[group] = assets_by_group.get(group, 0) + 1
    print("   rows per layer (row counts Dagster recorded for each asset):")
    for group in sorted(rows_by_group, key=lambda g: (g.startswith("marts"), g)):
        print(f"     {group:<22} {assets_by_group[group]:>3} assets {rows_by_group[group]:>10} rows")

    passed = sum(r.checks_passed for r in runs)
    failed: dict[str, list[str]] = {}
    for run in runs:
        for severity, names in run.checks_failed.items():
            failed.setdefault(severity, []).extend(names)
    print(
        f"   check results: {passed} passed, {len(set(failed.get('ERROR', [])))} failed (error), "
        f"{len(set(failed.get('WARN', [])))} warned (a check of a daily mart runs once per range of days)"
    )
    for severity in ("ERROR", "WARN"):
        for name in sorted(set(failed.get(severity, [])))[:10]:
            print(f"     {severity.lower():<5} {name}")

    db = settings.clickhouse.database
    anomalies = client.query(
        f"SELECT anomaly_family, anomaly_type, count() FROM `{db}`.fct_anomalies "
        "GROUP BY anomaly_family, anomaly_type ORDER BY anomaly_family, anomaly_type"
    ).result_rows
    total = sum(int(n) for _f, _t, n in anomalies)
    print(f"   anomalies found: {total} (" + ", ".join(f"{t} {n}" for _f, t, n in anomalies) + ")")

    day_row = client.query(f"SELECT max(metric_date) FROM `{db}`.economy_daily_kpis").result_rows
    day = day_row[0][0] if day_row else None
    if day is not None:
        economy = client.query(
            f"SELECT dau, paying_users, revenue, arpdau FROM `{db}`.economy_daily_kpis WHERE metric_date = %(d)s",
            parameters={"d": day},
        ).result_rows[0]
        kpi = client.query(
            f"SELECT event_count, dau FROM `{db}`.kpi_daily WHERE metric_date = %(d)s", parameters={"d": day}
        ).result_rows
        sales = client.query(
            f"SELECT sum(orders), sum(revenue) FROM `{db}`.commerce_daily_sales WHERE order_date = %(d)s",
            parameters={"d": day},
        ).result_rows[0]
        print(f"   headline KPIs for {day} (the latest day):")
        if kpi:
            print(f"     events {kpi[0][0]}, daily active users (all domains, bots out) {kpi[0][1]}")
        print(
            f"     game economy: DAU {economy[0]}, paying users {economy[1]}, shop revenue {economy[2]}, "
            f"ARPDAU {economy[3]}"
        )
        print(f"     commerce: {sales[0]} orders, revenue {sales[1]}")
    clicks = client.query(
        f"SELECT metric_date, total_clicks, unique_sessions, conversion_rate FROM `{db}`.clickstream_daily_metrics "
        "ORDER BY metric_date DESC LIMIT 1"
    ).result_rows
    if clicks:
        d, n, sessions, conversion = clicks[0]
        print(f"     clickstream ({d}, replayed): {n} clicks in {sessions} sessions, conversion {conversion:.1%}")


def publish_live_alerts(settings: Settings, client: Any) -> dict[str, Any]:
    """One pass of the alert publisher (what `eventhouse alerts --once` does): every live anomaly not
    yet published goes to the `alerts` table and the Kafka topic `anomalies`, once. Prints them."""
    from alerting.publisher import AlertPublisher
    from settings import alert_settings

    publisher = AlertPublisher(settings, alert_settings(), client=client)
    try:
        summary = publisher.run(once=True)
    finally:
        publisher.close()
    raw = settings.clickhouse.raw_database
    by_type = client.query(
        f"SELECT anomaly_type, count(), max(published_at) FROM `{raw}`.alerts FINAL GROUP BY anomaly_type "
        "ORDER BY anomaly_type"
    ).result_rows
    total = sum(int(n) for _t, n, _at in by_type)
    print(
        f"   {summary.new_alerts} new alerts published this pass; the alerts table holds {total} ("
        + ", ".join(f"{t} {n}" for t, n, _at in by_type)
        + ")"
    )
    examples = client.query(
        f"SELECT anomaly_type, entity_type, entity_id, window_start, observed_value, threshold_value "
        f"FROM `{raw}`.alerts FINAL ORDER BY anomaly_type, window_start DESC LIMIT 1 BY anomaly_type"
    ).result_rows
    for kind, entity_type, entity, start, observed, threshold in examples:
        when = f"{start:%Y-%m-%d %H:%M:%S}"
        print(f"     {kind:<16} {entity_type} {entity} at {when}: {observed:g} (threshold {threshold:g})")
    if total:
        print("   (the same alerts are on the Kafka topic `anomalies`; `eventhouse alerts` keeps publishing new ones)")
    return summary.as_dict()


def print_archive(runs: list[Any]) -> None:
    """What the archive run wrote: the hour just loaded, as Parquet files per raw table."""
    import dagster as dg

    from settings import archive_url

    key = dg.AssetKey(["archive", "raw_hourly"])
    written = next((run.metadata[key] for run in runs if key in run.metadata), None)
    if written is None:
        return
    rows = written.get("rows") or {}
    files = written.get("files") or []
    tables = ", ".join(f"{table} {n}" for table, n in sorted(rows.items()) if n)
    print(
        f"   archive: {sum(rows.values())} rows loaded this hour written to {len(files)} zstd Parquet files "
        f"under {archive_url()} ({tables}); replay with `eventhouse replay --from-archive`"
    )


def print_serving(stack: EmbeddedStack) -> None:
    """Where the API and the dashboards are, after checking that `eventhouse serve` answers from this
    warehouse (on a free port: `make ui` takes 8000 beside Dagster)."""
    import json
    import urllib.request

    from serving.process import running_server
    from settings import DEFAULT_SERVE_PORT
    from stack.processes import free_port

    # os.environ points at the demo's stack (run_demo set it)
    with running_server(os.environ, free_port(), stack.layout.log_dir / "serve.log") as base:
        with urllib.request.urlopen(base + "/metrics/summary", timeout=10) as answer:
            summary = json.load(answer)
        with urllib.request.urlopen(base + "/api/analytics/stats", timeout=10) as answer:
            orders = json.load(answer)["totalOrders"]
    where = f"http://127.0.0.1:{DEFAULT_SERVE_PORT}"
    print(
        f"   KPI API checked on a spare port ({summary.get('total_clicks')} clicks, {orders} orders served); "
        "`make ui` serves it beside Dagster (or `eventhouse serve`):"
    )
    print(f"     API docs    {where}/docs")
    print(f"     dashboards  {where}/dashboards/  (pipeline, clickstream, game, economy, commerce)")
    print(f"     collector   POST {where}/api/v1/events")
    print("     Dagster UI  http://127.0.0.1:3000")


def already_published(settings: Settings) -> str | None:
    """What this home already holds of the demo's events (messages in Kafka, rows in the raw tables), or None.

    The raw tables collapse a re-delivered event id, but the insert-time realtime aggregates count
    every delivery: publishing the same events again would make them disagree with fct_events. The
    raw tables outlive a stack restart (Kafka here keeps its messages in memory); Kafka alone holds
    them when a first run stopped before loading.
    """
    import clickhouse_connect

    from ingestion.lag import group_lag
    from ingestion.raw_tables import raw_table
    from ingestion.topics import DOMAINS, TOPICS

    client = clickhouse_connect.get_client(**{**settings.clickhouse.client_kwargs(), "database": "default"})
    rows = client.query(
        "SELECT sum(total_rows) FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}",
        parameters={"db": settings.clickhouse.raw_database, "names": [raw_table(d) for d in DOMAINS]},
    ).result_rows[0][0]
    lag = group_lag(settings.kafka, "eventhouse-demo-probe", [spec.name for spec in TOPICS])
    messages = sum(lag.highwater_by_topic().values())
    if not rows and not messages:
        return None
    return f"{messages} messages in Kafka, {int(rows or 0)} rows in the raw tables"


def _logs_to_file(log_path: Path) -> None:
    """Every log record (kafka-python's, Dagster's, dbt's, ours) to `log_path`; the terminal keeps
    the demo's own lines and warnings only."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root_logger = logging.getLogger()
    for handler in root_logger.handlers:
        handler.setLevel(logging.WARNING)
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger.addHandler(file_handler)


def run_demo(stack: EmbeddedStack) -> int:
    started = time.monotonic()
    log_path = stack.layout.home / "logs" / "demo.log"
    _logs_to_file(log_path)
    print(f"== 1/5 starting the embedded stack in {stack.layout.home} (logs: {log_path})", flush=True)
    state = stack.up()
    print(f"   ClickHouse http://127.0.0.1:{state.clickhouse_port}, Kafka 127.0.0.1:{state.kafka_port}")
    os.environ.update(stack_env(state.clickhouse_port, state.kafka_port, stack.layout.home, state.postgres_port))
    settings = load_settings()
    from orchestration.project import prepare_dbt_project

    # dbt parses the project (the manifest Dagster's definitions are built from) while events go to Kafka
    parsing = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbt-parse")
    parsed = parsing.submit(prepare_dbt_project)

    print(
        "== 2/5 the three sources: producers -> Kafka; orders -> PostgreSQL + outbox -> relay -> Kafka; "
        "users, products, leaderboard -> CDC -> Kafka",
        flush=True,
    )
    # Once per home. A second run on the same home shows the same warehouse, rebuilt, rather than
    # the same events delivered again (which the insert-time realtime aggregates would count twice)
    # or a wiped home (which would take along whatever else the user loaded into it).
    held = already_published(settings)
    if held is None:
        produce_demo_events(settings)
    else:
        print(
            f"   not publishing: this home already holds the demo's events ({held}); the same events again "
            "would count twice in the insert-time realtime aggregates.\n"
            f"   For a fresh start: eventhouse stack down --home {stack.layout.home} && rm -rf {stack.layout.home}",
            flush=True,
        )

    print("== 3/5 materialize every asset through Dagster (loader, then dbt with tests as checks)", flush=True)
    import clickhouse_connect
    import dagster as dg

    from orchestration.instance import dagster_home
    from orchestration.materialize import materialize_everything

    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    loaded = time.monotonic()
    parsed.result()  # raises what dbt said if the project does not parse
    parsing.shutdown()
    with warnings.catch_warnings():
        # Dagster's notices that an API we use is in beta: for us, not for a demo's reader
        warnings.simplefilter("ignore", dg.BetaWarning)
        from orchestration.definitions import defs

    print(
        f"   definitions loaded in {time.monotonic() - loaded:.1f} s; run history in {home}",
        flush=True,
    )
    client = clickhouse_connect.get_client(**{**settings.clickhouse.client_kwargs(), "database": "default"})
    terminal = sys.stdout

    def announce(job: str, days: tuple[str, str] | None) -> None:
        what = f" (days {days[0]}..{days[1]})" if days else ""
        terminal.write(f"   running {job}{what} ...\n")
        terminal.flush()

    def finished(run: Any) -> None:
        with contextlib.redirect_stdout(terminal):
            _print_run(run)

    # dbt's and Dagster's own output (hundreds of lines per run) goes to the file too
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), dg.DagsterInstance.get() as instance:
        runs = materialize_everything(
            defs,
            instance,
            client,
            settings.clickhouse.raw_database,
            on_run=finished,
            on_start=announce,
            log_level="WARNING",
        )

    ok = all(run.success for run in runs)
    if ok:
        print("== 4/5 publish the live anomalies as alerts (eventhouse alerts --once)", flush=True)
        publish_live_alerts(settings, client)
        # the alerts asset in the UI shows what was just published
        with open(log_path, "a") as log, contextlib.redirect_stdout(log), dg.DagsterInstance.get() as instance:
            defs.resolve_job_def("observe_sources").execute_in_process(
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                instance=instance,
                raise_on_error=False,
            )
    print("== 5/5 summary", flush=True)
    if ok:
        print_summary(defs, runs, client, settings)
        print_archive(runs)
        print_serving(stack)
    print(
        f"   finished in {time.monotonic() - started:.1f} s; the stack keeps running (stop: eventhouse stack down); "
        "see the runs with `make ui`"
    )
    return 0 if ok else 1
