"""Raw events at the reference dataset's size in minutes: the generators' output, copied in ClickHouse.

Generating 34M events (the full YOOCHOOSE size) with the Python generators takes hours (10M took
~830 s). Here the generators run once, for a TEMPLATE of a few hundred thousand events of all four
domains (the game/economy simulator, YOOCHOOSE-layout clickstream sessions, the order simulator),
written with `RawWriter` into raw tables of a template database exactly as the benchmark wrote
them before (`encode_raw_row`, the loader's row format). Then ClickHouse itself fills the real raw
tables with copies of the template: `INSERT INTO raw_x SELECT <rewritten columns> FROM template
ARRAY JOIN range(...) AS copy_no`. Every copy is the template's behaviour (sessions, funnels,
bots, order state machines, late and out-of-order deliveries) played by other players, visitors
and customers on other days.

What copy `c` (c >= 1; the template itself is copy 0 and is never inserted) rewrites, in the
envelope and inside the payload JSON, and nothing else:

- `event_id`: a UUID (version 5 layout, like the simulators') from sipHash128(template event_id, c);
- `user_id`: `<template user_id>_c<c>` (players `user_…`/`user_bot_…`, customers `customer_…`, so a
  customer never becomes a player's id);
- `session_id`: a game session `<user_id>-sNNNN` follows its player (`<new user_id>-sNNNN`); a
  clickstream session (a YOOCHOOSE integer) becomes `c * 10^9 + session`;
- `ts` and `ingested_at`: shifted by whole days (below), so a session keeps its order and gaps;
- `kafka_offset`: `c * 10^7 + template offset` (per topic, distinct per copy);
- `loaded_at`: on the load timeline below;
- payload: orders' `order_id` (`<order_id>_c<c>`), `version` (epoch ms of the change: shifted with
  ts) and `deleted_at` (shifted with ts); shop purchases' `tx_id` (a UUID from sipHash128(tx_id, c),
  version 4 layout as the simulator's);
- `dedupe_key`: the same rewrite of the parts it is made of (the event id, or
  `type:user:entity:version`, `type:user:tx_id`, `type:order_id:version`).

Items, categories, prices, products, stages, missions and live events are catalogs and stay as they
are, so the popular-item and stage marts stay realistic. `build_template` checks that every id the
rewrite replaces is where the rewrite looks for it (and that no payload carries a user or session
id), so a generator that changes its format fails here instead of producing copies that share ids.

Live domains and clickstream are copied as two streams, each size split between them in the
template's proportions, so the mix is the template's at every size.

Event time. Live copy c (game, economy, orders) lands its template day c - 1 on
`Timeline.base_last_day` and stops there: copies 1 .. 28 are cohorts still playing at the present
(their later days have not happened; an order in flight stays open, a session at midnight is
cut), copies from 29 on are whole cohorts that ended one day further back each. So every one of
the newest days has as many overlapping cohorts as the size allows (28, the template's days, from 3.6M events on), as a
game running for months has, and history grows backwards (34M events: from mid-July, ~4.3 months). A size that ends
inside a copy takes its first rows by day. Clickstream copies stay in 2014 as the YOOCHOOSE replay
is: copy c starts c - 1 days after 2014-04-01 (wrapping after 170 days), inside the calendar and
covering the KPI queries' week.

An increment (`ScaledRaw.add_increment`) is the hour of new events an hourly run meets: copies with
identities no base copy has (copy numbers from 10^6 * k) of the template's sessions, orders and
clickstream sessions that begin on one template day, landed on `Timeline.increment_day`, the day
after the base's last; the live domains and clickstream in the template's proportions.

Load time (`loaded_at`, what the incremental models select new events by). Base rows are loaded at
a steady `events_per_hour` (the increment's size: one hourly run's worth), the newest at
`Timeline.anchor`, each further copy before the ones already there; the k-th increment is spread
over the hour after `anchor + (k - 1) h`. So a refresh after an increment reads what an hourly run
in steady state reads: the new hour plus its lookback (15 minutes before the previous newest row),
and the refresh with nothing new re-reads the lookback only. Growing the base later (a larger
size) puts older rows behind everything and moves nothing that is already loaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ingestion.producers.game_sim import SimulationConfig, simulate
from ingestion.producers.orders import OrdersConfig, simulate_orders
from ingestion.producers.yoochoose import ReplaySummary, merged_events, write_sample
from ingestion.raw_tables import RAW_COLUMNS, ensure_tables, raw_table
from ingestion.raw_writer import RawWriter
from ingestion.topics import DOMAINS

TEMPLATE_TABLE = "template_events"
SOURCE = "bench"  # kafka_topic_id of every generated row, as RawWriter writes it

# The template's own days; every copy is shifted, so only the template's shape matters.
TEMPLATE_START = date(2026, 1, 5)
TEMPLATE_DAYS = 28
CLICK_START = date(2014, 4, 1)  # write_sample's first day (YOOCHOOSE's)
# clickstream copies start 0..169 days after 2014-04-01: all of them inside 2014-04-01..2014-09-30
CLICK_SPREAD_DAYS = 170
# the live domains' copies go back at most this far (then wrap): the calendar starts 2014-01-01
CALENDAR_START = date(2014, 1, 1)
LIVE_DOMAINS = ("game", "economy", "orders")
# The template day whose sessions (game, economy), orders (created that day) and clickstream
# sessions make the increments: a day when every simulated player has signed up (days 0-13).
LIVE_INCREMENT_DAY = 20
CLICK_INCREMENT_DAY = 4

OFFSET_STRIDE = 10_000_000  # kafka_offset = copy * stride + template offset
CLICK_SESSION_STRIDE = 1_000_000_000  # clickstream session = copy * stride + template session
INCREMENT_COPY_BASE = 1_000_000  # the k-th increment's copies are k * base + 1, + 2, ...
MS_PER_DAY = 86_400_000
MS_PER_HOUR = 3_600_000

# The generators' mix (measured on the default simulator runs): events per simulated player-day,
# per YOOCHOOSE-layout sample session, per order; the template is 55% game/economy, 40%
# clickstream and 5% orders.
EVENTS_PER_PLAYER_DAY = 60
EVENTS_PER_SESSION = 6.3
EVENTS_PER_ORDER = 4.7

# INSERT ... SELECT settings. ARRAY JOIN multiplies each block read from the template by the copies,
# so the template is read in small blocks (the raw tables still get ~1M-row parts). Every copied row
# has its own event_id and no block is ever retried: collapsing a block's duplicate ids on insert
# (ReplacingMergeTree's optimize_on_insert, a quarter of the speed) and the blocks' deduplication
# hashes find nothing, so they are off; the rows are the same.
INSERT_SETTINGS = {
    "max_block_size": 4096,
    "max_threads": 2,
    "max_insert_threads": 2,
    "optimize_on_insert": 0,
    "insert_deduplicate": 0,
}


@dataclass(frozen=True)
class Template:
    """The template table (`database`.template_events) and what the copies need to know of it."""

    database: str
    rows: int
    rows_by_domain: dict[str, int]
    # live rows (game, economy, orders) on template days up to 0, 1, ... the last (live_rows_upto[d]):
    # the size of a live copy cut after day d
    live_rows_upto: tuple[int, ...]
    # the template day whose units an increment copies ('live': game and economy sessions and orders,
    # 'clickstream': sessions), and how many rows that is per copy
    increment_days: dict[str, int]
    increment_rows: dict[str, int]
    generated_from: dict[str, int]

    @property
    def table(self) -> str:
        return f"`{self.database}`.`{TEMPLATE_TABLE}`"

    @property
    def live_rows(self) -> int:
        return sum(self.rows_by_domain.get(domain, 0) for domain in LIVE_DOMAINS)

    @property
    def click_rows(self) -> int:
        return self.rows_by_domain.get("clickstream", 0)

    @property
    def live_share(self) -> float:
        return self.live_rows / self.rows

    def live_copy_rows(self, copy: int) -> int:
        """Rows of live copy `copy` (1-based): copy c is cut after its template day c - 1."""
        return self.live_rows_upto[min(copy - 1, len(self.live_rows_upto) - 1)] if self.live_rows_upto else 0

    def live_rows_before(self, copy: int) -> int:
        """Rows of live copies 1 .. copy - 1."""
        full_from = len(self.live_rows_upto)  # copies from this one on are whole
        if copy <= full_from:
            return sum(self.live_rows_upto[: copy - 1])
        return sum(self.live_rows_upto[: full_from - 1]) + (copy - full_from) * self.live_rows


@dataclass(frozen=True)
class Timeline:
    """Where copies land in event time and in load time (see the module docstring)."""

    anchor: datetime  # loaded_at of the newest base row; increment k loads in [anchor + (k-1) h, + k h)
    events_per_hour: int  # base rows are loaded at this rate (one increment per hour)
    base_last_day: date  # the newest base day: live copy c lands its template day c - 1 on it
    increment_day: date  # the day increments land on

    @classmethod
    def ending(cls, increments: int, events_per_hour: int, now: datetime | None = None) -> Timeline:
        """A timeline whose `increments`-th increment ends at `now` (the wall clock by default): every
        loaded_at in the past, the newest within the hour, so the warehouse looks current."""
        now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        anchor = now - timedelta(hours=increments)
        increment_day = anchor.date() - timedelta(days=1)
        return cls(anchor, max(1, events_per_hour), increment_day - timedelta(days=1), increment_day)

    @property
    def anchor_ms(self) -> int:
        return int(self.anchor.timestamp() * 1000)


# ---- the template ---------------------------------------------------------------------------


def template_mix(events: int) -> dict[str, int]:
    """Players (28 days), clickstream sessions and orders for about `events` template events."""
    return {
        "players": max(5, round(events * 0.55 / (EVENTS_PER_PLAYER_DAY * TEMPLATE_DAYS))),
        "clickstream_sessions": max(1, round(events * 0.40 / EVENTS_PER_SESSION)),
        "orders": max(1, round(events * 0.05 / EVENTS_PER_ORDER)),
    }


def _clickstream_events(sessions: int, seed: int, work: Path) -> Iterable[dict]:
    clicks, buys = write_sample(work / "template-clickstream", sessions=sessions, seed=seed)
    # event ids come from (file name, line): the benchmark's names, as before
    clicks = clicks.rename(clicks.with_name("base-clicks.dat"))
    buys = buys.rename(buys.with_name("base-buys.dat"))
    return merged_events(clicks, buys, ReplaySummary())


def write_template_events(writer: RawWriter, events: int, work: Path) -> dict[str, int]:
    """The generators' events (about `events`) through `writer`: 28 days of players and of orders
    from TEMPLATE_START, and YOOCHOOSE-layout sessions over 10 days from 2014-04-01."""
    mix = template_mix(events)
    before = writer.written
    config = SimulationConfig(users=mix["players"], days=TEMPLATE_DAYS, start=TEMPLATE_START, seed=101)
    writer.add_all(simulate(config))
    writer.add_all(_clickstream_events(mix["clickstream_sessions"], 2015, work))
    orders = OrdersConfig(
        orders=mix["orders"], users=max(1, mix["orders"] // 4), days=TEMPLATE_DAYS, start=TEMPLATE_START, seed=103
    )
    writer.add_all(simulate_orders(orders))
    writer.flush()
    return {**mix, "events": writer.written - before}


_RAW = ", ".join(f"`{name}`" for name in (*RAW_COLUMNS, "loaded_at"))


def _template_sql(database: str) -> str:
    union = "\n    UNION ALL\n    ".join(
        f"SELECT '{domain}' AS domain, {_RAW} FROM `{database}`.`{raw_table(domain)}`" for domain in DOMAINS
    )
    return f"""
