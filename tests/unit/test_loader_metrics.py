"""The loader's Prometheus metrics, read back the way Prometheus reads them (the text format).

No Kafka, no ClickHouse: the metrics are driven directly, and through the loader's own
bookkeeping of a written batch; expected values are worked out by hand.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ingestion.loader import Loader, LoaderConfig
from ingestion.loader_metrics import REASON_CATEGORIES, LoaderMetrics, MetricsServer, reason_category
from ingestion.loader_stats import LoaderStats
from ingestion.partition_ranges import PartitionState, seal_batch
from settings import ContractConfig, Settings

NOW = datetime(2024, 4, 1, 10, 0, 5, tzinfo=UTC)
NOW_TEXT = "2024-04-01 10:00:05.000"


ORDER = {"order_id": "o1", "status": "PENDING", "version": 1, "amount_cents": 1999}


@dataclass
class Record:
    offset: int
    value: bytes | None
    key: bytes | None = b"s1"


def _click(event_id: str, **changes: object) -> bytes:
    event = {
        "event_type": "clickstream.click",
        "event_id": event_id,
        "session_id": "s1",
        "ts": "2024-04-01T10:00:00.000Z",
        "payload": {"item_id": 42, "category": "S"},
    }
    return orjson.dumps({**event, **changes})


def _samples(metrics: LoaderMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text: (name, sorted labels) -> value."""
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_histograms_and_lag_read_back_from_the_text_format():
    metrics = LoaderMetrics()
    metrics.consumed("clickstream", 5)
    metrics.consumed("clickstream", 3)
    metrics.consumed("orders", 2)
    metrics.consumed("game.events", 0)  # an empty poll adds no series
    # clickstream: 4 good rows of which ClickHouse wrote 3 (one deduplicated), 2 dead letters, 20 ms
    metrics.range_written(
        "clickstream", 4, 3, ["invalid JSON: unexpected character", "'ts' is not an ISO 8601 timestamp: 'x'"], 0.02
    )
    # orders: 2 rows written, 1 dead letter whose reason names another value, 0.3 s
    metrics.range_written("orders", 2, 2, ["invalid JSON: trailing comma"], 0.3)
    metrics.lag("clickstream", 0, 7)
    metrics.lag("orders", 1, 0)
    metrics.lag("orders", 1, 4)  # a gauge: the latest value stands
    metrics.lag("orders", 2, 9)
    metrics.forget_partition("orders", 2)  # revoked: its series goes
    metrics.forget_partition("orders", 5)  # never reported: nothing to do

    got = _samples(metrics)
    prefix = "eventhouse_loader_"
    assert got[(prefix + "events_consumed_total", (("topic", "clickstream"),))] == 8
    assert got[(prefix + "events_consumed_total", (("topic", "orders"),))] == 2
    assert (prefix + "events_consumed_total", (("topic", "game.events"),)) not in got
    assert got[(prefix + "events_loaded_total", (("topic", "clickstream"),))] == 3
    assert got[(prefix + "events_loaded_total", (("topic", "orders"),))] == 2
    assert got[(prefix + "duplicates_collapsed_total", (("topic", "clickstream"),))] == 1
    assert got[(prefix + "duplicates_collapsed_total", (("topic", "orders"),))] == 0
    assert got[(prefix + "dead_letters_total", (("reason", "invalid_json"),))] == 2
    assert got[(prefix + "dead_letters_total", (("reason", "timestamp"),))] == 1
    # batch sizes 6 (4 rows + 2 dead) and 3 (2 + 1): both in the le=10 bucket, neither in le=1
    assert got[(prefix + "insert_batch_rows_count", ())] == 2
    assert got[(prefix + "insert_batch_rows_sum", ())] == 9
    assert got[(prefix + "insert_batch_rows_bucket", (("le", "1.0"),))] == 0
    assert got[(prefix + "insert_batch_rows_bucket", (("le", "10.0"),))] == 2
    # insert times 0.02 s and 0.3 s
    assert got[(prefix + "insert_seconds_count", ())] == 2
    assert abs(got[(prefix + "insert_seconds_sum", ())] - 0.32) < 1e-9
    assert got[(prefix + "insert_seconds_bucket", (("le", "0.025"),))] == 1
    assert got[(prefix + "insert_seconds_bucket", (("le", "0.5"),))] == 2
    lags = {labels: value for (name, labels), value in got.items() if name == prefix + "partition_lag"}
    assert lags == {
        (("partition", "0"), ("topic", "clickstream")): 7,
        (("partition", "1"), ("topic", "orders")): 4,
    }


def test_two_loaders_in_one_process_keep_separate_registries():
    first, second = LoaderMetrics(), LoaderMetrics()
    first.consumed("orders", 3)
    assert _samples(first)[("eventhouse_loader_events_consumed_total", (("topic", "orders"),))] == 3
    assert ("eventhouse_loader_events_consumed_total", (("topic", "orders"),)) not in _samples(second)


