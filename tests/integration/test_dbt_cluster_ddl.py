"""dbt on a ClickHouse cluster (docs/cluster.md): with EVENTHOUSE_CLICKHOUSE_CLUSTER set, every DDL
statement dbt sends runs ON CLUSTER, and every table it creates has a Replicated* engine.

The embedded server cannot run a cluster (no Keeper, no other servers), so dbt builds the project
against it with a two-shard, two-replica cluster configured, and each statement dbt-clickhouse
sends is recorded exactly as sent; the server runs it rewritten for one server (`single_server`:
without ON CLUSTER, MergeTree for Replicated*MergeTree). That lets every materialization take its
real path with real answers: a first build creates every relation; a second, after more events,
takes the incremental ones (delete+insert, insert_overwrite's REPLACE PARTITION, the tables'
EXCHANGE, the seeds' truncate, the snapshots' upsert); a --full-refresh of a few nodes rebuilds
them. The test then parses each recorded DDL statement with the engine (formatQuery) and checks
it: statements by dbt-clickhouse's macros and by the project's own (macros/cluster.sql) alike.

Run as a module (`python -m tests.integration.test_dbt_cluster_ddl RECORD`), it is that dbt run,
recording into RECORD (one JSON string per line); the test below starts it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from settings import REPO_ROOT

pytestmark = pytest.mark.integration

CLUSTER = "two_shards_two_replicas"

# the statements that change a schema (each must reach every shard and replica), and lightweight
# deletes (each must be in a replicated table)
CHECKED_VERBS = {"CREATE", "DROP", "ALTER", "RENAME", "EXCHANGE", "TRUNCATE", "SYSTEM", "ATTACH", "DETACH", "DELETE"}
BUILD = ["build", "--exclude-resource-type", "test", "--exclude-resource-type", "unit_test"]
# one node of each kind the first two builds leave: rebuilt from scratch, they take the
# materializations' full-refresh paths (an intermediate table, then EXCHANGE)
FULL_REFRESH = ["game_stages", "base_game__events", "fct_sessions", "kpi_daily", "dim_date", "live_stage_clears"]


# --- the recorded dbt run (a subprocess of the test) -----------------------------------------------

_NAME = r"(?:\"[^\"]*\"|`[^`]*`|'[^']*'|\w+)"
_ON_CLUSTER = re.compile(rf"\s+ON\s+CLUSTER\s+{_NAME}", re.IGNORECASE)
_ALL_REPLICAS = re.compile(rf"clusterAllReplicas\(\s*{_NAME}\s*,\s*system\.tables\s*\)", re.IGNORECASE)
_REPLICATED = re.compile(r"\bReplicated(\w*MergeTree)\b")
_LEADING_COMMENTS = re.compile(r"^(?:\s*/\*.*?\*/|\s*--[^\n]*\n)*\s*", re.DOTALL)


def single_server(sql: str) -> str:
    """`sql`, as dbt-clickhouse sends it for a cluster, as one server without a cluster runs it."""
    if _verb(sql) == "SYSTEM":  # SYSTEM SYNC REPLICA: a plain table has no replicas to wait for
        return "SELECT 1"
    sql = _ON_CLUSTER.sub("", sql)
    # the relation listing reads every replica's system.tables; here there is one, shard 1
    sql = _ALL_REPLICAS.sub("(SELECT *, 1 AS _shard_num FROM system.tables)", sql)
    return _REPLICATED.sub(r"\1", sql)


def _record_statements(path: Path) -> None:
    """From now on, every statement a dbt-clickhouse HTTP client sends goes to `path` as sent, and to
    the server as `single_server` makes it."""
    from dbt.adapters.clickhouse.httpclient import ChHttpClient

    lock = threading.Lock()
    out = path.open("a", encoding="utf-8")

    def record(sql: str) -> str:
        with lock:
            out.write(json.dumps(sql) + "\n")
            out.flush()
        return single_server(sql)

    def recording(method):
        def send(self, sql, *args, **kwargs):
            return method(self, record(sql), *args, **kwargs)

        return send

    for name in ("query", "command", "columns_in_query"):
        setattr(ChHttpClient, name, recording(getattr(ChHttpClient, name)))


def _events(day: date, batch: str) -> list[dict]:
    """Events of every domain on `day` and the day before: game and economy from the simulator, a
    few clicks and a purchase in two sessions, an order."""
    from ingestion.contract import make_event
    from ingestion.producers.game_sim import SimulationConfig, simulate

    events = list(simulate(SimulationConfig(users=5, days=2, start=day - timedelta(days=1), seed=len(batch))))
    at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    for session in range(2):
        session_id = f"{batch}-{session}"
        for click in range(3):
            payload = {"item_id": 10 + click, "category": "shoes"}
            ts = at + timedelta(minutes=session * 60 + click)
            events.append(make_event("clickstream.click", f"{session_id}-c{click}", ts, payload, session_id=session_id))
        purchase = {"item_id": 10, "price": 100, "quantity": 1}
        ts = at + timedelta(minutes=session * 60 + 5)
        events.append(make_event("clickstream.purchase", f"{session_id}-p", ts, purchase, session_id=session_id))
    order = {
        "order_id": f"order-{batch}",
        "status": "PENDING",
        "version": 1,
        "amount_cents": 500,
        "product_ids": ["p1"],
        "items": [{"product_id": "p1", "quantity": 1, "price_cents": 500}],
    }
    events.append(make_event("order.created", f"order-{batch}", at, order, user_id="customer_1"))
    return events


def _load(day: date, batch: str) -> None:
    import clickhouse_connect

    from ingestion.raw_writer import RawWriter
    from settings import load_settings

    settings = load_settings()
    client = clickhouse_connect.get_client(**{**settings.clickhouse.client_kwargs(), "database": "default"})
    try:
        RawWriter(client, settings.clickhouse.raw_database, source=batch).add_all(_events(day, batch)).flush()
    finally:
        client.close()


def _recorded_dbt_run(record: Path) -> int:
    """Parse the project once, then build it twice (events loaded before each build) and rebuild a
    few nodes with --full-refresh, every statement recorded."""
    from dbt.cli.main import dbtRunner

    _record_statements(record)
    where = ["--project-dir", str(REPO_ROOT), "--profiles-dir", str(REPO_ROOT)]
    parsed = dbtRunner().invoke(["parse", *where])
    if not parsed.success:
        return 1
    runner = dbtRunner(manifest=parsed.result)
    steps = [
        (date(2026, 11, 2), "first", BUILD),
        (date(2026, 11, 3), "second", BUILD),
        (None, None, [*BUILD, "--full-refresh", "--select", *FULL_REFRESH]),
    ]
    for day, batch, args in steps:
        if day is not None:
            _load(day, batch)
        if not runner.invoke([*args, *where]).success:
            return 1
    return 0


# --- the test --------------------------------------------------------------------------------------


def _verb(sql: str) -> str:
    words = _LEADING_COMMENTS.sub("", sql, count=1).split(None, 1)
    return words[0].upper() if words else ""


def _node(sql: str) -> str | None:
    """The dbt node a statement is for, from dbt's query comment."""
    found = re.search(r'"node_id": "([^"]+)"', sql)
    return found.group(1) if found else None


