"""POST /api/v1/events against a real `eventhouse serve` process and the embedded Kafka.

What each answer should be, and what each topic should then hold, is worked out from the events
the test sends: the topic and key of each event type are written out here from the topic layout
(the reference systems' keys), not taken from the collector's code.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from ingestion.contract import make_event
from ingestion.topics import TOPICS_BY_NAME, ensure_topics
from stack.processes import free_port
from tests.conftest import RunningStack, wait_until
from tests.integration.serving_support import running_api

pytestmark = pytest.mark.integration

TS = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
# event type -> (topic, how its key is read from the event)
ROUTES = {
    "clickstream.click": ("clickstream", lambda e: e["session_id"]),
    "game.stage_clear": ("game.events", lambda e: e["user_id"]),
    "order.created": ("orders", lambda e: e["payload"]["order_id"]),
}
TOPICS = sorted({topic for topic, _ in ROUTES.values()})


def click(event_id: str, i: int = 0) -> dict[str, Any]:
    payload = {"item_id": i, "category": "S"}
    return make_event("clickstream.click", event_id, TS + timedelta(seconds=i), payload, session_id=f"s{i % 3}")


def mixed(prefix: str, n: int) -> list[dict[str, Any]]:
    """n valid events, round-robin over the three routed types."""
    events = []
    for i in range(n):
        ts = TS + timedelta(seconds=i)
        if i % 3 == 0:
            events.append(click(f"{prefix}-{i}", i))
        elif i % 3 == 1:
            payload = {"chapter": 1, "stage": 1 + i % 5, "mode": "story", "clear_time_ms": 4000 + i, "score": 900}
            events.append(
                make_event("game.stage_clear", f"{prefix}-{i}", ts, payload, user_id=f"u{i % 4}", session_id="g1")
            )
        else:
            payload = {"order_id": f"{prefix}-o{i}", "status": "PENDING", "version": 1, "amount_cents": 100 + i}
            events.append(make_event("order.created", f"{prefix}-{i}", ts, payload, user_id=f"u{i % 4}"))
    return events


def expected_messages(events: list[dict[str, Any]]) -> list[tuple[str, bytes, dict[str, Any]]]:
    """(topic, key, value) each event should be published as, sorted."""
    rows = []
    for event in events:
        topic, key = ROUTES[event["event_type"]]
        rows.append((topic, key(event).encode(), event))
    return sorted(rows, key=lambda r: r[2]["event_id"])


@dataclass
class Topics:
    """The routed topics' messages published after `mark()`, read back with a plain consumer."""

    bootstrap: str

    def __post_init__(self) -> None:
        # the topics exist before the collector's first request would create them, so that the
        # first test's mark() has their partitions
        admin = KafkaAdminClient(bootstrap_servers=[self.bootstrap])
        try:
            ensure_topics(admin, [TOPICS_BY_NAME[topic] for topic in TOPICS])
        finally:
            admin.close()
        # (marks only: reads use a consumer of their own)
        self.consumer = KafkaConsumer(bootstrap_servers=[self.bootstrap], group_id=None, enable_auto_commit=False)
        self.partitions = [
            TopicPartition(topic, p) for topic in TOPICS for p in sorted(self.consumer.partitions_for_topic(topic))
        ]

    def mark(self) -> dict[TopicPartition, int]:
        """Offsets at or below each partition's end. (Tansu's ListOffsets answers the last record
        batch's base offset + 1, below the end when that batch holds several records: reading
        from there reads some older messages again, which the event_id prefix filters out.)"""
        return self.consumer.end_offsets(self.partitions)

    def since(self, mark: dict[TopicPartition, int], prefix: str) -> list[tuple[str, bytes, dict[str, Any]]]:
        """Every message from `mark` to the high watermark whose event_id starts with `prefix`,
        sorted. The collector answers after the acks, so all it published is below the watermark.
        A new consumer reads: every watermark it knows came with a fetch sent after the post."""
        consumer = KafkaConsumer(bootstrap_servers=[self.bootstrap], group_id=None, enable_auto_commit=False)
        consumer.assign(self.partitions)
        for tp in self.partitions:
            consumer.seek(tp, mark[tp])
        found = []

        def read_to_end() -> bool:
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    value = orjson.loads(record.value)
                    if value["event_id"].startswith(prefix):
                        found.append((record.topic, record.key, value))
            return all(
                consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp)
                for tp in self.partitions
            )

        try:
            wait_until(read_to_end, "the topics read to their end", timeout=30, interval=0)
        finally:
            consumer.close()
        return sorted(found, key=lambda r: r[2]["event_id"])