CREATE TABLE `{database}`.`{TEMPLATE_TABLE}`
ENGINE = MergeTree ORDER BY (domain, n)
AS
WITH
    unioned AS (
        {union}
    ),
    extracted AS (
        SELECT
            *,
            toInt32(toDate(ts) - if(domain = 'clickstream', toDate('{CLICK_START}'), toDate('{TEMPLATE_START}')))
                AS t_day,
            if(domain = 'orders', JSONExtractString(payload, 'order_id'), '') AS order_id,
            if(domain = 'orders', JSONExtractInt(payload, 'version'), 0) AS order_version,
            if(domain = 'orders', JSONExtractString(payload, 'deleted_at'), '') AS deleted_at,
            if(domain = 'economy', JSONExtractString(payload, 'tx_id'), '') AS tx_id
        FROM unioned
    )
SELECT
    *,
    -- the template's load order (what the loader would have loaded first)
    toUInt32(row_number() OVER (ORDER BY ingested_at, domain, kafka_topic, kafka_offset) - 1) AS n,
    -- the row's place in a copy of its group: live rows by day, then in load order (so a copy cut
    -- after a day is a prefix), clickstream rows in load order
    toUInt32(
        row_number() OVER (
            PARTITION BY domain = 'clickstream'
            ORDER BY if(domain = 'clickstream', 0, t_day), ingested_at, domain, kafka_topic, kafka_offset
        ) - 1
    ) AS copy_rank,
    -- the day the row's unit (its game or clickstream session, its order) begins
    multiIf(
        order_id != '', min(t_day) OVER (PARTITION BY order_id),
        session_id IS NOT NULL, min(t_day) OVER (PARTITION BY session_id),
        t_day
    ) AS unit_day