def test_dead_letter_reasons_map_to_a_fixed_set_of_categories():
    # Real reasons, as the loader builds them from these messages.
    state = PartitionState("clickstream", 0, "clickstream", "tid")
    records = [
        Record(0, None),
        Record(1, b"{nope"),
        Record(2, b"[1, 2]"),
        Record(3, _click("a", event_type="no.such_type")),
        Record(4, _click("b", schema_version=99)),
        Record(5, _click("c", event_type="order.created", user_id="u1", payload=ORDER)),
        Record(6, _click("d", ts="yesterday")),
        Record(7, _click("e", ts="2100-01-01T00:00:00.000Z")),
        Record(8, _click("f", payload={"item_id": "not a number", "category": "S"})),
        Record(9, _click("g", session_id=None)),
        Record(10, _click("h", payload={"item_id": 1, "category": "x" * 5000})),
        Record(11, b"x" * 300_000),
    ]
    for record in records:
        state.accept(record, ContractConfig(), NOW, NOW_TEXT, LoaderStats())
    categories = [reason_category(letter.reason) for letter in state.dead]
    assert categories == [
        "empty",
        "invalid_json",
        "invalid_json",
        "unknown_event_type",
        "schema_version",
        "wrong_topic",
        "timestamp",
        "timestamp",
        "payload",
        "envelope",
        "string_limit",
        "too_large",
    ]
    # The two reasons built outside the contract (partition_ranges.py, batch_writer.py), and anything new.
    assert reason_category("could not be loaded (KeyError: 'x')") == "unexpected"
    assert reason_category("ClickHouse refused the row for raw_orders_events: CANNOT_PARSE: ...") == (
        "clickhouse_refused"
    )
    assert reason_category("a reason nobody has written yet") == "other"
    assert set(categories) < set(REASON_CATEGORIES)


def test_the_loader_updates_the_metrics_where_it_updates_its_stats():
    loader = Loader(Settings(), LoaderConfig())
    state = PartitionState("clickstream", 3, "clickstream", "tid")
    for offset, value in enumerate([_click("a"), _click("b"), b"{bad", _click("c")]):
        state.accept(Record(offset, value), ContractConfig(), NOW, NOW_TEXT, loader.stats)
    batch = seal_batch([state])
    assert batch is not None
    (chunk,) = batch.chunks
    chunk.written, chunk.insert_ms = 2, 40.0  # as the writer reports them: one of the 3 rows was a duplicate
    loader._finish(batch, commit=False)  # the partition is not assigned: nothing to commit

    got = _samples(loader.metrics)
    assert (loader.stats.rows_loaded, loader.stats.duplicates_collapsed, loader.stats.dead_letters) == (2, 1, 1)
    assert got[("eventhouse_loader_events_loaded_total", (("topic", "clickstream"),))] == 2
    assert got[("eventhouse_loader_duplicates_collapsed_total", (("topic", "clickstream"),))] == 1
    assert got[("eventhouse_loader_dead_letters_total", (("reason", "invalid_json"),))] == 1
    assert got[("eventhouse_loader_insert_batch_rows_sum", ())] == 4
    assert got[("eventhouse_loader_insert_seconds_sum", ())] == 0.04


def test_rows_written_by_materialized_views_do_not_count_as_loaded_or_go_negative():
    # ClickHouse's written_rows adds what materialized views on the raw table wrote: 3 rows sent,
    # 5 reported. All 3 landed; nothing was a duplicate; the loader must not stop over it.
    loader = Loader(Settings(), LoaderConfig())
    state = PartitionState("clickstream", 0, "clickstream", "tid")
    for offset, value in enumerate([_click("a"), _click("b"), _click("c")]):
        state.accept(Record(offset, value), ContractConfig(), NOW, NOW_TEXT, loader.stats)
    batch = seal_batch([state])
    assert batch is not None
    (chunk,) = batch.chunks
    chunk.written, chunk.insert_ms = 5, 10.0
    loader._finish(batch, commit=False)

    got = _samples(loader.metrics)
    assert (loader.stats.rows_loaded, loader.stats.duplicates_collapsed) == (3, 0)
    assert got[("eventhouse_loader_events_loaded_total", (("topic", "clickstream"),))] == 3
    assert got[("eventhouse_loader_duplicates_collapsed_total", (("topic", "clickstream"),))] == 0


def test_the_endpoint_serves_the_text_format_on_a_free_port_of_loopback():
    metrics = LoaderMetrics()
    metrics.consumed("orders", 11)
    server = MetricsServer(metrics, 0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.close()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    (sample,) = families["eventhouse_loader_events_consumed"].samples
    assert (sample.labels, sample.value) == ({"topic": "orders"}, 11)