@pytest.fixture(scope="module")
def api(embedded_stack: RunningStack, tmp_path_factory) -> Iterator[httpx.Client]:
    """One `eventhouse serve` for the module, with the default limits (1,000 events, 1 MB)."""
    with (
        running_api(embedded_stack.env, tmp_path_factory.mktemp("collector")) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def offline_base(embedded_stack: RunningStack, tmp_path_factory) -> Iterator[str]:
    """A server whose Kafka does not answer (a closed port), and whose clients may each send 5 events
    at once, then one per 100 s."""
    env = embedded_stack.env
    env.update(
        {
            "EVENTHOUSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "EVENTHOUSE_KAFKA_BOOTSTRAP_TIMEOUT_MS": "500",
            "EVENTHOUSE_COLLECTOR_ACK_TIMEOUT_SECONDS": "1",
            "EVENTHOUSE_COLLECTOR_RATE_PER_SECOND": "0.01",
            "EVENTHOUSE_COLLECTOR_BURST": "5",
        }
    )
    with running_api(env, tmp_path_factory.mktemp("collector-offline")) as base:
        yield base


def client_from(base: str, address: str) -> httpx.Client:
    """A client whose requests come from `address` (any of 127.0.0.0/8 reaches the loopback server),
    so that each test has a rate-limit bucket of its own."""
    return httpx.Client(base_url=base, timeout=30, transport=httpx.HTTPTransport(local_address=address))


@pytest.fixture(scope="module")
def topics(embedded_stack: RunningStack) -> Iterator[Topics]:
    reader = Topics(embedded_stack.kafka_bootstrap)
    try:
        yield reader
    finally:
        reader.consumer.close()


@pytest.fixture()
def prefix() -> str:
    return f"col-{uuid.uuid4().hex[:8]}"


def post(client: httpx.Client, body: Any, content_type: str = "application/json") -> httpx.Response:
    return client.post("/api/v1/events", content=orjson.dumps(body), headers={"Content-Type": content_type})


def test_a_valid_batch_is_published_once_per_event_on_its_topic_with_its_key(api, topics, prefix):
    events = mixed(prefix, 30)
    mark = topics.mark()
    response = post(api, events)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 30, "event_ids": [e["event_id"] for e in events]}
    assert topics.since(mark, prefix) == expected_messages(events)


def test_a_single_event_object_is_accepted(api, topics, prefix):
    event = click(f"{prefix}-single")
    mark = topics.mark()
    response = post(api, event)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "event_ids": [event["event_id"]]}
    assert topics.since(mark, prefix) == expected_messages([event])


def test_a_mixed_batch_publishes_only_the_valid_events_and_names_the_problems(api, topics, prefix):
    valid = mixed(prefix, 4)
    no_id = click("")
    del no_id["event_id"]
    unknown = {**click(f"{prefix}-unknown"), "event_type": "clickstream.hover"}
    no_item = click(f"{prefix}-no-item")
    del no_item["payload"]["item_id"]
    batch = [valid[0], no_id, valid[1], unknown, valid[2], no_item, valid[3], "not an event"]
    mark = topics.mark()
    response = post(api, batch)
    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (4, 4)
    assert body["event_ids"] == [e["event_id"] for e in valid]
    assert [(e["index"], e["event_id"], e["reason"]) for e in body["errors"]] == [
        (1, None, "'event_id' is required and must be a non-empty string"),
        (3, unknown["event_id"], "unknown event_type 'clickstream.hover'"),
        (5, no_item["event_id"], "clickstream.click: payload field 'item_id' is required"),
        (7, None, "message must be a JSON object, got str"),
    ]
    assert "event 1" in body["detail"]
    assert topics.since(mark, prefix) == expected_messages(valid)


def test_a_batch_of_only_invalid_events_is_refused_and_nothing_published(api, topics, prefix):
    late = click(f"{prefix}-future")  # two days ahead: the contract allows 24 h
    late["ts"] = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    no_session = click(f"{prefix}-no-session")
    no_session["session_id"] = None
    mark = topics.mark()
    response = post(api, [late, no_session])
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"], body["event_ids"]) == (0, 2, [])
    assert [(e["index"], e["event_id"]) for e in body["errors"]] == [(0, late["event_id"]), (1, no_session["event_id"])]
    assert body["errors"][0]["reason"].startswith("'ts' ") and "24 h ahead" in body["errors"][0]["reason"]
    assert body["errors"][1]["reason"] == "clickstream.click: 'session_id' is required"
    assert topics.since(mark, prefix) == []


def test_a_beacon_text_plain_body_is_accepted(api, topics, prefix):
    events = [click(f"{prefix}-beacon-{i}", i) for i in range(3)]
    mark = topics.mark()
    # what navigator.sendBeacon(url, JSON.stringify(events)) sends
    response = post(api, events, content_type="text/plain;charset=UTF-8")
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 3
    assert topics.since(mark, prefix) == expected_messages(events)


