"""bench/scale_data.py: copies of a template of generated events, made in ClickHouse, are the template's
rows with their own identities, days and load times, and nothing else changed."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from bench.scale_data import (
    CLICK_SESSION_STRIDE,
    CLICK_START,
    OFFSET_STRIDE,
    SOURCE,
    TEMPLATE_START,
    ScaledRaw,
    Timeline,
    index_template,
)
from ingestion.producers.game_sim import SimulationConfig, simulate
from ingestion.producers.orders import OrdersConfig, simulate_orders
from ingestion.producers.yoochoose import ReplaySummary, merged_events, write_sample
from ingestion.raw_tables import RAW_COLUMNS, ensure_tables
from ingestion.raw_writer import RawWriter

pytestmark = pytest.mark.integration

COLUMNS = ", ".join((*RAW_COLUMNS, "loaded_at"))
UNCHANGED = (
    "event_type",
    "schema_version",
    "source_service",
    "source_host",
    "sequence",
    "kafka_topic",
    "kafka_partition",
    "kafka_topic_id",
)
COPIES = 3
EVENTS_PER_HOUR = 1_000
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _small_template(client, database: str, work: Path):
    """A few hundred events of every domain: two players over two days (with a shop purchase and
    mission claims), clickstream sessions with buys, orders with a soft delete."""
    ensure_tables(client, database)
    writer = RawWriter(client, database, source=SOURCE)
    writer.add_all(simulate(SimulationConfig(users=2, days=2, start=TEMPLATE_START, seed=5)))
    clicks, buys = write_sample(work, sessions=25, seed=7)
    writer.add_all(merged_events(clicks, buys, ReplaySummary()))
    orders = OrdersConfig(orders=12, users=4, days=2, start=TEMPLATE_START, seed=5, delete_rate=0.3)
    writer.add_all(simulate_orders(orders))
    writer.flush()
    return index_template(client, database, increment_days={"live": 1, "clickstream": 1})


def _rows(client, table: str, where: str = "1") -> list[dict]:
    result = client.query(f"SELECT {COLUMNS} FROM {table} WHERE {where}")
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _all_rows(client, database: str) -> list[dict]:
    return [
        {**row, "domain": domain}
        for domain in ("clickstream", "game", "economy", "orders")
        for row in _rows(client, f"`{database}`.`raw_{domain}_events`")
    ]


def _shift_days(domain: str, copy: int, timeline: Timeline) -> int:
    """The module docstring's rule: live copy c lands its template day c - 1 on base_last_day;
    clickstream copy c starts c - 1 days after the template."""
    if domain == "clickstream":
        return copy - 1
    return (timeline.base_last_day - TEMPLATE_START).days - (copy - 1)


def _load_order(row: dict) -> tuple:
    return (row["ingested_at"], row["domain"], row["kafka_topic"], row["kafka_offset"])


def _expected_layout(originals: list[dict], base_rows: int, timeline: Timeline) -> dict[tuple, datetime]:
    """(topic, template offset, copy) -> loaded_at of every base row `base_rows` rows hold, from the
    module docstring's rules: live and clickstream rows in the template's proportions; live copy c
    holds the template days up to c - 1, taken by day then load order; clickstream copies whole, in
    load order; each group loaded at its share of EVENTS_PER_HOUR, copy 1's last row at the anchor."""
    live = sorted(
        (r for r in originals if r["domain"] != "clickstream"),
        key=lambda r: ((r["ts"].date() - TEMPLATE_START).days, *_load_order(r)),
    )
    clicks = sorted((r for r in originals if r["domain"] == "clickstream"), key=_load_order)
    live_rows = round(base_rows * len(live) / len(originals))
    anchor_ms = int(timeline.anchor.timestamp() * 1000)
    layout = {}
    for group, rows, wanted in (("live", live, live_rows), ("clickstream", clicks, base_rows - live_rows)):
        ms_per_row = 3_600_000 * len(originals) / (EVENTS_PER_HOUR * len(rows))
        before, copy = 0, 0
        while before < wanted:
            copy += 1
            # a live copy stops after its template day copy - 1 (landed on base_last_day)
            kept = [r for r in rows if group != "live" or (r["ts"].date() - TEMPLATE_START).days <= copy - 1]
            for rank, row in enumerate(kept):
                if before + rank < wanted:
                    newer = before + len(kept) - 1 - rank
                    loaded_ms = anchor_ms - math.floor(newer * ms_per_row)
                    loaded_at = datetime.fromtimestamp(loaded_ms / 1000, UTC).replace(tzinfo=None)
                    layout[(row["kafka_topic"], row["kafka_offset"], copy)] = loaded_at
            before += len(kept)
    return layout


