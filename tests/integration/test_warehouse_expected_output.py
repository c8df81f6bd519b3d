"""The warehouse through late and re-delivered batches, against values worked out independently.

Fixed small input events go through the real broker and loader: a first batch, then a full
refresh of a brand-new database; a batch of late events (one bridges two game sessions, others
extend clickstream sessions and days), then an incremental run; a batch that re-delivers events
already loaded (same event_ids) plus a new day, then another incremental run. Then:
- the core marts (fct_sessions, the clickstream daily metrics, funnel and popular items, the
  clickstream and game anomalies, user retention, fct_orders) must equal what
  tests/integration/warehouse_reference.py computes in plain Python from the same input events;
- every other mart and snapshot of the manifest must equal its regression snapshot,
  `warehouse_case/expected/<model>.csv`: the models' own earlier output, there to make a change
  visible in review, not evidence that the output is right;
- a full refresh must give exactly the tables the incremental runs gave.

The batches also carry odd events the loader accepts (ODD_EVENTS): one per staging invariant,
each of which used to fail an error-severity dbt test (or overflow a Decimal, or be silently
typed to 0/NULL) and skip up to ~300 of the build's nodes. Each must land in its source's
quarantine model with its reason, named by the warn test, while every build completes and the
marts stay exactly as expected. One clean order event of batch 1 comes back in batch 3 with an
unknown status: fct_events, incremental, must drop it.

Rewrite the regression snapshots (then read the diff!) with:
    EVENTHOUSE_UPDATE_EXPECTED=1 pytest tests/integration/test_warehouse_expected_output.py
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestion.contract import make_event
from ingestion.loader import Loader, LoaderConfig
from ingestion.publisher import Publisher
from ingestion.raw_tables import RAW_COLUMNS
from settings import REPO_ROOT, load_settings
from tests.conftest import running_stack
from tests.integration import archive_case
from tests.integration import warehouse_reference as reference
from tests.integration.dbt_support import run_dbt

pytestmark = pytest.mark.integration

CASE = Path(__file__).parent / "warehouse_case"
BATCHES = ["batch_1.jsonl", "batch_2_late.jsonl", "batch_3_redelivered.jsonl"]
UPDATE = os.environ.get("EVENTHOUSE_UPDATE_EXPECTED") == "1"
with (REPO_ROOT / "seeds" / "event_types.csv").open() as _types:
    DOMAIN_OF = {row["event_type"]: row["domain"] for row in csv.DictReader(_types)}
DOMAINS = sorted(set(DOMAIN_OF.values()))

# Marts the regression snapshots leave out, and why. Every other mart and snapshot of the manifest
# is either checked against warehouse_reference.py (CORE_MARTS) or has a regression snapshot.
NOT_SNAPSHOTTED = {
    "dim_date": "the calendar: a generated series of dim_date_start..dim_date_end, no input of the case",
    "dim_stages": "the game_stages seed, typed (tests/integration/test_dbt_project.py checks it)",
}
# marts/realtime: insert-time aggregates count deliveries, and this case re-delivers events on
# purpose (tests/integration/test_realtime_aggregates.py checks them against fct_events);
# marts/live: the live anomalies, checked against fct_anomalies (test_live_anomalies_*)
NOT_SNAPSHOTTED_FOLDERS = {"realtime", "live"}


def _odd(event_type: str, event_id: str, ts: str, payload: dict, ingested_at: str | None = None, **envelope) -> dict:
    """An event as a producer would send it; ts and ingested_at as ISO 8601 UTC."""
    event = make_event(event_type, event_id, datetime.fromisoformat(ts), payload, **envelope)
    event["ingested_at"] = ingested_at or ts
    return event


def _buy(event_id: str, ts: str, price: float, quantity: int = 1, ingested_at: str | None = None) -> dict:
    return _odd(
        "clickstream.purchase",
        event_id,
        ts,
        {"item_id": 2, "price": price, "quantity": quantity},
        ingested_at,
        session_id="100",
    )


def _game(
    event_type: str, event_id: str, payload: dict, ts: str = "2024-03-01T09:03:00.000Z", user_id: str = "u1"
) -> dict:
    return _odd(event_type, event_id, ts, payload, user_id=user_id, session_id=f"gs-{user_id}")


def _shop(event_id: str, status: str, price_cents: int) -> dict:
    payload = {
        "tx_id": f"tx-{event_id}",
        "status": status,
        "product_id": "gold_500",
        "amount_gold": 500,
        "price_cents": price_cents,
    }
    return _odd("shop.purchase", event_id, "2024-03-01T09:30:00.000Z", payload, user_id="u1")


def _order(
    event_type: str,
    event_id: str,
    ts: str,
    payload: dict,
    user_id: str = "customer_00001",
    ingested_at: str | None = None,
) -> dict:
    return _odd(event_type, event_id, ts, payload, ingested_at, user_id=user_id)


FLIP = "odd-o-clean-then-unknown-status"
# Odd but loader-valid events per batch (index into BATCHES). Comments: what each used to break.
ODD_EVENTS: dict[int, list[dict]] = {
    0: [
        # expression_is_true price >= 0 on stg_clickstream__purchases (275 nodes skipped)
        _buy("odd-c-price-negative", "2024-03-01T10:25:00.000Z", -5.0),
        # price x quantity over Decimal64(2): fct_events, fct_sessions, dim_items fail (264 skipped)
        _buy("odd-c-price-too-large", "2024-03-01T10:26:00.000Z", 1e15, 100),
        # silently typed to quantity 0 / item 0 by staging
        _buy("odd-c-quantity-negative", "2024-03-01T10:27:00.000Z", 10.0, -2),
        _odd("clickstream.click", "odd-c-item-negative", "2024-03-01T10:05:00.000Z", {"item_id": -7}, session_id="100"),
        # relationships to dim_date of fct_events, latency_daily, clickstream_daily_metrics, kpi_daily
        _odd(
            "clickstream.click", "odd-c-before-calendar", "2005-06-01T00:00:00.000Z", {"item_id": 1}, session_id="100"
        ),
        # one event id in two domains: unique and the raw-count test on fct_events (121 skipped)
        _odd("clickstream.click", "odd-shared-id", "2024-03-01T10:06:00.000Z", {"item_id": 1}, session_id="odd-s"),
        _odd("auth.logout", "odd-shared-id", "2024-03-01T09:40:00.000Z", {}, user_id="u1"),
        # an event id reused with another type and day: collapses to the latest delivery (the
        # original click, ingested later), no quarantine
        _buy("c-s100-1", "2024-02-28T10:00:00.000Z", 1.0, ingested_at="2024-02-28T10:00:01.000Z"),
        # relationships of game_stage_difficulty_live.stage_key to dim_stages (u2's, see UNKNOWN_STAGES)
        _game(
            "game.stage_start",
            "odd-g-stage-not-in-catalog",
            {"chapter": 99, "stage": 1, "mode": "story"},
            ts="2024-03-02T20:01:00.000Z",
            user_id="u2",
        ),
        # accepted_values of game_mode_split.game_mode
        _game("game.stage_start", "odd-g-mode-unknown", {"chapter": 1, "stage": 2, "mode": "hardcore"}),
        # silently NULL in staging (the pipeline data-quality warning)
        _game(
            "game.stage_clear",
            "odd-g-score-negative",
            {"chapter": 1, "stage": 2, "mode": "story", "clear_time_ms": 50000, "score": -100},
        ),
        _game("game.session_end", "odd-g-duration-negative", {"duration_ms": -1000}),
        # relationships to dim_date of 7 models (user_retention_weekly: 3600 rows)
        _game("game.heartbeat", "odd-g-before-calendar", {"screen": "home"}, ts="2005-06-01T00:00:00.000Z"),
        # revenue of economy_daily_kpis below 0
        _shop("odd-e-price-negative", "completed", -99999),
        # price_cents over Decimal64(2): fct_events and economy_whales fail (138 skipped)
        _shop("odd-e-price-too-large", "completed", 2**62),
        _odd("auth.login", "odd-e-before-calendar", "2005-06-01T00:00:00.000Z", {"platform": "ios"}, user_id="u1"),
        # unique (order_id, order_version) of stg_orders__order_events (292 skipped); o-3-2 is kept
        _order(
            "order.status_changed",
            "odd-o-version-reused",
            "2024-03-02T09:45:00.000Z",
            {"order_id": "ord_3", "status": "SHIPPED", "version": 2},
        ),
        # revenue and average_order_value of commerce_daily_sales below 0
        _order(
            "order.created",
            "odd-o-amount-negative",
            "2024-03-01T16:00:00.000Z",
            {"order_id": "ord_odd_negative", "status": "PENDING", "version": 1, "amount_cents": -999999},
        ),
        # amount over Decimal64(2): fct_orders fails (34 skipped)
        _order(
            "order.created",
            "odd-o-amount-too-large",
            "2024-03-01T16:05:00.000Z",
            {"order_id": "ord_odd_large", "status": "PENDING", "version": 1, "amount_cents": 2**62},
        ),
        # a version above ord_2's others, dated before them: updated_at >= created_at of
        # int_orders_latest_version (44 skipped), and snapshot validity on the next run
        _order(
            "order.status_changed",
            "odd-o-ts-before-earlier-version",
            "2024-03-01T13:00:00.000Z",
            {"order_id": "ord_2", "status": "SHIPPED", "version": 10},
            user_id="customer_00002",
        ),
        _order(
            "order.created",
            "odd-o-before-calendar",
            "2005-06-01T00:00:00.000Z",
            {"order_id": "ord_odd_old", "status": "PENDING", "version": 1, "amount_cents": 100},
        ),
        # a customer id that is a player's: unique of dim_users.user_id (192 skipped)
        _order(
            "order.created",
            "odd-o-customer-is-player",
            "2024-03-01T16:10:00.000Z",
            {"order_id": "ord_odd_u1", "status": "PENDING", "version": 1, "amount_cents": 100},
            user_id="u1",
        ),
        # clean, and changes nothing (a version below ord_3's created): in fct_events until batch 3
        _order(
            "order.status_changed",
            FLIP,
            "2024-03-02T08:59:00.000Z",
            {"order_id": "ord_3", "status": "PENDING", "version": 0},
        ),
    ],
    1: [
        # quarantined on an incremental run too
        _game(
            "game.stage_clear",
            "odd-g-stage-not-in-catalog-late",
            {"chapter": 1, "stage": 11, "mode": "story", "clear_time_ms": 40000, "score": 300},
            ts="2024-03-02T20:02:00.000Z",
            user_id="u2",
        ),
        _shop("odd-e-status-unknown", "refunded", 499),
        # accepted_values of stg_orders__order_events.order_status (292 skipped)
        _order(
            "order.status_changed",
            "odd-o-status-unknown",
            "2024-03-02T10:00:00.000Z",
            {"order_id": "ord_3", "status": "LOST", "version": 5},
        ),
    ],
    2: [
        # the clean event of batch 1 again, now with a status outside the nine
        _order(
            "order.status_changed",
            FLIP,
            "2024-03-02T08:59:00.000Z",
            {"order_id": "ord_3", "status": "lost", "version": 0},
            ingested_at="2024-03-04T00:00:00.000Z",
        ),
    ],
}
# --- window edges of the five bot rules (issue 15), on a day of their own (2024-06-01: no KPI
# z-score, which needs two earlier days within kpi_anomaly_trailing_days) ---------------------
EDGE_DAY = "2024-06-01"


def _at(clock: str, plus_ms: int = 0) -> str:
    """EDGE_DAY at hh:mm:ss plus some milliseconds, as ISO 8601 UTC."""
    moment = datetime.fromisoformat(f"{EDGE_DAY}T{clock}+00:00") + timedelta(milliseconds=plus_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _clicks(session: str, clock: str, count: int, step_ms: int, items: int = 1, first: int = 0) -> list[dict]:
    """`count` clicks of a session, `step_ms` apart from `clock`, cycling over `items` items."""
    return [
        _odd(
            "clickstream.click",
            f"edge-{session}-{first + i}",
            _at(clock, i * step_ms),
            {"item_id": 9000 + i % items, "category": "E"},
            session_id=session,
        )
        for i in range(count)
    ]


def _clears(user: str, clock: str, offsets_ms: list[int], clear_time_ms: int = 30_000) -> list[dict]:
    """Stage 1-1 clears of a player at `clock` plus each offset (score within the stage's max)."""
    return [
        _odd(
            "game.stage_clear",
            f"edge-{user}-{clock}-{i}",
            _at(clock, offset),
            {"chapter": 1, "stage": 1, "mode": "story", "clear_time_ms": clear_time_ms, "score": 500},
            _at(clock, offset + 1000),
            user_id=user,
            session_id=f"gs-{user}",
        )
        for i, offset in enumerate(offsets_ms)
    ]


_LATE_CLICK = _odd(
    "clickstream.click",
    "edge-9007-late",
    _at("10:20:05"),
    {"item_id": 9000, "category": "E"},
    _at("12:20:05"),
    session_id="9007",
)
EDGE_EVENTS: dict[int, list[dict]] = {
    0: [
        *_clicks("9001", "10:00:00", 49, 200),  # 49 clicks in one 10-s window: no HIGH_FREQUENCY
        *_clicks("9002", "10:01:00", 50, 200),  # 50: HIGH_FREQUENCY [10:01:00, 10:01:10)
        # 100 clicks in [10:05:00, 10:05:49.5], 2 a second (10 per 10 s): BOT_LIKE on 5 items, in the one
        # window holding them all, [10:05:00, 10:06:00) ([10:04:30, 10:05:30) holds 60); not on 6 items
        *_clicks("9003", "10:05:00", 100, 500, items=5),
        *_clicks("9004", "10:05:00", 100, 500, items=6),
        # 50 clicks, the 50th on the next window's first millisecond: no HIGH_FREQUENCY
        *_clicks("9005", "10:10:00", 49, 100),
        *_clicks("9005", "10:10:10", 1, 0, first=49),
        # 50 clicks, the 50th on the window's last millisecond: HIGH_FREQUENCY [10:10:00, 10:10:10)
        *_clicks("9006", "10:10:00", 49, 100),
        *_clicks("9006", "10:10:09.999", 1, 0, first=49),
        *_clicks("9007", "10:20:00", 49, 100),  # completed by a late click in batch 2 (_LATE_CLICK)
        *_clicks("9008", "10:30:00", 49, 100),  # one re-delivered in batch 3: still 49
        # IMPOSSIBLE_CLEAR below impossible_clear_ms (500) only
        *_clears("edge_u1", "11:00:00", [0], clear_time_ms=499),
        *_clears("edge_u1", "11:05:00", [0], clear_time_ms=500),
        # RAPID_FIRE: 19 clears 3 s apart; a 20th 59.999 s after the first (20 in one window) or 60 s
        # after it (the window (t - 60 s, t] has lost the first)
        *_clears("edge_u2", "11:10:00", [i * 3000 for i in range(19)]),
        *_clears("edge_u3", "11:10:00", [i * 3000 for i in range(19)] + [59_999]),
        *_clears("edge_u4", "11:10:00", [i * 3000 for i in range(19)] + [60_000]),
    ],
    1: [_LATE_CLICK],
    2: [_clicks("9008", "10:30:00", 1, 0)[0]],
}
# What the live detection must flag among the edge entities, worked out by hand above:
# (anomaly_type, entity_id, window_start, observed_value)
EDGE_ANOMALIES = {
    ("HIGH_FREQUENCY", "9002", f"{EDGE_DAY} 10:01:00.000", 50.0),
    ("BOT_LIKE", "9003", f"{EDGE_DAY} 10:05:00.000", 100.0),
    ("HIGH_FREQUENCY", "9006", f"{EDGE_DAY} 10:10:00.000", 50.0),
    ("HIGH_FREQUENCY", "9007", f"{EDGE_DAY} 10:20:00.000", 50.0),
    ("IMPOSSIBLE_CLEAR", "edge_u1", f"{EDGE_DAY} 11:00:00.000", 499.0),
    ("RAPID_FIRE", "edge_u3", f"{EDGE_DAY} 11:10:00.000", 20.0),
}


# What each quarantine model must hold: event_id -> reasons, worked out from the rules by hand.
QUARANTINED = {
    "clickstream": {
        "odd-c-price-negative": ["price_negative"],
        "odd-c-price-too-large": ["price_too_large"],
        "odd-c-quantity-negative": ["quantity_out_of_range"],
        "odd-c-item-negative": ["item_id_out_of_range"],
        "odd-c-before-calendar": ["ts_outside_calendar"],
        "odd-shared-id": ["event_id_in_another_domain"],
    },
    "game": {
        "odd-g-stage-not-in-catalog": ["stage_not_in_catalog"],
        "odd-g-stage-not-in-catalog-late": ["stage_not_in_catalog"],
        "odd-g-mode-unknown": ["game_mode_unknown"],
        "odd-g-score-negative": ["score_out_of_range"],
        "odd-g-duration-negative": ["duration_ms_out_of_range"],
        "odd-g-before-calendar": ["ts_outside_calendar"],
    },
    "economy": {
        "odd-shared-id": ["event_id_in_another_domain"],
        "odd-e-price-negative": ["price_cents_negative"],
        "odd-e-price-too-large": ["price_cents_too_large"],
        "odd-e-status-unknown": ["purchase_status_unknown"],
        "odd-e-before-calendar": ["ts_outside_calendar"],
    },
    "orders": {
        "odd-o-version-reused": ["order_version_reused"],
        "odd-o-amount-negative": ["amount_cents_negative"],
        "odd-o-amount-too-large": ["amount_cents_too_large"],
        "odd-o-ts-before-earlier-version": ["ts_before_an_earlier_version"],
        "odd-o-before-calendar": ["ts_outside_calendar"],
        "odd-o-customer-is-player": ["customer_id_is_a_player_id"],
        "odd-o-status-unknown": ["order_status_unknown"],
        FLIP: ["order_status_unknown"],
    },
}
# Warnings a build of this case may give: the quarantine tests, the KPI z-score of a revenue day
# the expected output has as an anomaly, and the insert-time aggregates' check, which names:
# - u2's day of the two events of stages outside the catalog: the aggregates leave out the
#   quarantined game events except those (an insert does not read the catalog); the live stage
#   difficulty leaves those stages out;
# - once batch 3 re-delivered g-u1-2 (u1's stage 1-1 clear on 2024-03-01), that day and stage:
#   the aggregates count deliveries. (A full refresh back-fills them from the raw table, where a
#   merge may already have collapsed the re-delivery.)
REALTIME_CHECK = "assert_realtime_aggregates_match_fct_events"
ALLOWED_WARNINGS = {f"no_quarantined_{domain}_events" for domain in QUARANTINED} | {
    "kpi_anomaly_kpi_daily_revenue",
    REALTIME_CHECK,
}
UNKNOWN_STAGES = {("daily_user_summary", "2024-03-02 u2")}
REDELIVERY = {("daily_user_summary", "2024-03-01 u1"), ("stage_difficulty", "101")}

# When a row was computed, not what it says. (The insert-time aggregates count deliveries, and
# this case re-delivers events on purpose: tests/integration/test_realtime_aggregates.py.)
RUN_TIME_COLUMNS = {"loaded_at", "max_loaded_at", "detected_at"}


FIVE_RULES = ("HIGH_FREQUENCY", "BOT_LIKE", "IMPOSSIBLE_CLEAR", "SCORE_OVERFLOW", "RAPID_FIRE")
EDGE_ENTITIES = {
    event["user_id"] if event["event_type"].startswith("game.") else event["session_id"]
    for events in EDGE_EVENTS.values()
    for event in events
}


def _anomaly_rows(client, relation: str) -> list[tuple]:
    """The five bot rules' anomalies of fct_anomalies or live_anomalies, every column but detected_at."""
    columns = (
        "anomaly_id, anomaly_family, anomaly_type, domain, entity_type, entity_id, event_id, window_start,"
        " window_end, observed_value, threshold_value"
    )
    query = f"SELECT {columns} FROM `{relation}` WHERE anomaly_type IN {FIVE_RULES} ORDER BY ALL"
    return [tuple(row) for row in client.query(query).result_rows]


def _edge_anomalies(client, relation: str = "live_anomalies") -> set[tuple]:
    """The anomalies of the edge entities as EDGE_ANOMALIES writes them."""
    rows = client.query(
        f"SELECT anomaly_type, entity_id, toString(window_start), observed_value FROM `{relation}`"
        " WHERE entity_id IN {entities:Array(String)}",
        parameters={"entities": sorted(EDGE_ENTITIES)},
    ).result_rows
    return {tuple(row) for row in rows}


def _retry_a_loader_batch(client, raw: str) -> tuple[dict[str, int], dict[str, int]]:
    """Inserts the newest clickstream batch the loader logged again, with its deduplication token, as a
    loader retrying it does. Returns the rows of the raw table and of the tables its materialized
    views feed, before and after: the raw table drops the block, and so must those tables (ClickHouse
    runs the views on a block the source dropped: macros/insert_time_tables.sql)."""
    topic, partition, first, last, topic_id = client.query(
        f"SELECT kafka_topic, kafka_partition, first_offset, last_offset, kafka_topic_id FROM `{raw}`.ingest_batches"
        " WHERE state = 'done' AND kafka_topic = 'clickstream' AND rows_loaded > 0"
        " ORDER BY batch_started_at DESC LIMIT 1"
    ).first_row
    counts = {
        "raw": f"SELECT count() FROM `{raw}`.raw_clickstream_events",
        # plain MergeTree: a row per inserted block and session
        "live_anomaly_entities": "SELECT count() FROM live_anomaly_entities",
        # AggregatingMergeTree: a row per inserted block and window until merged
        "live_click_windows": "SELECT count() FROM live_click_windows",
    }
    before = {name: client.command(query) for name, query in counts.items()}
    columns = ", ".join(RAW_COLUMNS)
    body = client.raw_query(
        f"SELECT {columns} FROM `{raw}`.raw_clickstream_events WHERE kafka_topic = '{topic}'"
        f" AND kafka_partition = {partition} AND kafka_offset BETWEEN {first} AND {last} ORDER BY kafka_offset",
        fmt="JSONEachRow",
    )
    assert body.count(b"\n") == last - first + 1, "the batch's rows are not all in the raw table"
    client.raw_insert(
        f"`{raw}`.raw_clickstream_events",
        column_names=list(RAW_COLUMNS),
        insert_block=body,
        settings={"insert_deduplication_token": f"{topic}:{partition}:{first}-{last}@{topic_id}"},
        fmt="JSONEachRow",
    )
    after = {name: client.command(query) for name, query in counts.items()}
    return before, after


def _dbt(args: list[str], env: dict[str, str], target: Path) -> list[dict]:
    """Runs dbt; returns run_results.json's results (of this invocation)."""
    result = run_dbt(args, env, target, timeout=900)
    assert result.returncode == 0, f"dbt {' '.join(args)} failed:\n{result.stdout[-6000:]}"
    return json.loads((target / "run_results.json").read_text())["results"]


def _test_name(unique_id: str) -> str:
    """test.eventhouse.<name>.<hash> -> <name> (names of generic tests end in a hash too)."""
    name = unique_id.split(".")[2]
    return name.rsplit("__", 1)[0] if name.startswith("kpi_anomaly_") else name


def _assert_built_every_node(results: list[dict], client, realtime: set, realtime_at_most: set | None = None) -> None:
    """No error, failure or skip; only the quarantine tests and the known findings warn, and the
    insert-time aggregates differ from fct_events in `realtime` (up to `realtime_at_most`)."""
    broken = [(r["unique_id"], r["status"]) for r in results if r["status"] in ("error", "fail", "skipped")]
    assert not broken, broken
    warned = {_test_name(r["unique_id"]): r for r in results if r["status"] == "warn"}
    assert set(warned) <= ALLOWED_WARNINGS, set(warned) - ALLOWED_WARNINGS
    differences = (
        set(client.query(warned[REALTIME_CHECK]["compiled_code"]).result_rows) if REALTIME_CHECK in warned else set()
    )
    assert realtime <= differences <= (realtime_at_most or realtime), differences


def _assert_quarantine_warnings_name_the_events(client, results: list[dict], expected: dict[str, dict]) -> None:
    """Each quarantine test warns with one failing row per quarantined event, naming its reasons."""
    by_name = {_test_name(r["unique_id"]): r for r in results if r["unique_id"].startswith("test.")}
    for domain, events in expected.items():
        result = by_name[f"no_quarantined_{domain}_events"]
        assert result["status"] == ("warn" if events else "pass"), (domain, result["status"])
        assert result["failures"] == len(events), (domain, result["failures"])
        rows = client.query(result["compiled_code"]).named_results()
        assert {row["event_id"]: row["quarantine_reasons"] for row in rows} == {
            event_id: ", ".join(reasons) for event_id, reasons in events.items()
        }


def _deliveries(batch: int) -> list[dict]:
    """The events batch `batch` publishes: its file's, then its odd events."""
    lines = (CASE / BATCHES[batch]).read_bytes().splitlines()
    return [orjson.loads(line) for line in lines] + ODD_EVENTS[batch] + EDGE_EVENTS[batch]


def _load(batch: int, env: dict[str, str]) -> None:
    """Publishes the batch and runs the loader until it has caught up (bounded by max_seconds)."""
    settings = load_settings(env)
    publisher = Publisher(settings.kafka, client_id="warehouse-case")
    try:
        for event in _deliveries(batch):
            publisher.publish(event)
    finally:
        publisher.close()
    config = LoaderConfig(until_caught_up=True, max_seconds=120, group_id="warehouse-case", session_timeout_ms=6000)
    Loader(settings, config).run()


def _distinct_raw_events(client, raw_database: str) -> int:
    """Distinct event ids per domain in the raw tables (a loader that re-reads a message writes
    a row ClickHouse drops by its deduplication token; re-deliveries keep their event id)."""
    return sum(
        client.command(f"SELECT uniqExact(event_id) FROM `{raw_database}`.raw_{domain}_events") for domain in DOMAINS
    )


def _published_distinct(batches: int) -> int:
    events = [e for batch in range(batches) for e in _deliveries(batch)]
    return len({(DOMAIN_OF[e["event_type"]], e["event_id"]) for e in events})


def _snapshotted_marts(manifest: dict) -> list[str]:
    """Every mart and snapshot of the manifest but those NOT_SNAPSHOTTED says why not."""
    names = []
    for node in manifest["nodes"].values():
        if node["resource_type"] == "snapshot" or (
            node["resource_type"] == "model"
            and node["fqn"][1] == "marts"
            and node["fqn"][2] not in NOT_SNAPSHOTTED_FOLDERS
            and node["name"] not in NOT_SNAPSHOTTED
        ):
            names.append(node["name"])
    return sorted(names)


def _table_csv(client, table: str) -> str:
    """The table as CSV, run-time columns left out, rows in the order of all their values."""
    columns = [
        row[0] for row in client.query(f"DESCRIBE TABLE `{table}`").result_rows if row[0] not in RUN_TIME_COLUMNS
    ]
    result = client.query(f"SELECT {', '.join(columns)} FROM `{table}` ORDER BY ALL")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in result.result_rows:
        writer.writerow(["" if v is None else str(v) for v in row])
    return out.getvalue()


def _all_deliveries() -> list[dict]:
    return [e for batch in range(len(BATCHES)) for e in _deliveries(batch)]


# The case's soft-deleted orders (ord_1), which build_case purges and then replays from the archive.
DELETED_ORDERS = set(archive_case.deleted_orders(_all_deliveries()))
# Compared tables that legitimately differ after that: the purge removed a deleted order's rows
# from the status snapshot, and a rebuild cannot bring back its history (the statuses it held
# before its deletion), only its current state. Every other table is rebuilt whole from the replay.
PURGED_HISTORY = {"snp_order_status": "order_id"}


def _purged_history_filters() -> dict[str, str]:
    """WHERE conditions that leave the purged orders out of PURGED_HISTORY's tables."""
    ids = ", ".join(f"'{order_id}'" for order_id in sorted(DELETED_ORDERS))
    return {table: f"{column} NOT IN ({ids})" for table, column in PURGED_HISTORY.items()}


def _without_purged(table: str, text: str) -> str:
    """A table's CSV without the purged orders' rows when it is one of PURGED_HISTORY's."""
    if table not in PURGED_HISTORY:
        return text
    header, *rows = list(csv.reader(io.StringIO(text)))
    position = header.index(PURGED_HISTORY[table])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *(r for r in rows if r[position] not in DELETED_ORDERS)])
    return out.getvalue()


