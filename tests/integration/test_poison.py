"""The poison suite: every kind of bad message a careless producer or an attacker can send, mixed
with 10,000 good events in one loader run. Every good event lands exactly once, every bad one is in
`dead_letters` with its reason and its exact bytes, no partition is left behind, the loader exits 0."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from ingestion.contract import make_event
from ingestion.lag import group_lag
from ingestion.publisher import Publisher
from ingestion.raw_tables import ensure_tables
from ingestion.topics import TOPICS
from settings import load_settings
from tests.integration.test_loader import BASE, _events, _load_until_caught_up

pytestmark = pytest.mark.integration

VALID = make_event("clickstream.click", "p-valid", BASE, {"item_id": 1, "category": "S"}, session_id="s1")
GAME = make_event(
    "game.stage_clear",
    "p-game",
    BASE,
    {"chapter": 1, "stage": 2, "mode": "story", "clear_time_ms": 5400, "score": 900},
    user_id="u1",
    session_id="g1",
)


def _with(base: dict, **changes) -> bytes:
    return orjson.dumps({**base, **changes})


def _payload(**fields) -> bytes:
    return orjson.dumps({**VALID, "payload": {"item_id": 1, **fields}})


def _nested(levels: int) -> bytes:
    inner = levels - 2  # the envelope and the payload are levels 1 and 2
    return _payload().replace(b'"item_id":1', b'"item_id":1,"deep":' + b"[" * inner + b"]" * inner)


@dataclass(frozen=True)
class Poison:
    name: str
    value: bytes | None
    reason: str  # a fragment of the dead letter's reason, written by hand
    topic: str = "clickstream"
    key: bytes | None = b"s1"
    headers: tuple[tuple[str, bytes], ...] = ()


POISONS = [
    Poison("invalid JSON", b'{"event_type": "clickstream.click", ', "invalid JSON"),
    Poison("binary", bytes(range(256)), "invalid JSON"),
    Poison("empty", b"", "empty message (0 bytes)"),
    Poison("tombstone", None, "empty message (no value)"),
    Poison("whitespace only", b"   \n", "invalid JSON"),
    Poison("non-UTF-8", b'{"event_type": "clickstream.click", "event_id": "\xff\xfe"}', "invalid JSON"),
    Poison("byte order mark", b"\xef\xbb\xbf" + orjson.dumps(VALID), "invalid JSON"),
    Poison("NaN", _with(VALID).replace(b'"item_id":1', b'"item_id":NaN'), "invalid JSON"),
    Poison("lone surrogate", _with(VALID).replace(b'"S"', b'"\\ud800"'), "invalid JSON"),
    Poison("top-level array", b"[1, 2, 3]", "message must be a JSON object, got list"),
    Poison("top-level null", b"null", "message must be a JSON object, got NoneType"),
    Poison("top-level string", b'"hello"', "message must be a JSON object, got str"),
    Poison(
        "unknown type", _with(VALID, event_type="clickstream.teleport"), "unknown event_type 'clickstream.teleport'"
    ),
    Poison("event_type not a string", _with(VALID, event_type=7), "'event_type' is required"),
    Poison("schema_version 99", _with(VALID, schema_version=99), "unsupported schema_version 99"),
    Poison("no event_id", _with(VALID, event_id=None), "'event_id' is required"),
    Poison("empty event_id", _with(VALID, event_id=""), "'event_id' is required"),
    Poison("NUL in event_id", _with(VALID, event_id="a\x00b"), "'event_id' contains the control character"),
    Poison("missing payload field", _with(VALID, payload={"category": "S"}), "payload field 'item_id' is required"),
    Poison("wrong type", _payload(item_id="seven"), "payload field 'item_id' must be int, got str"),
    Poison("bool for int", _payload(item_id=True), "payload field 'item_id' must be int, got bool"),
    Poison("payload an array", _with(VALID, payload=[1]), "'payload' is required and must be a JSON object"),
    Poison("no payload", _with(VALID, payload=None), "'payload' is required and must be a JSON object"),
    Poison("no session", _with(VALID, session_id=None), "'session_id' is required"),
    Poison("no user", _with(GAME, user_id=None), "game.stage_clear: 'user_id' is required", topic="game.events"),
    Poison("source not an object", _with(VALID, source="web"), "'source' must be an object"),
    Poison("negative sequence", _with(VALID, sequence=-1), "'sequence' must be an integer"),
    Poison(
        "sequence over 64 bits",
        _with(VALID, sequence=1).replace(b'"sequence":1', b'"sequence":18446744073709551616'),
        "'sequence' must be an integer from 0 to 2^64 - 1",
    ),
    Poison("impossible date", _with(VALID, ts="2014-02-30T10:00:00.000Z"), "is not an ISO 8601 timestamp"),
    Poison("ts without zone", _with(VALID, ts="2014-04-01T10:00:00"), "has no timezone"),
    Poison("ts a number", _with(VALID, ts=1396346400000), "'ts' must be an ISO 8601 string, got int"),
    Poison("ts in 2100", _with(VALID, ts="2100-01-01T00:00:00.000Z"), "is more than 24 h ahead of the loader's clock"),
    Poison("ts in 1970", _with(VALID, ts="1970-01-01T00:00:00.000Z"), "is before 2000-01-01T00:00:00.000Z"),
    Poison("ingested_at in 2100", _with(VALID, ingested_at="2100-01-01T00:00:00.000Z"), "'ingested_at' 2100-01-01"),
    Poison("category of 100,000 characters", _payload(category="C" * 100_000), "100000 characters long"),
    Poison("control characters", _payload(category="S\x1b[31mred"), "control character '\\x1b'"),
    Poison("oversize 300 kB", _payload(blob="x" * 300_000), "over the 262144-byte limit"),
    Poison("oversize 2 MB", _payload(blob="x" * 2_000_000), "over the 262144-byte limit"),
    Poison("nesting 254", _nested(254), "nests more than 32 levels deep"),
    Poison("nesting 255", _nested(255), "nests more than 32 levels deep"),
    Poison("nesting 1,024", _nested(1024), "nests more than 32 levels deep"),
    Poison("nesting 100,000", _nested(100_000), "invalid JSON"),
    Poison(
        "wrong topic",
        _with(
            make_event(
                "order.created",
                "p-order",
                BASE,
                {"order_id": "o1", "status": "PENDING", "version": 1, "amount_cents": 100},
                user_id="u1",
            )
        ),
        "wrong topic: order.created belongs to the orders domain (topic orders), not to topic clickstream",
    ),  # fmt: skip
    Poison("game event on an economy topic", _with(GAME), "wrong topic: game.stage_clear", topic="reward.granted"),
    Poison("junk key and headers", b"\x00junk", "invalid JSON", key=b"\xff" * 3000, headers=(("\x00", b"\xff"),)),
]


def test_poison_suite_loses_nothing_and_stops_nothing(own_stack):
    database, group = "raw_poison_suite", "g-poison-suite"
    good = _events(10_000, run="good")
    # A good event whose key and headers are junk: only the value is the event.
    junk_wrapped = make_event("clickstream.click", "good-junk-headers", BASE, {"item_id": 9}, session_id="s9")
    producer = KafkaProducer(
        bootstrap_servers=own_stack.kafka_bootstrap, acks="all", max_request_size=8 << 20, linger_ms=5
    )
    kafka = load_settings(own_stack.env).kafka
    publisher = Publisher(kafka)  # creates the topics
    for event in good[:5000]:
        publisher.publish(event)
    publisher.close()
    sent: dict[str, tuple[Poison, str, int, int]] = {}
    for poison in POISONS:
        metadata = producer.send(poison.topic, key=poison.key, value=poison.value, headers=list(poison.headers)).get(
            timeout=60
        )
        sent[poison.name] = (poison, metadata.topic, metadata.partition, metadata.offset)
    producer.send(
        "clickstream", key=b"\xfe\xff", value=orjson.dumps(junk_wrapped), headers=[("trace", b"\x00\xff"), ("", b"")]
    ).get(timeout=60)
    producer.close()
    publisher = Publisher(kafka, ensure=False)
    for event in good[5000:]:
        publisher.publish(event)
    publisher.close()

    summary = _load_until_caught_up(own_stack, database, group)
    assert summary["dead_letters"] == len(POISONS)
    assert summary["rows_loaded"] == 10_001 and summary["dlq_copies_pending"] == 0
    assert summary["messages"] == 10_001 + len(POISONS)

    client = own_stack.client()
    loaded = client.query(
        f"SELECT count(), uniqExact(event_id) FROM merge('{database}', '^raw_') WHERE startsWith(event_id, 'good-')"
    ).result_rows
    assert loaded == [(10_001, 10_001)]  # every good event exactly once (plain count(), no FINAL)
    assert client.command(f"SELECT count() FROM merge('{database}', '^raw_') WHERE startsWith(event_id, 'p-')") == 0

    letters = {
        (topic, partition, offset): (error, key_hex, value_hex)
        for topic, partition, offset, error, key_hex, value_hex in client.query(
            "SELECT kafka_topic, kafka_partition, kafka_offset, error, hex(kafka_key), hex(raw_value) "
            f"FROM {database}.dead_letters"
        ).result_rows
    }
    assert len(letters) == len(POISONS)
    for name, (poison, topic, partition, offset) in sent.items():
        error, key_hex, value_hex = letters[(topic, partition, offset)]
        assert poison.reason in error, (name, error)
        # The original bytes, losslessly (a tombstone has none).
        assert value_hex == (poison.value or b"").hex().upper(), name
        assert key_hex == (poison.key.hex().upper() if poison.key else None), name

    # No partition is left behind: the group's committed offset is each partition's highwater.
    lag = group_lag(kafka, group, [spec.name for spec in TOPICS])
    assert lag.total == 0 and len(lag.partitions) == sum(spec.partitions for spec in TOPICS)

    # The DLQ copies: the 2 MB message is there, cut to 256 KiB with its size and hash.
    on_clickstream = [p for p in POISONS if p.topic == "clickstream"]
    copies = _consume(own_stack.kafka_bootstrap, "clickstream.dlq", len(on_clickstream))
    assert len(copies) == len(on_clickstream)
    big = next(p for p in POISONS if p.name == "oversize 2 MB")
    (cut,) = [m for m in copies if dict(m.headers).get("eventhouse.original_size") == str(len(big.value)).encode()]
    assert cut.value == big.value[: 256 * 1024]
    assert dict(cut.headers)["eventhouse.original_sha256"] == hashlib.sha256(big.value).hexdigest().encode()
    assert dict(cut.headers)["eventhouse.error"].startswith(f"message is {len(big.value)} bytes".encode())


def _consume(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    """The messages of `topic`, read until `expected` arrived (or the timeout; then what arrived)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    messages: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
    finally:
        consumer.close()
    return messages


