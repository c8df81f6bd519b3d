"""The game's leaderboard table in PostgreSQL: each player's best time-attack time per stage.

The game server writes it as players clear stages; CDC (oltp/cdc.py) copies it to ClickHouse.
`eventhouse produce simulate --leaderboard-to-postgres` plays the game server's part: it passes
the simulated events through to Kafka as usual and upserts each player's best (lowest)
`clear_time_ms` of a time-attack `game.stage_clear` per stage. A stage is `<chapter>-<stage>`
(e.g. `2-5`), the ids of `seeds/game_stages.csv`. The upsert only ever lowers a time, so replaying
the same events (or a duplicate delivery) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

Best = tuple[int, str]  # (best_time_ms, achieved_at ISO 8601)


def stage_id(chapter: int, stage: int) -> str:
    return f"{int(chapter)}-{int(stage)}"


class LeaderboardCollector:
    """Collects the best time-attack time per (player, stage) from game events passing through."""

    def __init__(self) -> None:
        self.bests: dict[tuple[str, str], Best] = {}

    def observe(self, event: dict[str, Any]) -> None:
        payload = event.get("payload") or {}
        if event.get("event_type") != "game.stage_clear" or payload.get("mode") != "time_attack":
            return
        user_id, time_ms = event.get("user_id"), payload.get("clear_time_ms")
        if not user_id or not isinstance(time_ms, int) or time_ms <= 0:
            return
        key = (str(user_id), stage_id(payload["chapter"], payload["stage"]))
        best = (time_ms, str(event["ts"]))
        current = self.bests.get(key)
        # the lower time wins; on a tie, the earlier clear holds the record
        if current is None or (best[0], _moment(best[1])) < (current[0], _moment(current[1])):
            self.bests[key] = best

    def passing(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for event in events:
            self.observe(event)
            yield event


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def upsert_bests(dsn: str, bests: dict[tuple[str, str], Best]) -> int:
    """Write the bests to `leaderboard`, keeping any lower time already there; returns rows changed."""
    import psycopg

    from oltp.migrations import apply_migrations

    rows = [(user, stage, time_ms, achieved_at) for (user, stage), (time_ms, achieved_at) in sorted(bests.items())]
    with psycopg.connect(dsn) as conn:
        apply_migrations(conn)
        with conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO leaderboard (user_id, stage_id, best_time_ms, achieved_at) "
                "VALUES (%s, %s, %s, %s::timestamptz) "
                "ON CONFLICT (user_id, stage_id) DO UPDATE "
                "SET best_time_ms = excluded.best_time_ms, achieved_at = excluded.achieved_at "
                "WHERE excluded.best_time_ms < leaderboard.best_time_ms",
                rows,
            )
            changed = cursor.rowcount
    return max(changed, 0)


def write_through(events: Iterable[dict[str, Any]], dsn: str, extra: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Pass the events on; once they are all consumed (published), upsert the bests they held.

    What was written lands in `extra["leaderboard"]` (the producer's JSON summary)."""
    collector = LeaderboardCollector()
    yield from collector.passing(events)
    changed = upsert_bests(dsn, collector.bests)
    extra["leaderboard"] = {"player_stage_bests": len(collector.bests), "rows_written": changed}