@dataclass
class BuiltCase:
    """The case's warehouse after all three batches, and what was observed on the way."""

    client: Any
    env: dict[str, str]  # the case's stack: what a server or dbt run against it needs
    marts: list[str]
    incremental: dict[str, str]  # mart -> CSV after the incremental runs
    refreshed: dict[str, str]  # mart -> CSV after a full refresh
    # (live_anomalies rows, fct_anomalies rows of the five bot rules) after the incremental runs,
    # and after the full refresh
    live: dict[str, tuple[list, list]] = field(default_factory=dict)
    observed: dict[str, Any] = field(default_factory=dict)
    expected_observed: dict[str, Any] = field(default_factory=dict)


def build_case(tmp_path_factory) -> Iterator[BuiltCase]:
    """The case through the broker, the loader and dbt: the session fixture `built_case`
    (tests/integration/conftest.py) runs it once for this module's tests and the API and dashboard
    tests, which read its warehouse.

    Unit tests are left out of these builds: they do not read the data, and `make dbt-checks`
    runs them all. The first build is a full refresh of a brand-new
    database, so it needs no preparation (seeds are built by it)."""
    target = tmp_path_factory.mktemp("warehouse-case")
    build = ["build", "--exclude-resource-type", "unit_test"]
    with running_stack("eventhouse-case-") as stack:
        env = stack.env
        client = stack.client(database="eventhouse")
        raw = load_settings(env).clickhouse.raw_database
        observed: dict[str, Any] = {}
        expected: dict[str, Any] = {}

        _load(0, env)
        observed["distinct raw events after batch 1"] = _distinct_raw_events(client, raw)
        expected["distinct raw events after batch 1"] = _published_distinct(1)
        _assert_built_every_node(_dbt([*build, "--full-refresh"], env, target), client, UNKNOWN_STAGES)
        sessions_before = client.command("SELECT count() FROM fct_sessions WHERE domain = 'game'")
        # the clean order event is in fct_events for now
        observed["FLIP in fct_events after batch 1"] = client.command(
            f"SELECT count() FROM fct_events WHERE event_id = '{FLIP}'"
        )
        expected["FLIP in fct_events after batch 1"] = 1

        _load(1, env)
        observed["distinct raw events after batch 2"] = _distinct_raw_events(client, raw)
        expected["distinct raw events after batch 2"] = _published_distinct(2)
        # detected at insert time: the late click completed 9007's window before any dbt run
        observed["live edge anomalies after batch 2, before dbt"] = _edge_anomalies(client)
        expected["live edge anomalies after batch 2, before dbt"] = EDGE_ANOMALIES
        observed["batch edge anomalies after batch 2, before dbt"] = _edge_anomalies(client, "fct_anomalies")
        expected["batch edge anomalies after batch 2, before dbt"] = EDGE_ANOMALIES - {
            a for a in EDGE_ANOMALIES if a[1] == "9007"
        }
        before, after = _retry_a_loader_batch(client, raw)
        observed["rows after a retried loader batch"] = after
        expected["rows after a retried loader batch"] = before
        _assert_built_every_node(_dbt(build, env, target), client, UNKNOWN_STAGES)
        # The late heartbeat bridged u1's two game sessions into one.
        observed["game sessions merged by batch 2"] = sessions_before - client.command(
            "SELECT count() FROM fct_sessions WHERE domain = 'game'"
        )
        expected["game sessions merged by batch 2"] = 1

        _load(2, env)
        observed["distinct raw events after batch 3"] = _distinct_raw_events(client, raw)
        expected["distinct raw events after batch 3"] = _published_distinct(3)
        # 9008's re-delivered click counts once
        observed["live edge anomalies after batch 3"] = _edge_anomalies(client)
        expected["live edge anomalies after batch 3"] = EDGE_ANOMALIES
        # the live tables expire rows by insert time (the case's events are from 2024 and 2014)
        observed["live tables' TTL"] = {
            table: "TTL toDateTime(inserted_at) + toIntervalHour("
            in client.command(
                "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
                parameters={"t": table},
            )
            for table in ("live_click_windows", "live_stage_clears", "live_anomaly_entities")
        }
        expected["live tables' TTL"] = dict.fromkeys(observed["live tables' TTL"], True)
        results = _dbt(build, env, target)
        _assert_built_every_node(results, client, UNKNOWN_STAGES | REDELIVERY)
        _assert_quarantine_warnings_name_the_events(client, results, QUARANTINED)
        # 181 lines, 3 of them re-deliveries of events already loaded: 178 distinct events; plus the
        # edge events: 497 clicks and 61 clears in batch 1, the late click in batch 2. Of the
        # odd events, the quarantined ones are not in fct_events (the one that came back with an
        # unknown status was deleted from it), and the reused event id collapsed into the click.
        observed["fct_events rows"] = client.command("SELECT count() FROM fct_events")
        expected["fct_events rows"] = 178 + 497 + 61 + 1
        observed["FLIP in fct_events after batch 3"] = client.command(
            f"SELECT count() FROM fct_events WHERE event_id = '{FLIP}'"
        )
        expected["FLIP in fct_events after batch 3"] = 0
        observed["type of c-s100-1"] = client.command("SELECT event_type FROM fct_events WHERE event_id = 'c-s100-1'")
        expected["type of c-s100-1"] = "clickstream.click"

        # Issue 17. Raw tables expire rows 400 days after they were loaded (loaded_at); the loader's log does not.
        observed["raw tables' TTL"] = dict(
            client.query(
                "SELECT name, extract(engine_full, 'TTL (.+) SETTINGS') FROM system.tables"
                " WHERE database = {raw:String} AND name IN {tables:Array(String)} ORDER BY name",
                parameters={"raw": raw, "tables": ["dead_letters", "ingest_batches", *archive_case.RAW_EVENT_TABLES]},
            ).result_rows
        )
        expected["raw tables' TTL"] = {
            **dict.fromkeys(
                ["dead_letters", *archive_case.RAW_EVENT_TABLES], "toDateTime(loaded_at) + toIntervalDay(400)"
            ),
            "ingest_batches": "",
        }
        marts = _snapshotted_marts(json.loads((target / "manifest.json").read_text()))
        incremental = {table: _table_csv(client, table) for table in marts}
        live = {"incremental": (_anomaly_rows(client, "live_anomalies"), _anomaly_rows(client, "fct_anomalies"))}
        # The raw archive of every ingest hour; the purge of soft-deleted orders with the clock moved;
        # the raw event tables dropped, recreated and replayed from the archive (which still holds
        # the deleted order, so the replay brings it back); the full refresh below rebuilds every
        # mart from them. No dbt run of its own (tests/integration/archive_case.py).
        purged = _purged_history_filters()
        timings: dict[str, float] = {}
        started = time.monotonic()
        hashes = archive_case.mart_hashes(client, marts, RUN_TIME_COLUMNS, purged)
        timings["mart hashes"] = time.monotonic() - started
        archived = archive_case.archive_all(client, env, observed, expected, timings)
        started = time.monotonic()
        archive_case.observe_purge(client, env, _all_deliveries(), observed, expected)
        timings["purge (both clocks, counted before and after)"] = time.monotonic() - started
        archive_case.drop_and_replay(client, env, archived, observed, expected, timings)
        print(f"archive and replay (s): {timings}")
        # The staging views take the quarantine tables' verdicts for events loaded up to the run's
        # checked_through (the newest loaded_at less quarantine_lookback_minutes) and check later
        # ones themselves: so far every event was later (loaded minutes ago); with no lookback,
        # none is.
        results = _dbt([*build, "--full-refresh", "--vars", "{quarantine_lookback_minutes: 0}"], env, target)
        for domain in ("clickstream", "game", "economy"):
            checked = f"SELECT checked_through FROM base_raw__quarantine_checked_through WHERE domain = '{domain}'"
            observed[f"{domain} checked_through"] = client.command(checked)
            expected[f"{domain} checked_through"] = client.command(
                f"SELECT max(loaded_at) FROM `{raw}`.raw_{domain}_events"
            )
        _assert_built_every_node(results, client, UNKNOWN_STAGES, UNKNOWN_STAGES | REDELIVERY)
        _assert_quarantine_warnings_name_the_events(client, results, QUARANTINED)
        refreshed = {table: _table_csv(client, table) for table in marts}
        observed["marts' rows and hashes after the replay and a full refresh"] = archive_case.mart_hashes(
            client, marts, RUN_TIME_COLUMNS, purged
        )
        expected["marts' rows and hashes after the replay and a full refresh"] = hashes
        # the purged order's status history is gone; the rebuild started it again at its current
        # state: one open row, the deletion (with the status it had before, CONFIRMED: a delete
        # event carries no status)
        observed["snapshot rows of the purged orders after the rebuild"] = client.query(
            "SELECT order_id, order_status, is_deleted, dbt_valid_to IS NULL FROM snp_order_status"
            " WHERE order_id IN {ids:Array(String)} ORDER BY ALL",
            parameters={"ids": sorted(DELETED_ORDERS)},
        ).result_rows
        expected["snapshot rows of the purged orders after the rebuild"] = [
            (order_id, "CONFIRMED", True, True) for order_id in sorted(DELETED_ORDERS)
        ]
        live["full refresh"] = (_anomaly_rows(client, "live_anomalies"), _anomaly_rows(client, "fct_anomalies"))
        yield BuiltCase(client, env, marts, incremental, refreshed, live, observed, expected)


