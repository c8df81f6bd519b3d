"""Outbox-to-Kafka latency at a steady rate of order changes (issue 17's benchmark; target p95 <= 2 s).

Each round starts a fresh embedded stack, one `eventhouse relay` and a plain consumer on the
`orders` topic, then `eventhouse produce orders --via-outbox --rate R` for about `--seconds`. Per
outbox row, two latencies, both from the row's insert in its change's transaction (`created_at`,
clock_timestamp(); the commit follows within a millisecond or two):

- to marked: `published_at` - `created_at`, read from PostgreSQL. The relay marks a batch after the
  broker acknowledged every message of it (acks=all), so this bounds commit-to-ack from above.
- to consumed: when the consumer (this process, same clock) received the message - `created_at`.

On a busy machine the writer may not reach `--rate`: the rate it reached is reported beside the
latencies. Each round also measures the relay alone: a backlog of `--backlog` changes written with
no relay running, then drained by `eventhouse relay --once` (rows/s).

    python -m bench.outbox [--rate 1000] [--seconds 30] [--repeats 3] [--connections 4] [--backlog 30000]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.common import embedded_stack
from settings import REPO_ROOT

CHANGES_PER_ORDER = 4.6  # the simulator's average over a week (created, status changes, deletes)


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "eventhouse.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(-(-int(q * 100) * len(ordered) // 100), 1)  # nearest rank
    return ordered[rank - 1]


class Receipts(threading.Thread):
    """A plain consumer on `orders` from the start: event_id -> when it was received (epoch seconds)."""

    def __init__(self, bootstrap: str):
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.received: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            "orders",
            bootstrap_servers=[self.bootstrap],
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        try:
            while not self.stopping.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    now = time.time()
                    for record in records:
                        self.received.setdefault(orjson.loads(record.value)["event_id"], now)
        finally:
            consumer.close()


def one_round(rate: float, seconds: float, connections: int) -> dict[str, Any]:
    with embedded_stack("eventhouse-bench-outbox-") as env:
        dsn = env["EVENTHOUSE_POSTGRES_DSN"]
        relay = _cli(env, "relay")
        # the relay is ready when it listens (autocommit: pg_stat_activity is a snapshot per transaction)
        with psycopg.connect(dsn, autocommit=True) as conn:

            def listening() -> bool:
                query = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
                return conn.execute(query).fetchone()[0] > 0

            deadline = time.monotonic() + 60
            while not listening():
                if relay.poll() is not None or time.monotonic() > deadline:
                    relay.kill()
                    raise SystemExit(f"the relay did not start: {relay.communicate()[1][-2000:]}")
                time.sleep(0.1)
        receipts = Receipts(env["EVENTHOUSE_KAFKA_BOOTSTRAP"])
        receipts.start()
        orders = int(rate * seconds / CHANGES_PER_ORDER)
        writer = _cli(
            env,
            *("produce", "orders", "--via-outbox", "--orders", str(orders), "--days", "7"),
            *("--rate", str(rate), "--connections", str(connections)),
        )
        out, err = writer.communicate(timeout=seconds * 10 + 120)
        if writer.returncode != 0:
            raise SystemExit(f"the writer failed: {err[-3000:]}")
        written = json.loads(out[out.index("{") :])
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]:
                if time.monotonic() > deadline:
                    raise SystemExit("the relay did not drain the outbox within 120 s")
                time.sleep(0.2)
            rows = conn.execute(
                "SELECT id::text, extract(epoch FROM created_at)::float8, "
                "extract(epoch FROM published_at - created_at)::float8 FROM outbox"
            ).fetchall()
        deadline = time.monotonic() + 60
        while len(receipts.received) < len(rows) and time.monotonic() < deadline:
            time.sleep(0.2)
        receipts.stopping.set()
        receipts.join(timeout=10)
        relay.send_signal(signal.SIGTERM)
        relay_out, _ = relay.communicate(timeout=60)
        relayed = json.loads(relay_out[relay_out.index("{") :])
    to_marked = [lag for _, _, lag in rows]
    to_consumed = [receipts.received[i] - created for i, created, _ in rows if i in receipts.received]
    return {
        "changes": written["committed"],
        "writer_changes_per_s": written["changes_per_s"],
        "relay_batches": relayed["batches"],
        "relay_retries": relayed["retries"],
        "marked_p50_s": round(_percentile(to_marked, 0.50), 4),
        "marked_p95_s": round(_percentile(to_marked, 0.95), 4),
        "marked_max_s": round(max(to_marked), 4),
        "consumed": len(to_consumed),
        "consumed_p50_s": round(_percentile(to_consumed, 0.50), 4) if to_consumed else None,
        "consumed_p95_s": round(_percentile(to_consumed, 0.95), 4) if to_consumed else None,
    }


def backlog_drain(changes: int, connections: int) -> dict[str, Any]:
    """The relay's throughput on its own: `changes` written unpaced with no relay running, then one
    `eventhouse relay --once` drains them (its own time, connecting and creating topics included)."""
    with embedded_stack("eventhouse-bench-outbox-backlog-") as env:
        writer = _cli(
            env,
            *("produce", "orders", "--via-outbox", "--orders", str(int(changes / CHANGES_PER_ORDER)), "--days", "7"),
            *("--connections", str(connections)),
        )
        out, err = writer.communicate(timeout=900)
        if writer.returncode != 0:
            raise SystemExit(f"the writer failed: {err[-3000:]}")
        written = json.loads(out[out.index("{") :])
        relay = _cli(env, "relay", "--once")
        out, err = relay.communicate(timeout=900)
        if relay.returncode != 0:
            raise SystemExit(f"the relay failed: {err[-3000:]}")
        drained = json.loads(out[out.index("{") :])
    return {
        "backlog": written["committed"],
        "writer_unpaced_changes_per_s": written["changes_per_s"],
        "relay_seconds": drained["seconds"],
        "relay_rows_per_s": round(drained["published"] / drained["seconds"], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="order changes per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4, help="the writer's connections")
    parser.add_argument("--backlog", type=int, default=30_000, help="changes in the backlog the relay drains")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    # SIGTERM (a timeout) unwinds like Ctrl-C, so each round's stack is stopped, not left running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rounds = []
    for n in range(args.repeats):
        result = one_round(args.rate, args.seconds, args.connections)
        print(f"round {n + 1}: {json.dumps(result)}", flush=True)
        result.update(backlog_drain(args.backlog, args.connections))
        print(f"round {n + 1} backlog: {json.dumps(result)}", flush=True)
        rounds.append(result)
    keys = [k for k in rounds[0] if isinstance(rounds[0][k], int | float)]
    medians = {k: statistics.median(r[k] for r in rounds if r[k] is not None) for k in keys}
    summary = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
        "rate": args.rate,
        "seconds": args.seconds,
        "connections": args.connections,
        "rounds": rounds,
        "medians": medians,
        "target": "p95 commit-to-Kafka <= 2 s at 1,000 changes/s",
    }
    print(json.dumps(summary["medians"], indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
