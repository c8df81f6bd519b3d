"""Loader throughput end to end (Kafka -> ClickHouse), per process, on the embedded stack.

Produces N events of the four domains (measuring producer throughput), then runs one
`eventhouse load --until-caught-up` process and reports its rows/s, the time split between
consume, parse/validate, encode and insert, insert latency, and its peak RSS.

    python -m bench.loader_throughput [--events 1000000] [--batch-rows 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import embedded_stack, sample_event
from ingestion.publisher import Publisher
from settings import load_settings

BASE = datetime(2024, 4, 1, tzinfo=UTC)


def event(i: int) -> dict:
    return sample_event(i, BASE + timedelta(milliseconds=97 * i))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with embedded_stack("eventhouse-loader-bench-") as env:
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
