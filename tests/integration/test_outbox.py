"""The transactional outbox end to end: PostgreSQL -> `eventhouse relay` -> Kafka -> loader -> ClickHouse.

The expected values come from PostgreSQL itself (the committed outbox rows, the orders table) and
from the writer's log of the changes it rolled back on purpose; the warehouse side is read from
ClickHouse, and the topic with a plain consumer.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator

import orjson
import psycopg
import pytest

from oltp.relay import KILL_AFTER_ACK_ENV
from tests.conftest import RunningStack, running_stack, wait_until

SEED = 23


@pytest.fixture(scope="module")
def outbox_stack() -> Iterator[RunningStack]:
    """A stack of this module's own: its relays publish to the `orders` topic, which the shared
    stack's tests read whole."""
    with running_stack("eventhouse-outbox-") as stack:
        yield stack


def _database(stack: RunningStack) -> tuple[str, dict[str, str]]:
    """A fresh PostgreSQL database; its DSN, and the stack's environment pointing at it."""
    name = f"outbox_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = stack.postgres_dsn.rsplit("/", 1)[0] + "/" + name
    return dsn, {**stack.env, "EVENTHOUSE_POSTGRES_DSN": dsn}


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "eventhouse.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _summary(process: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    return orjson.loads(out[out.index("{") :])


def _scalar(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()[0]


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


def test_kill_9_writer_and_relay_every_committed_change_lands_once_and_no_rolled_back_one(outbox_stack, tmp_path):
    from ingestion.producers.orders import OrdersConfig
    from oltp.outbox_writer import OutboxWriterConfig, write_orders_via_outbox

    dsn, env = _database(outbox_stack)
    rollback_log = tmp_path / "rolled-back.jsonl"
    writer_args = (
        *("produce", "orders", "--via-outbox", "--orders", "300", "--days", "3", "--seed", str(SEED)),
        *("--fail-rate", "0.05", "--rollback-log", str(rollback_log), "--rate", "400", "--connections", "2"),
    )
    relay_args = ("relay", "--poll-seconds", "1")
    rng = random.Random(SEED)
    writer = _cli(env, *writer_args)
    outbox_rows = "SELECT count(*) FROM outbox"
    published = "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"
    kills = Counter()

    def table_ready() -> bool:
        return _scalar(dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'outbox'") == 1

    wait_until(table_ready, "the outbox table", timeout=30)
    # A relay killed after the broker acknowledged its first batch (100 rows, by seq) and before it
    # marked them: the rows are on Kafka and still pending, so the next relay publishes them again.
    wait_until(lambda: _scalar(dsn, outbox_rows) >= 150, "a first batch to publish")
    crashed = _cli({**env, KILL_AFTER_ACK_ENV: "1"}, "relay", "--once")
    crashed.communicate(timeout=60)
    assert crashed.returncode == -signal.SIGKILL
    assert _scalar(dsn, published) == 0
    relay = _cli(env, *relay_args)
    # kill each process at moments drawn from the seed, measured in rows written and published
    for _ in range(3):
        target = _scalar(dsn, outbox_rows) + rng.randint(50, 250)
        wait_until(lambda t=target, w=writer: _scalar(dsn, outbox_rows) >= t or w.poll() is not None, "writer progress")
        if writer.poll() is None:
            _kill(writer)
            kills["writer"] += 1
            writer = _cli(env, *writer_args)
        target = min(_scalar(dsn, published) + rng.randint(20, 200), _scalar(dsn, outbox_rows))
        wait_until(lambda t=target: _scalar(dsn, published) >= t, "relay progress")
        _kill(relay)
        kills["relay"] += 1
        relay = _cli(env, *relay_args)
    assert kills["writer"] >= 2, "the writer finished before it was killed: give it more to write"
    written = _summary(writer)
    assert written["rolled_back"] > 0
    # SIGTERM: the relay finishes its batch and exits cleanly with its summary
    wait_until(
        lambda: (
            relay.poll() is not None
            or _scalar(
                dsn, "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()"
            )
        ),
        "the relay listening",
    )
    relay.send_signal(signal.SIGTERM)
    assert set(_summary(relay, timeout=30)) >= {"published", "pending", "retries"}
    drained = _summary(_cli(env, "relay", "--once"))
    assert drained["pending"] == 0

    raw, group = f"raw_{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    load_env = {**env, "EVENTHOUSE_RAW_DATABASE": raw}
    loaded = _summary(
        _cli(
            load_env,
            "load",
            "--until-caught-up",
            "--max-seconds",
            "120",
            "--domains",
            "orders",
            "--group-id",
            group,
            "--raw-database",
            raw,
        ),
        timeout=150,
    )
    assert loaded["dead_letters"] == 0
    loaded_rows = loaded["rows_loaded"]

    with psycopg.connect(dsn) as conn:
        committed = {
            row[0]: (row[1], row[2], int(row[3]))
            for row in conn.execute(
                "SELECT id::text, event_type, aggregate_id, payload->>'version' FROM outbox "
                "WHERE published_at IS NOT NULL"
            )
        }
        assert conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0] == 0
        # a restarted writer never wrote a change twice: one outbox row per (order, version)
        assert (
            conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM outbox GROUP BY aggregate_id, payload->>'version' "
                "HAVING count(*) > 1) twice"
            ).fetchone()[0]
            == 0
        )
        orders = {
            row[0]: (row[1], int(row[2]), row[3])
            for row in conn.execute("SELECT order_id, status, version, deleted_by FROM orders")
        }
    client = outbox_stack.client()
    copies = dict(
        client.query(f"SELECT event_id, count() FROM {raw}.raw_orders_events FINAL GROUP BY event_id").result_rows
    )
    # every committed change is in the warehouse, exactly once after collapse, and nothing else is
    assert set(copies) == set(committed)
    assert set(copies.values()) == {1}
    # the crashed relay's 100 events (and any a relay killed at random re-published) arrived twice and
    # collapsed
    assert loaded_rows >= len(committed) + 100

    # the latest state per order, from the warehouse's events, equals the orders table
    events = client.query(
        f"SELECT JSONExtractString(payload, 'order_id'), JSONExtractInt(payload, 'version'), "
        f"JSONExtractString(payload, 'status'), JSONExtractString(payload, 'deleted_by') "
        f"FROM {raw}.raw_orders_events FINAL"
    ).result_rows
    latest: dict[str, list] = {}
    for order_id, version, status, deleted_by in sorted(events, key=lambda e: e[1]):
        state = latest.setdefault(order_id, [None, 0, None])
        state[1] = version
        if status:
            state[0] = status
        if deleted_by:
            state[2] = deleted_by
    assert {order_id: tuple(state) for order_id, state in latest.items()} == orders

    # the kills lost and added nothing: an uninterrupted run of the same writer commits the same changes
    reference_dsn, _ = _database(outbox_stack)
    write_orders_via_outbox(
        reference_dsn,
        OutboxWriterConfig(orders=OrdersConfig(orders=300, days=3, seed=SEED), fail_rate=0.05, connections=2),
    )
    with psycopg.connect(reference_dsn) as conn:
        reference = conn.execute(
            "SELECT event_type, aggregate_id, (payload->>'version')::bigint FROM outbox"
        ).fetchall()
    assert sorted(committed.values()) == sorted(reference)

    # no rolled-back change left the database
    rolled_back = {
        (line["order_id"], line["version"]) for line in map(orjson.loads, rollback_log.read_bytes().splitlines())
    }
    assert rolled_back
    assert not rolled_back & {(order_id, version) for order_id, version, _, _ in events}
    assert not rolled_back & {(order_id, version) for order_id, (_, version, _) in orders.items()}
    print(
        f"kills {dict(kills)}, committed {len(committed)}, rolled back {len(rolled_back)}, "
        f"loaded {loaded_rows} (re-published and collapsed {loaded_rows - len(committed)})"
    )


def _topic_copies(bootstrap: str, topic: str, ids: set[str]) -> Counter[str]:
    """How many times each of `ids` is on the topic, read from the start to the highwater."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=None, enable_auto_commit=False)
    copies: Counter[str] = Counter()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning()

        def caught_up() -> bool:
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    event = orjson.loads(record.value)
                    if event["event_id"] in ids:
                        assert record.key.decode() == event["payload"]["order_id"]
                        copies[event["event_id"]] += 1
            return all(
                consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp)
                for tp in partitions
            )

        wait_until(caught_up, f"topic {topic} read to its highwater", timeout=30, interval=0)
    finally:
        consumer.close()
    return copies


def test_two_relays_on_one_outbox_publish_each_row_exactly_once(outbox_stack):
    from ingestion.producers.orders import OrdersConfig
    from oltp.outbox_writer import OutboxWriterConfig, write_orders_via_outbox

    dsn, env = _database(outbox_stack)
    relays = [_cli(env, "relay", "--poll-seconds", "1", "--batch-rows", "20") for _ in range(2)]
    listening = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()"
    wait_until(lambda: _scalar(dsn, listening) == 2 or any(r.poll() is not None for r in relays), "two relays ready")
    assert all(r.poll() is None for r in relays), [r.communicate()[1][-2000:] for r in relays]
    written = write_orders_via_outbox(
        dsn, OutboxWriterConfig(orders=OrdersConfig(orders=250, days=3, seed=SEED + 1), connections=2)
    )
    wait_until(
        lambda: _scalar(dsn, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0, "the outbox drained"
    )
    for r in relays:
        r.send_signal(signal.SIGTERM)
    summaries = [_summary(r, timeout=30) for r in relays]
    with psycopg.connect(dsn) as conn:
        ids = {row[0] for row in conn.execute("SELECT id::text FROM outbox")}
        attempts = conn.execute("SELECT max(attempts) FROM outbox").fetchone()[0]
    assert len(ids) == written.committed
    assert all(s["published"] > 0 for s in summaries), summaries  # both relays took part
    assert sum(s["published"] for s in summaries) == len(ids)
    assert attempts == 1
    copies = _topic_copies(env["EVENTHOUSE_KAFKA_BOOTSTRAP"], "orders", ids)
    assert set(copies) == ids
    assert set(copies.values()) == {1}


def test_relay_says_which_postgres_is_unreachable_without_the_password(outbox_stack):
    env = {**outbox_stack.env, "EVENTHOUSE_POSTGRES_DSN": "postgresql://eventhouse:s3cret@127.0.0.1:1/eventhouse"}
    result = subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", "relay", "--once"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "PostgreSQL at eventhouse@127.0.0.1:1/eventhouse is not reachable" in result.stderr
    assert "s3cret" not in result.stderr