FROM extracted
"""


# Rows whose ids are not where the rewrite looks for them: each condition must hold for no row.
_TEMPLATE_CHECKS = {
    "kafka offset beyond the copy stride": f"kafka_offset >= {OFFSET_STRIDE}",
    "clickstream session id not an integer below the copy stride": (
        f"domain = 'clickstream' AND (session_id IS NULL OR toUInt64OrNull(session_id) IS NULL "
        f"OR toUInt64OrNull(session_id) >= {CLICK_SESSION_STRIDE})"
    ),
    "user id in the payload": "user_id IS NOT NULL AND position(payload, user_id) > 0",
    "game session id in the payload": (
        "domain != 'clickstream' AND session_id IS NOT NULL AND position(payload, session_id) > 0"
    ),
    "order event without its order_id/version as the rewrite reads them": (
        "domain = 'orders' AND (order_id = '' "
        "OR position(payload, concat('\"order_id\":\"', order_id, '\"')) = 0 "
        "OR position(payload, concat('\"version\":', toString(order_version))) = 0 "
        "OR (dedupe_key != event_id "
        "AND position(dedupe_key, concat(':', order_id, ':', toString(order_version))) = 0))"
    ),
    "deleted_at not a timestamp in the payload": (
        "deleted_at != '' AND (NOT match(deleted_at, '^[0-9]{4}-[0-9]{2}-[0-9]{2}T') "
        "OR position(payload, concat('\"deleted_at\":\"', deleted_at, '\"')) = 0)"
    ),
    "tx_id not in the payload and the dedupe key": (
        "tx_id != '' AND (position(payload, concat('\"tx_id\":\"', tx_id, '\"')) = 0 "
        "OR position(dedupe_key, concat(':', tx_id)) = 0)"
    ),
    "dedupe key neither the event id nor made of the user id": (
        "domain != 'orders' AND dedupe_key != event_id AND (user_id IS NULL "
        "OR position(dedupe_key, concat(':', user_id, ':')) = 0)"
    ),
    "payload carrying an id the rewrite does not know": (
        "domain != 'orders' AND tx_id = '' AND match(payload, '\"(order_id|tx_id|user_id|session_id)\"')"
    ),
}


def build_template(client: Any, database: str, events: int, work: Path) -> Template:
    """Generate about `events` events into `database`'s raw tables, then its template table."""
    client.command(f"DROP DATABASE IF EXISTS `{database}`")
    ensure_tables(client, database)
    writer = RawWriter(client, database, source=SOURCE)
    generated = write_template_events(writer, events, work)
    return index_template(client, database, generated)


