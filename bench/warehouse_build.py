"""dbt build times, the hourly refresh and KPI query latency at several sizes, in one run.

The raw tables are filled by ClickHouse itself from a template the Python generators write once
(bench/scale_data.py: copies with their own ids, days and load times, in the loader's row format;
34M events in minutes where the generators alone took ~830 s for 10M). Kafka and the loader are
not involved: this benchmark is about the warehouse (the loader has bench/loader_throughput.py).

For each size, ascending (the raw tables grow; each size's events include the smaller sizes'):

1. grow the raw tables to the size (loaded before the hour the increments go into), and wait for
   ClickHouse's background merges of them to settle;
2. the first build: `dbt build --full-refresh --exclude-resource-type unit_test` on a new warehouse
   database (the previous size's is dropped first: its materialized views too), seeds and
   snapshots included;
3. the refresh as the hourly schedule runs it: `--incremental-events` new events (a new hour's
   sessions, orders and visitors, on the day after the base's last), then `dbt build
   --exclude-resource-type unit_test` with the partition vars of the day they fall on (the hourly
   job passes its day, orchestration/assets/dbt.py; unit tests are CI's);
   (before it, the insert-time tables with a live horizon are emptied: an hour after the base was
   loaded they hold nothing of it, and the first build back-filled them with every raw row);
4. its floor: the same refresh again with no new events;
5. the KPI queries in `analyses/`, compiled by dbt, each run `--query-repeats` times: p50, p95.

Recorded per size: generation time, every build's time, its slowest nodes (run_results.json) and
its test outcomes, the ClickHouse server's peak resident memory in each phase (VmHWM of the
server process, reset before each phase), KPI latencies and the warehouse's row counts.

    python -m bench.warehouse_build [--sizes 1000000,10000000,34000000] [--incremental-events 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect

from bench.common import embedded_stack
from bench.scale_data import ScaledRaw, Timeline, build_template, wait_for_merges
from ingestion.producers.game_sim import SimulationConfig, simulate
from ingestion.producers.orders import OrdersConfig, simulate_orders
from ingestion.producers.yoochoose import ReplaySummary, merged_events, write_sample
from ingestion.raw_tables import ensure_tables
from ingestion.raw_writer import RawWriter
from orchestration.project import dbt_executable
from settings import REPO_ROOT, load_settings
from stack.lifecycle import StackLayout
from stack.processes import read_pid

RAW_DATABASE = "eventhouse_raw"
TEMPLATE_DATABASE = "eventhouse_bench_template"
DEFAULT_SIZES = "1000000,10000000,34000000"
DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "warehouse_build.json"
BUILD = ["build", "--exclude-resource-type", "unit_test"]
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
# issue 18's targets
TARGETS = {
    "refresh_at_10m_s": 30.0,
    "refresh_floor_at_10m_s": 15.0,
    "refresh_ratio_34m_over_1m": 1.5,
    "kpi_p95_at_34m_ms": 25.0,
}


# ---- the Python generators' path (bench/api.py still builds its warehouse with it) ---------------

# Measured on the default simulator runs: events per simulated player-day, per YOOCHOOSE-layout
# sample session, per order.
EVENTS_PER_PLAYER_DAY = 60
EVENTS_PER_SESSION = 6.3
EVENTS_PER_ORDER = 4.7


def clickstream_events(sessions: int, seed: int, name: str, work: Path) -> Iterable[dict]:
    clicks, buys = write_sample(work / name, sessions=sessions, seed=seed)
    # event ids come from (file name, line): distinct names keep two generated files distinct
    clicks = clicks.rename(clicks.with_name(f"{name}-clicks.dat"))
    buys = buys.rename(buys.with_name(f"{name}-buys.dat"))
    return merged_events(clicks, buys, ReplaySummary())


def generate(writer: RawWriter, events: int, work: Path) -> dict[str, int]:
    """About `events` events from the generators themselves (~12k events/s of Python)."""
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
    """A later week of players (week 0: the week after generate's data) and new clickstream sessions."""
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


# ---- the benchmark ----------------------------------------------------------------------------


class ServerMemory:
    """Peak resident memory of the embedded ClickHouse server process (VmHWM in /proc), per phase.

    Writing 5 to /proc/<pid>/clear_refs resets the peak (Linux 4.0+), so each phase's peak is its own."""

    def __init__(self, env: dict[str, str]):
        self.pid = read_pid(StackLayout(Path(env["EVENTHOUSE_HOME"])).run_dir / "clickhouse.pid")

    def _status_kb(self, field: str) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
        except (OSError, ValueError, TypeError):
            return None
        return None

    def reset(self) -> None:
        with contextlib.suppress(OSError):  # (the peak then runs from the server's start)
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak_mb(self) -> float | None:
        kb = self._status_kb("VmHWM")
        return round(kb / 1024, 1) if kb is not None else None


def expire_live_tables(client: Any, database: str) -> list[str]:
    """Empty the insert-time tables that keep rows for `live_anomaly_horizon_hours` (their TTL on
    inserted_at): the state an hour after the base was loaded, as in steady operation, where they
    hold the last hour. The first build back-fills them from every raw row with the build's time as
    insert time, which would make the live views (and their tests) evaluate the whole history."""
    tables = [
        name
        for (name,) in client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree'"
            " AND engine_full LIKE '%TTL%inserted_at%' ORDER BY name",
            parameters={"db": database},
        ).result_rows
    ]
    for name in tables:
        client.command(f"TRUNCATE TABLE `{database}`.`{name}`")
    return tables


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
        raise SystemExit(f"dbt {' '.join(args)} failed:\n{result.stdout[-6000:]}")
    return time.perf_counter() - started


