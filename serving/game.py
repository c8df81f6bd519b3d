"""Game and economy KPIs: active users, retention, clear rates, modes, difficulty, leaderboard, story
funnel (models/marts/game, engagement), and reference system 3's economy KPIs (models/marts/economy)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from serving.app import warehouse
from serving.params import EndDate, StartDate, date_bounds, limit_query
from serving.warehouse import Warehouse, missing_day

router = APIRouter(tags=["game and economy"])
Db = Annotated[Warehouse, Depends(warehouse)]
BETWEEN = "BETWEEN {start:Date} AND {end:Date}"


class UserType(enum.StrEnum):
    player = "player"  # game and economy users
    customer = "customer"  # commerce customers


UserTypeQuery = Annotated[UserType, Query(description="player (game, economy) or customer (commerce)")]


@router.get("/game/active-users", summary="DAU, WAU (7 days), MAU (30 days) and stickiness per day")
def active_users(
    db: Db, start_date: StartDate = None, end_date: EndDate = None, user_type: UserTypeQuery = UserType.player
) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT activity_date, dau, wau, mau, stickiness FROM engagement_active_users"
        f" WHERE user_type = {{type:String}} AND activity_date {BETWEEN} ORDER BY activity_date",
        {**date_bounds(start_date, end_date), "type": user_type.value},
    )


@router.get("/game/retention", summary="D1/D3/D7/D14/D30 retention by first-seen cohort")
def retention(db: Db, user_type: UserTypeQuery = UserType.player) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT cohort_date, cohort_size, data_through_date, d1_retained_users, d1_retention_rate,"
        " d3_retained_users, d3_retention_rate, d7_retained_users, d7_retention_rate,"
        " d14_retained_users, d14_retention_rate, d30_retained_users, d30_retention_rate"
        " FROM user_retention WHERE user_type = {type:String} ORDER BY cohort_date",
        {"type": user_type.value},
    )


@router.get("/game/chapter-clear-rates", summary="Clear rate per chapter and day (the heatmap)")
def chapter_clear_rates(db: Db, start_date: StartDate = None, end_date: EndDate = None) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT event_date, chapter_number, attempts, clears, fails, clear_rate FROM game_chapter_clear_rates"
        f" WHERE event_date {BETWEEN} ORDER BY event_date, chapter_number",
        date_bounds(start_date, end_date),
    )


@router.get("/game/mode-split", summary="Story vs time attack attempts per day")
def mode_split(db: Db, start_date: StartDate = None, end_date: EndDate = None) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT event_date, game_mode, attempts, clears, players, attempt_share FROM game_mode_split"
        f" WHERE event_date {BETWEEN} ORDER BY event_date, game_mode",
        date_bounds(start_date, end_date),
    )


@router.get("/game/stage-difficulty", summary="Attempts, clear rate and clear times per stage")
def stage_difficulty(db: Db) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT stage_key, chapter_number, stage_number, stage_name, attempts, clears, fails, players, clear_rate,"
        " median_clear_time_ms, p90_clear_time_ms FROM game_stage_difficulty ORDER BY stage_key"
    )


@router.get("/game/leaderboard", summary="The time-attack leaderboard (best score per player)")
def leaderboard(db: Db, limit: int = limit_query(10)) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT leaderboard_rank AS rank, user_id, best_score, achieved_at, chapter_number, stage_number,"
        " clear_time_ms, time_attack_clears FROM game_time_attack_leaderboard"
        " ORDER BY leaderboard_rank LIMIT {limit:UInt32}",
        {"limit": limit},
    )


@router.get("/game/story-funnel", summary="Players reaching each story stage in order")
def story_funnel(db: Db) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT story_position, stage_key, chapter_number, stage_number, stage_name, players_started,"
        " players_cleared, players_reached_in_order, reach_rate, drop_rate FROM game_story_funnel"
        " ORDER BY story_position"
    )


ECONOMY_DAILY = """metric_date, dau, active_users_7d, paying_users, purchases, gold_sold, revenue, arpdau, arppu,
    paying_share"""


@router.get("/economy/daily", summary="DAU, 7-day actives, ARPDAU and paying users per day")
def economy_daily(db: Db, start_date: StartDate = None, end_date: EndDate = None) -> list[dict[str, Any]]:
    return db.rows(
        f"SELECT {ECONOMY_DAILY} FROM economy_daily_kpis WHERE metric_date {BETWEEN} ORDER BY metric_date",
        date_bounds(start_date, end_date),
    )


@router.get("/economy/daily/{date}", summary="One day's economy KPIs", responses={404: {"description": "no row"}})
def economy_daily_of(db: Db, date: dt.date) -> dict[str, Any]:
    row = db.one(f"SELECT {ECONOMY_DAILY} FROM economy_daily_kpis WHERE metric_date = {{day:Date}}", {"day": date})
    if row is None:
        raise missing_day(db, "economy KPIs", date, "economy_daily_kpis", "metric_date")
    return row


@router.get("/economy/whales", summary="Players whose 30-day shop spend reached the whale threshold")
def whales(db: Db, limit: int = limit_query(100)) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT user_id, is_bot, window_start_date, window_end_date, shop_spend_gold, purchases, revenue,"
        " first_purchase_at, last_purchase_at FROM economy_whales"
        " ORDER BY shop_spend_gold DESC, user_id LIMIT {limit:UInt32}",
        {"limit": limit},
    )


COMPLETION = """progress_updates, claim_events, claims, users_progressed, users_claimed, completion_rate,
    user_claim_rate"""


@router.get("/economy/event-completion", summary="Progress vs claims per live event")
def event_completion(db: Db) -> list[dict[str, Any]]:
    return db.rows(f"SELECT live_event_id, {COMPLETION} FROM economy_event_completion ORDER BY live_event_id")


@router.get("/economy/mission-completion", summary="Progress vs claims per mission")
def mission_completion(db: Db) -> list[dict[str, Any]]:
    return db.rows(f"SELECT mission_id, {COMPLETION} FROM economy_mission_completion ORDER BY mission_id")