def test_a_retried_batch_publishes_the_same_events_again(api, topics, prefix):
    """A retry must not make new events: the collector publishes each event as sent, so the retry's
    messages are the first attempt's (same event_ids, keys and values), and the warehouse keeps one
    row per event_id. That collapse is tested where it happens, with the real loader:
    test_raw_tables.py::test_deliveries_of_one_event_id_collapse_whatever_their_type_or_day and
    test_loader.py::test_simulated_game_economy_and_orders_load_exactly_with_duplicates_collapsing.
    (Loading here would cost the loader's ~3 s consumer-group join for no new coverage.)"""
    events = [click(f"{prefix}-{i}", i) for i in range(20)]
    mark = topics.mark()
    first, retry = post(api, events), post(api, events)
    assert (first.status_code, retry.status_code) == (202, 202), retry.text
    assert first.json() == retry.json() == {"accepted": 20, "event_ids": [e["event_id"] for e in events]}
    published = topics.since(mark, prefix)
    assert published == sorted(expected_messages(events) * 2, key=lambda r: r[2]["event_id"])
    assert len({value["event_id"] for _, _, value in published}) == 20


def test_more_events_than_the_limit_is_413(api, topics, prefix):
    events = [click(f"{prefix}-{i}", i) for i in range(1001)]
    mark = topics.mark()
    response = post(api, events)
    assert response.status_code == 413, response.text
    assert "1001 events" in response.json()["detail"] and "1000" in response.json()["detail"]
    assert topics.since(mark, prefix) == []


def test_a_body_over_the_byte_limit_is_413(api, prefix):
    # valid JSON (whitespace pads it) of valid events: only its size is wrong
    body = orjson.dumps([click(f"{prefix}-{i}", i) for i in range(10)])
    body += b" " * (1_000_001 - len(body))
    declared = api.post("/api/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413, declared.text
    assert "1000001 bytes" in declared.json()["detail"]
    # without Content-Length (chunked), the server stops reading past the limit
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    streamed = api.post("/api/v1/events", content=chunks, headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    assert "over the limit of 1000000 bytes" in streamed.json()["detail"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"", "empty"),
        (b"[]", "the batch is empty"),
        (b"42", "the body is a number"),
        (b'"event"', "the body is a string"),
    ],
)
def test_a_body_that_is_not_an_event_or_batch_is_400(api, body: bytes, problem: str):
    response = api.post("/api/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert problem in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/csv", None])
def test_another_content_type_is_415(api, content_type: str | None):
    headers = {"Content-Type": content_type} if content_type else {}
    response = api.post("/api/v1/events", content=orjson.dumps(click("x")), headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]


def test_a_client_over_its_rate_is_429_with_retry_after(offline_base):
    # the rate limit comes before validation: invalid events (no event_type) cost the same
    with client_from(offline_base, "127.0.0.2") as limited, client_from(offline_base, "127.0.0.3") as other:
        assert post(limited, [{}] * 5).status_code == 400  # the burst
        refused = post(limited, {})
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "100"  # 1 event at 0.01 events/s
        assert "rate limit" in refused.json()["detail"]
        assert post(other, {}).status_code == 400  # another address has its own bucket


def test_kafka_unreachable_is_503_and_nothing_accepted(offline_base):
    with client_from(offline_base, "127.0.0.4") as client:
        response = post(client, [click("offline-1"), click("offline-2")])
    assert response.status_code == 503, response.text
    body = response.json()
    assert "accepted" not in body
    assert "Kafka" in body["detail"] and "retry" in body["detail"]


def test_kafka_going_down_is_503_and_the_server_still_stops_promptly(own_stack: RunningStack, tmp_path):
    env = {**own_stack.env, "EVENTHOUSE_COLLECTOR_ACK_TIMEOUT_SECONDS": "1"}
    with running_api(env, tmp_path) as base, httpx.Client(base_url=base, timeout=30) as client:
        assert post(client, [click("up-1")]).status_code == 202
        _, kafka, _ = own_stack.stack.services()
        os.kill(kafka.running_pid(), signal.SIGKILL)  # a crash (a graceful stop takes the broker ~5 s)
        response = post(client, [click("down-1"), click("down-2", 1)])
        assert response.status_code == 503, response.text
        detail = response.json()["detail"]
        assert "event 0 (event_id 'down-1', topic clickstream) was not acknowledged by Kafka within 1 s" in detail
        assert "none of the 2 events accepted: retry the batch" in detail
    # running_api's exit waited for the server to stop: with its flush bounded by the ack timeout,
    # not the producer's 2-minute delivery timeout (running_api would have killed it after 10 s)