@dataclass(frozen=True)
class Statement:
    sql: str  # as dbt sent it
    formatted: str  # as the engine parsed it (formatQuery)

    @property
    def node(self) -> str | None:
        return _node(self.sql)


def _parsed(client, sql: str) -> str:
    """`sql` as the engine formats it: a statement it cannot parse raises (SYNTAX_ERROR)."""
    return client.query("SELECT formatQuery({q:String})", parameters={"q": sql}).result_rows[0][0]


_ENGINE = re.compile(r"\bENGINE = (\w+)")
_CREATED = re.compile(r"^CREATE TABLE (?:IF NOT EXISTS )?(\S+)")
# data changes a Replicated* table takes to the other replicas of its shard itself, through Keeper:
# dbt-clickhouse's insert_overwrite (REPLACE PARTITION) and lightweight deletes (delete+insert, and the
# project's pre-hooks); they need no ON CLUSTER, only a replicated table
_REPLICATED_BY_THE_TABLE = re.compile(r"^(?:ALTER TABLE (\S+)\n\s*\(REPLACE PARTITION |DELETE FROM (\S+) )")
# dbt-clickhouse's check, when it connects, that the server can EXCHANGE tables: two throwaway tables
# on the server it talks to, dropped at once (dbclient.py _check_atomic_exchange)
_EXCHANGE_PROBE = re.compile(r"\b__dbt_exchange_test_\d+_\w+")