def index_template(
    client: Any, database: str, generated: dict[str, int] | None = None, increment_days: dict[str, int] | None = None
) -> Template:
    """The template table over `database`'s raw tables (already written), checked. `increment_days`:
    the template days increments copy (default LIVE_INCREMENT_DAY and CLICK_INCREMENT_DAY)."""
    increment_days = increment_days or {"live": LIVE_INCREMENT_DAY, "clickstream": CLICK_INCREMENT_DAY}
    client.command(f"DROP TABLE IF EXISTS `{database}`.`{TEMPLATE_TABLE}`")
    client.command(_template_sql(database))
    table = f"`{database}`.`{TEMPLATE_TABLE}`"
    broken = {
        what: int(client.command(f"SELECT count() FROM {table} WHERE {condition}"))
        for what, condition in _TEMPLATE_CHECKS.items()
    }
    broken = {what: count for what, count in broken.items() if count}
    if broken:
        raise ValueError(f"the template's ids are not where the copies rewrite them: {broken}")
    by_domain = dict(client.query(f"SELECT domain, count() FROM {table} GROUP BY domain").result_rows)
    rows = sum(by_domain.values())
    if rows == 0 or rows != int(client.command(f"SELECT max(n) + 1 FROM {table}")):
        raise ValueError(f"the template's load order is not 0..{rows - 1}")
    increment_rows = {
        group: int(client.command(f"SELECT count() FROM {table} WHERE {_increment_selection(group, day)}"))
        for group, day in increment_days.items()
    }
    per_day = dict(
        client.query(f"SELECT t_day, count() FROM {table} WHERE domain != 'clickstream' GROUP BY t_day").result_rows
    )
    upto, total = [], 0
    for day in range(min(per_day, default=0), max(per_day, default=-1) + 1):
        total += int(per_day.get(day, 0))
        if day >= 0:
            upto.append(total)
    return Template(
        database,
        rows,
        {domain: int(by_domain.get(domain, 0)) for domain in DOMAINS},
        tuple(upto),
        increment_days,
        increment_rows,
        generated or {"events": rows},
    )