def test_a_row_clickhouse_refuses_is_isolated_and_dead_lettered(own_stack):
    """If a valid event still fails its insert, its neighbours load and it becomes a dead letter."""
    database, group = "raw_refused", "g-refused"
    client = own_stack.client()
    ensure_tables(client, database)
    # A column type the contract knows nothing of stands in for a value ClickHouse cannot store:
    # dedupe_key must now parse as a UUID, and one event's does not.
    client.command(f"ALTER TABLE {database}.raw_clickstream_events MODIFY COLUMN dedupe_key UUID")
    events = [
        make_event(
            "clickstream.click",
            f"r-{i}",
            BASE,
            {"item_id": i},
            session_id="s-one",  # one key: one partition, so the bad row has neighbours in its chunk
            dedupe_key="not-a-uuid" if i == 13 else str(uuid.UUID(int=i)),
        )
        for i in range(40)
    ]
    publisher = Publisher(load_settings(own_stack.env).kafka)
    for event in events:
        publisher.publish(event)
    publisher.close()
    summary = _load_until_caught_up(own_stack, database, group, "--domains", "clickstream")
    assert summary["rows_loaded"] == 39 and summary["dead_letters"] == 1
    assert summary["rows_rejected_by_clickhouse"] == 1
    loaded = client.query(f"SELECT groupArray(event_id) FROM {database}.raw_clickstream_events").result_rows[0][0]
    assert sorted(loaded) == sorted(f"r-{i}" for i in range(40) if i != 13)
    (error, value) = client.query(f"SELECT error, raw_value FROM {database}.dead_letters").result_rows[0]
    assert "ClickHouse refused the row for raw_clickstream_events" in error and "CANNOT_PARSE_UUID" in error
    assert orjson.loads(value)["event_id"] == "r-13"
    # Loading again changes nothing: the range is done.
    again = _load_until_caught_up(own_stack, database, group, "--domains", "clickstream")
    assert again["rows_loaded"] == 0
    assert client.command(f"SELECT count() FROM {database}.raw_clickstream_events") == 39
