"""A simulated player base for the wire-connecting puzzle game and its economy.

`simulate(config)` yields envelopes in the order the servers received them. Five personas,
after the reference game pipeline's simulation:

- heavy: plays daily, reaches chapter 5, story and time attack; some are whales in the shop.
- regular: 3-4 days a week, reaches chapter 3.
- casual: 1-3 days a week, reaches chapter 2.
- churned: plays 2-3 days after signing up, then never again.
- bot: clears stages in under 300 ms with scores above the stage's maximum, in bursts of
  20-40 clears a minute (what IMPOSSIBLE_CLEAR, SCORE_OVERFLOW and RAPID_FIRE look for).

Realism the warehouse has to cope with: every device has its own clock skew (client `ts`
differs from server time, a few devices by minutes); some client events are buffered
offline and arrive minutes to hours late, hence out of order; claims are occasionally
double-tapped (two events, one progress_version); `duplicate_rate` re-delivers identical
envelopes as client retries do. Everything is drawn from one `random.Random(seed)`: the same
configuration gives the same events, ids included, so a re-run changes nothing downstream.
"""

from __future__ import annotations

import csv
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ingestion.contract import make_event
from ingestion.producers.delivery import DeliveryQueue, ProduceSummary, derived_event_id
from settings import REPO_ROOT

STAGES_SEED = REPO_ROOT / "seeds" / "game_stages.csv"
CHAPTERS, STAGES_PER_CHAPTER = 5, 10
HEARTBEAT_SECONDS = 10
MAX_LATE = timedelta(hours=3)
GOLD_BUNDLES = (("gold_500", 500, 99), ("gold_2800", 2800, 499), ("gold_6000", 6000, 999), ("gold_20000", 20000, 2999))
PLATFORMS = ("ios", "android", "web")
COUNTRIES = ("KR", "US", "JP", "DE", "BR", "GB", "FR", "IN")
# chance per play day (after signup) that a player changes profile before playing
PROFILE_CHANGE_RATE = 0.04


@dataclass(frozen=True)
class Persona:
    name: str
    share: int  # relative share of users (the reference simulation's 5/15/15/10/3)
    days_per_week: tuple[int, int]
    max_chapter: int
    sessions_per_day: tuple[int, int]
    stages_per_session: tuple[int, int]
    time_attack_share: float = 0.0
    shop_chance: float = 0.0  # per session
    active_days_after_signup: int | None = None  # churned users stop after this many days


PERSONAS: tuple[Persona, ...] = (
    Persona("heavy", 5, (7, 7), 5, (2, 4), (6, 14), time_attack_share=0.3, shop_chance=0.35),
    Persona("regular", 15, (3, 4), 3, (1, 3), (3, 8), time_attack_share=0.05, shop_chance=0.1),
    Persona("casual", 15, (1, 3), 2, (1, 2), (2, 5), shop_chance=0.03),
    Persona("churned", 10, (5, 7), 1, (1, 2), (2, 5), active_days_after_signup=3),
    Persona("bot", 3, (5, 7), 5, (2, 4), (20, 40)),
)


@dataclass(frozen=True)
class SimulationConfig:
    users: int = 52
    days: int = 7
    start: date = date(2026, 11, 1)
    seed: int = 7
    duplicate_rate: float = 0.0
    late_rate: float = 0.02

    def __post_init__(self) -> None:
        if self.users < 1 or self.days < 1:
            raise ValueError("users and days must be at least 1")
        for name in ("duplicate_rate", "late_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


def load_stage_max_scores() -> dict[tuple[int, int], int]:
    """(chapter, stage) -> max score, from the seed dbt loads as `game_stages` (one source of truth)."""
    with open(STAGES_SEED, newline="") as handle:
        return {(int(r["chapter"]), int(r["stage"])): int(r["max_score"]) for r in csv.DictReader(handle)}


def assign_personas(users: int) -> list[Persona]:
    """Largest-remainder split by share; at least one bot once there are 5 users."""
    total = sum(p.share for p in PERSONAS)
    exact = [users * p.share / total for p in PERSONAS]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(PERSONAS)), key=lambda i: exact[i] - counts[i], reverse=True)[: users - sum(counts)]:
        counts[i] += 1
    bot = len(PERSONAS) - 1
    if users >= 5 and counts[bot] == 0:
        counts[bot] = 1
        counts[max(range(bot), key=lambda i: counts[i])] -= 1
    return [persona for persona, n in zip(PERSONAS, counts, strict=True) for _ in range(n)]