def run_results(work: Path, top: int = 10) -> dict[str, Any]:
    """The last dbt run's slowest nodes (dbt runs up to 4 at once) and its outcomes by status."""
    results = json.loads((work / "target" / "run_results.json").read_text())["results"]
    ranked = sorted(results, key=lambda r: r["execution_time"], reverse=True)[:top]
    return {
        "slowest_nodes_s": {r["unique_id"].split(".", 2)[-1]: round(r["execution_time"], 1) for r in ranked},
        "statuses": dict(Counter(r["status"] for r in results)),
        "warnings": sorted(r["unique_id"].split(".", 2)[-1] for r in results if r["status"] == "warn"),
    }


def timed_build(args: list[str], env: dict[str, str], work: Path, memory: ServerMemory) -> dict[str, Any]:
    memory.reset()
    seconds = dbt(args, env)
    return {"s": round(seconds, 1), **run_results(work), "server_peak_rss_mb": memory.peak_mb()}


def kpi_latencies(warehouse: Any, compiled: Path, repeats: int) -> dict[str, dict[str, float]]:
    queries = {}
    for name in KPI_QUERIES:
        sql = (compiled / f"{name}.sql").read_text()
        timings = []
        rows: list = []
        for _ in range(repeats):
            began = time.perf_counter()
            rows = warehouse.query(sql).result_rows
            timings.append((time.perf_counter() - began) * 1000)
        timings.sort()
        queries[name] = {
            "rows": len(rows),
            "p50_ms": round(statistics.median(timings), 1),
            "p95_ms": round(timings[max(0, int(len(timings) * 0.95) - 1)], 1),
        }
    return queries


def row_counts(warehouse: Any) -> dict[str, int]:
    # count(), not system.tables.total_rows: rows removed by delete+insert's lightweight
    # deletes stay in total_rows until a merge rewrites their parts
    tables = warehouse.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree' ORDER BY name"
    ).result_rows
    return {name: int(warehouse.command(f"SELECT count() FROM `{name}`")) for (name,) in tables}


def flagged_kpi_days(warehouse: Any) -> dict[str, list[str]]:
    """The days kpi_anomalies flags, per KPI: what the (warn) kpi_anomaly tests point at."""
    rows = warehouse.query(
        "SELECT kpi_name, groupArray(toString(metric_date)) FROM "
        "(SELECT kpi_name, metric_date FROM kpi_anomalies WHERE is_anomaly ORDER BY metric_date) GROUP BY kpi_name"
    ).result_rows
    return {name: list(days) for name, days in rows}


