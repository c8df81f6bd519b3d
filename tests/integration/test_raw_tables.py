"""Raw tables: event_id is the identity across event type and day, and old tables are migrated to it."""

from __future__ import annotations

import pytest

from ingestion.raw_tables import RAW_COLUMNS, ensure_tables

pytestmark = pytest.mark.integration

COLUMNS = ", ".join(RAW_COLUMNS)


def _insert(client, table: str, *rows: str) -> None:
    # One insert, one part, nothing collapsed on insert: no background merge can change a plain count().
    client.command(f"INSERT INTO {table} ({COLUMNS}) SETTINGS optimize_on_insert = 0 VALUES {', '.join(rows)}")


def _row(event_id: str, event_type: str, ts: str, ingested_at: str, offset: int) -> str:
    payload = '{"item_id": 1, "price": 1.5, "quantity": 1}'
    return (
        f"('{event_id}', '{event_type}', 1, NULL, 's1', 'test', 'h', '{ts}', '{ingested_at}', NULL, '{event_id}', "
        f"'{payload}', 'clickstream', 0, {offset}, 'tid')"
    )


def test_deliveries_of_one_event_id_collapse_whatever_their_type_or_day(client, database):
    ensure_tables(client, database)
    table = f"{database}.raw_clickstream_events"
    _insert(
        client,
        table,
        _row("e1", "clickstream.click", "2014-04-01 10:00:00", "2014-04-01 10:00:01", 1),
        _row("e1", "clickstream.purchase", "2014-05-02 09:00:00", "2014-05-02 09:00:01", 2),
        _row("e2", "clickstream.click", "2014-04-01 10:00:00", "2014-04-01 10:00:01", 3),
    )
    assert client.command(f"SELECT count() FROM {table}") == 3  # deliveries
    rows = client.query(f"SELECT event_id, event_type, toDate(ts) FROM {table} FINAL ORDER BY event_id").result_rows
    # e1's latest delivery (by ingested_at) is the event: a purchase on another day and month.
    assert [(r[0], r[1], str(r[2])) for r in rows] == [
        ("e1", "clickstream.purchase", "2014-05-02"),
        ("e2", "clickstream.click", "2014-04-01"),
    ]


def test_a_table_of_the_old_layout_is_rebuilt_once_and_views_reading_it_keep_counting(client, database):
    old = f"{database}.raw_clickstream_events"
    client.command(
        f"""CREATE TABLE {old} (
            event_id String, event_type LowCardinality(String), schema_version UInt16,
            user_id Nullable(String), session_id Nullable(String), source_service LowCardinality(String),
            source_host LowCardinality(String), ts DateTime64(3, 'UTC'), ingested_at DateTime64(3, 'UTC'),
            loaded_at DateTime64(3, 'UTC') DEFAULT now64(3), sequence Nullable(UInt64), dedupe_key String,
            payload String, kafka_topic LowCardinality(String), kafka_partition UInt16, kafka_offset UInt64,
            kafka_topic_id LowCardinality(String)
        ) ENGINE = ReplacingMergeTree(ingested_at) PARTITION BY toYYYYMM(ts)
        ORDER BY (event_type, toDate(ts), event_id)"""
    )
    client.command(f"CREATE TABLE {database}.deliveries (n UInt64) ENGINE = SummingMergeTree ORDER BY tuple()")
    client.command(
        f"CREATE MATERIALIZED VIEW {database}.count_deliveries TO {database}.deliveries "
        f"AS SELECT count() AS n FROM {old}"
    )
    rows = [
        _row("e1", "clickstream.click", "2014-04-01 10:00:00", "2014-04-01 10:00:01", 1),
        _row("e1", "clickstream.purchase", "2014-05-02 09:00:00", "2014-05-02 09:00:01", 2),
        _row("e2", "clickstream.click", "2014-04-01 10:00:00", "2014-04-01 10:00:01", 3),
    ]
    _insert(client, old, *rows)
    loaded_before = client.query(f"SELECT event_id, loaded_at FROM {old} ORDER BY kafka_offset").result_rows
    assert client.command(f"SELECT count() FROM {old} FINAL") == 3  # the old key keeps e1 twice

    ensure_tables(client, database)

    key = client.command(
        f"SELECT sorting_key, partition_key FROM system.tables WHERE database = '{database}' "
        "AND name = 'raw_clickstream_events'"
    )
    assert key == ["event_id", ""]
    # Every row moved, loaded_at kept; FINAL now collapses e1; the view did not count the copy.
    assert client.query(f"SELECT event_id, loaded_at FROM {old} ORDER BY kafka_offset").result_rows == loaded_before
    assert client.command(f"SELECT count() FROM {old} FINAL") == 2
    assert client.command(f"SELECT sum(n) FROM {database}.deliveries") == 3
    assert client.command(f"EXISTS TABLE {database}.raw_clickstream_events__identity_migration") == 0
    # The view still reads the table by name: a new delivery is counted once.
    _insert(client, old, _row("e3", "clickstream.click", "2014-04-03 10:00:00", "2014-04-03 10:00:01", 4))
    assert client.command(f"SELECT sum(n) FROM {database}.deliveries") == 4
    # A second call finds nothing to migrate.
    ensure_tables(client, database)
    assert client.command(f"SELECT count() FROM {old} FINAL") == 3


def test_on_a_cluster_every_statement_parses_with_on_cluster_and_replicated_engines(client, database):
    """EVENTHOUSE_CLICKHOUSE_CLUSTER: the embedded server cannot run a cluster, so each statement the
    loader would run on a two-shard, two-replica cluster is parsed by the engine (formatQuery)."""
    from ingestion.cluster_ddl import for_cluster
    from ingestion.raw_tables import create_statements, ttl_statement

    cluster = "two_shards_two_replicas"
    statements = create_statements(database, 400, cluster)
    statements += [for_cluster(ttl_statement(database, "raw_game_events", days), cluster) for days in (30, 0)]
    # one per table, and the database, the dead letters' column and the TTL changes
    creates = [s for s in statements if "CREATE TABLE" in s]
    assert len(creates) == 4 + 1 + 1 + 3  # raw events, dead letters, batch log, CDC tables
    for statement in statements:
        formatted = client.command("SELECT formatQuery({q:String})", parameters={"q": statement})
        assert f"ON CLUSTER {cluster}" in formatted, formatted
        assert "non_replicated" not in formatted
    for statement in creates:
        formatted = client.command("SELECT formatQuery({q:String})", parameters={"q": statement})
        assert "ENGINE = Replicated" in formatted and "MergeTree" in formatted, formatted
    # without a cluster, the same statements as the loader runs on one server (which it just did)
    ensure_tables(client, database, cluster="")
    engines = client.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String}", parameters={"db": database}
    ).result_rows
    assert len(engines) == len(creates) and all("Replicated" not in engine for _, engine in engines)
