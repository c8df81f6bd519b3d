"""Insert-time aggregates (dbt-clickhouse materialized views) against the warehouse.

Raw rows go straight into the raw tables in the loader's format (`RawWriter`): this is about
what ClickHouse does at insert time, and the loader has its own tests.
"""

from __future__ import annotations

import json
import threading
from datetime import date

import pytest

from ingestion.producers.delivery import ProduceSummary
from ingestion.producers.game_sim import SimulationConfig, simulate
from ingestion.raw_writer import RawWriter
from ingestion.topics import topic_for
from tests.integration.dbt_support import run_dbt as _dbt

pytestmark = pytest.mark.integration

MV_MODELS = ["agg_game_daily_user_summary", "agg_game_stage_difficulty"]
CHECK = "assert_realtime_aggregates_match_fct_events"


def _game_events(seed: int, start: date) -> list[dict]:
    config = SimulationConfig(users=6, days=2, seed=seed, start=start, late_rate=0.0)
    return [e for e in simulate(config, ProduceSummary()) if topic_for(e["event_type"]).domain == "game"]


def _stage_counts(events: list[dict]) -> list[tuple[int, int, int, int]]:
    """(stage_key, attempts, clears, fails) per stage played, from the events themselves."""
    kinds = ["game.stage_start", "game.stage_clear", "game.stage_fail"]
    counts: dict[int, list[int]] = {}
    for event in events:
        if event["event_type"] in kinds:
            key = event["payload"]["chapter"] * 100 + event["payload"]["stage"]
            counts.setdefault(key, [0, 0, 0])[kinds.index(event["event_type"])] += 1
    return [(key, *n) for key, n in sorted(counts.items())]


def _ok(args: list[str], env: dict, target) -> None:
    result = _dbt(args, env, target)
    assert result.returncode == 0, result.stdout[-5000:]


def _check_status(env: dict, target) -> str:
    _dbt(["test", "--select", CHECK], env, target)
    results = json.loads((target / "run_results.json").read_text())["results"]
    return next(r["status"] for r in results if r["unique_id"].endswith(CHECK))


def test_live_aggregates_equal_fct_events_across_a_redeploy_under_inserts(embedded_stack, dbt_env):
    env, database, target = dbt_env
    client = embedded_stack.client(database=database)
    raw = env["EVENTHOUSE_RAW_DATABASE"]
    before = _game_events(seed=11, start=date(2026, 3, 2))
    during = _game_events(seed=12, start=date(2026, 3, 9))
    after = _game_events(seed=13, start=date(2026, 3, 16))

    # Events already in the raw table when the views are first created are back-filled.
    RawWriter(client, raw).add_all(before).flush()
    _ok(["run", "--select", *MV_MODELS, "game_daily_user_summary_live", "game_stage_difficulty_live"], env, target)

    # Redeploy (a plain `dbt run` of existing MV models: ALTER ... MODIFY QUERY) while blocks of
    # events keep arriving; none of them may be lost.
    inserted_during = 0
    stop = threading.Event()

    def keep_inserting() -> None:
        nonlocal inserted_during
        writer = RawWriter(embedded_stack.client(database=database), raw, insert_rows=25)
        for event in during:
            if stop.is_set():
                break
            writer.add(event)
        writer.flush()
        inserted_during = writer.written

    inserter = threading.Thread(target=keep_inserting)
    inserter.start()
    _ok(["run", "--select", *MV_MODELS], env, target)
    stop.set()
    inserter.join()
    assert inserted_during > 0
    RawWriter(client, raw).add_all(after).flush()

    log = (target / "logs" / "dbt.log").read_text()
    assert "modify query" in log.lower(), "the redeploy should alter the views in place"

    _ok(["run", "--select", "+fct_events", "+stg_game__events"], env, target)
    assert _check_status(env, target) == "pass"

    # The same numbers computed here, including the clear-time quantiles (from staging).
    total = len(before) + inserted_during + len(after)
    assert client.command("SELECT sum(event_count) FROM game_daily_user_summary_live") == total
    assert client.command("SELECT count() FROM fct_events WHERE domain = 'game'") == total
    live = client.query(
        "SELECT stage_key, attempts, clears, fails, median_clear_time_ms, p90_clear_time_ms "
        "FROM game_stage_difficulty_live ORDER BY stage_key"
    ).result_rows
    recomputed = client.query(
        "SELECT toUInt16(chapter_number) * 100 + stage_number AS stage_key, "
        "countIf(event_type = 'game.stage_start'), countIf(event_type = 'game.stage_clear'), "
        "countIf(event_type = 'game.stage_fail'), "
        "if(countIf(event_type = 'game.stage_clear') = 0, NULL, "
        "   quantileExactIf(0.5)(clear_time_ms, event_type = 'game.stage_clear')), "
        "if(countIf(event_type = 'game.stage_clear') = 0, NULL, "
        "   quantileExactIf(0.9)(clear_time_ms, event_type = 'game.stage_clear')) "
        "FROM stg_game__events WHERE event_type IN ('game.stage_start', 'game.stage_clear', 'game.stage_fail') "
        "GROUP BY stage_key ORDER BY stage_key"
    ).result_rows
    assert live == recomputed
    # and the counts from the events as they were written, without the warehouse
    written = before + during[:inserted_during] + after
    assert [row[:4] for row in live] == _stage_counts(written)
    play_time = client.command("SELECT sum(duration_ms) FROM stg_game__events WHERE event_type = 'game.session_end'")
    assert client.command("SELECT sum(play_time_ms) FROM game_daily_user_summary_live") == play_time

    # An event a producer delivered twice: the warehouse counts it once, the insert-time
    # aggregates twice (they count deliveries), and the check says so.
    clear = next(e for e in after if e["event_type"] == "game.stage_clear")
    RawWriter(client, raw).add_all([clear]).flush()
    _ok(["run", "--select", "+fct_events"], env, target)
    assert client.command("SELECT sum(event_count) FROM game_daily_user_summary_live") == total + 1
    assert client.command("SELECT count() FROM fct_events WHERE domain = 'game'") == total
    clears = "SELECT sum(clears) FROM game_stage_difficulty_live"
    assert client.command(clears) == client.command("SELECT sum(stage_clear_count) FROM game_daily_user_summary_live")
    assert _check_status(env, target) == "warn"
