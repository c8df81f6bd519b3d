"""The KPI API at scale: each endpoint's latency on a 10M-event warehouse, then 100 Locust users.

Builds the warehouse as bench/warehouse_build.py does (its generators, written into the raw tables
in the loader's row format, then the dbt models without tests), starts `eventhouse serve`, and:

1. requests every GET endpoint of the OpenAPI schema `--repeats` times in turn (one client, so
   each number is the endpoint's own latency: HTTP + FastAPI + ClickHouse), p50 and p95;
   `/anomalies/live` with a one-minute window right after 100k new events were inserted (what
   it evaluates is the entities inserted within its window), and once over the whole bulk load;
2. runs Locust headless (bench/locustfile.py): `--users` users for `--seconds` s, reading the
   endpoints with about a second between requests; requests/s, p50/p95/p99 and failures.

    python -m bench.api [--events 10000000] [--repeats 50] [--users 100] [--seconds 60] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import clickhouse_connect
import httpx

from bench.common import embedded_stack
from bench.warehouse_build import RAW_DATABASE, dbt, generate, generate_increment
from eventhouse.demo import DBT_PREPARE_STEPS
from ingestion.raw_tables import ensure_tables
from ingestion.raw_writer import RawWriter
from serving.process import running_server
from settings import REPO_ROOT, load_settings
from stack.processes import free_port

# /anomalies/live evaluates the entities inserted within its window: the minute after a fresh
# increment, not the bulk load of every base event minutes earlier (see live_window)
LIVE_PATH = "/anomalies/live?minutes=1"


def endpoint_paths(api: httpx.Client, day: str, session: str) -> list[str]:
    """Every GET path of the API's schema, with a day that has data and a session with anomalies."""
    paths = []
    for path, operations in api.get("/openapi.json").json()["paths"].items():
        if "get" not in operations:
            continue
        paths.append(path.replace("{date}", day).replace("{session_id}", session))
    return sorted(LIVE_PATH if p == "/anomalies/live" else p for p in paths)


def live_window(api: httpx.Client, writer: RawWriter, events: int, work: Path, repeats: int) -> dict:
    """/anomalies/live right after `events` new events were inserted (they are its whole window),
    and with the window over every base event (the bulk load, all inserted within the hour)."""
    inserted = generate_increment(writer, events, work, week=0)
    recent = latencies(api, [LIVE_PATH], repeats)[LIVE_PATH]
    whole = latencies(api, ["/anomalies/live?minutes=60"], 3)["/anomalies/live?minutes=60"]
    return {"inserted_just_before": inserted, "minutes_1": recent, "minutes_60_all_base_events": whole}


def percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * share))]


def latencies(api: httpx.Client, paths: list[str], repeats: int) -> dict[str, dict]:
    timings: dict[str, list[float]] = {p: [] for p in paths}
    statuses: dict[str, set[int]] = {p: set() for p in paths}
    for _ in range(repeats):  # rounds over every endpoint: a slow moment hits all of them alike
        for path in paths:
            started = time.perf_counter()
            answer = api.get(path)
            timings[path].append((time.perf_counter() - started) * 1000)
            statuses[path].add(answer.status_code)
    out = {}
    for path, values in timings.items():
        values.sort()
        out[path] = {
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
            "statuses": sorted(statuses[path]),
        }
    return out


def locust(base: str, users: int, seconds: int, days: list[str], work: Path) -> dict:
    prefix = work / "locust"
    env = {**os.environ, "EVENTHOUSE_BENCH_DAYS": ",".join(days)}
    subprocess.run(
        [
            str(Path(sys.executable).with_name("locust")),
            "-f",
            str(REPO_ROOT / "bench" / "locustfile.py"),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(max(1, users // 10)),
            "--run-time",
            f"{seconds}s",
            "--host",
            base,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        check=False,  # locust exits 1 when a request failed: the failures are in the report
        capture_output=True,
    )
    with open(f"{prefix}_stats.csv") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    total = rows["Aggregated"]
    slowest = sorted(
        ((name, float(row["95%"])) for name, row in rows.items() if name != "Aggregated"),
        key=lambda item: item[1],
        reverse=True,
    )[:5]
    return {
        "users": users,
        "seconds": seconds,
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "requests_per_s": round(float(total["Requests/s"]), 1),
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
        "slowest_p95_ms": dict(slowest),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="eventhouse-api-bench-"))
    with embedded_stack("eventhouse-api-bench-") as env:
        env["DBT_TARGET_PATH"] = str(work / "target")
        env["DBT_LOG_PATH"] = str(work / "logs")
        settings = load_settings(env)
        client = clickhouse_connect.get_client(
            **{**settings.clickhouse.client_kwargs(), "database": "default"}, send_receive_timeout=3600
        )
        ensure_tables(client, RAW_DATABASE)
        started = time.perf_counter()
        writer = RawWriter(client, RAW_DATABASE, source="bench")
        generated = generate(writer, args.events, work)
        print(f"generated {generated['events']} events in {time.perf_counter() - started:.0f} s", flush=True)
        for step in DBT_PREPARE_STEPS:
            dbt(step, env)
        build_s = dbt(["run"], env)
        print(f"dbt run {build_s:.0f} s", flush=True)
        warehouse = clickhouse_connect.get_client(**settings.clickhouse.client_kwargs())
        days = [str(d) for (d,) in warehouse.query("SELECT metric_date FROM clickstream_daily_metrics").result_rows]
        session = warehouse.command(
            "SELECT entity_id FROM fct_anomalies WHERE entity_type = 'session' ORDER BY window_start LIMIT 1"
        ) or warehouse.command("SELECT entity_id FROM fct_anomalies LIMIT 1")
        with (
            running_server(env, free_port(), work / "serve.log") as base,
            httpx.Client(base_url=base, timeout=60) as api,
        ):
            paths = endpoint_paths(api, days[len(days) // 2], str(session))
            latencies(api, paths, 2)  # warm-up: connections, the server's first queries
            live = live_window(api, writer, 100_000, work, 20)
            by_endpoint = latencies(api, paths, args.repeats)
            load = locust(base, args.users, args.seconds, days, work)
    worst = max(by_endpoint.items(), key=lambda item: item[1]["p95_ms"])
    print(f"live: {live}", flush=True)
    report = {
        "events": generated["events"],
        "endpoints": len(by_endpoint),
        "repeats": args.repeats,
        "worst_endpoint_p95": {"path": worst[0], **worst[1]},
        "by_endpoint": by_endpoint,
        "live": live,
        "locust": load,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