@dataclass
class _Player:
    user_id: str
    persona: Persona
    signup_day: int
    platform: str
    clock_skew: timedelta
    whale: bool
    country: str = ""
    chapter: int = 1
    stage: int = 1
    gold: int = 200
    client_seq: int = 0
    server_seq: int = 0
    session_no: int = 0
    mission_progress: dict[str, int] = field(default_factory=dict)
    event_progress: dict[str, int] = field(default_factory=dict)


class _Simulation:
    def __init__(self, config: SimulationConfig, summary: ProduceSummary):
        self.config = config
        self.summary = summary
        self.rng = random.Random(config.seed)
        # profile changes draw from their own stream so they do not reshuffle everything else
        self.profile_rng = random.Random(config.seed + 1)
        self.max_scores = load_stage_max_scores()
        self.queue = DeliveryQueue()
        self.origin = datetime(config.start.year, config.start.month, config.start.day, tzinfo=UTC)

    # ids and emission ------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _emit(
        self,
        player: _Player,
        event_type: str,
        at: datetime,
        payload: dict[str, Any],
        *,
        session_id: str | None,
        client: bool,
    ) -> None:
        """One event that happened at `at` (true time). Client events carry the device clock."""
        rng = self.rng
        if client:
            player.client_seq += 1
            sequence, ts, service = player.client_seq, at + player.clock_skew, "game-client"
            received = at + timedelta(milliseconds=rng.randint(20, 400))
            if rng.random() < self.config.late_rate:  # buffered offline, sent on reconnect
                received = at + timedelta(seconds=rng.uniform(120, MAX_LATE.total_seconds()))
                self.summary.late_events += 1
        else:
            player.server_seq += 1
            sequence, ts, service = player.server_seq, at, "economy-api"
            received = at + timedelta(milliseconds=rng.randint(1, 30))
        event_id = derived_event_id(self.config.seed, player.user_id, service, sequence, event_type, ts, payload)
        event = make_event(
            event_type,
            event_id,
            ts,
            payload,
            user_id=player.user_id,
            session_id=session_id,
            service=service,
            host=f"{service}-{rng.randint(1, 3)}",
            sequence=sequence,
            dedupe_key=_dedupe_key(event_type, player.user_id, payload, event_id),
        )
        self.queue.push(received, event)
        if self.config.duplicate_rate and rng.random() < self.config.duplicate_rate:
            retry = dict(event)  # the same envelope again, received a little later
            self.queue.push(received + timedelta(seconds=rng.uniform(0.5, 30)), retry)
            self.summary.duplicates_injected += 1

    # the player base -------------------------------------------------------------------

    def players(self) -> list[_Player]:
        rng = self.rng
        personas = assign_personas(self.config.users)
        rng.shuffle(personas)
        players = []
        signup_window = max(1, (self.config.days + 1) // 2)
        for n, persona in enumerate(personas, start=1):
            user_id = f"user_bot_{n:05d}" if persona.name == "bot" else f"user_{n:05d}"
            skew_ms = rng.gauss(0, 800) if rng.random() < 0.8 else rng.gauss(0, 30_000)
            if rng.random() < 0.05:
                skew_ms = rng.choice((-1, 1)) * rng.uniform(120_000, 600_000)  # a device minutes off
            players.append(
                _Player(
                    user_id=user_id,
                    persona=persona,
                    signup_day=0 if n <= 2 else rng.randrange(signup_window),
                    platform=rng.choice(PLATFORMS),
                    clock_skew=timedelta(milliseconds=skew_ms),
                    whale=persona.name == "heavy" and rng.random() < 0.4,
                )
            )
        return players

    def plays_on(self, player: _Player, day: int) -> bool:
        persona = player.persona
        if day < player.signup_day:
            return False
        if day == player.signup_day:
            return True
        if persona.active_days_after_signup is not None:
            return day - player.signup_day < self.rng.randint(2, persona.active_days_after_signup)
        low, high = persona.days_per_week
        return self.rng.random() < self.rng.randint(low, high) / 7

    def day(self, players: list[_Player], day: int) -> None:
        day_start = self.origin + timedelta(days=day)
        for player in players:
            if not self.plays_on(player, day):
                continue
            if day == player.signup_day:
                signup_at = day_start + timedelta(hours=self.rng.uniform(7, 21))
                player.country = self.rng.choice(COUNTRIES)
                payload = {"country": player.country, "platform": player.platform}
                payload["persona"] = player.persona.name  # ground truth, for tests of bot detection
                self._emit(player, "auth.signup", signup_at, payload, session_id=None, client=False)
                starts = [signup_at + timedelta(minutes=1)]
            else:
                starts = []
                self.maybe_update_profile(player, day_start)
            low, high = player.persona.sessions_per_day
            for _ in range(self.rng.randint(low, high) - len(starts)):
                starts.append(day_start + timedelta(hours=self.rng.uniform(7, 23.5)))
            for start in sorted(starts):
                self.session(player, start)

    def maybe_update_profile(self, player: _Player, day_start: datetime) -> None:
        """Now and then a player switches device or moves country before the day's first session."""
        rng = self.profile_rng
        if rng.random() >= PROFILE_CHANGE_RATE:
            return
        if rng.random() < 0.7:
            player.platform = rng.choice([p for p in PLATFORMS if p != player.platform])
            changed = {"platform": player.platform}
        else:
            player.country = rng.choice([c for c in COUNTRIES if c != player.country])
            changed = {"country": player.country}
        at = day_start + timedelta(hours=rng.uniform(6, 7))
        self._emit(player, "auth.profile_updated", at, changed, session_id=None, client=False)

    # one play session ------------------------------------------------------------------

    def session(self, player: _Player, start: datetime) -> None:
        rng = self.rng
        player.session_no += 1
        sid = f"{player.user_id}-s{player.session_no:04d}"
        t = start
        self._emit(player, "auth.login", t, {"platform": player.platform}, session_id=None, client=False)
        self._emit(player, "game.session", t, {"action": "start"}, session_id=sid, client=False)
        t += timedelta(milliseconds=rng.randint(200, 1500))
        self._emit(
            player,
            "game.session_start",
            t,
            {"platform": player.platform, "app_version": "2.4.1"},
            session_id=sid,
            client=True,
        )
        t = self._navigate(player, sid, t, "home", "stage_select")
        low, high = player.persona.stages_per_session
        stages = rng.randint(low, high)
        if player.persona.name == "bot":
            t = self._bot_burst(player, sid, t, stages)
        else:
            for _ in range(stages):
                t = self._play_stage(player, sid, t)
                t += timedelta(seconds=rng.uniform(2, 20))
        if rng.random() < player.persona.shop_chance or (player.whale and rng.random() < 0.7):
            t = self._shop(player, sid, t)
        t = self._navigate(player, sid, t, "stage_select", "home")
        duration_ms = int((t - start).total_seconds() * 1000)
        self._emit(player, "game.session_end", t, {"duration_ms": duration_ms}, session_id=sid, client=True)
        ended = {"action": "end", "duration_ms": duration_ms}
        self._emit(player, "game.session", t, ended, session_id=sid, client=False)
        if rng.random() < 0.7:
            self._emit(player, "auth.logout", t + timedelta(seconds=1), {}, session_id=None, client=False)

    def _navigate(self, player: _Player, sid: str, t: datetime, src: str, dst: str) -> datetime:
        self._emit(player, "game.navigation", t, {"from_screen": src, "to_screen": dst}, session_id=sid, client=True)
        return t + timedelta(milliseconds=self.rng.randint(300, 3000))

    def _next_stage(self, player: _Player) -> tuple[int, int, str]:
        persona = player.persona
        unlocked_to = (player.chapter, player.stage)
        if self.rng.random() < persona.time_attack_share and unlocked_to > (1, 3):
            chapter = self.rng.randint(1, min(player.chapter, CHAPTERS))
            return chapter, self.rng.randint(1, STAGES_PER_CHAPTER), "time_attack"
        if player.chapter > persona.max_chapter or (player.chapter, player.stage) > (CHAPTERS, STAGES_PER_CHAPTER):
            # finished what this persona gets through: replay cleared stages
            top = min(player.chapter, persona.max_chapter, CHAPTERS)
            return self.rng.randint(1, top), self.rng.randint(1, STAGES_PER_CHAPTER), "story"
        return player.chapter, player.stage, "story"

    def _play_stage(self, player: _Player, sid: str, t: datetime) -> datetime:
        rng = self.rng
        chapter, stage, mode = self._next_stage(player)
        where = {"chapter": chapter, "stage": stage, "mode": mode}
        self._emit(player, "game.stage_start", t, dict(where), session_id=sid, client=True)
        difficulty = (chapter - 1) * STAGES_PER_CHAPTER + stage
        play_ms = int(rng.lognormvariate(9.6, 0.45) * (1 + difficulty / 25))  # median ~15 s at 1-1
        if mode == "time_attack":
            play_ms = int(play_ms * 0.6)
        for beat in range(HEARTBEAT_SECONDS * 1000, play_ms, HEARTBEAT_SECONDS * 1000):
            at = t + timedelta(milliseconds=beat)
            self._emit(player, "game.heartbeat", at, {"screen": "stage"}, session_id=sid, client=True)
        if rng.random() < 0.08:
            self._use_wildcard(player, sid, t + timedelta(milliseconds=play_ms // 2))
        t += timedelta(milliseconds=play_ms)
        cleared = rng.random() < 0.9 - 0.06 * (chapter - 1) - 0.01 * stage
        if not cleared:
            reason = rng.choice(("timeout", "short_circuit", "gave_up"))
            self._emit(
                player,
                "game.stage_fail",
                t,
                {**where, "reason": reason, "elapsed_ms": play_ms},
                session_id=sid,
                client=True,
            )
            return t
        max_score = self.max_scores[(chapter, stage)]
        score = int(max_score * rng.uniform(0.45, 1.0))
        payload = {**where, "clear_time_ms": play_ms, "score": score, "moves": rng.randint(5, 40)}
        self._emit(player, "game.stage_clear", t, payload, session_id=sid, client=True)
        if mode == "story" and (chapter, stage) == (player.chapter, player.stage):
            player.chapter, player.stage = (chapter, stage + 1) if stage < STAGES_PER_CHAPTER else (chapter + 1, 1)
        self._rewards(player, sid, t + timedelta(milliseconds=rng.randint(50, 400)), 10 + 5 * chapter)
        return t

    def _bot_burst(self, player: _Player, sid: str, t: datetime, clears: int) -> datetime:
        """A scripted client: impossible clear times, overflowing scores, many clears a minute."""
        rng = self.rng
        for _ in range(clears):
            chapter, stage = rng.randint(1, CHAPTERS), rng.randint(1, STAGES_PER_CHAPTER)
            where = {"chapter": chapter, "stage": stage, "mode": "story"}
            self._emit(player, "game.stage_start", t, dict(where), session_id=sid, client=True)
            clear_ms = rng.randint(40, 299)
            t += timedelta(milliseconds=clear_ms)
            score = self.max_scores[(chapter, stage)] + rng.randint(1, 5000)
            payload = {**where, "clear_time_ms": clear_ms, "score": score, "moves": 1}
            self._emit(player, "game.stage_clear", t, payload, session_id=sid, client=True)
            self._rewards(player, sid, t + timedelta(milliseconds=20), 10 + 5 * chapter)
            t += timedelta(milliseconds=rng.randint(800, 2000))
        return t

    def _use_wildcard(self, player: _Player, sid: str, t: datetime) -> None:
        cost = 50
        if player.gold >= cost:
            buy = {"item": "wildcard_block", "action": "buy", "cost_gold": cost}
            self._emit(player, "game.item_use", t, buy, session_id=sid, client=True)
            player.gold -= cost
            self._grant(player, t + timedelta(milliseconds=30), -cost, "item_buy")
        use = {"item": "wildcard_block", "action": "use"}
        self._emit(player, "game.item_use", t + timedelta(seconds=1), use, session_id=sid, client=True)

    def _grant(self, player: _Player, t: datetime, delta: int, reason: str) -> None:
        player.gold += delta if delta > 0 else 0
        payload = {"delta_gold": delta, "balance": player.gold, "reason": reason}
        self._emit(player, "reward.granted", t, payload, session_id=None, client=False)

    def _claim(self, player: _Player, event_type: str, t: datetime, payload: dict[str, Any], reward: int) -> None:
        self._emit(player, event_type, t, {**payload, "reward_gold": reward}, session_id=None, client=False)
        if self.rng.random() < 0.01:  # a double tap: a second claim event for the same progress_version
            again = t + timedelta(milliseconds=self.rng.randint(80, 600))
            self._emit(player, event_type, again, {**payload, "reward_gold": reward}, session_id=None, client=False)
        self._grant(player, t + timedelta(milliseconds=40), reward, event_type)

    def _rewards(self, player: _Player, sid: str, t: datetime, gold: int) -> None:
        self._grant(player, t, gold, "stage_clear")
        day_key = (t - self.origin).days
        mission_id = f"daily_clears_d{day_key:03d}"
        version = player.mission_progress.get(mission_id, 0) + 1
        player.mission_progress[mission_id] = version
        progress = {"mission_id": mission_id, "progress_version": version, "progress": min(version, 5)}
        self._emit(player, "mission.progress", t, progress, session_id=None, client=False)
        if version == 5:
            claim = {"mission_id": mission_id, "progress_version": version}
            self._claim(player, "mission.claim", t + timedelta(milliseconds=200), claim, 100)
        live_event_id = f"weekly_w{day_key // 7:02d}"
        version = player.event_progress.get(live_event_id, 0) + 1
        player.event_progress[live_event_id] = version
        progress = {"live_event_id": live_event_id, "progress_version": version, "progress": min(version, 20)}
        self._emit(player, "event.progress", t + timedelta(milliseconds=10), progress, session_id=None, client=False)
        if version == 20 and self.rng.random() < 0.8:  # some never come back for the reward
            claim = {"live_event_id": live_event_id, "progress_version": version}
            self._claim(player, "event.claim", t + timedelta(seconds=3), claim, 500)

    def _shop(self, player: _Player, sid: str, t: datetime) -> datetime:
        rng = self.rng
        t = self._navigate(player, sid, t, "stage_select", "shop")
        bundles = GOLD_BUNDLES[2:] if player.whale else GOLD_BUNDLES[:3]
        product_id, gold, price_cents = rng.choice(bundles)
        status = "completed" if rng.random() > 0.05 else "failed"
        payload = {
            "tx_id": self._uuid(),
            "status": status,
            "product_id": product_id,
            "amount_gold": gold,
            "price_cents": price_cents,
        }
        self._emit(player, "shop.purchase", t, payload, session_id=sid, client=False)
        if status == "completed":
            self._grant(player, t + timedelta(milliseconds=60), gold, "shop")
        return self._navigate(player, sid, t + timedelta(seconds=rng.uniform(5, 40)), "shop", "stage_select")


def _dedupe_key(event_type: str, user_id: str, payload: dict[str, Any], event_id: str) -> str:
    """The economy spec's key: event_type:user_id:entity_id:progress_version where there is one."""
    entity = payload.get("mission_id") or payload.get("live_event_id")
    if entity is not None:
        return f"{event_type}:{user_id}:{entity}:{payload['progress_version']}"
    if "tx_id" in payload:
        return f"{event_type}:{user_id}:{payload['tx_id']}"
    return event_id


def simulate(config: SimulationConfig, summary: ProduceSummary | None = None) -> Iterator[dict[str, Any]]:
    """Envelopes for `config.users` players over `config.days` days, in server-receive order."""
    summary = summary if summary is not None else ProduceSummary()
    sim = _Simulation(config, summary)
    players = sim.players()
    summary.extra["users_by_persona"] = {p.name: sum(pl.persona is p for pl in players) for p in PERSONAS}
    summary.extra["whales"] = sum(pl.whale for pl in players)
    for day in range(config.days):
        sim.day(players, day)
        # Nothing generated from here on happened before the next day began.
        yield from sim.queue.release(before=sim.origin + timedelta(days=day + 1))
    yield from sim.queue.release()
