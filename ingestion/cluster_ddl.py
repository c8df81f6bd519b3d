"""The loader's DDL on a ClickHouse cluster: `ON CLUSTER` and Replicated* engines.

With EVENTHOUSE_CLICKHOUSE_CLUSTER set, every statement the loader runs to create or change its
tables (ingestion/raw_tables.py `ensure_tables`) is rewritten here, in one place:

- `CREATE DATABASE|TABLE IF NOT EXISTS <name>` and `ALTER TABLE <name>` get `ON CLUSTER <cluster>`,
  so one statement reaches every shard and replica;
- `<X>MergeTree(args)` becomes `Replicated<X>MergeTree(args)`: the replicas of a shard copy each
  other's inserts. Without path arguments the server's `default_replica_path` /
  `default_replica_name` apply (`/clickhouse/tables/{uuid}/{shard}`, `{replica}` by default);
- `non_replicated_deduplication_window` becomes `replicated_deduplication_window`: the loader's
  exactly-once inserts rely on insert deduplication, which replicated tables keep in Keeper.

The statements are ours, in a fixed shape, so a rewrite is safe; tests parse every rewritten
statement with the engine (`formatQuery`). Reads need no `Distributed` table as long as each
loader writes to the shard it reads from; see README "Beyond one machine".
"""

from __future__ import annotations

import re

_CREATE = re.compile(r"^(\s*CREATE (?:DATABASE|TABLE) IF NOT EXISTS \S+)", re.MULTILINE)
_ALTER = re.compile(r"^(\s*ALTER TABLE \S+)")
_ENGINE = re.compile(r"\bENGINE = (?!Replicated)(\w*MergeTree)\b")
_DEDUP = re.compile(r"\bnon_replicated_deduplication_window\b")


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def for_cluster(statement: str, cluster: str | None) -> str:
    """`statement` as it runs on `cluster` (unchanged when None)."""
    if not cluster:
        return statement
    on = f" ON CLUSTER {quote_identifier(cluster)}"
    rendered, created = _CREATE.subn(lambda m: m.group(1) + on, statement, count=1)
    if not created:
        rendered, altered = _ALTER.subn(lambda m: m.group(1) + on, statement, count=1)
        if not altered:
            raise ValueError(f"no cluster form for: {statement.strip().splitlines()[0]}")
    rendered = _ENGINE.sub(lambda m: f"ENGINE = Replicated{m.group(1)}", rendered)
    return _DEDUP.sub("replicated_deduplication_window", rendered)
