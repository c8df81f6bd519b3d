"""Embedded server vs in-process chDB: what the HTTP hop costs.

Measures, in one run and alternating the two ways so machine noise hits both:
- a 1M-row, 8-column insert (clickhouse-connect `insert_df` of a pandas DataFrame),
- a GROUP BY over those rows,
- tiny-query round trips (`SELECT 1`) through the server,
- the statement guard (stack/sql_guard.py): round trips of distinct statements (each a cache
  miss), the guard's own cost per statement in-process (miss and cache hit, for a plain read,
  the loader's insert head and a dbt-style CREATE ... AS SELECT), and the server's cache hit
  rate over the whole run (from its log).
Both ways serialize with clickhouse-connect's Native encoder; the in-process client
uses `interface="chdb"` (temp file + INSERT FROM INFILE), the server path uses HTTP.

    python -m bench.server_overhead [--rows 1000000] [--repeats 5] [--tiny 2000] [--distinct 500]
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

import chdb
import clickhouse_connect
import numpy as np
import pandas as pd

from stack.clickhouse_server import HandleGuardEngine
from stack.lifecycle import EmbeddedStack
from stack.processes import free_port
from stack.sql_guard import GuardPolicy, StatementGuard

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


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": 1000 * ordered[len(ordered) // 2],
        "p95": 1000 * ordered[int(len(ordered) * 0.95)],
        "p99": 1000 * ordered[int(len(ordered) * 0.99)],
    }


# (name, statement, insert_head): what the guard sees most.
GUARDED = [
    ("plain read", "SELECT event_type, count() FROM default.events WHERE user_id = 42 GROUP BY event_type", False),
    (
        "loader insert head",
        "INSERT INTO `eventhouse_raw`.`raw_game_events` (`event_id`, `payload`)\nFORMAT Native",
        True,
    ),
    (
        "dbt create as select",
        '/* {"app": "dbt"} */ create table `eventhouse`.`fct__dbt_tmp` engine = MergeTree() order by (`id`) '
        "as (select `id`, count() as `n` from `eventhouse`.`stg` group by `id`) settings join_use_nulls = 1",
        False,
    ),
]


def guard_costs(path: Path, misses: int, hits: int) -> dict[str, dict[str, float]]:
    """The guard's cost per statement in-process: a miss (engine round trips) and a cache hit."""
    handle = chdb.connect(str(path))
    engine = HandleGuardEngine(handle)
    guard = StatementGuard(GuardPolicy(path / "user_files"))
    costs = {}
    try:
        for name, sql, head in GUARDED:
            # A trailing comment makes each statement new to the cache without changing what it is.
            miss = [
                timed(lambda s=f"{sql} -- {i}", h=head: guard.check(engine, s, {}, insert_head=h))
                for i in range(misses)
            ]
            hit = [timed(lambda s=sql, h=head: guard.check(engine, s, {}, insert_head=h)) for _ in range(hits)]
            costs[name] = {"miss_ms_p50": percentiles_ms(miss)["p50"], "hit_us_p50": 1000 * percentiles_ms(hit)["p50"]}
    finally:
        handle.close()
    return costs


def server_guard_stats(log: Path) -> dict[str, float]:
    """The guard's counters, logged by the server when it stops."""
    marker = "statement guard: "
    lines = [line for line in log.read_text().splitlines() if marker in line]
    return json.loads(lines[-1].split(marker, 1)[1]) if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=500, help="round trips of never-seen statements")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="eventhouse-bench-"))
    stack = EmbeddedStack(work / "stack", free_port(), free_port(), postgres_port=free_port())
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
        tiny = [timed(lambda: server.command("SELECT 1")) for _ in range(args.tiny)]
        # Each text is new to the server: the guard asks the engine (EXPLAIN AST) every time.
        distinct = [timed(lambda i=i: server.command(f"SELECT {i} + 1")) for i in range(args.distinct)]
        guard = guard_costs(work / "inproc", misses=200, hits=2000)
    finally:
        stack.down()
        guard_stats = server_guard_stats(stack.layout.log_dir / "clickhouse.log")
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
        "tiny_query_ms": percentiles_ms(tiny),
        "distinct_query_ms": percentiles_ms(distinct),
        "guard_in_process": guard,
        "guard_server_stats": guard_stats,
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
    d = report["distinct_query_ms"]
    print(
        f"| distinct tiny queries ({args.distinct}, guard misses) | p50 {d['p50']:.2f} ms, p95 {d['p95']:.2f} ms | | |"
    )
    for name, cost in guard.items():
        print(f"| guard, {name} | miss {cost['miss_ms_p50']:.2f} ms, hit {cost['hit_us_p50']:.1f} us | | |")
    print(f"| guard cache on the server over this run | {json.dumps(guard_stats)} | | |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
