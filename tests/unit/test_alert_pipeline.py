"""Pipeline alert decisions: thresholds (strictly above), p95, buckets and stable ids."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from alerting.pipeline import (
    bucket,
    dead_letter_breaches,
    delivery_breaches,
    freshness_breaches,
    lag_breaches,
    latency_breaches,
    loader_lag_by_domain,
    p95,
    to_anomalies,
)
from alerting.state import FAILED, DeliveryState

NOW = datetime(2026, 11, 30, 12, 34, 56, tzinfo=UTC)


def test_dead_letter_rate_is_strictly_above_one_percent_of_all_messages():
    breaches = dead_letter_breaches(
        {
            "clickstream": (990, 10),  # 10 / 1000 = 1.0%: not above
            "game.events": (989, 11),  # 11 / 1000 = 1.1%
            "orders": (0, 0),  # nothing: no rate
            "shop.purchase": (0, 3),  # 3 / 3 = 100%
        },
        0.01,
    )
    assert [(b.entity_id, b.domain, round(b.observed, 4)) for b in breaches] == [
        ("game.events", "game", 0.011),
        ("shop.purchase", "economy", 1.0),
    ]
    assert all(b.anomaly_type == "DEAD_LETTER_RATE" and b.threshold == 0.01 for b in breaches)


def test_p95_is_the_nearest_rank():
    # 20 values 1..20: rank ceil(0.95 * 20) = 19 -> 19; 21 values: ceil(19.95) = 20 -> 20; one value: itself
    assert p95([float(v) for v in range(1, 21)]) == 19.0
    assert p95([float(v) for v in range(1, 22)]) == 20.0
    assert p95([7.0]) == 7.0


def test_insert_latency_alerts_above_two_seconds_only():
    assert latency_breaches(None, 2.0) == []
    assert latency_breaches(2.0, 2.0) == []
    (b,) = latency_breaches(2.5, 2.0)
    assert (b.anomaly_type, b.entity_id, b.observed, b.threshold) == ("INSERT_LATENCY", "loader", 2.5, 2.0)


def test_lag_alerts_per_domain_above_the_threshold():
    breaches = lag_breaches({"clickstream": 10_001, "game": 10_000, "orders": 0}, 10_000)
    assert [(b.entity_id, b.observed) for b in breaches] == [("clickstream", 10_001.0)]


def test_freshness_alerts_on_tables_with_rows_older_than_the_threshold():
    breaches = freshness_breaches(
        {
            "raw_clickstream_events": NOW - timedelta(hours=3),
            "raw_game_events": NOW - timedelta(hours=2),  # exactly 2 h: not older
            "raw_orders_events": None,  # empty: nothing to be stale
        },
        NOW,
        2.0,
    )
    assert [(b.entity_id, b.domain, b.observed) for b in breaches] == [("raw_clickstream_events", "clickstream", 3.0)]


def _failed(anomaly_id: str, channel: str, attempts: int) -> DeliveryState:
    return DeliveryState(anomaly_id, channel, FAILED, attempts, "HTTP 500", NOW)


def test_a_delivery_failing_repeatedly_alerts_once_per_channel():
    breaches = delivery_breaches(
        [_failed("a", "webhook", 4), _failed("b", "webhook", 6), _failed("c", "webhook", 5)], 5
    )
    assert [(b.entity_id, b.observed, b.threshold) for b in breaches] == [("webhook", 6.0, 5.0)]
    assert delivery_breaches([_failed("a", "webhook", 4)], 5) == []


def test_buckets_align_to_the_epoch():
    assert bucket(NOW, 60) == (datetime(2026, 11, 30, 12, 0, tzinfo=UTC), datetime(2026, 11, 30, 13, 0, tzinfo=UTC))
    assert bucket(NOW, 5) == (datetime(2026, 11, 30, 12, 30, tzinfo=UTC), datetime(2026, 11, 30, 12, 35, tzinfo=UTC))


def test_one_breach_is_one_alert_per_bucket_and_the_next_bucket_alerts_again():
    (breach,) = lag_breaches({"clickstream": 20_000}, 10_000)
    first = to_anomalies([breach], NOW, 60)[0]
    same_hour = to_anomalies([breach], NOW + timedelta(minutes=20), 60)[0]
    next_hour = to_anomalies([breach], NOW + timedelta(minutes=30), 60)[0]
    expected = hashlib.md5(b"pipeline|LOADER_LAG|domain|clickstream|2026-11-30T12:00:00.000Z").hexdigest()
    assert first.anomaly_id == same_hour.anomaly_id == expected
    assert next_hour.anomaly_id != first.anomaly_id
    assert (first.anomaly_family, first.window_start, first.detected_at) == ("pipeline", bucket(NOW, 60)[0], NOW)


def test_loader_lag_is_the_lag_of_the_group_that_loads_each_domain():
    """The CLI's group loads clickstream; Dagster's per-domain group loads game; nobody loaded orders
    yet (every message counts); an idle group that never committed is not the loader."""
    from ingestion.lag import GroupLag, PartitionLag

    cli_group = GroupLag(
        "eventhouse-loader",
        (
            PartitionLag("clickstream", 0, 90, 100),  # 10 behind
            PartitionLag("clickstream", 1, 200, 200),
            PartitionLag("game.events", 0, None, 5000),  # never committed here
            PartitionLag("orders", 0, None, 30),
        ),
    )
    dagster_game = GroupLag("eventhouse-loader-game", (PartitionLag("game.events", 0, 4990, 5000),))
    dagster_clickstream = GroupLag("eventhouse-loader-clickstream", (PartitionLag("clickstream", 0, None, 100),))
    assert loader_lag_by_domain([cli_group, dagster_game, dagster_clickstream]) == {
        "clickstream": 10,
        "game": 10,
        "orders": 30,
    }
