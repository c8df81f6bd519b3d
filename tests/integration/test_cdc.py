"""CDC end to end: PostgreSQL -> `eventhouse cdc` -> Kafka -> the loader -> cdc_* tables -> dbt dims.

One module-scoped run shares the work (the suite's time budget): on the session stack, in a
PostgreSQL database, replication slot, topic prefix, raw database and consumer group of its own,
it snapshots, streams changes, kills the capture between publish and advance, resumes, drops the
slot under it, re-snapshots, loads once and builds the CDC staging models and the two dims. Each
test then checks one promise against what PostgreSQL itself holds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from ingestion.loader import Loader, LoaderConfig
from oltp.cdc import KILL_BEFORE_ADVANCE_ENV, CdcCapture, CdcConfig
from oltp.leaderboard import upsert_bests
from oltp.migrations import migrate
from settings import REPO_ROOT, load_settings
from tests.conftest import wait_until
from tests.integration.conftest import WORK_DATABASE, prepared_database
from tests.integration.dbt_support import run_dbt

CUSTOMERS = ("c1", "c2", "c3", "c4")  # have order events; c5 is in PostgreSQL only


@dataclass
class CdcRun:
    env: dict[str, str]
    dsn: str
    slot: str
    prefix: str
    client: Any  # ClickHouse, on the dbt database
    raw_database: str
    killed: subprocess.CompletedProcess
    resumed: dict[str, Any]
    killed_changes: Counter
    dropped_log: str
    dropped: dict[str, Any]


def _pg(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _cli_cdc(env: dict[str, str], slot: str, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", "cdc", "--once", "--slot", slot],
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )


def _order_event(i: int, customer: str, product: str, price: int) -> dict[str, Any]:
    payload = {
        "order_id": f"o{i}",
        "status": "PENDING",
        "version": 1,
        "amount_cents": price,
        "items": [{"product_id": product, "quantity": 1, "price_cents": price}],
        "product_ids": [product],
    }
    ts = f"2024-03-01 1{i % 10}:00:00.000"
    return {
        "event_id": f"cdc-order-{i}",
        "event_type": "order.created",
        "schema_version": 1,
        "user_id": customer,
        "session_id": None,
        "source_service": "orders",
        "source_host": "test",
        "ts": ts,
        "ingested_at": ts,
        "sequence": None,
        "dedupe_key": f"cdc-order-{i}",
        "payload": json.dumps(payload),
        "kafka_topic": "orders",
        "kafka_partition": 0,
        "kafka_offset": i,
        "kafka_topic_id": "test",
    }


@pytest.fixture(scope="module")
def cdc_run(embedded_stack, prepared_template, tmp_path_factory) -> Iterator[CdcRun]:
    tag = uuid.uuid4().hex[:8]
    pg_database, slot, prefix = f"cdc_it_{tag}", f"eventhouse_cdc_it_{tag}", f"cdcit{tag}"
    dsn = make_conninfo(embedded_stack.postgres_dsn, dbname=pg_database)
    _pg(embedded_stack.postgres_dsn, f"CREATE DATABASE {pg_database}")
    target = tmp_path_factory.mktemp("cdc-dbt")
    (target / "partial_parse.msgpack").write_bytes(prepared_template.work_parse.read_bytes())
    try:
        with (
            prepared_database(embedded_stack, prepared_template, WORK_DATABASE) as (env, database),
            pytest.MonkeyPatch.context() as patch,
        ):
            env = {**env, "EVENTHOUSE_POSTGRES_DSN": dsn, "EVENTHOUSE_CDC_TOPIC_PREFIX": prefix}
            for name in ("EVENTHOUSE_CDC_TOPIC_PREFIX", "EVENTHOUSE_RAW_DATABASE"):
                patch.setenv(name, env[name])
            settings = load_settings(env)
            raw_database = env["EVENTHOUSE_RAW_DATABASE"]

            def capture() -> dict[str, Any]:
                return CdcCapture(settings, CdcConfig(dsn=dsn, slot=slot, once=True)).run().summary()

            migrate(dsn)
            _pg(
                dsn,
                "INSERT INTO users VALUES "
                "('c1', 'Ann', 'FR', '2024-01-05 10:00:00.250+00', now()),"
                "('c2', 'Bob', NULL, '2024-01-06 11:00:00+00', now()),"
                "('c3', 'Cy', 'KR', '2024-01-07 12:00:00+00', now()),"
                "('c5', 'Eve', 'US', '2024-01-08 12:00:00+00', now())",
                "INSERT INTO products VALUES "
                "('sku1', 'Pen', 'office', 450, now()), ('sku2', 'Ink', 'office', 300, now())",
            )
            # the leaderboard as the game writes it (oltp/leaderboard.py)
            assert upsert_bests(dsn, {("p1", "2-5"): (9000, "2024-03-01T10:00:00.000Z")}) == 1
            # 1. the first run: a new slot, so a snapshot (through the command line)
            first = _cli_cdc(env, slot)
            assert first.returncode == 0, first.stderr[-3000:]
            assert json.loads(first.stdout)["snapshot_rows"] == 7
            # 2. changes, published by a run killed before the slot advances, then by its restart
            _pg(
                dsn,
                "UPDATE users SET country = 'DE', display_name = 'Ann Lee' WHERE user_id = 'c1'",
                "DELETE FROM users WHERE user_id = 'c2'",
                "INSERT INTO users VALUES ('c4', 'Dan', 'JP', '2024-02-01 00:00:00+00', now())",
            )
            # a better time and a new best are written; a worse time than the record is not
            bests = {("p1", "2-5"): (7000, "2024-03-02T10:00:00.000Z"), ("p2", "1-1"): (500, "2024-03-02T11:00:00Z")}
            assert upsert_bests(dsn, bests) == 2
            assert upsert_bests(dsn, {("p1", "2-5"): (8000, "2024-03-03T10:00:00.000Z")}) == 0
            killed = _cli_cdc(env, slot, **{KILL_BEFORE_ADVANCE_ENV: "1"})
            resumed = capture()
            killed_changes = Counter(resumed["changes"])
            # 3. the slot dropped while no capture runs; meanwhile a delete and an update it cannot see
            _pg(
                dsn,
                f"SELECT pg_drop_replication_slot('{slot}')",
                "DELETE FROM users WHERE user_id = 'c3'",
                "UPDATE products SET price_cents = 500, name = 'Pen Pro' WHERE product_id = 'sku1'",
            )
            with _captured_log("oltp.cdc") as lines:
                dropped = capture()
            # 4. a change after the re-snapshot
            _pg(dsn, "UPDATE users SET country = 'ES' WHERE user_id = 'c4'")
            capture()

            Loader(
                settings,
                LoaderConfig(
                    domains=(),
                    cdc=True,
                    group_id=f"cdc-it-{tag}",
                    raw_database=raw_database,
                    until_caught_up=True,
                    max_seconds=60,
                    session_timeout_ms=6000,
                ),
            ).run()
            client = embedded_stack.client(database=database)
            rows = [
                _order_event(i, customer, product, price)
                for i, (customer, product, price) in enumerate(
                    [("c1", "sku1", 400), ("c2", "sku2", 300), ("c3", "sku1", 420), ("c4", "sku3", 100)]
                )
            ]
            columns = list(rows[0])
            client.insert(
                f"`{raw_database}`.raw_orders_events", [[r[c] for c in columns] for r in rows], column_names=columns
            )
            # the CDC models, the dims, and the order events' path to them (the prepared database's
            # other models were made with --empty: views that read nothing)
            order_path = "base_orders__order_events+,+dim_users base_orders__order_events+,+dim_products"
            built = run_dbt(["run", "--select", "staging.oltp", *order_path.split()], env, target)
            assert built.returncode == 0, built.stdout[-3000:]
            yield CdcRun(
                env, dsn, slot, prefix, client, raw_database, killed, resumed, killed_changes, "\n".join(lines), dropped
            )
    finally:
        _pg(
            embedded_stack.postgres_dsn,
            f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'",
            f"DROP DATABASE IF EXISTS {pg_database}",
        )


class _captured_log:
    """The messages a logger emits inside the block (the module fixture cannot use caplog)."""

    def __init__(self, name: str):
        import logging

        self.logger = logging.getLogger(name)
        self.lines: list[str] = []
        outer = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                outer.lines.append(f"{record.levelname} {record.getMessage()}")

        self.handler = _Handler()

    def __enter__(self) -> list[str]:
        self.logger.addHandler(self.handler)
        return self.lines

    def __exit__(self, *_exc: object) -> None:
        self.logger.removeHandler(self.handler)


def _postgres(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return [tuple(row) for row in conn.execute(query).fetchall()]


def _naive(rows: list[tuple]) -> list[tuple]:
    return [tuple(v.replace(tzinfo=None) if hasattr(v, "tzinfo") and v.tzinfo else v for v in row) for row in rows]


def test_inserts_updates_and_deletes_reach_the_staging_models(cdc_run: CdcRun):
    users = _postgres(cdc_run.dsn, "SELECT user_id, display_name, country, created_at FROM users ORDER BY user_id")
    assert [u[0] for u in users] == ["c1", "c4", "c5"]  # c2 deleted by a change, c3 while the slot was gone
    staged = cdc_run.client.query(
        "SELECT user_id, display_name, country, signed_up_at FROM stg_oltp__users ORDER BY user_id"
    ).result_rows
    assert _naive(staged) == _naive(users)
    products = _postgres(cdc_run.dsn, "SELECT product_id, name, category, price_cents FROM products ORDER BY 1")
    staged = cdc_run.client.query(
        "SELECT product_id, product_name, product_category, price_cents FROM stg_oltp__products ORDER BY product_id"
    ).result_rows
    assert staged == products
    board = _postgres(cdc_run.dsn, "SELECT user_id, stage_id, best_time_ms, achieved_at FROM leaderboard ORDER BY 1, 2")
    staged = cdc_run.client.query(
        "SELECT user_id, stage_id, best_time_ms, achieved_at FROM stg_oltp__leaderboard ORDER BY user_id, stage_id"
    ).result_rows
    assert _naive(staged) == _naive(board)
    assert [row[:3] for row in board] == [("p1", "2-5", 7000), ("p2", "1-1", 500)]  # the lower time kept


def test_the_dims_take_the_customers_and_products_from_postgres(cdc_run: CdcRun):
    known = {
        row[0]: row[1:]
        for row in _naive(_postgres(cdc_run.dsn, "SELECT user_id, display_name, country, created_at FROM users"))
    }
    dim = cdc_run.client.query(
        "SELECT user_id, user_type, display_name, country, signed_up_at FROM dim_users ORDER BY user_id"
    ).result_rows
    # every customer with order events; those PostgreSQL no longer has (c2, c3) keep NULLs
    assert _naive(dim) == [(c, "customer", *known.get(c, (None, None, None))) for c in CUSTOMERS]
    catalog = {
        row[0]: row[1:]
        for row in _postgres(cdc_run.dsn, "SELECT product_id, name, category, price_cents FROM products")
    }
    dim = cdc_run.client.query(
        "SELECT product_id, product_name, product_category, current_price_cents, latest_price_cents, times_ordered "
        "FROM dim_products ORDER BY product_id"
    ).result_rows
    sold = {"sku1": (420, 2), "sku2": (300, 1), "sku3": (100, 1)}  # from the order events above
    assert dim == [(p, *catalog.get(p, (None, None, None)), *sold[p]) for p in sorted(sold)]


def _topic(cdc_run: CdcRun, table: str) -> list[tuple[bytes, dict]]:
    """Every message of the table's CDC topic: as many as the loader logged loading (offsets 0..last)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = f"{cdc_run.prefix}.public.{table}"
    loaded = cdc_run.client.command(
        f"SELECT max(last_offset) + 1 FROM `{cdc_run.raw_database}`.ingest_batches "
        "WHERE state = 'done' AND kafka_topic = {topic:String}",
        parameters={"topic": topic},
    )
    consumer = KafkaConsumer(**load_settings(cdc_run.env).kafka.client_kwargs(), enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        messages: list[tuple[bytes, dict]] = []

        def read_all() -> bool:
            messages.extend((m.key, orjson.loads(m.value)) for m in consumer.poll(timeout_ms=200).get(tp, []))
            return len(messages) >= int(loaded)

        wait_until(read_all, f"the {loaded} messages of {topic}", timeout=30)
        return messages
    finally:
        consumer.close()


def test_a_capture_killed_before_the_slot_advanced_resends_the_same_changes_which_collapse(cdc_run: CdcRun):
    assert cdc_run.killed.returncode == -signal.SIGKILL, cdc_run.killed.stderr[-2000:]
    assert f"{KILL_BEFORE_ADVANCE_ENV} is set" in cdc_run.killed.stderr
    # the restarted run found the slot where it was and published the five changes again
    assert cdc_run.resumed["snapshots"] == 0
    assert cdc_run.killed_changes == Counter({"u": 2, "d": 1, "c": 2})
    users = _topic(cdc_run, "users")
    copies = Counter((key, event["source"]["lsn"], event["op"]) for key, event in users)
    resent = {change for change, n in copies.items() if n == 2}
    # each of the restart's user changes twice on the topic (same key, same LSN), the rest once
    assert sorted(op for _, _, op in resent) == ["c", "d", "u"]
    assert set(copies.values()) == {1, 2}
    # in ClickHouse the copies share their version: one row per (key, LSN) once merged (FINAL)
    rows = cdc_run.client.query(
        f"SELECT user_id, lsn, count() FROM `{cdc_run.raw_database}`.cdc_users FINAL GROUP BY user_id, lsn"
    ).result_rows
    assert all(n == 1 for *_, n in rows)


def test_a_dropped_slot_is_detected_and_re_snapshotted(cdc_run: CdcRun):
    warnings = [line for line in cdc_run.dropped_log.splitlines() if line.startswith("WARNING")]
    assert any(
        f"replication slot '{cdc_run.slot}' is missing" in line and "re-snapshotting" in line for line in warnings
    ), cdc_run.dropped_log
    assert cdc_run.dropped["slot_recreated_after_drop"] == 1
    assert cdc_run.dropped["snapshots"] == 1
    # the snapshot read the tables as PostgreSQL had them then (c3 gone, sku1 renamed)
    assert cdc_run.dropped["snapshot_rows"] == 3 + 2 + 2
