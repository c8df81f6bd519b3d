"""dbt build times and KPI query latency at scale, on the embedded stack.

Generates events with the game/economy simulator, the YOOCHOOSE-layout sample generator and
the order simulator, and writes them into the raw tables in exactly the loader's row format
(`encode_raw_row`) without going through Kafka: this benchmark is about the warehouse, and the
loader's own throughput is measured in `bench/loader_throughput.py`. Then:

1. `dbt build` on the fresh database (seeds, every model, data and unit tests): full build;
2. `--incremental-events` more events (a later week of players, new clickstream sessions), then
   `dbt build` again: the incremental build (with the lookback windows at 0: the base events were
   loaded only minutes earlier, which in steady operation would be an earlier run's window);
3. the KPI queries in `analyses/`, compiled by dbt, each run `--query-repeats` times: p50, p95.

    python -m bench.warehouse_build [--events 10000000] [--incremental-events 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import clickhouse_connect

from bench.common import embedded_stack
from eventhouse.demo import DBT_PREPARE_STEPS
from ingestion.producers.game_sim import SimulationConfig, simulate
from ingestion.producers.orders import OrdersConfig, simulate_orders
from ingestion.producers.yoochoose import ReplaySummary, merged_events, write_sample
from ingestion.raw_tables import ensure_tables
from ingestion.raw_writer import RawWriter
from orchestration.project import dbt_executable
from settings import REPO_ROOT, load_settings

RAW_DATABASE = "eventhouse_raw"
# Measured on the default simulator runs: events per simulated player-day, per YOOCHOOSE-layout
# sample session, per order.
EVENTS_PER_PLAYER_DAY = 60
EVENTS_PER_SESSION = 6.3
EVENTS_PER_ORDER = 4.7
KPI_QUERIES = [
    "kpi_clickstream_daily_metrics",
    "kpi_clickstream_funnel",
    "kpi_clickstream_top_items",
    "kpi_active_users_7d",
    "kpi_claim_conversion",
    "kpi_whales",
    "kpi_anomalies_last_7_days",
    "kpi_stage_difficulty_live",
]


def clickstream_events(sessions: int, seed: int, name: str, work: Path) -> Iterable[dict]:
    clicks, buys = write_sample(work / name, sessions=sessions, seed=seed)
    # event ids come from (file name, line): distinct names keep two generated files distinct
    clicks = clicks.rename(clicks.with_name(f"{name}-clicks.dat"))
    buys = buys.rename(buys.with_name(f"{name}-buys.dat"))
    return merged_events(clicks, buys, ReplaySummary())


def generate(writer: RawWriter, events: int, work: Path) -> dict[str, int]:
    players = max(1, round(events * 0.55 / (EVENTS_PER_PLAYER_DAY * 28)))
    sessions = max(1, round(events * 0.40 / EVENTS_PER_SESSION))
    orders = max(1, round(events * 0.05 / EVENTS_PER_ORDER))
    before = writer.written
    for event in simulate(SimulationConfig(users=players, days=28, start=date(2026, 10, 1), seed=101)):
        writer.add(event)
    for event in clickstream_events(sessions, 2015, "base", work):
        writer.add(event)
    for event in simulate_orders(OrdersConfig(orders=orders, users=max(1, orders // 4), days=28, seed=103)):
        writer.add(event)
    writer.flush()
    return {"players": players, "clickstream_sessions": sessions, "orders": orders, "events": writer.written - before}


def generate_increment(writer: RawWriter, events: int, work: Path, week: int = 0) -> int:
    """A later week of players (week 0: the week after the base data) and new clickstream sessions."""
    before = writer.written
    players = max(1, round(events * 0.6 / (EVENTS_PER_PLAYER_DAY * 7)))
    start = increment_start(week)
    for event in simulate(SimulationConfig(users=players, days=7, start=start, seed=202 + week)):
        writer.add(event)
    sessions = max(1, round(events * 0.4 / EVENTS_PER_SESSION))
    for event in clickstream_events(sessions, 4030 + week, f"increment{week or ''}", work):
        writer.add(event)
    writer.flush()
    return writer.written - before


def increment_start(week: int) -> date:
    return date(2026, 10, 1) + timedelta(days=28 + 7 * week)


def dbt(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [dbt_executable(), *args, "--project-dir", str(REPO_ROOT), "--profiles-dir", str(REPO_ROOT)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"dbt {' '.join(args)} failed:\n{result.stdout[-4000:]}")
    return time.perf_counter() - started


def slowest_nodes(work: Path, top: int = 10) -> dict[str, float]:
    """The dbt nodes of the last run that took longest (dbt runs up to 4 at once)."""
    results = json.loads((work / "target" / "run_results.json").read_text())["results"]
    ranked = sorted(results, key=lambda r: r["execution_time"], reverse=True)[:top]
    return {r["unique_id"].split(".", 2)[-1]: round(r["execution_time"], 1) for r in ranked}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--incremental-events", type=int, default=100_000)
    parser.add_argument("--query-repeats", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="eventhouse-warehouse-bench-"))
    with embedded_stack("eventhouse-warehouse-bench-") as env:
        env["DBT_TARGET_PATH"] = str(work / "target")
        env["DBT_LOG_PATH"] = str(work / "logs")
        settings = load_settings(env)
        client = clickhouse_connect.get_client(
            **{**settings.clickhouse.client_kwargs(), "database": "default"}, send_receive_timeout=3600
        )
        ensure_tables(client, RAW_DATABASE)
        writer = RawWriter(client, RAW_DATABASE, source="bench")

        started = time.perf_counter()
        generated = generate(writer, args.events, work)
        generate_s = time.perf_counter() - started
        print(f"generated and inserted {generated['events']} events in {generate_s:.0f} s", flush=True)

        prepare_s = sum(dbt(step, env) for step in DBT_PREPARE_STEPS)
        full_s = dbt(["build"], env)
        full_slowest = slowest_nodes(work)
        print(f"full dbt build {full_s:.1f} s", flush=True)

        increment = generate_increment(writer, args.incremental_events, work)
        # All base events were loaded minutes ago, inside the default lookback windows (15 min),
        # which would make the incremental run redo them; runs an hour apart would not see them.
        no_lookback = "{sessionization_lookback_minutes: 0, fct_events_lookback_minutes: 0}"
        incremental_s = dbt(["build", "--vars", no_lookback], env)
        incremental_slowest = slowest_nodes(work)
        print(f"incremental dbt build after {increment} events {incremental_s:.1f} s", flush=True)

        # What the Dagster schedules run: the daily marts recompute only the new week's days (the
        # partition vars), everything else as before. The replayed clickstream sessions of the
        # increment fall on other days, which a partition run leaves to a backfill.
        increment2 = generate_increment(writer, args.incremental_events, work, week=1)
        first_day = increment_start(1)
        partition_vars = (
            "{sessionization_lookback_minutes: 0, fct_events_lookback_minutes: 0, "
            f"partition_start_date: '{first_day}', partition_end_date: '{first_day + timedelta(days=6)}'}}"
        )
        partitioned_s = dbt(["build", "--vars", partition_vars], env)
        partitioned_slowest = slowest_nodes(work)
        print(f"incremental dbt build of one week's partitions after {increment2} events {partitioned_s:.1f} s")

        dbt(["compile", "--select", *KPI_QUERIES], env)
        compiled = work / "target" / "compiled" / "eventhouse" / "analyses"
        warehouse = clickhouse_connect.get_client(**settings.clickhouse.client_kwargs())
        queries = {}
        for name in KPI_QUERIES:
            sql = (compiled / f"{name}.sql").read_text()
            timings = []
            for _ in range(args.query_repeats):
                began = time.perf_counter()
                rows = warehouse.query(sql).result_rows
                timings.append((time.perf_counter() - began) * 1000)
            timings.sort()
            queries[name] = {
                "rows": len(rows),
                "p50_ms": round(statistics.median(timings), 1),
                "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 1),
            }
        # count(), not system.tables.total_rows: rows removed by delete+insert's lightweight
        # deletes stay in total_rows until a merge rewrites their parts
        tables = warehouse.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND engine LIKE '%MergeTree' ORDER BY name"
        ).result_rows
        sizes = {name: int(warehouse.command(f"SELECT count() FROM `{name}`")) for (name,) in tables}

    report = {
        "events": generated["events"],
        "generated_from": generated,
        "generate_and_insert_s": round(generate_s, 1),
        "dbt_prepare_s": round(prepare_s, 1),
        "dbt_build_full_s": round(full_s, 1),
        "incremental_events": increment,
        "dbt_build_incremental_s": round(incremental_s, 1),
        "full_build_slowest_nodes_s": full_slowest,
        "incremental_build_slowest_nodes_s": incremental_slowest,
        "partitioned_incremental_events": increment2,
        "dbt_build_incremental_one_week_partitions_s": round(partitioned_s, 1),
        "partitioned_incremental_build_slowest_nodes_s": partitioned_slowest,
        "kpi_queries": queries,
        "table_row_counts": sizes,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