def violations(statements: list[Statement]) -> list[str]:
    """What in these statements (as formatQuery gives them) would not reach every shard and replica
    of CLUSTER: DDL without ON CLUSTER, a table created with an engine that is not Replicated*, a
    partition replaced or rows deleted in a table not created replicated here."""
    found = []
    on_cluster = re.compile(rf"\bON CLUSTER `?{CLUSTER}`?(\s|$)")
    replicated: set[str] = set()
    for statement in statements:
        text = statement.formatted
        head = text.split("\n", 1)[0]
        if _EXCHANGE_PROBE.search(head):
            continue
        by_the_table = _REPLICATED_BY_THE_TABLE.match(text)
        if by_the_table:
            table = by_the_table.group(1) or by_the_table.group(2)
            if table not in replicated:
                found.append(f"{table} is not a table created replicated: {head}")
            continue
        everywhere = bool(on_cluster.search(text))
        if not everywhere:
            found.append(f"not ON CLUSTER {CLUSTER}: {head}")
        created = _CREATED.match(text)
        engine = _ENGINE.search(text)
        if created and engine:
            name = engine.group(1)
            if "MergeTree" in name and name.startswith("Replicated"):
                if everywhere:
                    replicated.add(created.group(1))
            else:
                found.append(f"engine {name}, not Replicated*MergeTree: {head}")
        elif created and everywhere and re.search(r"\bAS \S+$", head):  # CREATE TABLE ... AS <table>
            replicated.add(created.group(1))
    return found


@dataclass(frozen=True)
class Recorded:
    statements: list[Statement]  # every statement that changes a schema or deletes rows, in order
    manifest: dict  # dbt's manifest.json of the run


