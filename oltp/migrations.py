"""Schema migrations of the orders service's PostgreSQL database, applied idempotently.

Each migration is a numbered list of statements, run once in one transaction and recorded in
`schema_migrations`; a transaction-level advisory lock makes concurrent runs (a writer and a relay
starting together) wait for each other instead of both applying a migration. Add a migration by
appending to MIGRATIONS; never edit one that has shipped.

Tables (schema `public`):
- users, products: the service's dimension tables, copied to ClickHouse by CDC (oltp/cdc*.py);
  REPLICA IDENTITY FULL, so an update's and a delete's change event carries the whole old row.
- leaderboard: each player's best time-attack time per stage, written by the game, copied by CDC.
- orders, order_items: the orders themselves, with the 9 statuses, a version per change and soft
  deletes (deleted_at, deleted_by).
- outbox: one row per order change, written in the change's own transaction and published to
  Kafka by `eventhouse relay` (oltp/relay.py); `published_at` is set only after the broker
  acknowledged. An insert notifies channel `outbox` so an idle relay wakes at once.
- publication `eventhouse_cdc` over the CDC tables, read through a logical replication slot.
"""

from __future__ import annotations

import logging
from typing import Any

from ingestion.contract import ORDER_STATUSES

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "outbox"
CDC_PUBLICATION = "eventhouse_cdc"
CDC_TABLES = ("users", "products", "leaderboard")
# any fixed 64-bit number: the advisory lock that serialises migration runs
_MIGRATION_LOCK = 0x6576656E74686F75

_STATUSES = ", ".join(f"'{status}'" for status in ORDER_STATUSES)

MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "0001_orders_service",
        (
            """
            CREATE TABLE users (
                user_id text PRIMARY KEY,
                display_name text NOT NULL,
                country text,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL
            )""",
            """
            CREATE TABLE products (
                product_id text PRIMARY KEY,
                name text NOT NULL,
                category text NOT NULL,
                price_cents bigint NOT NULL CHECK (price_cents >= 0),
                updated_at timestamptz NOT NULL
            )""",
            """
            CREATE TABLE leaderboard (
                user_id text NOT NULL,
                stage_id text NOT NULL,
                best_time_ms bigint NOT NULL CHECK (best_time_ms > 0),
                achieved_at timestamptz NOT NULL,
                PRIMARY KEY (user_id, stage_id)
            )""",
            f"""
            CREATE TABLE orders (
                order_id text PRIMARY KEY,
                user_id text NOT NULL REFERENCES users (user_id),
                status text NOT NULL CHECK (status IN ({_STATUSES})),
                version bigint NOT NULL,
                amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                deleted_at timestamptz,
                deleted_by text
            )""",
            """
            CREATE TABLE order_items (
                order_id text NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
                product_id text NOT NULL REFERENCES products (product_id),
                quantity integer NOT NULL CHECK (quantity > 0),
                price_cents bigint NOT NULL CHECK (price_cents >= 0),
                PRIMARY KEY (order_id, product_id)
            )""",
            """
            CREATE TABLE outbox (
                id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                seq bigserial NOT NULL UNIQUE,
                aggregate_type text NOT NULL,
                aggregate_id text NOT NULL,
                event_type text NOT NULL,
                user_id text,
                occurred_at timestamptz NOT NULL,
                payload jsonb NOT NULL,
                created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                published_at timestamptz,
                attempts integer NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL",
            f"""
            CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('{OUTBOX_CHANNEL}', '');
                RETURN NULL;
            END $$""",
            """
            CREATE TRIGGER outbox_inserted AFTER INSERT ON outbox
            FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()""",
            *(f"ALTER TABLE {table} REPLICA IDENTITY FULL" for table in CDC_TABLES),
            f"CREATE PUBLICATION {CDC_PUBLICATION} FOR TABLE {', '.join(CDC_TABLES)}",
        ),
    ),
    (
        # CDC's own record (oltp/cdc.py): which slot it has published from, and that slot's snapshot.
        # A slot that is missing while its row exists was dropped under the capture: re-snapshot.
        "0002_cdc_state",
        (
            """
            CREATE TABLE cdc_state (
                slot_name text PRIMARY KEY,
                snapshot_lsn pg_lsn NOT NULL,
                snapshot_at timestamptz NOT NULL,
                tables text[] NOT NULL
            )""",
        ),
    ),
)


def apply_migrations(conn: Any) -> list[str]:
    """Apply the migrations not applied yet (psycopg connection); returns their names."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations").fetchall()}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            log.info("applied migration %s", name)
            applied.append(name)
    return applied


def migrate(dsn: str) -> list[str]:
    """Connect to `dsn` and apply what is missing."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        return apply_migrations(conn)