def test_batches_load_and_build_as_worked_out(built_case: BuiltCase):
    assert built_case.observed == built_case.expected_observed


def test_live_anomalies_equal_the_batch_mart(built_case: BuiltCase):
    """live_anomalies (detected at insert time: batch 1 back-filled when the live models were
    created, batches 2 and 3 as the loader inserted them, with a late click, re-deliveries and a
    retried loader batch) equals fct_anomalies restricted to the five bot rules: same ids, windows,
    counts and thresholds. Again after a full refresh, which rebuilds the live tables from the raw."""
    for when, (live, batch) in built_case.live.items():
        assert batch, f"the case has no bot anomaly ({when})"
        assert set(FIVE_RULES) == {row[2] for row in batch}, when
        assert live == batch, when


def test_incremental_runs_equal_a_full_refresh(built_case: BuiltCase):
    """Also after the purge, the archive and the replay (build_case): a purged order's snapshot
    history is compared apart (PURGED_HISTORY, test_batches_load_and_build_as_worked_out)."""
    differ = [
        table
        for table in built_case.marts
        if _without_purged(table, built_case.incremental[table]) != _without_purged(table, built_case.refreshed[table])
    ]
    assert not differ, f"incremental runs differ from a full refresh in {differ}"


def reference_events() -> list:
    """The case's events as the warehouse should hold them (warehouse_reference.clean_events)."""
    return reference.clean_events(
        [e for batch in range(len(BATCHES)) for e in _deliveries(batch)],
        {event_id for events in QUARANTINED.values() for event_id in events},
    )


