"""A partition's pending range accepts each message as a raw row or a dead letter with its reason.

No Kafka, no ClickHouse: messages are plain records with an offset, a key and a value, as
kafka-python hands them over. Expected rows and reasons are written out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import pytest

from ingestion.loader_stats import LoaderStats
from ingestion.partition_ranges import PartitionState, seal_batch
from settings import ContractConfig

NOW = datetime(2024, 4, 1, 10, 0, 5, tzinfo=UTC)
NOW_TEXT = "2024-04-01 10:00:05.000"
CONTRACT = ContractConfig()


@dataclass
class Record:
    offset: int
    value: bytes | None
    key: bytes | None = b"s1"


CLICK = {
    "schema_version": 1,
    "event_type": "clickstream.click",
    "event_id": "c-1",
    "user_id": None,
    "session_id": "s1",
    "source": {"service": "web", "host": "h1"},
    "ts": "2024-04-01T10:00:00.000Z",
    "ingested_at": None,
    "sequence": 7,
    "payload": {"item_id": 42, "category": "S"},
    "dedupe_key": "c-1",
}


def _clickstream() -> PartitionState:
    return PartitionState("clickstream", 2, "clickstream", "topic-id-1")


def _accept(state: PartitionState, *records: Record) -> LoaderStats:
    stats = LoaderStats()
    for record in records:
        state.accept(record, CONTRACT, NOW, NOW_TEXT, stats)
    return stats


def test_a_good_event_becomes_one_raw_row_with_its_kafka_position():
    state = _clickstream()
    value = orjson.dumps(CLICK)
    stats = _accept(state, Record(17, value))
    assert orjson.loads(bytes(state.body)) == {
        "event_id": "c-1",
        "event_type": "clickstream.click",
        "schema_version": 1,
        "user_id": None,
        "session_id": "s1",
        "source_service": "web",
        "source_host": "h1",
        "ts": "2024-04-01 10:00:00.000",
        "ingested_at": NOW_TEXT,  # the event had none: the loader's clock
        "sequence": 7,
        "dedupe_key": "c-1",
        "payload": {"item_id": 42, "category": "S"},
        "kafka_topic": "clickstream",
        "kafka_partition": 2,
        "kafka_offset": 17,
        "kafka_topic_id": "topic-id-1",
    }
    assert (state.row_count, state.dead) == (1, [])
    assert (state.first_offset, state.last_offset, state.next_offset) == (17, 17, 18)
    assert state.max_event_lag_ms == 5000.0  # ts 10:00:00.000, clock 10:00:05.000
    assert (stats.messages, stats.bytes_consumed) == (1, len(value))
    assert state.token == "clickstream:2:17-17@topic-id-1"


def test_an_event_that_brings_its_receive_time_keeps_it():
    state = _clickstream()
    _accept(state, Record(0, orjson.dumps({**CLICK, "ingested_at": "2024-04-01T10:00:01.250Z"})))
    assert orjson.loads(bytes(state.body))["ingested_at"] == "2024-04-01 10:00:01.250"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"event_type": "clickstream.click", ', "invalid JSON: "),
        (b"[1, 2]", "message must be a JSON object, got list"),
        (b"", "empty message (0 bytes)"),
        (None, "empty message (no value)"),
        (orjson.dumps({**CLICK, "event_type": "clickstream.teleport"}), "unknown event_type 'clickstream.teleport'"),
        (orjson.dumps({**CLICK, "session_id": None}), "clickstream.click: 'session_id' is required"),
        (orjson.dumps({**CLICK, "payload": {"item_id": "7"}}), "payload field 'item_id' must be int, got str"),
        (orjson.dumps({**CLICK, "ts": "2024-04-01T10:00:00"}), "'ts' has no timezone"),
        (orjson.dumps({**CLICK, "ts": "2024-04-03T10:00:00.000Z"}), "is more than 24 h ahead of the loader's clock"),
        (
            orjson.dumps(
                {
                    **CLICK,
                    "event_type": "order.created",
                    "user_id": "u1",
                    "payload": {"order_id": "o1", "status": "PENDING", "version": 1, "amount_cents": 100},
                }
            ),
            "wrong topic: order.created belongs to the orders domain (topic orders), not to topic clickstream",
        ),
    ],
    ids=[
        "bad JSON",
        "not an object",
        "empty",
        "tombstone",
        "unknown type",
        "no session",
        "wrong payload type",
        "ts without zone",
        "ts two days ahead",
        "wrong topic",
    ],
)
def test_a_rejected_message_is_a_dead_letter_with_its_reason_and_exact_bytes(value, reason):
    state = _clickstream()
    stats = _accept(state, Record(5, value, key=b"\xffk"))
    (letter,) = state.dead
    assert reason in letter.reason, letter.reason
    assert (letter.topic, letter.partition, letter.offset, letter.topic_id) == ("clickstream", 2, 5, "topic-id-1")
    assert (letter.key, letter.value) == (b"\xffk", value or b"")
    # Nothing of it is a row: no body, no row count, no event lag.
    assert (bytes(state.body), state.row_count, state.max_event_lag_ms) == (b"", 0, 0.0)
    # It still belongs to the range (the range is logged and committed with it) and was consumed.
    assert (state.first_offset, state.last_offset, state.next_offset) == (5, 5, 6)
    assert (stats.messages, stats.bytes_consumed, state.nbytes) == (1, len(value or b""), len(value or b""))


def test_bad_messages_between_good_ones_stop_nothing_and_the_range_stays_contiguous():
    state = _clickstream()
    good = [orjson.dumps({**CLICK, "event_id": f"c-{i}"}) for i in range(3)]
    _accept(state, Record(10, good[0]), Record(11, b"junk"), Record(12, good[1]), Record(13, None), Record(14, good[2]))
    rows = [orjson.loads(line) for line in bytes(state.body).splitlines()]
    assert [(r["event_id"], r["kafka_offset"]) for r in rows] == [("c-0", 10), ("c-1", 12), ("c-2", 14)]
    assert [letter.offset for letter in state.dead] == [11, 13]
    batch = seal_batch([state])
    assert batch is not None
    (chunk,) = batch.chunks
    assert (chunk.first_offset, chunk.last_offset, chunk.row_count, len(chunk.dead)) == (10, 14, 3, 2)
    assert chunk.token == "clickstream:2:10-14@topic-id-1"
    # Sealing starts a new range where reading stands.
    assert (state.has_data, state.row_count, state.dead, state.next_offset) == (False, 0, [], 15)
    assert seal_batch([state]) is None


def test_an_event_is_accepted_on_any_topic_of_its_domain():
    # reward.granted is published on topic reward.granted; every economy topic loads into one table.
    state = PartitionState("shop.purchase", 0, "economy", "tid")
    event = {**CLICK, "event_type": "reward.granted", "user_id": "u1", "payload": {"delta_gold": 5, "balance": 9}}
    _accept(state, Record(0, orjson.dumps(event)))
    assert (state.row_count, state.dead) == (1, [])


def test_a_range_being_redone_is_sealed_only_whole_with_the_first_attempts_boundaries():
    # The batch log says 10-14 was started and never done: the range is read again and must
    # end exactly at 14, so its rows carry the first attempt's token and deduplicate against it.
    state = _clickstream()
    state.next_offset, state.forced_end = 10, 14
    other = PartitionState("clickstream", 0, "clickstream", "topic-id-1")
    _accept(other, Record(3, orjson.dumps({**CLICK, "event_id": "o-3"})))
    _accept(state, *(Record(offset, orjson.dumps({**CLICK, "event_id": f"c-{offset}"})) for offset in (10, 11, 12)))
    # A flush now (batch full, batch too old, the run ending, a revoke) writes the other partition only.
    partial = seal_batch([state, other])
    assert partial is not None
    assert [(c.partition, c.first_offset, c.last_offset) for c in partial.chunks] == [(0, 3, 3)]
    assert (state.first_offset, state.last_offset, state.row_count) == (10, 12, 3)
    _accept(state, Record(13, orjson.dumps({**CLICK, "event_id": "c-13"})), Record(14, b"junk"))
    whole = seal_batch([state])
    assert whole is not None
    (chunk,) = whole.chunks
    assert (chunk.token, chunk.row_count, len(chunk.dead)) == ("clickstream:2:10-14@topic-id-1", 4, 1)
    assert state.forced_end is None  # the next range is an ordinary one
