"""The outbox's pure parts: the envelope a row becomes, the writer's change order and failures, summaries."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from prometheus_client import generate_latest

from alerting.pipeline import outbox_breaches
from ingestion.contract import validate
from ingestion.producers.delivery import ProduceSummary
from ingestion.producers.orders import OrdersConfig, simulate_orders
from ingestion.topics import message_key, topic_for
from oltp.connection import describe_dsn
from oltp.outbox_writer import WriterSummary, catalogue_rows, changes_in_order, fails, shard
from oltp.relay import RELAY_SERVICE, OutboxRow, Relay, RelayConfig, RelayError, RelaySummary, outbox_event
from settings import DEFAULT_OUTBOX_PENDING_THRESHOLD, alert_settings, outbox_pending_threshold

ROW = OutboxRow(
    id=uuid.UUID("0b7c3a52-52f4-4c39-9a3e-1b2f4d6a8c90"),
    seq=42,
    event_type="order.status_changed",
    aggregate_id="ord_0000007",
    user_id="customer_00012",
    occurred_at=datetime(2026, 11, 2, 10, 30, 15, 123456, tzinfo=UTC),
    payload={"order_id": "ord_0000007", "status": "SHIPPED", "version": 1793615415123, "previous_status": "PROCESSING"},
    created_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
)


def test_an_outbox_row_becomes_a_valid_envelope_identified_by_the_row_id():
    event = outbox_event(ROW, host="relay-host")
    envelope = validate(orjson.dumps(event))  # what the loader accepts
    assert envelope.event_id == "0b7c3a52-52f4-4c39-9a3e-1b2f4d6a8c90"
    assert envelope.ts == datetime(2026, 11, 2, 10, 30, 15, 123000, tzinfo=UTC)
    assert envelope.user_id == "customer_00012"
    assert envelope.sequence == 42
    assert envelope.payload == ROW.payload
    assert envelope.dedupe_key == "order.status_changed:ord_0000007:1793615415123"
    assert (envelope.source_service, envelope.source_host) == (RELAY_SERVICE, "relay-host")
    spec = topic_for(event["event_type"])
    assert (spec.name, message_key(spec, event)) == ("orders", b"ord_0000007")
    # a re-publish after a crash is the same event to the warehouse
    assert outbox_event(ROW, host="another-relay")["event_id"] == event["event_id"]


def test_changes_come_in_the_order_they_happened_and_are_the_simulators_orders():
    config = OrdersConfig(orders=120, days=3, seed=5, out_of_order_rate=0.3, duplicate_rate=0.1)
    changes = changes_in_order(config)
    # the Kafka path's events with the same options, relay order and duplicates aside
    relayed = list(simulate_orders(config, ProduceSummary()))
    key = lambda e: (e["event_type"], e["payload"]["order_id"], e["payload"]["version"])  # noqa: E731
    assert sorted(map(key, changes)) == sorted(set(map(key, relayed)))
    assert [e["ts"] for e in changes] == sorted(e["ts"] for e in changes)
    versions: dict[str, int] = {}
    for event in changes:
        order_id, version = event["payload"]["order_id"], event["payload"]["version"]
        assert version > versions.get(order_id, 0)
        assert (event["event_type"] == "order.created") == (order_id not in versions)
        versions[order_id] = version


def test_deliberate_failures_are_the_same_on_every_run_and_about_the_rate():
    picks = [fails(3, f"ord_{n:07d}", 1000 + n, 0.1) for n in range(4000)]
    assert picks == [fails(3, f"ord_{n:07d}", 1000 + n, 0.1) for n in range(4000)]
    assert 300 < sum(picks) < 500
    assert not any(fails(3, f"ord_{n:07d}", n, 0.0) for n in range(100))


def test_shards_are_stable_and_spread():
    counts = [0, 0, 0, 0]
    for n in range(1000):
        counts[shard(f"ord_{n:07d}", 4)] += 1
    assert shard("ord_0000001", 4) == shard("ord_0000001", 4)
    assert min(counts) > 150


def test_catalogue_has_every_customer_and_product_at_the_simulators_prices():
    config = OrdersConfig(orders=50, users=30, products=12, seed=9)
    users, products = catalogue_rows(config, datetime(2026, 11, 1, tzinfo=UTC))
    assert [u[0] for u in users] == [f"customer_{n:05d}" for n in range(1, 31)]
    prices = {p[0]: p[3] for p in products}
    for event in changes_in_order(config):
        for item in event["payload"].get("items", []):
            assert prices[item["product_id"]] == item["price_cents"]
    assert all(name and category for _, name, category, _, _ in products)


def test_summaries_print_the_numbers_a_run_is_judged_by():
    writer = WriterSummary(changes=10, committed=7, skipped=2, rolled_back=1, seconds=2.0)
    writer.by_event_type.update({"order.created": 3, "order.status_changed": 4})
    out = writer.as_dict()
    assert (out["produced"], out["committed"], out["skipped_already_committed"], out["rolled_back"]) == (7, 7, 2, 1)
    assert out["changes_per_s"] == 3.5 and out["written_to"] == "postgres outbox"
    relay = RelaySummary(published=5, pending=0, retries=1, batches=2, by_topic={"orders": 5}).as_dict()
    assert {"published": 5, "pending": 0, "retries": 1}.items() <= relay.items()


def test_dsn_descriptions_never_show_the_password():
    assert describe_dsn("postgresql://eventhouse:s3cret@db.example:5433/orders") == "eventhouse@db.example:5433/orders"
    assert describe_dsn("host=10.0.0.5 user=svc password=s3cret dbname=x") == "svc@10.0.0.5:5432/x"
    assert "s3cret" not in describe_dsn("postgresql://u:s3cret@[bad")


def test_outbox_pending_alerts_strictly_above_the_threshold():
    assert outbox_breaches(None, 10_000) == []
    assert outbox_breaches(10_000, 10_000) == []
    (b,) = outbox_breaches(10_001, 10_000)
    assert (b.anomaly_type, b.entity_id, b.observed, b.threshold) == ("OUTBOX_PENDING", "outbox", 10_001.0, 10_000.0)
    assert outbox_pending_threshold({}) == DEFAULT_OUTBOX_PENDING_THRESHOLD == 10_000
    assert alert_settings({"EVENTHOUSE_OUTBOX_PENDING_THRESHOLD": "50"}).outbox_pending_threshold == 50


class _Cursor:
    def __init__(self, rows: list[tuple] | None = None):
        self._rows = rows or []

    def fetchall(self) -> list[tuple]:
        return self._rows

    def fetchone(self) -> tuple:
        return self._rows[0]


class _FakeOutbox:
    """Just enough of a psycopg connection for the relay: the outbox as a list of dicts, and
    transactions that restore it when they end in an exception (a rollback)."""

    def __init__(self, rows: int):
        self.rows = [
            {"row": dataclasses.replace(ROW, id=uuid.UUID(int=n + 1), seq=n + 1), "published": False, "attempts": 0}
            for n in range(rows)
        ]

    @contextlib.contextmanager
    def transaction(self):
        saved = copy.deepcopy(self.rows)
        try:
            yield
        except BaseException:
            self.rows = saved
            raise

    def execute(self, sql: str, params: tuple = ()) -> _Cursor:
        if sql.lstrip().startswith("SELECT id"):
            pending = [r["row"] for r in self.rows if not r["published"]][: params[0]]
            return _Cursor([dataclasses.astuple(row) for row in pending])
        if sql.startswith("SELECT count(*)"):
            return _Cursor([(sum(not r["published"] for r in self.rows),)])
        ids = set(params[0])
        for r in self.rows:
            if r["row"].id in ids and not r["published"]:
                r["attempts"] += 1
                r["published"] = r["published"] or "published_at = clock_timestamp()" in sql
        return _Cursor()

    def commit(self) -> None:
        pass


class _Future:
    def __init__(self, error: Exception | None):
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class _FlakySink:
    """Fails every send of the first `failures` batches (a broker down), then acknowledges."""

    def __init__(self, failures: int):
        self.failures = failures
        self.batches = 0
        self.sent: list[str] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> _Future:
        from kafka.errors import KafkaTimeoutError

        event_id = orjson.loads(value)["event_id"]
        if event_id == self._first_of_batch:
            self.batches += 1
        failing = self.batches <= self.failures
        if not failing:
            self.sent.append(event_id)
        return _Future(KafkaTimeoutError("no ack within 10 s") if failing else None)

    _first_of_batch = str(uuid.UUID(int=1))


def test_a_failed_publish_rolls_back_counts_the_attempt_and_is_retried_until_acknowledged(monkeypatch):
    from oltp import relay as relay_module

    monkeypatch.setattr(relay_module, "FIRST_RETRY_SLEEP", 0.001)
    conn, sink = _FakeOutbox(rows=5), _FlakySink(failures=2)
    relay = Relay(conn, sink, RelayConfig(batch_rows=10), host="h")
    summary = relay.run(listener=None, once=True)
    # two failed attempts marked nothing; the third published every row once, in seq order
    assert (summary.published, summary.retries, summary.pending, summary.batches) == (5, 2, 0, 1)
    assert sink.sent == [str(uuid.UUID(int=n)) for n in range(1, 6)]
    assert [r["attempts"] for r in conn.rows] == [3] * 5
    scraped = generate_latest(relay.metrics.registry).decode()
    assert "eventhouse_outbox_pending 0.0" in scraped
    assert 'eventhouse_relay_published_total{topic="orders"} 5.0' in scraped
    assert "eventhouse_relay_retries_total 2.0" in scraped
    assert "eventhouse_relay_publish_latency_seconds_count 5.0" in scraped


def test_once_gives_up_when_kafka_keeps_failing_and_leaves_the_rows_pending(monkeypatch):
    from oltp import relay as relay_module

    monkeypatch.setattr(relay_module, "FIRST_RETRY_SLEEP", 0.001)
    conn = _FakeOutbox(rows=3)
    relay = Relay(conn, _FlakySink(failures=100), RelayConfig(batch_rows=10), host="h")
    with pytest.raises(RelayError, match="failed 5 times in a row"):
        relay.run(listener=None, once=True)
    assert not any(r["published"] for r in conn.rows)
    assert [r["attempts"] for r in conn.rows] == [5] * 3