def reference_rows() -> dict[str, list[dict]]:
    events = reference_events()
    dbt_vars = reference.dbt_vars()
    return {mart: compute(events, dbt_vars) for mart, (compute, _) in reference.CORE_MARTS.items()}


# rounded in the marts: percentages (4 decimals), money (cents), ratios (6 decimals)
ROUNDED = {"percentage": 0.005, "share_of_clicking_sessions": 0.005, "drop_rate": 0.005}


def _same(column: str, actual: Any, expected: Any) -> bool:
    if expected is None or actual is None:
        return actual is None and expected is None
    if isinstance(expected, datetime):
        return actual.replace(tzinfo=None) == expected
    if isinstance(expected, float | Decimal) and not isinstance(expected, bool):
        tolerance = ROUNDED.get(column, 0.005 if isinstance(expected, Decimal) else 1e-6)
        return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=tolerance)
    if isinstance(expected, list):
        return list(actual) == expected
    return actual == expected


def _mismatches(client, changed: bool) -> dict[str, list]:
    """Per core mart, the rows where the mart and the independent computation disagree, over the
    columns whose definition issue 14 changed (`changed`) or all the others."""
    found = {}
    for mart, rows in reference_rows().items():
        _, order_by = reference.CORE_MARTS[mart]
        changed_columns = reference.CHANGED_DEFINITIONS.get(mart, set())
        columns = [c for c in (rows[0] if rows else {}) if (c in changed_columns) == changed]
        if not columns:
            continue
        existing = {row[0] for row in client.query(f"DESCRIBE TABLE `{mart}`").result_rows}
        problems: list = [f"no column {c}" for c in columns if c not in existing]
        columns = [c for c in columns if c in existing]
        select = f"SELECT {', '.join(columns)} FROM `{mart}` ORDER BY {order_by}"
        actual = list(client.query(select).named_results()) if columns else []
        problems += [
            (i, c, a.get(c), e[c])
            for i, (a, e) in enumerate(zip(actual, rows, strict=False))
            for c in columns
            if not _same(c, a.get(c), e[c])
        ]
        if len(actual) != len(rows):
            problems.append(("rows", len(actual), len(rows)))
        if problems:
            found[mart] = problems
    return found


