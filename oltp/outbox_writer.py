"""The orders service writing through a transactional outbox (`eventhouse produce orders --via-outbox`).

The order simulator (ingestion/producers/orders.py) decides what happens to each order; here each
change is written to PostgreSQL the way an orders service would, in ONE transaction with its outbox
row: the order's new state and the event that announces it commit together or not at all. The relay
(oltp/relay.py) publishes committed outbox rows to Kafka later.

Changes are applied in the order they happened (event time, then version). The simulator's
out-of-order and duplicate injections model a relay's publishing and do not apply here: on this path
the ordering and the (at-least-once) re-delivery come from the database and the relay themselves.

Each order is written by one of `connections` concurrent connections (by order id), so its changes
stay in order while several transactions share a WAL flush.

The writer is resumable: a change applies only if the order does not exist yet (order.created, an
INSERT ... ON CONFLICT DO NOTHING) or holds an older version (status changes and deletes, an UPDATE
guarded by `version < new version`). Changes of one order come in version order, so a re-run with
the same options after a crash skips every change already committed and never writes one twice.

`fail_rate` rolls back a share of changes on purpose, after their outbox row was written, to show
that a rolled-back change never leaves the database. Which changes fail is a function of the seed,
the order and the version, so a re-run fails the same ones; each is appended to `rollback_log` (JSON
lines) before its transaction rolls back.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ingestion.contract import parse_ts
from ingestion.producers.delivery import ProduceSummary
from ingestion.producers.orders import OrdersConfig, product_prices, simulate_orders
from settings import DEFAULT_OUTBOX_WRITER_CONNECTIONS

log = logging.getLogger(__name__)

_FIRST_NAMES = ("Ada", "Bo", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ines", "Jonas", "Kaito", "Lea")
_LAST_NAMES = ("Alvarez", "Brandt", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat", "Ito", "Jansen")
_COUNTRIES = ("DE", "FR", "ES", "IT", "NL", "SE", "PL", "JP", "US", "GB")
# price (the simulator's) -> a category that sells at about that price
_CATEGORY_BY_PRICE = {
    990: "accessories",
    1490: "books",
    2990: "home",
    4990: "apparel",
    9990: "sports",
    19990: "electronics",
}
_ADJECTIVES = ("Classic", "Compact", "Everyday", "Pro", "Eco", "Deluxe", "Mini", "Urban")


class _Rollback(Exception):
    """Raised inside a change's transaction to roll it back on purpose (`fail_rate`)."""


@dataclass(frozen=True)
class OutboxWriterConfig:
    orders: OrdersConfig = field(default_factory=OrdersConfig)
    rate: float | None = None  # changes written per second; None: as fast as the database commits them
    fail_rate: float = 0.0  # share of changes rolled back on purpose, after their outbox row was written
    rollback_log: Path | None = None  # JSON lines, one per change rolled back on purpose
    # concurrent connections, each writing the changes of its share of the orders (by order id): one
    # connection commits a few hundred transactions a second on a busy 2-core machine, several
    # share each WAL flush (group commit); an order's changes stay in order on its connection
    connections: int = DEFAULT_OUTBOX_WRITER_CONNECTIONS

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError("connections must be at least 1")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("rate must be above 0")


@dataclass
class WriterSummary:
    """What a writer run did; printed as JSON at the end of `eventhouse produce orders --via-outbox`."""

    changes: int = 0  # the simulator's changes seen
    committed: int = 0  # written with their outbox row
    skipped: int = 0  # already committed by an earlier run, or of an order whose creation was rolled back
    rolled_back: int = 0  # rolled back on purpose (fail_rate)
    by_event_type: Counter[str] = field(default_factory=Counter)
    users: int = 0
    products: int = 0
    migrations_applied: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: WriterSummary) -> None:
        self.changes += other.changes
        self.committed += other.committed
        self.skipped += other.skipped
        self.rolled_back += other.rolled_back
        self.by_event_type.update(other.by_event_type)

    def as_dict(self) -> dict[str, Any]:
        return {
            "produced": self.committed,
            "changes": self.changes,
            "committed": self.committed,
            "skipped_already_committed": self.skipped,
            "rolled_back": self.rolled_back,
            "by_event_type": dict(sorted(self.by_event_type.items())),
            "users": self.users,
            "products": self.products,
            "migrations_applied": self.migrations_applied,
            "changes_per_s": round(self.committed / self.seconds, 1) if self.seconds else None,
            "written_to": "postgres outbox",
        }