def target_checks(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 18's targets, for the sizes this run measured (None where a size was not measured)."""
    by_size = {entry["events"]: entry for entry in sizes}
    ten, one, big = by_size.get(10_000_000), by_size.get(1_000_000), by_size.get(34_000_000)
    checks: dict[str, Any] = {"targets": TARGETS}
    if ten:
        checks["refresh_at_10m_s"] = ten["refresh"]["s"]
        checks["refresh_floor_at_10m_s"] = ten["refresh_floor"]["s"]
    if one and big:
        checks["refresh_ratio_34m_over_1m"] = round(big["refresh"]["s"] / one["refresh"]["s"], 2)
    if big:
        checks["kpi_p95_at_34m_ms"] = max(q["p95_ms"] for q in big["kpi_queries"].values())
    if len(sizes) >= 2:
        checks["refresh_ratio_largest_over_smallest"] = round(sizes[-1]["refresh"]["s"] / sizes[0]["refresh"]["s"], 2)
    checks["met"] = {name: checks[name] <= limit for name, limit in TARGETS.items() if checks.get(name) is not None}
    return checks


def summary_table(report: dict[str, Any]) -> str:
    header = (
        f"{'events':>12} {'generate s':>10} {'merges s':>8} {'first build s':>13} {'refresh s':>9} "
        f"{'floor s':>7} {'KPI p95 max ms':>14} {'peak RSS MB':>11}"
    )
    lines = [header, "-" * len(header)]
    for entry in report["sizes"]:
        peaks = [
            entry["generate"]["server_peak_rss_mb"],
            entry["first_build"]["server_peak_rss_mb"],
            entry["refresh"]["server_peak_rss_mb"],
            entry["refresh_floor"]["server_peak_rss_mb"],
        ]
        peak = max((p for p in peaks if p is not None), default=None)
        lines.append(
            f"{entry['events']:>12,} {entry['generate']['s']:>10.1f} {entry['generate']['merges_settled_s']:>8.1f} "
            f"{entry['first_build']['s']:>13.1f} {entry['refresh']['s']:>9.1f} {entry['refresh_floor']['s']:>7.1f} "
            f"{max(q['p95_ms'] for q in entry['kpi_queries'].values()):>14.1f} {peak if peak is not None else '-':>11}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="raw events before each size's increment")
    parser.add_argument("--incremental-events", type=int, default=100_000)
    parser.add_argument("--template-events", type=int, default=300_000, help="events the generators write once")
    parser.add_argument("--query-repeats", type=int, default=30)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    sizes = sorted({int(size) for size in args.sizes.split(",") if size.strip()})

    work = Path(tempfile.mkdtemp(prefix="eventhouse-warehouse-bench-"))
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "incremental_events": args.incremental_events,
        "sizes": [],
    }
    with embedded_stack("eventhouse-warehouse-bench-") as env:
        env["DBT_TARGET_PATH"] = str(work / "target")
        env["DBT_LOG_PATH"] = str(work / "logs")
        env["EVENTHOUSE_RAW_DATABASE"] = RAW_DATABASE
        settings = load_settings(env)
        client = clickhouse_connect.get_client(
            **{**settings.clickhouse.client_kwargs(), "database": "default"}, send_receive_timeout=3600
        )
        warehouse_database = settings.clickhouse.database
        memory = ServerMemory(env)

        started = time.perf_counter()
        template = build_template(client, TEMPLATE_DATABASE, args.template_events, work)
        report["template"] = {
            "events": template.rows,
            "by_domain": template.rows_by_domain,
            "generated_from": template.generated_from,
            "generate_s": round(time.perf_counter() - started, 1),
        }
        print(f"template: {template.rows} events in {report['template']['generate_s']} s", flush=True)

        ensure_tables(client, RAW_DATABASE)
        timeline = Timeline.ending(len(sizes), args.incremental_events)
        report["timeline"] = {
            "anchor": timeline.anchor.isoformat(),
            "events_per_hour": timeline.events_per_hour,
            "base_last_day": timeline.base_last_day.isoformat(),
            "increment_day": timeline.increment_day.isoformat(),
        }
        scaled = ScaledRaw(client, template, RAW_DATABASE, timeline)
        day = timeline.increment_day.isoformat()
        refresh = [*BUILD, "--vars", json.dumps({"partition_start_date": day, "partition_end_date": day})]
        compiled = work / "target" / "compiled" / "eventhouse" / "analyses"

        for size in sizes:
            entry: dict[str, Any] = {"events": size}
            # a first build makes a new warehouse: drop the last size's (with its materialized views,
            # which would otherwise also process the growth)
            client.command(f"DROP DATABASE IF EXISTS `{warehouse_database}`")
            memory.reset()
            started = time.perf_counter()
            added = scaled.grow_base(size - scaled.rows)
            generate_s = time.perf_counter() - started
            merges_s = wait_for_merges(client, RAW_DATABASE)
            entry["generate"] = {
                "events_added": added,
                "s": round(generate_s, 1),
                "events_per_s": round(added / generate_s) if added else None,
                "merges_settled_s": round(merges_s, 1),
                "server_peak_rss_mb": memory.peak_mb(),
            }
            print(f"{size:,} events: added {added:,} in {generate_s:.1f} s (+{merges_s:.1f} s merges)", flush=True)

            entry["first_build"] = timed_build([*BUILD, "--full-refresh"], env, work, memory)
            print(f"  first build {entry['first_build']['s']} s", flush=True)
            entry["live_tables_expired"] = expire_live_tables(client, warehouse_database)

            entry["incremental_events"] = scaled.add_increment(args.incremental_events)
            entry["refresh"] = timed_build(refresh, env, work, memory)
            print(f"  refresh after {entry['incremental_events']:,} events {entry['refresh']['s']} s", flush=True)
            entry["refresh_floor"] = timed_build(refresh, env, work, memory)
            print(f"  refresh with no new events {entry['refresh_floor']['s']} s", flush=True)

            dbt(["compile", "--select", *KPI_QUERIES], env)
            warehouse = clickhouse_connect.get_client(**settings.clickhouse.client_kwargs())
            entry["kpi_queries"] = kpi_latencies(warehouse, compiled, args.query_repeats)
            entry["kpi_anomaly_days"] = flagged_kpi_days(warehouse)
            entry["table_row_counts"] = row_counts(warehouse)
            entry["raw_events"] = scaled.rows
            report["sizes"].append(entry)
            report["checks"] = target_checks(report["sizes"])
            args.json.write_text(json.dumps(report, indent=2) + "\n")  # after each size: a partial run counts

    print(json.dumps(report["checks"], indent=2))
    print(summary_table(report))
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