@pytest.fixture(scope="module")
def recorded(embedded_stack, tmp_path_factory) -> Iterator[Recorded]:
    from ingestion.raw_tables import ensure_tables

    tmp = tmp_path_factory.mktemp("dbt-cluster")
    database = f"dbt_cluster_{uuid.uuid4().hex[:8]}"
    env = embedded_stack.env
    env.update(
        {
            "EVENTHOUSE_CLICKHOUSE_DATABASE": database,
            "EVENTHOUSE_RAW_DATABASE": f"raw_{database}",
            "EVENTHOUSE_CLICKHOUSE_CLUSTER": CLUSTER,
            "EVENTHOUSE_CLICKHOUSE_DATABASE_ENGINE": "",  # Atomic: dbt-clickhouse's ON CLUSTER form
            "DBT_TARGET_PATH": str(tmp / "target"),
            "DBT_LOG_PATH": str(tmp / "logs"),
        }
    )
    client = embedded_stack.client()
    # the raw tables as one server has them (the loader's cluster DDL is test_raw_tables')
    ensure_tables(client, f"raw_{database}", cluster="")
    record = tmp / "statements.jsonl"
    try:
        run = subprocess.run(
            [sys.executable, "-m", "tests.integration.test_dbt_cluster_ddl", str(record)],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
        sent = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
        checked = [Statement(sql, _parsed(client, sql)) for sql in sent if _verb(sql) in CHECKED_VERBS]
        manifest = json.loads((tmp / "target" / "manifest.json").read_text())
        yield Recorded(checked, manifest)
    finally:
        for name in (database, f"raw_{database}"):
            client.command(f"DROP DATABASE IF EXISTS `{name}`")
        client.close()


def test_every_ddl_statement_parses_and_reaches_every_shard_and_replica(recorded):
    assert violations(recorded.statements) == []
    heads = {re.sub(r"\s+", " ", s.formatted.split("\n", 1)[0]) for s in recorded.statements}

    def some(pattern: str) -> bool:
        return any(re.search(pattern, head) for head in heads)

    # the paths the builds took, each one's statements checked above
    assert some(r"^CREATE DATABASE IF NOT EXISTS \S+ ON CLUSTER ")  # dbt-clickhouse, as it connects
    assert some(r"^CREATE TABLE ") and some(r"^CREATE OR REPLACE VIEW ") and some(r"^CREATE MATERIALIZED VIEW ")
    assert some(r"^EXCHANGE TABLES ") and some(r"^SYSTEM SYNC REPLICA ON CLUSTER ")  # tables rebuilt
    assert some(r"^RENAME TABLE ")  # the incremental full refresh's intermediate table
    assert some(r"^DROP TABLE IF EXISTS ") and some(r"^TRUNCATE TABLE ")  # leftovers; the seeds' reload
    assert some(r"^DELETE FROM ")  # delete+insert, with new rows
    # insert_overwrite of the daily marts, with days touched: on one replica of the shard, which
    # Keeper takes to the others
    assert any("REPLACE PARTITION" in s.formatted for s in recorded.statements)


def test_every_model_seed_and_snapshot_is_created_on_the_cluster(recorded):
    created: dict[str, list[str]] = {}
    for statement in recorded.statements:
        if statement.formatted.startswith(("CREATE TABLE", "CREATE OR REPLACE", "CREATE MATERIALIZED VIEW")):
            created.setdefault(statement.node or "", []).append(statement.formatted)
    nodes = {
        uid: node
        for uid, node in recorded.manifest["nodes"].items()
        if node["resource_type"] in {"model", "seed", "snapshot"} and node["config"]["materialized"] != "ephemeral"
    }
    assert sorted(set(nodes) - set(created)) == []
    # the incremental manifest (the project's own DDL, on-run-start), replicated like the models
    manifest_table = re.compile(r"^CREATE TABLE IF NOT EXISTS \S+\.eventhouse_incremental_manifest ON CLUSTER ")
    created_manifest = [s.formatted for s in recorded.statements if manifest_table.match(s.formatted)]
    assert created_manifest and all("ENGINE = ReplicatedReplacingMergeTree" in s for s in created_manifest)
    # the targets of the raw tables' materialized views keep the loader's deduplication window as
    # replicated tables (dbt-clickhouse sets replicated_deduplication_window to 0 for its tables)
    windowed = {
        uid: node["config"]["settings"]["non_replicated_deduplication_window"]
        for uid, node in nodes.items()
        if "non_replicated_deduplication_window" in (node["config"].get("settings") or {})
    }
    assert windowed
    for uid, window in windowed.items():
        alters = [s.formatted for s in recorded.statements if s.node == uid and s.formatted.startswith("ALTER TABLE")]
        assert any(f"MODIFY SETTING replicated_deduplication_window = {window}" in a for a in alters), uid


def test_the_checks_fail_statements_for_one_server(embedded_stack):
    """The checks above can fail: statements as one server runs them are violations, and one the
    engine cannot parse does not pass."""
    client = embedded_stack.client()

    def check(*sql: str) -> list[str]:
        return [v.split(":")[0] for v in violations([Statement(s, _parsed(client, s)) for s in sql])]

    one_server = "CREATE TABLE db.t (a UInt8) ENGINE = ReplacingMergeTree ORDER BY a"
    assert check(one_server) == [f"not ON CLUSTER {CLUSTER}", "engine ReplacingMergeTree, not Replicated*MergeTree"]
    on_cluster = f"CREATE TABLE db.t ON CLUSTER `{CLUSTER}` (a UInt8) ENGINE = ReplicatedReplacingMergeTree ORDER BY a"
    replace = "ALTER TABLE db.t REPLACE PARTITION ID '20261102' FROM db.t_new"
    assert check(on_cluster, replace, "DELETE FROM db.t WHERE a = 1") == []
    assert check(one_server.replace("Replacing", "ReplicatedReplacing"), replace) == [
        f"not ON CLUSTER {CLUSTER}",
        "db.t is not a table created replicated",
    ]
    assert single_server(on_cluster) == "CREATE TABLE db.t (a UInt8) ENGINE = ReplacingMergeTree ORDER BY a"
    with pytest.raises(Exception, match="SYNTAX_ERROR|Syntax error"):
        _parsed(client, f"CREATE TABLE db.t ON CLUSTER {CLUSTER} ENGINE = ReplicatedMergeTree ORDER BY")
    client.close()


if __name__ == "__main__":
    sys.exit(_recorded_dbt_run(Path(sys.argv[1])))
