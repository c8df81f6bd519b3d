"""`eventhouse replay --from-archive --to kafka`: the archived events go back to their topics as they
were published (same envelope, same key), and a loader loading them again changes nothing.

The raw-table replay is tested inside the warehouse case (tests/integration/archive_case.py); this one
needs topics of its own, so a stack of its own.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from kafka import KafkaConsumer

from ingestion.contract import make_event
from ingestion.publisher import Publisher
from ingestion.topics import topic_for
from settings import load_settings
from tests.conftest import last_json

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _events() -> list[dict]:
    at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    events = []
    for i in range(40):
        ts = at + timedelta(seconds=i)
        if i % 2:
            payload = {"order_id": f"o{i}", "status": "PENDING", "version": i, "amount_cents": 100 + i}
            events.append(make_event("order.created", f"replay-o{i}", ts, payload, user_id=f"c{i % 7}", sequence=i))
        else:
            payload = {"delta_gold": i, "balance": 10 * i}
            events.append(make_event("reward.granted", f"replay-r{i}", ts, payload, user_id=f"p{i % 5}"))
    return events


def _messages(bootstrap: str, topics: list[str]) -> list[tuple[str, bytes | None, dict]]:
    """Every message on the topics, read from the start until the end (highwater) of each partition."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        consumer.subscribe(topics)
        messages: list[tuple[str, bytes | None, dict]] = []
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while datetime.now(UTC) < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                messages.extend((r.topic, r.key, orjson.loads(r.value)) for r in records)
            assignment = consumer.assignment()
            # highwater is known once a fetch of the partition answered
            highwater = {tp: consumer.highwater(tp) for tp in assignment}
            if assignment and all(h is not None and consumer.position(tp) >= h for tp, h in highwater.items()):
                return messages
        raise AssertionError(f"did not reach the end of {topics} within 60 s ({len(messages)} read)")
    finally:
        consumer.close()


def test_replay_to_kafka_publishes_each_archived_event_as_it_was_and_reloading_changes_nothing(own_stack):
    env = {**own_stack.env, "EVENTHOUSE_RAW_DATABASE": f"raw_{uuid.uuid4().hex[:8]}"}
    events = _events()
    publisher = Publisher(load_settings(env).kafka)
    for event in events:
        publisher.publish(event)
    publisher.close()
    topics = sorted({topic_for(e["event_type"]).name for e in events})
    group = ("--group-id", f"g-{uuid.uuid4().hex[:8]}", "--until-caught-up", "--max-seconds", "120")
    assert last_json(_cli(env, "load", *group))["rows_loaded"] == len(events)
    client = own_stack.client(database=env["EVENTHOUSE_RAW_DATABASE"])
    ingested = dict(client.query("SELECT event_id, ingested_at FROM raw_orders_events").result_rows)
    ingested |= dict(client.query("SELECT event_id, ingested_at FROM raw_economy_events").result_rows)

    archived = last_json(_cli(env, "archive", "--all"))
    assert sum(sum(hour["rows"].values()) for hour in archived["hours"]) == len(events)
    replayed = last_json(_cli(env, "replay", "--from-archive", "--to", "kafka"))
    assert {t: v["rows"] for t, v in replayed["tables"].items()} == {"raw_economy_events": 20, "raw_orders_events": 20}

    on_topics = _messages(own_stack.kafka_bootstrap, topics)
    assert len(on_topics) == 2 * len(events)
    published = {e["event_id"]: e for e in events}
    copies: dict[str, list[tuple[str, bytes | None, dict]]] = {}
    for message in on_topics:
        copies.setdefault(message[2]["event_id"], []).append(message)
    assert copies.keys() == published.keys()
    for event_id, (first, second) in copies.items():
        original = published[event_id]
        assert first[:2] == second[:2], f"{event_id}: another topic or key on replay"
        assert first[2] == original
        # the replayed envelope is the published one, with the ingest time the loader gave it
        again = dict(second[2])
        assert datetime.fromisoformat(again.pop("ingested_at")) == ingested[event_id].replace(tzinfo=UTC)
        assert {**again, "ts": datetime.fromisoformat(again["ts"])} == {
            **{k: v for k, v in original.items() if k != "ingested_at"},
            "ts": datetime.fromisoformat(original["ts"]),
        }

    # a loader loads the replayed copies, which collapse with the events already loaded
    assert last_json(_cli(env, "load", *group))["rows_loaded"] == len(events)
    distinct = client.command(
        "SELECT count() FROM (SELECT event_id FROM raw_orders_events FINAL"
        " UNION ALL SELECT event_id FROM raw_economy_events FINAL)"
    )
    assert distinct == len(events)