def _expected_copy(row: dict, domain: str, copy: int, new_event_id: str, timeline: Timeline) -> dict:
    """The copy of a template row, computed here from the documented rules (except the event id and
    a shop purchase's tx_id, hashes checked separately)."""
    shift = timedelta(days=_shift_days(domain, copy, timeline))
    expected = {name: row[name] for name in UNCHANGED}
    user = row["user_id"]
    expected["user_id"] = None if user is None else f"{user}_c{copy}"
    session = row["session_id"]
    if session is None:
        expected["session_id"] = None
    elif domain == "clickstream":
        expected["session_id"] = str(copy * CLICK_SESSION_STRIDE + int(session))
    else:
        assert session.startswith(user)
        expected["session_id"] = expected["user_id"] + session[len(user) :]
    expected["ts"] = row["ts"] + shift
    expected["ingested_at"] = row["ingested_at"] + shift
    expected["kafka_offset"] = copy * OFFSET_STRIDE + row["kafka_offset"]
    payload = json.loads(row["payload"])
    dedupe = row["dedupe_key"]
    if "order_id" in payload:
        order_id, version = payload["order_id"], payload["version"]
        payload["order_id"] = f"{order_id}_c{copy}"
        payload["version"] = version + shift.days * 86_400_000
        if "deleted_at" in payload:
            deleted_at = datetime.fromisoformat(payload["deleted_at"].replace("Z", "+00:00")) + shift
            payload["deleted_at"] = deleted_at.strftime("%Y-%m-%dT%H:%M:%S.") + payload["deleted_at"][20:]
        if dedupe != row["event_id"]:
            assert dedupe == f"{row['event_type']}:{order_id}:{version}"
            dedupe = f"{row['event_type']}:{payload['order_id']}:{payload['version']}"
    elif dedupe != row["event_id"]:
        assert f":{user}:" in dedupe
        dedupe = dedupe.replace(f":{user}:", f":{expected['user_id']}:")
    expected["payload"] = payload
    expected["dedupe_key"] = new_event_id if row["dedupe_key"] == row["event_id"] else dedupe
    return expected


def _assert_uuid(text: str, version: int) -> None:
    parsed = uuid.UUID(text)
    assert str(parsed) == text and parsed.version == version and parsed.variant == uuid.RFC_4122


