"""`eventhouse demo` (what `make demo` runs): the main job end to end on the embedded stack.

For now: replay the generated YOOCHOOSE-layout sample, simulate game/economy players (bots
included) and commerce orders into Kafka, load them into the raw tables with the
exactly-once loader, then build the warehouse with dbt. Dagster takes
this over with the orchestration issue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from eventhouse.config import REPO_ROOT, load_settings, stack_env
from stack.lifecycle import EmbeddedStack

# What a database needs before its first `dbt build`: seeds, and the incremental models (with
# what they read) created empty, because unit tests of an incremental model read the columns
# of `this`. Harmless on a database that has them already.
DBT_PREPARE_STEPS: list[list[str]] = [
    ["seed"],
    ["run", "--empty", "--select", "+config.materialized:incremental"],
]


def dbt_executable() -> str:
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def run_dbt(args: list[str], env: dict[str, str]) -> dict[str, object]:
    """Run dbt with its own progress on the terminal; return the parsed run_results.json."""
    command = [dbt_executable(), *args, "--project-dir", str(REPO_ROOT), "--profiles-dir", str(REPO_ROOT)]
    code = subprocess.call(command, env=env, cwd=REPO_ROOT)
    results_path = REPO_ROOT / "target" / "run_results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"results": []}
    results["exit_code"] = code
    return results


def run_demo(stack: EmbeddedStack) -> int:
    started = time.monotonic()
    print(f"== 1/4 starting the embedded stack in {stack.layout.home}", flush=True)
    state = stack.up()
    print(f"   ClickHouse http://127.0.0.1:{state.clickhouse_port}, Kafka 127.0.0.1:{state.kafka_port}")

    env = dict(os.environ)
    env.update(stack_env(state.clickhouse_port, state.kafka_port, stack.layout.home))
    settings = load_settings({**os.environ, **env})

    print("== 2/4 produce the demo events into Kafka and load them into ClickHouse", flush=True)
    from ingestion.loader import Loader, LoaderConfig
    from ingestion.producers.delivery import ProduceSummary, publish_all
    from ingestion.producers.game_sim import SimulationConfig, simulate
    from ingestion.producers.orders import OrdersConfig, simulate_orders
    from ingestion.producers.yoochoose import replay
    from ingestion.publisher import Publisher

    samples = REPO_ROOT / "ingestion" / "samples"
    publisher = Publisher(settings.kafka, client_id="demo-producer")
    try:
        replayed = replay(publisher, samples / "yoochoose-clicks.dat", samples / "yoochoose-buys.dat")
        print(f"   clickstream: replayed {replayed.produced} events ({replayed.rejected} lines rejected)")
        game = ProduceSummary()
        publish_all(simulate(SimulationConfig(), game), publisher.publish, game, "game + economy events")
        print(f"   game + economy: {game.produced} events from {SimulationConfig().users} simulated players")
        orders = ProduceSummary()
        publish_all(simulate_orders(OrdersConfig(), orders), publisher.publish, orders, "order events")
        print(f"   orders: {orders.produced} events for {OrdersConfig().orders} orders")
    finally:
        publisher.close()
    loader_config = LoaderConfig(until_caught_up=True, max_seconds=300, group_id="eventhouse-demo")
    loaded = Loader(settings, loader_config).run().summary()
    print(
        f"   loaded {loaded['rows_loaded']} rows, {loaded['dead_letters']} dead letters, "
        f"{loaded['duplicates_collapsed']} duplicates collapsed"
    )

    print("== 3/4 dbt build (seeds, models, tests)", flush=True)
    for step in DBT_PREPARE_STEPS:
        run_dbt(step, env)
    results = run_dbt(["build"], env)

    print("== 4/4 summary", flush=True)
    by_status: dict[str, int] = {}
    for result in results.get("results", []):
        by_status[result["status"]] = by_status.get(result["status"], 0) + 1
    print("   dbt nodes by status: " + ", ".join(f"{k}={v}" for k, v in sorted(by_status.items())))

    import clickhouse_connect

    client = clickhouse_connect.get_client(**settings.clickhouse.client_kwargs())
    rows = client.query(
        "SELECT name, engine, total_rows FROM system.tables WHERE database = {db:String} ORDER BY name",
        parameters={"db": settings.clickhouse.database},
    ).result_rows
    print(f"   relations in database `{settings.clickhouse.database}`:")
    for name, engine, total_rows in rows:
        count = total_rows if total_rows is not None else client.command(f"SELECT count() FROM `{name}`")
        print(f"     {name:<40} {engine:<12} {count:>10} rows")
    raw_counts = client.query(
        "SELECT name, total_rows FROM system.tables WHERE database = {db:String} ORDER BY name",
        parameters={"db": loader_config.raw_database},
    ).result_rows
    print(f"   raw tables in `{loader_config.raw_database}`:")
    for name, total_rows in raw_counts:
        print(f"     {name:<40} {total_rows or 0:>10} rows")
    print(f"   finished in {time.monotonic() - started:.1f} s; the stack keeps running (stop: eventhouse stack down)")
    return int(results["exit_code"])