# ---- copies -----------------------------------------------------------------------------------


def _uuid(value: str, version: str) -> str:
    """A UUID string (RFC 4122 layout, `version`) from sipHash128 of `value` and the copy number."""
    h = f"lower(hex(sipHash128({value}, toUInt64(copy_no))))"
    variant = f"substring('89ab', 1 + (position('0123456789abcdef', substring({h}, 17, 1)) - 1) % 4, 1)"
    return (
        f"concat(substring({h}, 1, 8), '-', substring({h}, 9, 4), '-{version}', substring({h}, 14, 3), '-', "
        f"{variant}, substring({h}, 18, 3), '-', substring({h}, 21, 12))"
    )


def copied_columns(domain: str, shift_days: str, loaded_at: str) -> str:
    """The SELECT list of a copy's rows of `domain`'s raw table (RAW_COLUMNS, loaded_at) from
    template rows, for the copy `copy_no` (a column) shifted by `shift_days` (an expression) and
    loaded at `loaded_at`. (No branch may throw on another branch's rows: ClickHouse may evaluate
    every branch of a multiIf.)"""
    suffix = "concat('_c', toString(copy_no))"
    new_user = f"concat(assumeNotNull(user_id), {suffix})"
    new_event_id = _uuid("event_id", "5")
    user_part = f"replaceOne(dedupe_key, concat(':', assumeNotNull(user_id), ':'), concat(':', {new_user}, ':'))"
    payload, dedupe_key = "payload", f"if(dedupe_key = event_id, {new_event_id}, {user_part})"
    if domain == "clickstream":
        template_session = "toUInt64OrZero(assumeNotNull(session_id))"
        session = f"toString(toUInt64(copy_no) * {CLICK_SESSION_STRIDE} + {template_session})"
        dedupe_key = new_event_id  # (the template check: every clickstream dedupe key is the event id)
    else:
        session = f"""if(
            startsWith(assumeNotNull(session_id), assumeNotNull(user_id)),
            concat({new_user}, substring(assumeNotNull(session_id), length(assumeNotNull(user_id)) + 1)),
            concat(assumeNotNull(session_id), {suffix})
        )"""
    if domain == "economy":
        new_tx = _uuid("tx_id", "4")
        payload = f"""if(tx_id = '', payload,
            replaceOne(payload, concat('"tx_id":"', tx_id, '"'), concat('"tx_id":"', {new_tx}, '"')))"""
        dedupe_key = f"""multiIf(
            dedupe_key = event_id, {new_event_id},
            tx_id = '', {user_part},
            replaceOne({user_part}, concat(':', tx_id), concat(':', {new_tx}))
        )"""
    if domain == "orders":
        new_order = f"concat(order_id, {suffix})"
        new_version = f"(order_version + ({shift_days}) * {MS_PER_DAY})"
        new_deleted_at = (
            f"concat(toString(addDays(toDateOrZero(substring(deleted_at, 1, 10)), {shift_days})), "
            "substring(deleted_at, 11))"
        )
        payload = f"""replaceOne(
            replaceOne(payload, concat('"order_id":"', order_id, '"'), concat('"order_id":"', {new_order}, '"')),
            concat('"version":', toString(order_version)), concat('"version":', toString({new_version}))
        )"""
        payload = f"""if(deleted_at = '', {payload},
            replaceOne({payload}, concat('"deleted_at":"', deleted_at, '"'),
                concat('"deleted_at":"', {new_deleted_at}, '"')))"""
        dedupe_key = f"""if(dedupe_key = event_id, {new_event_id},
            replaceOne(dedupe_key, concat(':', order_id, ':', toString(order_version)),
                concat(':', {new_order}, ':', toString({new_version}))))"""
    columns = {
        "event_id": new_event_id,
        "event_type": "event_type",
        "schema_version": "schema_version",
        "user_id": f"if(user_id IS NULL, NULL, {new_user})",
        "session_id": f"if(session_id IS NULL, NULL, {session})",
        "source_service": "source_service",
        "source_host": "source_host",
        "ts": f"addDays(ts, {shift_days})",
        "ingested_at": f"addDays(ingested_at, {shift_days})",
        "sequence": "sequence",
        "dedupe_key": dedupe_key,
        "payload": payload,
        "kafka_topic": "kafka_topic",
        "kafka_partition": "kafka_partition",
        "kafka_offset": f"toUInt64(copy_no) * {OFFSET_STRIDE} + kafka_offset",
        "kafka_topic_id": "kafka_topic_id",
        "loaded_at": loaded_at,
    }
    # no aliases: an alias named like a template column would replace that column in every other
    # expression here (ClickHouse resolves names to aliases first); INSERT matches by position
    assert tuple(columns) == (*RAW_COLUMNS, "loaded_at")
    return ",\n    ".join(columns.values())


