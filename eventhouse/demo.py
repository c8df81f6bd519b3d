"""`eventhouse demo` (what `make demo` runs): the main job end to end on the embedded stack.

For now the main job is the dbt build of the warehouse; ingestion and Dagster join it
as their issues land.
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
    print(f"== 1/3 starting the embedded stack in {stack.layout.home}", flush=True)
    state = stack.up()
    print(f"   ClickHouse http://127.0.0.1:{state.clickhouse_port}, Kafka 127.0.0.1:{state.kafka_port}")

    env = dict(os.environ)
    env.update(stack_env(state.clickhouse_port, state.kafka_port, stack.layout.home))
    print("== 2/3 dbt build (seeds, models, tests)", flush=True)
    results = run_dbt(["build"], env)

    print("== 3/3 summary", flush=True)
    by_status: dict[str, int] = {}
    for result in results.get("results", []):
        by_status[result["status"]] = by_status.get(result["status"], 0) + 1
    print("   dbt nodes by status: " + ", ".join(f"{k}={v}" for k, v in sorted(by_status.items())))

    import clickhouse_connect

    settings = load_settings({**os.environ, **env})
    client = clickhouse_connect.get_client(**settings.clickhouse.client_kwargs())
    rows = client.query(
        "SELECT name, engine, total_rows FROM system.tables WHERE database = {db:String} ORDER BY name",
        parameters={"db": settings.clickhouse.database},
    ).result_rows
    print(f"   relations in database `{settings.clickhouse.database}`:")
    for name, engine, total_rows in rows:
        count = total_rows if total_rows is not None else client.command(f"SELECT count() FROM `{name}`")
        print(f"     {name:<40} {engine:<12} {count:>10} rows")
    print(f"   finished in {time.monotonic() - started:.1f} s; the stack keeps running (stop: eventhouse stack down)")
    return int(results["exit_code"])