def changes_in_order(config: OrdersConfig) -> list[dict[str, Any]]:
    """The simulator's order changes (envelopes) in the order they happened: the same changes as the
    Kafka path with the same options, each once (its injected duplicates dropped by event id), sorted
    by event time, then version, which keeps each order's changes in version order."""
    distinct = {event["event_id"]: event for event in simulate_orders(config, ProduceSummary())}
    return sorted(distinct.values(), key=lambda event: (parse_ts(event["ts"]), event["payload"]["version"]))


def fails(seed: int, order_id: str, version: int, rate: float) -> bool:
    """Whether the change (order_id, version) is rolled back on purpose: the same answer on every run."""
    return rate > 0 and random.Random(f"{seed}:{order_id}:{version}").random() < rate


def catalogue_rows(config: OrdersConfig, at: datetime) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The users and products rows the orders service owns: every customer and product the simulator
    may use, with plausible names, and the simulator's prices."""
    rng = random.Random(f"catalogue:{config.seed}")
    users = [
        (
            f"customer_{n:05d}",
            f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}",
            rng.choice(_COUNTRIES),
            at,
            at,
        )
        for n in range(1, config.users + 1)
    ]
    products = []
    for product_id, price in sorted(product_prices(config).items()):
        category = _CATEGORY_BY_PRICE.get(price, "general")
        name = f"{rng.choice(_ADJECTIVES)} {category.rstrip('s').title()} {product_id[-4:]}"
        products.append((product_id, name, category, price, at))
    return users, products


class OutboxWriter:
    """Writes the simulator's changes into the orders tables and the outbox, one transaction each."""

    def __init__(self, conn: Any, config: OutboxWriterConfig, rollback_log: RollbackLog | None = None):
        self.conn = conn  # a psycopg connection; autocommit for write(): each change is its own transaction
        self.config = config
        self.summary = WriterSummary()
        self._rollback_log = rollback_log

    def ensure_catalogue(self) -> None:
        origin = datetime(*self.config.orders.start.timetuple()[:3], tzinfo=UTC)
        users, products = catalogue_rows(self.config.orders, origin)
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO users (user_id, display_name, country, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING",
                users,
            )
            cur.executemany(
                "INSERT INTO products (product_id, name, category, price_cents, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (product_id) DO NOTHING",
                products,
            )
        self.summary.users, self.summary.products = len(users), len(products)

    def run(self, changes: Iterable[dict[str, Any]], rate: float | None = None) -> WriterSummary:
        """Write `changes` in turn, at most `rate` written (not skipped) per second: a resumed run
        passes the changes committed before at once."""
        started = time.monotonic()
        written = 0
        for event in changes:
            self.summary.changes += 1
            if rate is not None:
                delay = started + written / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if self.write(event) != "skipped":
                written += 1
        return self.summary

    def write(self, event: dict[str, Any]) -> str:
        """Apply one change and its outbox row in one transaction: 'committed', 'skipped' or 'rolled_back'.

        The change and its outbox row are one statement (data-modifying CTEs), so on the writer's
        autocommit connection a change costs one round trip and is one transaction; the changes
        rolled back on purpose run it inside an explicit transaction instead, then roll it back."""
        payload = event["payload"]
        order_id, version = payload["order_id"], payload["version"]
        sql, params = _change_statement(event["event_type"], event["user_id"], payload, parse_ts(event["ts"]))
        if fails(self.config.orders.seed, order_id, version, self.config.fail_rate):
            try:
                with self.conn.transaction():
                    if self.conn.execute(sql, params).rowcount == 0:
                        self.summary.skipped += 1
                        return "skipped"
                    self._log_rollback(event)
                    raise _Rollback  # after the outbox row was written: it must vanish with the change
            except _Rollback:
                self.summary.rolled_back += 1
                return "rolled_back"
        if self.conn.execute(sql, params).rowcount == 0:
            self.summary.skipped += 1
            return "skipped"
        self.summary.committed += 1
        self.summary.by_event_type[event["event_type"]] += 1
        return "committed"

    def _log_rollback(self, event: dict[str, Any]) -> None:
        if self._rollback_log is not None:
            payload = event["payload"]
            self._rollback_log.write(event["event_type"], payload["order_id"], payload["version"])