def test_core_marts_equal_an_independent_computation(built_case: BuiltCase):
    """fct_sessions, the clickstream daily metrics, funnel and popular items, the anomalies,
    retention and fct_orders against tests/integration/warehouse_reference.py."""
    # the case gives every core mart rows to compare
    assert all(reference_rows().values())
    assert _mismatches(built_case.client, changed=False) == {}


def test_definitions_changed_by_issue_14(built_case: BuiltCase):
    """avg_order_value = revenue / purchases (revenue_per_buying_session keeps the former measure);
    the funnel's percentage = a stage's count / the three stages' counts x 100
    (share_of_clicking_sessions keeps the former). Fails until the models follow issue 14."""
    assert _mismatches(built_case.client, changed=True) == {}


def test_other_marts_equal_their_regression_snapshots(built_case: BuiltCase):
    """The marts not computed independently against warehouse_case/expected/<mart>.csv: a
    snapshot of their own earlier output, so a change shows up in review.
    EVENTHOUSE_UPDATE_EXPECTED=1 rewrites these snapshots (then read the diff!); the core marts
    have no snapshot to rewrite."""
    expected_dir = CASE / "expected"
    snapshotted = [table for table in built_case.marts if table not in reference.CORE_MARTS]
    if UPDATE:
        for table in snapshotted:
            (expected_dir / f"{table}.csv").write_text(built_case.refreshed[table])
    without = [table for table in snapshotted if not (expected_dir / f"{table}.csv").exists()]
    assert not without, f"no regression snapshot (EVENTHOUSE_UPDATE_EXPECTED=1 writes one) for {without}"
    for table in snapshotted:
        # (a purged order's snapshot history is checked in build_case: PURGED_HISTORY)
        text = _without_purged(table, built_case.refreshed[table])
        header, *rows = _without_purged(table, (expected_dir / f"{table}.csv").read_text()).splitlines()
        got_header, *got_rows = text.splitlines()
        # the row order of a snapshot is not part of it
        assert (got_header, sorted(got_rows)) == (header, sorted(rows)), (
            f"{table} differs from warehouse_case/expected/{table}.csv:\n{text}"
        )
