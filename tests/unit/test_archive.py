"""The raw archive's paths and statements, replay's window, the envelope rebuilt from a raw row,
and the retention settings: rendering only (tests/integration/archive_case.py runs them)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from archive.location import ArchiveLocation, partition_path
from archive.replay import ReplayError, check_window, envelope_from_raw, window_filter
from archive.writer import archive_statement, hour_filter
from ingestion.contract import make_event
from ingestion.raw_tables import current_ttl, ttl_expression
from ingestion.topics import topic_configs
from settings import ConfigError, archive_url, parse_utc, raw_ttl_days, topic_retention_ms

HOUR = datetime(2026, 3, 1, 7, 42, 13, tzinfo=UTC)


def test_partition_path_is_the_ingest_hour_hive_style():
    assert partition_path("raw_game_events", HOUR) == "raw_game_events/dt=2026-03-01/hour=07"
    # naive = UTC; another zone is converted
    assert partition_path("t", datetime(2026, 3, 1, 0, 59)) == "t/dt=2026-03-01/hour=00"
    assert partition_path("t", datetime.fromisoformat("2026-03-01T09:30:00+09:00")) == "t/dt=2026-03-01/hour=00"


def test_local_statement_writes_one_zstd_file_replacing_the_hour():
    location = ArchiveLocation("/home/eh/user_files/archive")
    sql = archive_statement(location, "eventhouse_raw", "raw_orders_events", HOUR)
    assert sql.startswith(
        "INSERT INTO FUNCTION file('/home/eh/user_files/archive/raw_orders_events/dt=2026-03-01/hour=07/"
        "part.parquet', 'Parquet') SELECT * FROM `eventhouse_raw`.`raw_orders_events` WHERE "
    )
    assert hour_filter(HOUR) in sql
    assert "loaded_at >= toDateTime64('2026-03-01 07:00:00', 3, 'UTC')" in sql
    assert "loaded_at < toDateTime64('2026-03-01 08:00:00', 3, 'UTC')" in sql
    assert "output_format_parquet_compression_method = 'zstd'" in sql
    assert "engine_file_truncate_on_insert = 1" in sql
    assert "output_format_parquet_string_as_string = 1" in sql
    # dead letters keep their bytes: Parquet binary
    assert "string_as_string = 0" in archive_statement(location, "r", "dead_letters", HOUR)


def test_s3_statement_uses_the_endpoint_and_truncates_on_insert():
    location = ArchiveLocation("s3://eh-archive/prod/raw/")
    assert location.is_s3 and location.local_root() is None
    sql = archive_statement(location, "eventhouse_raw", "raw_clickstream_events", HOUR)
    assert sql.startswith(
        "INSERT INTO FUNCTION s3('https://eh-archive.s3.amazonaws.com/prod/raw/raw_clickstream_events/"
        "dt=2026-03-01/hour=07/part.parquet', 'Parquet') SELECT "
    )
    assert "s3_truncate_on_insert = 1" in sql and "engine_file" not in sql
    # an endpoint URL (MinIO) is taken as it is
    minio = ArchiveLocation("http://127.0.0.1:9000/bucket")
    assert (
        minio.table_function(minio.table_glob("t"))
        == "s3('http://127.0.0.1:9000/bucket/t/dt=*/hour=*/part.parquet', 'Parquet')"
    )


def test_replay_globs_only_the_days_of_the_window():
    location = ArchiveLocation("/a")
    assert location.table_glob("t") == "/a/t/dt=*/hour=*/part.parquet"
    days = [datetime(2026, 3, 2).date(), datetime(2026, 3, 1).date()]
    assert location.table_glob("t", days) == "/a/t/dt={2026-03-01,2026-03-02}/hour=*/part.parquet"
    assert window_filter(None, None) == "1"
    since, until = parse_utc("2026-03-01T07:00Z", "x"), parse_utc("2026-03-01T09:00", "x")
    assert window_filter(since, until) == (
        "1 AND loaded_at >= toDateTime64('2026-03-01 07:00:00.000000', 3, 'UTC')"
        " AND loaded_at < toDateTime64('2026-03-01 09:00:00.000000', 3, 'UTC')"
    )
    with pytest.raises(ReplayError, match="is after --until"):
        check_window(until, since)
    with pytest.raises(ConfigError, match="not an ISO 8601"):
        parse_utc("yesterday", "--since")


def test_archive_location_refuses_glob_characters():
    with pytest.raises(ConfigError, match="must not contain"):
        ArchiveLocation("/data/arch*ive")


def test_default_archive_is_under_user_files(tmp_path):
    assert archive_url({"EVENTHOUSE_HOME": str(tmp_path)}) == str(tmp_path.resolve() / "user_files" / "archive")
    assert archive_url({"EVENTHOUSE_ARCHIVE_URL": "s3://b/p/"}) == "s3://b/p"


def test_envelope_rebuilt_from_a_raw_row_equals_the_published_one():
    """What ClickHouse returns for a raw row (replay selects ts and ingested_at as ISO text)."""
    event = make_event(
        "order.created",
        "o-9-1",
        datetime(2024, 3, 1, 13, 0, 0, 250_000, tzinfo=UTC),
        {"order_id": "ord_9", "status": "PENDING", "version": 1, "amount_cents": 1000},
        user_id="customer_9",
        sequence=4,
    )
    event["ingested_at"] = "2024-03-01T13:00:01.000Z"
    row = {
        "event_id": "o-9-1",
        "event_type": "order.created",
        "schema_version": event["schema_version"],
        "user_id": "customer_9",
        "session_id": None,
        "source_service": "eventhouse-producer",
        "source_host": "local",
        "ts": "2024-03-01T13:00:00.250Z",
        "ingested_at": "2024-03-01T13:00:01.000Z",
        "sequence": 4,
        "dedupe_key": "o-9-1",
        "payload": orjson.dumps(event["payload"]).decode(),
    }
    assert envelope_from_raw(row) == event


def test_raw_ttl_days_per_table_wins_over_all_tables():
    assert raw_ttl_days("raw_game_events", {}) == 400
    assert raw_ttl_days("raw_game_events", {"EVENTHOUSE_RAW_TTL_DAYS": "30"}) == 30
    env = {"EVENTHOUSE_RAW_TTL_DAYS": "30", "EVENTHOUSE_RAW_TTL_DAYS_RAW_GAME_EVENTS": "0"}
    assert raw_ttl_days("raw_game_events", env) is None
    assert raw_ttl_days("dead_letters", env) == 30
    with pytest.raises(ConfigError):
        raw_ttl_days("t", {"EVENTHOUSE_RAW_TTL_DAYS": "-1"})


def test_ttl_expression_matches_what_clickhouse_prints():
    engine_full = (
        "ReplacingMergeTree(ingested_at) ORDER BY event_id TTL toDateTime(loaded_at) + toIntervalDay(400) "
        "SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 8192"
    )
    assert current_ttl(engine_full) == ttl_expression(400)
    assert current_ttl("MergeTree ORDER BY x SETTINGS index_granularity = 8192") is None
    assert ttl_expression(None) is None


def test_topics_get_retention_dlqs_longer():
    assert topic_configs("orders") == {"retention.ms": str(7 * 86_400_000)}
    assert topic_configs("orders.dlq") == {"retention.ms": str(14 * 86_400_000)}
    assert topic_retention_ms(False, {"EVENTHOUSE_TOPIC_RETENTION_DAYS": "0.5"}) == 43_200_000