class RollbackLog:
    """The changes rolled back on purpose, as JSON lines, shared by the writer's connections."""

    def __init__(self, path: Path):
        self._file = path.open("ab")
        self._lock = threading.Lock()

    def write(self, event_type: str, order_id: str, version: int) -> None:
        line = orjson.dumps({"event_type": event_type, "order_id": order_id, "version": version}) + b"\n"
        with self._lock:
            # flushed before the rollback: a writer killed right after still leaves the line (the OS has it)
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def _jsonb(payload: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(payload)


# Each change is one statement: its effect on the orders tables in a CTE that RETURNS the order only
# when it applied, and the outbox row inserted from that, so the statement's row count (the outbox
# rows written, 0 or 1) says whether the change applied. An order is created only if absent; a status
# change or a delete applies only over an older version of an order not deleted: re-running a change
# already committed is a no-op, which makes the writer resumable.
_OUTBOX_INSERT = """
INSERT INTO outbox (aggregate_type, aggregate_id, event_type, user_id, occurred_at, payload)
SELECT 'order', changed.order_id, %(event_type)s, %(user_id)s, %(at)s, %(payload)s FROM changed
"""
_CREATE = (
    """
WITH changed AS (
    INSERT INTO orders (order_id, user_id, status, version, amount_cents, created_at, updated_at)
    VALUES (%(order_id)s, %(user_id)s, %(status)s, %(version)s, %(amount_cents)s, %(at)s, %(at)s)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
), items AS (
    INSERT INTO order_items (order_id, product_id, quantity, price_cents)
    SELECT changed.order_id, item.product_id, item.quantity, item.price_cents
    FROM changed, jsonb_to_recordset(%(items)s) AS item(product_id text, quantity integer, price_cents bigint)
)"""
    + _OUTBOX_INSERT
)
_STATUS = (
    """
WITH changed AS (
    UPDATE orders SET status = %(status)s, version = %(version)s, updated_at = %(at)s
    WHERE order_id = %(order_id)s AND version < %(version)s AND deleted_at IS NULL
    RETURNING order_id
)"""
    + _OUTBOX_INSERT
)
_DELETE = (
    """
WITH changed AS (
    UPDATE orders SET deleted_at = %(at)s, deleted_by = %(deleted_by)s, version = %(version)s, updated_at = %(at)s
    WHERE order_id = %(order_id)s AND version < %(version)s AND deleted_at IS NULL
    RETURNING order_id
)"""
    + _OUTBOX_INSERT
)


def _change_statement(
    event_type: str, user_id: str, payload: dict[str, Any], at: datetime
) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {
        "event_type": event_type,
        "user_id": user_id,
        "at": at,
        "payload": _jsonb(payload),
        "order_id": payload["order_id"],
        "version": payload["version"],
    }
    if event_type == "order.created":
        params.update(status=payload["status"], amount_cents=payload["amount_cents"], items=_jsonb(payload["items"]))
        return _CREATE, params
    if event_type == "order.status_changed":
        return _STATUS, {**params, "status": payload["status"]}
    if event_type == "order.deleted":
        return _DELETE, {**params, "deleted_by": payload["deleted_by"]}
    raise ValueError(f"the outbox writer does not know the order change {event_type!r}")


def shard(order_id: str, connections: int) -> int:
    """The connection that writes this order's changes (stable across runs: not Python's hash())."""
    return zlib.crc32(order_id.encode()) % connections


def write_orders_via_outbox(dsn: str, config: OutboxWriterConfig) -> WriterSummary:
    """Apply the migrations, create the catalogue, then write every change (what the CLI runs)."""
    from oltp.connection import connect
    from oltp.migrations import apply_migrations

    changes = changes_in_order(config.orders)
    summary = WriterSummary()
    rollback_log = RollbackLog(config.rollback_log) if config.rollback_log else None
    started = time.monotonic()
    try:
        with connect(dsn) as conn:
            summary.migrations_applied = apply_migrations(conn)
            catalogue = OutboxWriter(conn, config)
            catalogue.ensure_catalogue()
            summary.users, summary.products = catalogue.summary.users, catalogue.summary.products
        n = config.connections
        rate = None if config.rate is None else config.rate / n

        def write_share(k: int) -> WriterSummary:
            with connect(dsn, autocommit=True) as conn:
                own = (e for e in changes if shard(e["payload"]["order_id"], n) == k)
                return OutboxWriter(conn, config, rollback_log).run(own, rate)

        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="outbox-writer") as pool:
            for part in pool.map(write_share, range(n)):
                summary.add(part)
    finally:
        summary.seconds = time.monotonic() - started
        if rollback_log is not None:
            rollback_log.close()
    return summary
