"""Loader throughput end to end (Kafka -> ClickHouse), per process, on the embedded stack.

Produces N events of the four domains (measuring producer throughput), then runs one
`eventhouse load --until-caught-up` process and reports its rows/s, the time split between
consume, parse/validate, encode and insert, insert latency, and its peak RSS.

    python -m bench.loader_throughput [--events 1000000] [--batch-rows 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eventhouse.config import load_settings, stack_env
from ingestion.contract import make_event
from ingestion.publisher import Publisher
from stack.lifecycle import EmbeddedStack
from stack.processes import free_port

BASE = datetime(2024, 4, 1, tzinfo=UTC)


def event(i: int) -> dict:
    ts = BASE + timedelta(milliseconds=97 * i)
    kind = i % 4
    if kind == 0:
        payload = {"item_id": i % 5000, "category": "S"}
        return make_event("clickstream.click", f"c{i}", ts, payload, session_id=f"s{i % 9000}")
    if kind == 1:
        payload = {"chapter": 1 + i % 5, "stage": 1 + i % 10, "mode": "story", "clear_time_ms": 4000 + i % 9000}
        payload["score"] = 900
        return make_event("game.stage_clear", f"g{i}", ts, payload, user_id=f"u{i % 3000}", session_id=f"gs{i % 7000}")
    if kind == 2:
        return make_event("reward.granted", f"r{i}", ts, {"delta_gold": 10, "balance": i}, user_id=f"u{i % 3000}")
    payload = {"order_id": f"o{i}", "status": "PENDING", "version": 1, "amount_cents": 1999}
    return make_event("order.created", f"o{i}", ts, payload, user_id=f"u{i % 3000}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="eventhouse-loader-bench-"))
    stack = EmbeddedStack(work, free_port(), free_port())
    state = stack.up()
    env = dict(os.environ)
    env.update(stack_env(state.clickhouse_port, state.kafka_port, work))
    try:
        publisher = Publisher(load_settings(env).kafka, client_id="bench-producer")
        started = time.perf_counter()
        for i in range(args.events):
            publisher.publish(event(i))
        publisher.close()
        produce_s = time.perf_counter() - started

        started = time.perf_counter()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "eventhouse.cli",
                "load",
                "--until-caught-up",
                "--batch-rows",
                str(args.batch_rows),
                "--batch-bytes",
                str(64 << 20),
                "--batch-seconds",
                "5",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        load_wall_s = time.perf_counter() - started
        peak_rss_mb = (
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        )  # the loader: the only child waited for
        summary = json.loads(result.stdout[result.stdout.index("{") :])
    finally:
        stack.down()
        shutil.rmtree(work, ignore_errors=True)

    split = summary["time_split_s"]
    report = {
        "events": args.events,
        "producer_events_per_s": round(args.events / produce_s),
        "loader_rows_loaded": summary["rows_loaded"],
        "loader_wall_s": round(load_wall_s, 2),
        "loader_events_per_s_wall": round(args.events / load_wall_s),
        "loader_events_per_s_loop": summary["rows_per_s"],
        "loader_events_per_s_after_group_join": summary["rows_per_s_since_first_message"],
        "time_split_s": split,
        "insert_ms_p50": summary["insert_ms_p50"],
        "insert_ms_p95": summary["insert_ms_p95"],
        "median_batch_size": summary["median_batch_size"],
        "peak_rss_mb": round(peak_rss_mb, 1),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
