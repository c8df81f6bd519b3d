"""Raw tables' TTL counts from ingest time (loaded_at), per table, and an old TTL on ts is replaced."""

from __future__ import annotations

import pytest

from ingestion.raw_tables import RAW_COLUMNS, ensure_tables, ttl_expression

pytestmark = pytest.mark.integration


def _ttl(client, database: str, table: str) -> str:
    return client.command(
        "SELECT extract(engine_full, 'TTL (.+) SETTINGS') FROM system.tables WHERE database = {db:String}"
        " AND name = {t:String}",
        parameters={"db": database, "t": table},
    )


def test_a_row_loaded_longer_ago_than_the_ttl_is_removed(client, database, monkeypatch):
    monkeypatch.setenv("EVENTHOUSE_RAW_TTL_DAYS_RAW_GAME_EVENTS", "1")
    ensure_tables(client, database)
    table = f"`{database}`.raw_game_events"
    assert _ttl(client, database, "raw_game_events") == "toDateTime(loaded_at) + toIntervalDay(1)"
    assert _ttl(client, database, "raw_orders_events") == ttl_expression(400)
    columns = ", ".join([*RAW_COLUMNS, "loaded_at"])
    # both events happened years ago (ts); only their loaded_at differs: 2 days ago and now
    rows = [
        f"('{event_id}', 'game.heartbeat', 1, 'u1', 's1', 'test', 'h', '2014-04-01 10:00:00', '2014-04-01 10:00:01',"
        f" NULL, '{event_id}', '{{}}', 'game.events', 0, {offset}, 'tid', '{loaded_at}')"
        for event_id, offset, loaded_at in [
            ("old", 1, client.command("SELECT toString(now64(3) - INTERVAL 2 DAY)")),
            ("new", 2, client.command("SELECT toString(now64(3))")),
        ]
    ]
    client.command(f"INSERT INTO {table} ({columns}) VALUES {', '.join(rows)}")
    client.command(f"OPTIMIZE TABLE {table} FINAL")
    assert client.query(f"SELECT event_id FROM {table}").result_rows == [("new",)]


def test_the_ttl_follows_the_settings_idempotently(client, database, monkeypatch):
    # a table made with the former TTL on event time
    client.command(
        f"CREATE TABLE `{database}`.raw_orders_events (event_id String, ts DateTime64(3, 'UTC'),"
        " loaded_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY event_id"
        " TTL toDateTime(ts) + INTERVAL 30 DAY"
    )
    ensure_tables(client, database)
    assert _ttl(client, database, "raw_orders_events") == ttl_expression(400)
    mutations = "SELECT count() FROM system.mutations WHERE database = {db:String}"
    before = client.command(mutations, parameters={"db": database})
    ensure_tables(client, database)  # nothing to change: no ALTER, no mutation
    assert client.command(mutations, parameters={"db": database}) == before
    monkeypatch.setenv("EVENTHOUSE_RAW_TTL_DAYS", "0")
    ensure_tables(client, database)
    assert {_ttl(client, database, t) for t in ("raw_orders_events", "raw_game_events", "dead_letters")} == {""}