def test_copies_rewrite_exactly_the_identities_days_and_load_times(client, database, tmp_path):
    template_database = f"{database}_template"
    try:
        template = _small_template(client, template_database, tmp_path)
        rows_by_domain = template.rows_by_domain
        assert template.rows < 1000 and all(rows_by_domain.values()), rows_by_domain
        ensure_tables(client, database)
        timeline = Timeline.ending(increments=1, events_per_hour=EVENTS_PER_HOUR, now=NOW)
        scaled = ScaledRaw(client, template, database, timeline)
        assert scaled.grow_base(COPIES * template.rows) == COPIES * template.rows

        originals = _all_rows(client, template.database)
        copies = _all_rows(client, database)
        assert len(copies) == COPIES * len(originals)
        for group in ("clickstream", "live"):
            count = sum((r["domain"] == "clickstream") == (group == "clickstream") for r in originals)
            assert sum((r["domain"] == "clickstream") == (group == "clickstream") for r in copies) == COPIES * count
        # live copy 1 is the template's first day only: the cohorts reach the present
        assert 0 < template.live_copy_rows(1) < template.live_rows
        layout = _expected_layout(originals, COPIES * template.rows, timeline)
        by_offset = {(r["kafka_topic"], r["kafka_offset"]): r for r in originals}

        template_ids = {r["event_id"] for r in originals}
        template_users = {r["user_id"] for r in originals if r["user_id"]}
        template_sessions = {r["session_id"] for r in originals if r["session_id"]}
        assert any(r["event_type"] == "shop.purchase" for r in originals)
        assert any(r["event_type"] == "order.deleted" for r in originals)

        seen_ids = set()
        found = set()
        for row in copies:
            copy, offset = divmod(row["kafka_offset"], OFFSET_STRIDE)
            original = by_offset[(row["kafka_topic"], offset)]
            assert original["domain"] == row["domain"]
            found.add((row["kafka_topic"], offset, copy))
            _assert_uuid(row["event_id"], 5)
            seen_ids.add(row["event_id"])
            expected = _expected_copy(original, row["domain"], copy, row["event_id"], timeline)
            actual = {name: row[name] for name in expected}
            actual["payload"] = json.loads(row["payload"])
            if original["event_type"] == "shop.purchase":
                tx_id = actual["payload"]["tx_id"]
                _assert_uuid(tx_id, 4)
                assert tx_id != expected["payload"]["tx_id"]
                expected["payload"]["tx_id"] = tx_id
                expected["dedupe_key"] = expected["dedupe_key"].replace(json.loads(original["payload"])["tx_id"], tx_id)
            assert actual == expected, (original, row)
            assert row["loaded_at"] == layout[(row["kafka_topic"], offset, copy)]
            assert row["user_id"] not in template_users and row["session_id"] not in template_sessions
        assert len(seen_ids) == len(copies) and not seen_ids & template_ids
        assert found == set(layout)

        # what the staging views quarantine that copying could break: the calendar, an id in two
        # domains, a customer id that is a player's, an order version used twice
        raw = f"merge('{database}', '^raw_.*_events$')"
        assert client.command(f"SELECT countIf(toDate(ts) NOT BETWEEN '2014-01-01' AND '2030-12-31') FROM {raw}") == 0
        assert client.command(f"SELECT count() - uniqExact(event_id) FROM {raw}") == 0
        players = f"SELECT user_id FROM merge('{database}', '^raw_(game|economy)_events$')"
        assert client.command(f"SELECT count() FROM {database}.raw_orders_events WHERE user_id IN ({players})") == 0
        reused = client.command(
            "SELECT count() FROM (SELECT JSONExtractString(payload, 'order_id') AS o, JSONExtractInt(payload, "
            f"'version') AS v FROM {database}.raw_orders_events GROUP BY o, v HAVING count() > 1)"
        )
        assert reused == 0

        # an increment: exactly its events, new identities, on increment_day, loaded in the next hour
        base_ids, base_max_loaded = seen_ids, max(r["loaded_at"] for r in copies)
        assert base_max_loaded == timeline.anchor.replace(tzinfo=None)
        assert scaled.add_increment(40) == 40
        increment = [r for r in _all_rows(client, database) if r["event_id"] not in base_ids]
        assert len(increment) == 40
        assert {r["ts"].date() for r in increment} == {timeline.increment_day}
        assert all(base_max_loaded < r["loaded_at"] <= base_max_loaded + timedelta(hours=1) for r in increment), (
            "an increment loads in the hour after the base's newest row"
        )
        increment_users = {r["user_id"] for r in increment if r["user_id"]}
        assert increment_users and not increment_users & ({r["user_id"] for r in copies} | template_users)
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{template_database}`")


def test_a_timeline_keeps_every_load_in_the_past_and_the_increments_after_the_base():
    timeline = Timeline.ending(increments=3, events_per_hour=100_000, now=NOW)
    assert timeline.anchor == NOW - timedelta(hours=3)
    assert timeline.increment_day == date(2026, 11, 29) and timeline.base_last_day == date(2026, 11, 28)
    assert date(2014, 4, 1) == CLICK_START
