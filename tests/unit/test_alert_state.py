"""Delivery states after a restart (folded from the log's rows) and the Kafka read-back decision."""

from __future__ import annotations

from datetime import UTC, datetime

from alerting.kafka_channel import kafka_read_back, read_from_bounds
from alerting.state import (
    DELIVERED,
    FAILED,
    PENDING,
    SENDING,
    DeliveryRow,
    dedup_token,
    delivery_state,
    missing_deliveries,
)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 30, 12, 0, 4, tzinfo=UTC)


def test_a_pending_delivery_is_due_at_once():
    state = delivery_state("a", "webhook", [DeliveryRow(PENDING, 0, 1)])
    assert (state.state, state.attempts) == (PENDING, 0)
    assert state.due(T0)


def test_a_failed_delivery_waits_for_its_backoff_and_keeps_its_error():
    rows = [
        DeliveryRow(PENDING, 0, 1),
        DeliveryRow(FAILED, 1, 2, "HTTP 500 Internal Server Error", T0),
        DeliveryRow(FAILED, 2, 3, "no answer: timed out", LATER),
    ]
    state = delivery_state("a", "webhook", rows)
    assert (state.state, state.attempts, state.last_error) == (FAILED, 2, "no answer: timed out")
    assert not state.due(T0)
    assert state.due(LATER)


def test_rows_are_ordered_by_seq_not_by_how_they_were_read():
    rows = [DeliveryRow(FAILED, 1, 2, "HTTP 500", LATER), DeliveryRow(PENDING, 0, 1)]
    assert delivery_state("a", "webhook", rows).state == FAILED


def test_delivered_ends_a_delivery_even_if_a_pending_row_came_after():
    # a restart re-wrote the pending row (step 1 repeated) after the delivery had been recorded
    rows = [DeliveryRow(PENDING, 0, 1), DeliveryRow(DELIVERED, 1, 2), DeliveryRow(PENDING, 0, 3)]
    state = delivery_state("a", "webhook", rows)
    assert state.state == DELIVERED
    assert not state.due(LATER)


def test_sending_without_delivered_is_maybe_sent_with_its_read_back_offsets():
    rows = [DeliveryRow(PENDING, 0, 1), DeliveryRow(SENDING, 0, 2, read_from='{"0": 17, "2": 5}')]
    state = delivery_state("a", "kafka", rows)
    assert state.state == SENDING
    assert state.read_from == {0: 17, 2: 5}
    assert not state.due(LATER)  # not sent again before the topic was read back


def test_read_back_marks_what_the_topic_holds_and_resends_the_rest():
    found = {"a": (0, 17), "c": (2, 5), "z": (1, 3)}  # z: some other alert further on the topic
    decision = kafka_read_back(["c", "a", "b", "a"], found)
    assert decision.delivered == {"a": (0, 17), "c": (2, 5)}
    assert decision.resend == ["b"]


def test_read_back_with_nothing_on_the_topic_resends_everything():
    decision = kafka_read_back(["b", "a"], {})
    assert decision.delivered == {}
    assert decision.resend == ["a", "b"]


def test_read_back_starts_at_the_lowest_recorded_offset_and_never_skips_a_partition():
    # two crashed sends recorded different positions; partition 1 was never recorded
    assert read_from_bounds([{0: 17, 2: 5}, {0: 12, 2: 9}], [0, 1, 2]) == {0: 12, 1: 0, 2: 5}


def test_alerts_without_delivery_rows_owe_every_channel_but_clickhouse():
    owed = missing_deliveries(
        {"a": ["clickhouse", "kafka", "webhook"], "b": ["clickhouse", "kafka"]}, logged={("a", "kafka")}
    )
    assert owed == [("a", "webhook"), ("b", "kafka")]


def test_a_retried_insert_carries_the_same_token_and_another_insert_another():
    rows = [["a", "kafka", "pending", 0, "", T0, "", None, None, 7]]
    assert dedup_token("alert_deliveries", rows) == dedup_token("alert_deliveries", [list(r) for r in rows])
    other = [["a", "kafka", "pending", 0, "", T0, "", None, None, 8]]
    assert dedup_token("alert_deliveries", rows) != dedup_token("alert_deliveries", other)
