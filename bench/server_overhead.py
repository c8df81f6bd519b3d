"""Embedded server vs in-process chDB: what the HTTP hop costs.

Measures, in one run and alternating the two ways so machine noise hits both:
- a 1M-row, 8-column insert (clickhouse-connect `insert_df` of a pandas DataFrame),
- a GROUP BY over those rows,
- tiny-query round trips (`SELECT 1`) through the server.
Both ways serialize with clickhouse-connect's Native encoder; the in-process client
uses `interface="chdb"` (temp file + INSERT FROM INFILE), the server path uses HTTP.

    python -m bench.server_overhead [--rows 1000000] [--repeats 5] [--tiny 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import clickhouse_connect
import numpy as np
import pandas as pd

from stack.lifecycle import EmbeddedStack
from stack.processes import free_port

DDL = """
CREATE TABLE {table} (
    event_id UInt64, user_id UInt32, session_id UInt64, item_id UInt32,
    event_type LowCardinality(String), price Float64, quantity UInt16, ts DateTime64(3)
) ENGINE = MergeTree ORDER BY (event_type, user_id, ts)
"""
COLUMNS = ["event_id", "user_id", "session_id", "item_id", "event_type", "price", "quantity", "ts"]
GROUP_BY = (
    "SELECT event_type, toDate(ts) AS day, count(), uniqExact(user_id), sum(price * quantity) "
    "FROM {table} GROUP BY event_type, day ORDER BY event_type, day"
)


def make_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    start = np.datetime64("2024-04-01T00:00:00.000")
    columns = [
        np.arange(rows, dtype=np.uint64),
        rng.integers(0, 50_000, rows, dtype=np.uint32),
        rng.integers(0, 200_000, rows, dtype=np.uint64),
        rng.integers(0, 20_000, rows, dtype=np.uint32),
        rng.choice(np.array(["click", "view", "buy", "cart"], dtype=object), rows),
        rng.random(rows) * 100,
        rng.integers(1, 5, rows, dtype=np.uint16),
        start + rng.integers(0, 30 * 86_400_000, rows).astype("timedelta64[ms]"),
    ]
    return pd.DataFrame(dict(zip(COLUMNS, columns, strict=True)))


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="eventhouse-bench-"))
    stack = EmbeddedStack(work / "stack", free_port(), free_port())
    state = stack.up()
    try:
        server = clickhouse_connect.get_client(host="127.0.0.1", port=state.clickhouse_port, compress=False)
        inproc = clickhouse_connect.get_client(interface="chdb", path=str(work / "inproc"))
        frame = make_frame(args.rows)
        keys = ("insert_server", "insert_chdb", "group_server", "group_chdb")
        results: dict[str, list[float]] = {k: [] for k in keys}
        for repeat in range(args.repeats):
            # Alternate which way goes first so drift on a noisy machine hits both.
            ways = [("server", server), ("chdb", inproc)]
            for way, client in ways if repeat % 2 == 0 else ways[::-1]:
                table = f"default.bench_{way}_{repeat}"
                client.command(DDL.format(table=table))
                results[f"insert_{way}"].append(timed(lambda c=client, t=table: c.insert_df(t, frame)))
                assert client.command(f"SELECT count() FROM {table}") == args.rows
                results[f"group_{way}"].append(timed(lambda c=client, t=table: c.query(GROUP_BY.format(table=t))))
                client.command(f"DROP TABLE {table}")
        tiny = []
        for _ in range(args.tiny):
            started = time.perf_counter()
            server.command("SELECT 1")
            tiny.append(time.perf_counter() - started)
        tiny.sort()
    finally:
        stack.down()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    report = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "rows": args.rows,
        "repeats": args.repeats,
        "median_s": med,
        "insert_overhead_pct": 100 * (med["insert_server"] / med["insert_chdb"] - 1),
        "group_by_overhead_pct": 100 * (med["group_server"] / med["group_chdb"] - 1),
        "insert_rows_per_s_server": args.rows / med["insert_server"],
        "tiny_query_ms": {
            "p50": 1000 * tiny[len(tiny) // 2],
            "p95": 1000 * tiny[int(len(tiny) * 0.95)],
            "p99": 1000 * tiny[int(len(tiny) * 0.99)],
        },
    }
    print(json.dumps(report, indent=2))
    print()
    title = f"measure ({args.rows:,} rows x 8 columns, median of {args.repeats})"
    print(f"| {title} | embedded server | in-process chDB | ratio |")
    print("|---|---|---|---|")
    for label, key in (("insert", "insert"), ("GROUP BY", "group")):
        s, c = med[f"{key}_server"], med[f"{key}_chdb"]
        print(f"| {label} | {s:.3f} s | {c:.3f} s | {s / c:.2f} ({100 * (s / c - 1):+.1f}%) |")
    t = report["tiny_query_ms"]
    print(f"| tiny query `SELECT 1` ({args.tiny} round trips) | p50 {t['p50']:.2f} ms, p95 {t['p95']:.2f} ms | | |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