def _increment_selection(group: str, day: int) -> str:
    """The template rows an increment copies: units (sessions, orders) that begin on template day
    `day`, up to its end (a session still going at midnight is cut there, as an hourly run meets it)."""
    domains = "domain = 'clickstream'" if group == "clickstream" else "domain != 'clickstream'"
    return f"{domains} AND unit_day = {int(day)} AND t_day <= {int(day)}"


class ScaledRaw:
    """Fills `raw_database`'s raw tables with copies of `template`, on `timeline`.

    `grow_base(rows)` appends base rows, in the template's proportions of live (game, economy,
    orders) and clickstream rows; each group's copies continue where the last call stopped (a size
    that ends inside a copy takes a prefix of it, which the next call completes).
    `add_increment(events)` adds one increment."""

    def __init__(self, client: Any, template: Template, raw_database: str, timeline: Timeline):
        self.client = client
        self.template = template
        self.raw_database = raw_database
        self.timeline = timeline
        self.live_base = 0  # live base rows inserted: positions 0 .. live_base - 1
        self.click_base = 0
        self.increments = 0
        self.increment_rows = 0

    @property
    def base_rows(self) -> int:
        return self.live_base + self.click_base

    @property
    def rows(self) -> int:
        return self.base_rows + self.increment_rows

    def grow_base(self, rows: int) -> int:
        """Insert `rows` more base rows into the raw tables; returns `rows`."""
        if rows <= 0:
            return 0
        total = self.base_rows + rows
        live_target = round(total * self.template.live_share) if self.template.click_rows else total
        live_target = max(self.live_base, min(live_target, total - self.click_base))
        self._grow_live(self.live_base, live_target)
        self._grow_click(self.click_base, total - live_target)
        self.live_base, self.click_base = live_target, total - live_target
        return rows

    def _ms_per_row(self, group_rows: int) -> float:
        """Load-time spacing of one group's base rows: together events_per_hour, in the template's mix."""
        return MS_PER_HOUR * self.template.rows / (self.timeline.events_per_hour * group_rows)

    def _loaded_at(self, newer_rows: str, group_rows: int) -> str:
        """The loaded_at of a base row that has `newer_rows` base rows of its group loaded after it."""
        return (
            f"fromUnixTimestamp64Milli(toInt64({self.timeline.anchor_ms}) - "
            f"toInt64(floor(({newer_rows}) * {self._ms_per_row(group_rows)!r})), 'UTC')"
        )

    def _grow_live(self, start: int, stop: int) -> None:
        """Live copies' positions [start, stop). Live copy c's template day c - 1 lands on
        base_last_day and it stops there: copies 1 .. the template's days are cohorts still playing
        at the present (the newest days have as many cohorts as any), later copies end before it."""
        template = self.template
        if stop <= start or not template.live_rows:
            return
        first = 1
        while template.live_rows_before(first + 1) <= start:
            first += 1
        last = first
        while template.live_rows_before(last + 1) < stop:
            last += 1
        oldest = self.timeline.base_last_day - timedelta(days=last - 1)
        if oldest < CALENDAR_START + timedelta(days=31):
            raise ValueError(f"{stop} live rows would begin on {oldest}, before the calendar (2014-01-01)")
        days = len(template.live_rows_upto)
        sizes = ", ".join(str(template.live_copy_rows(c)) for c in range(1, days + 1))
        before = ", ".join(str(template.live_rows_before(c)) for c in range(1, days + 1))
        copy_rows = f"if(copy_no <= {days}, [{sizes}][copy_no], {template.live_rows})"
        rows_before = (
            f"if(copy_no <= {days}, [{before}][copy_no], "
            f"{template.live_rows_before(days)} + (toUInt64(copy_no) - {days}) * {template.live_rows})"
        )
        position = f"(toUInt64({rows_before}) + copy_rank)"
        newer = f"(toUInt64({rows_before}) + {copy_rows} - 1 - copy_rank)"
        shift = f"(toInt64({(self.timeline.base_last_day - TEMPLATE_START).days}) - toInt64(copy_no - 1))"
        for domain in LIVE_DOMAINS:
            if template.rows_by_domain.get(domain):
                self._insert_copies(
                    domain,
                    first,
                    last,
                    shift,
                    self._loaded_at(newer, template.live_rows),
                    f"copy_rank < {copy_rows} AND {position} >= {start} AND {position} < {stop}",
                )

    def _grow_click(self, start: int, stop: int) -> None:
        """Clickstream copies' positions [start, stop): copy c starts c - 1 days after the template
        (wrapping after CLICK_SPREAD_DAYS), inside YOOCHOOSE's 2014."""
        size = self.template.click_rows
        if stop <= start or not size:
            return
        position = f"((toUInt64(copy_no) - 1) * {size} + copy_rank)"
        newer = f"((toUInt64(copy_no) - 1) * {size} + ({size} - 1 - copy_rank))"
        self._insert_copies(
            "clickstream",
            start // size + 1,
            (stop - 1) // size + 1,
            f"toInt64((copy_no - 1) % {CLICK_SPREAD_DAYS})",
            self._loaded_at(newer, size),
            f"{position} >= {start} AND {position} < {stop}",
        )

    def _insert_copies(self, domain: str, first: int, last: int, shift: str, loaded_at: str, where: str) -> None:
        if last >= INCREMENT_COPY_BASE:
            raise ValueError(f"more than {INCREMENT_COPY_BASE - 1} copies of the template")
        self._insert(
            domain,
            f"""SELECT {copied_columns(domain, shift, loaded_at)}
FROM (SELECT * FROM {self.template.table} WHERE domain = '{domain}')
ARRAY JOIN range(toUInt32({first}), toUInt32({last + 1})) AS copy_no
WHERE {where}""",
        )

    def add_increment(self, events: int) -> int:
        """The next increment: `events` new events (new identities) on increment_day, loaded in the
        hour after the previous one (the first: after the base's newest row); returns `events`."""
        if events <= 0:
            return 0
        self.increments += 1
        k = self.increments
        template = self.template
        quotas = {"live": round(events * template.live_share)}
        quotas["clickstream"] = events - quotas["live"]
        hour_start = self.timeline.anchor_ms + (k - 1) * MS_PER_HOUR
        days = template.increment_days
        shifts = {
            "live": (self.timeline.increment_day - (TEMPLATE_START + timedelta(days=days["live"]))).days,
            "clickstream": (self.timeline.increment_day - (CLICK_START + timedelta(days=days["clickstream"]))).days,
        }
        for group, quota in quotas.items():
            per_copy = template.increment_rows[group]
            if quota <= 0:
                continue
            if per_copy == 0:
                raise ValueError(f"the template has no {group} rows to make an increment of")
            copies = math.ceil(quota / per_copy)
            rank = f"((toUInt64(j) - 1) * {per_copy} + r)"
            loaded_at = (
                f"fromUnixTimestamp64Milli(toInt64({hour_start}) + "
                f"toInt64(intDiv(({rank} + 1) * {MS_PER_HOUR}, {quota})), 'UTC')"
            )
            domains = ["clickstream"] if group == "clickstream" else list(LIVE_DOMAINS)
            for domain in domains:
                if not template.rows_by_domain.get(domain):
                    continue
                self._insert(
                    domain,
                    f"""SELECT {copied_columns(domain, str(shifts[group]), loaded_at)}
FROM (
    SELECT *, toUInt64(row_number() OVER (ORDER BY n) - 1) AS r
    FROM {template.table} WHERE {_increment_selection(group, days[group])}
)
ARRAY JOIN range(toUInt32(1), toUInt32({copies + 1})) AS j
ARRAY JOIN [toUInt32({k * INCREMENT_COPY_BASE}) + j] AS copy_no
WHERE domain = '{domain}' AND {rank} < {quota}""",
                )
        self.increment_rows += events
        return events

    def _insert(self, domain: str, select: str) -> None:
        columns = ", ".join(f"`{name}`" for name in (*RAW_COLUMNS, "loaded_at"))
        self.client.command(
            f"INSERT INTO `{self.raw_database}`.`{raw_table(domain)}` ({columns})\n{select}",
            settings=INSERT_SETTINGS,
        )


def wait_for_merges(client: Any, database: str, timeout: float = 900.0) -> float:
    """Wait until no merge runs on `database`'s tables (or `timeout` s); returns the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        running = int(client.command(f"SELECT count() FROM system.merges WHERE database = '{database}'"))
        if not running:
            break
        time.sleep(1.0)
    return time.perf_counter() - started
