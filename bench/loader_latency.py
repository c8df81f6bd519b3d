"""Event-to-raw-table latency at a steady rate, on the embedded stack.

A loader process with its default batching (5k rows / 1 MB / 1.5 s) runs while a producer
publishes events stamped with the current time at a steady rate. Latency is measured in
ClickHouse: `loaded_at` (set by the server when the insert lands) minus the event's `ts`,
split into broker time (`ingested_at`, set by the loader on receipt, minus `ts`) and the
loader's batching + insert time (`loaded_at - ingested_at`).

    python -m bench.loader_latency [--rate 10000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect

from bench.common import embedded_stack, sample_event
from ingestion.contract import format_ts
from ingestion.publisher import Publisher
from ingestion.raw_tables import raw_table
from ingestion.topics import DOMAINS, message_key, topic_for
from settings import load_settings

WARMUP_EVENTS = 400


def loaded_rows(client, database: str, prefix: str) -> int:
    union = " UNION ALL ".join(
        f"SELECT count() AS n FROM `{database}`.`{raw_table(d)}` WHERE startsWith(event_id, '{prefix}')"
        for d in DOMAINS
    )
    return int(client.query(f"SELECT sum(n) FROM ({union})").result_rows[0][0])


def wait_for(client, database: str, prefix: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            seen = loaded_rows(client, database, prefix)
        except Exception:  # noqa: BLE001 - tables appear when the loader starts
            seen = 0
        if seen >= expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.25)


PLACEHOLDER_TS = datetime(2000, 1, 1, tzinfo=UTC)


def prepared_messages(count: int, prefix: str) -> list[tuple[str, bytes | None, bytes]]:
    """(topic, key, value) per event, serialised ahead so the timed loop only stamps `ts`."""
    messages = []
    for i in range(count):
        event = sample_event(i, PLACEHOLDER_TS, prefix)
        spec = topic_for(event["event_type"])
        # (json, not orjson: a kept orjson buffer holds far more memory than its length)
        messages.append((spec.name, message_key(spec, event), json.dumps(event, separators=(",", ":")).encode()))
    return messages


def publish_steadily(publisher: Publisher, rate: int, seconds: float, prefix: str) -> tuple[int, float]:
    """Publish at `rate` events/s for `seconds`, each stamped with the time it is sent."""
    messages = prepared_messages(int(rate * seconds), prefix)
    placeholder = format_ts(PLACEHOLDER_TS).encode()
    started = time.monotonic()
    sent = 0
    behind_max = 0.0
    while (elapsed := time.monotonic() - started) < seconds:
        due = min(int(elapsed * rate), len(messages))
        behind_max = max(behind_max, (due - sent) / rate)
        now = format_ts(datetime.now(UTC)).encode()
        while sent < due:
            topic, key, value = messages[sent]
            publisher.publish_raw(topic, value.replace(placeholder, now, 1), key)
            sent += 1
        time.sleep(0.002)
    publisher.flush()
    return sent, behind_max


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=10_000, help="events per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--loader-args", default="", help="extra `eventhouse load` flags, e.g. '--batch-seconds 1'")
    args = parser.parse_args()

    with embedded_stack("eventhouse-latency-bench-") as env:
        settings = load_settings(env)
        database = env.get("EVENTHOUSE_RAW_DATABASE", "eventhouse_raw")
        client = clickhouse_connect.get_client(**settings.clickhouse.client_kwargs())
        publisher = Publisher(settings.kafka, client_id="bench-latency-producer")
        loader = subprocess.Popen(
            [sys.executable, "-m", "eventhouse.cli", "load", *args.loader_args.split()],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            # Warm up: the loader has joined its group and written once before we time anything.
            for i in range(WARMUP_EVENTS):
                publisher.publish(sample_event(i, datetime.now(UTC), "warm-"))
            publisher.flush()
            if wait_for(client, database, "warm-", WARMUP_EVENTS, 60) < WARMUP_EVENTS:
                raise SystemExit("the loader did not load the warm-up events within 60 s")

            sent, behind_max = publish_steadily(publisher, args.rate, args.seconds, "lat-")
            produced_s = args.seconds
            loaded = wait_for(client, database, "lat-", sent, 60)
        finally:
            publisher.close()
            loader.send_signal(signal.SIGTERM)
            out, _ = loader.communicate(timeout=60)

        union = " UNION ALL ".join(
            f"SELECT ts, ingested_at, loaded_at FROM `{database}`.`{raw_table(d)}` WHERE startsWith(event_id, 'lat-')"
            for d in DOMAINS
        )
        row = client.query(
            f"""
            SELECT
                quantilesExact(0.5, 0.95, 0.99)(dateDiff('millisecond', ts, loaded_at)),
                max(dateDiff('millisecond', ts, loaded_at)),
                quantilesExact(0.5, 0.95)(dateDiff('millisecond', ts, ingested_at)),
                quantilesExact(0.5, 0.95)(dateDiff('millisecond', ingested_at, loaded_at))
            FROM ({union})
            """
        ).result_rows[0]
        summary = json.loads(out[out.index("{") :])

    end_to_end, worst, broker, loader_part = row
    report = {
        "target_rate_events_per_s": args.rate,
        "achieved_rate_events_per_s": round(sent / produced_s),
        "producer_max_behind_s": round(behind_max, 3),
        "events": sent,
        "events_loaded": loaded,
        "latency_ms": {"p50": end_to_end[0], "p95": end_to_end[1], "p99": end_to_end[2], "max": worst},
        "ts_to_loader_receipt_ms": {"p50": broker[0], "p95": broker[1]},
        "loader_receipt_to_table_ms": {"p50": loader_part[0], "p95": loader_part[1]},
        "loader_insert_ms_p50": summary["insert_ms_p50"],
        "loader_insert_ms_p95": summary["insert_ms_p95"],
        "loader_median_batch_size": summary["median_batch_size"],
        "loader_args": args.loader_args,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
