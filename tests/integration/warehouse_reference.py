"""The core marts of the warehouse case worked out in plain Python from the case's input events.

An independent second implementation for tests/integration/test_warehouse_expected_output.py:
it reads the events the case publishes, the event ids the case says are quarantined (worked out by
hand there), the seeds (event domains, stage max scores) and the thresholds in dbt_project.yml's
vars, and computes what fct_sessions, the clickstream daily metrics, funnel and popular items, the
anomalies, retention and fct_orders must hold, from the definitions in the marts' descriptions and
issue 14 (section 2). It does not read anything the models produce.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import yaml

from settings import REPO_ROOT

CENT = Decimal("0.01")


def dbt_vars() -> dict:
    """The vars of dbt_project.yml, the thresholds the models are built with."""
    return yaml.safe_load((REPO_ROOT / "dbt_project.yml").read_text())["vars"]


def _seed(name: str) -> list[dict[str, str]]:
    with (REPO_ROOT / "seeds" / f"{name}.csv").open() as f:
        return list(csv.DictReader(f))


def _ts(text: str) -> datetime:
    """ISO 8601 UTC -> naive UTC datetime (as the mart columns are read back)."""
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)


def _ms(at: datetime) -> int:
    return int(at.replace(tzinfo=UTC).timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    domain: str
    ts: datetime
    ingested_at: datetime
    session_id: str | None
    user_id: str | None
    payload: dict


def clean_events(deliveries: list[dict], quarantined: set[str]) -> list[Event]:
    """What the warehouse keeps: each event id once (its latest delivery), less the quarantined."""
    domains = {row["event_type"]: row["domain"] for row in _seed("event_types")}
    latest: dict[str, dict] = {}
    for event in deliveries:
        known = latest.get(event["event_id"])
        if known is None or _ts(event["ingested_at"]) >= _ts(known["ingested_at"]):
            latest[event["event_id"]] = event
    return [
        Event(
            e["event_id"],
            e["event_type"],
            domains[e["event_type"]],
            _ts(e["ts"]),
            _ts(e["ingested_at"]),
            e.get("session_id"),
            e.get("user_id"),
            e["payload"],
        )
        for event_id, e in latest.items()
        if event_id not in quarantined
    ]


# --- anomalies -------------------------------------------------------------------------------


def clickstream_anomalies(events: list[Event], v: dict) -> list[dict]:
    """HIGH_FREQUENCY (tumbling, epoch-aligned windows) and BOT_LIKE (sliding windows) per source
    session id; bots are kept here."""
    clicks_by_session: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if e.event_type == "clickstream.click":
            clicks_by_session[e.session_id].append(e)
    rows = []
    hf_ms = v["high_frequency_window_seconds"] * 1000
    bl_ms, slide_ms = v["bot_like_window_seconds"] * 1000, v["bot_like_slide_seconds"] * 1000
    for session, clicks in clicks_by_session.items():
        tumbling: dict[int, list[Event]] = defaultdict(list)
        for c in clicks:
            tumbling[_ms(c.ts) // hf_ms * hf_ms].append(c)
        for start, inside in tumbling.items():
            if len(inside) >= v["high_frequency_min_clicks"]:
                rows.append(_click_window(session, "HIGH_FREQUENCY", start, start + hf_ms, inside))
        # every window start (a multiple of the slide) whose window holds a click
        starts = {
            s
            for c in clicks
            for s in range((_ms(c.ts) - bl_ms) // slide_ms * slide_ms, _ms(c.ts) + 1, slide_ms)
            if s <= _ms(c.ts) < s + bl_ms
        }
        for start in starts:
            inside = [c for c in clicks if start <= _ms(c.ts) < start + bl_ms]
            distinct = {c.payload["item_id"] for c in inside}
            if len(inside) >= v["bot_like_min_clicks"] and len(distinct) <= v["bot_like_max_distinct_items"]:
                rows.append(_click_window(session, "BOT_LIKE", start, start + bl_ms, inside))
    return sorted(rows, key=lambda r: (r["session_id"], r["anomaly_type"], r["window_start"]))


def _click_window(session: str, kind: str, start_ms: int, end_ms: int, clicks: list[Event]) -> dict:
    return {
        "session_id": session,
        "anomaly_type": kind,
        "window_start": _from_ms(start_ms),
        "window_end": _from_ms(end_ms),
        "click_count": len(clicks),
        "unique_items": len({c.payload["item_id"] for c in clicks}),
    }


def game_anomalies(events: list[Event], v: dict) -> list[dict]:
    """IMPOSSIBLE_CLEAR and SCORE_OVERFLOW per stage clear; RAPID_FIRE per burst: the clears that
    had at least rapid_fire_min_clears clears in the trailing window, merged while their windows
    overlap."""
    max_score = {(int(s["chapter"]), int(s["stage"])): int(s["max_score"]) for s in _seed("game_stages")}
    clears = sorted((e for e in events if e.event_type == "game.stage_clear"), key=lambda e: (e.user_id, e.ts))
    rows = []
    for e in clears:
        p = e.payload
        stage = (p["chapter"], p["stage"])
        single = {
            "user_id": e.user_id,
            "event_id": e.event_id,
            "game_session_id": e.session_id,
            "stage_key": p["chapter"] * 100 + p["stage"],
            "window_start": e.ts,
            "window_end": e.ts,
            "event_count": 1,
        }
        if p["clear_time_ms"] < v["impossible_clear_ms"]:
            rows.append(
                {
                    **single,
                    "anomaly_type": "IMPOSSIBLE_CLEAR",
                    "observed_value": float(p["clear_time_ms"]),
                    "threshold_value": float(v["impossible_clear_ms"]),
                }
            )
        if stage in max_score and p["score"] > max_score[stage]:
            rows.append(
                {
                    **single,
                    "anomaly_type": "SCORE_OVERFLOW",
                    "observed_value": float(p["score"]),
                    "threshold_value": float(max_score[stage]),
                }
            )
    window = timedelta(seconds=v["rapid_fire_window_seconds"])
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in clears:
        by_user[e.user_id].append(e)
    for user, theirs in by_user.items():
        bursts: list[list] = []  # [start, end, peak]
        for e in theirs:
            inside = [c for c in theirs if e.ts - window < c.ts <= e.ts]
            if len(inside) < v["rapid_fire_min_clears"]:
                continue
            start = min(c.ts for c in inside)
            if bursts and start <= bursts[-1][1]:
                bursts[-1][1] = e.ts
                bursts[-1][2] = max(bursts[-1][2], len(inside))
            else:
                bursts.append([start, e.ts, len(inside)])
        for start, end, peak in bursts:
            rows.append(
                {
                    "anomaly_type": "RAPID_FIRE",
                    "user_id": user,
                    "event_id": None,
                    "game_session_id": None,
                    "stage_key": None,
                    "window_start": start,
                    "window_end": end,
                    "event_count": sum(1 for c in theirs if start <= c.ts <= end),
                    "observed_value": float(peak),
                    "threshold_value": float(v["rapid_fire_min_clears"]),
                }
            )
    return sorted(rows, key=lambda r: (r["anomaly_type"], r["user_id"], r["window_start"], r["event_id"] or ""))


def bots(events: list[Event], v: dict) -> tuple[set[str], set[str]]:
    """(clickstream session ids, player ids) that any of the five rules flags: every rule that
    marks a bot counts (issue 14, section 2)."""
    sessions = {row["session_id"] for row in clickstream_anomalies(events, v)}
    players = {row["user_id"] for row in game_anomalies(events, v)}
    return sessions, players


# --- sessions --------------------------------------------------------------------------------


def fct_sessions(events: list[Event], v: dict) -> list[dict]:
    """Sessions of clickstream (by source session id), game and economy (by user): a new one
    starts when the gap since the entity's previous event is more than the domain's gap."""
    flagged_sessions, flagged_players = bots(events, v)
    anomalies = clickstream_anomalies(events, v)
    by_entity: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in events:
        if e.domain in ("clickstream", "game", "economy"):
            by_entity[(e.domain, e.session_id if e.domain == "clickstream" else e.user_id)].append(e)
    rows = []
    for (domain, key), theirs in by_entity.items():
        gap = timedelta(minutes=v["session_inactivity_gap_minutes"][domain])
        theirs.sort(key=lambda e: e.ts)
        sessions: list[list[Event]] = []
        for e in theirs:
            if sessions and e.ts - sessions[-1][-1].ts <= gap:
                sessions[-1].append(e)
            else:
                sessions.append([e])
        for session in sessions:
            start, end = session[0].ts, session[-1].ts
            if domain == "clickstream":
                # a session is a bot's when a flagged window of its source session falls in it
                is_bot = any(
                    a["session_id"] == key and a["window_start"] <= end and start < a["window_end"] for a in anomalies
                )
            else:
                is_bot = domain == "game" and key in flagged_players
            rows.append(
                {
                    "session_id": f"{domain}:{key}:{_ms(start)}",
                    "domain": domain,
                    "session_entity_key": key,
                    "session_start_at": start,
                    "session_end_at": end,
                    "session_date": start.date(),
                    "duration_seconds": (end - start).total_seconds(),
                    "event_count": len(session),
                    "click_count": sum(e.event_type == "clickstream.click" for e in session),
                    "purchase_count": sum(_is_purchase(e) for e in session),
                    "revenue": sum((_revenue(e) for e in session), Decimal("0.00")),
                    "stage_clear_count": sum(e.event_type == "game.stage_clear" for e in session),
                    "stage_fail_count": sum(e.event_type == "game.stage_fail" for e in session),
                    "is_bot": is_bot,
                }
            )
    assert flagged_sessions <= {r["session_entity_key"] for r in rows if r["is_bot"]}
    return sorted(rows, key=lambda r: r["session_id"])


def _is_purchase(e: Event) -> bool:
    return e.event_type == "clickstream.purchase" or (
        e.event_type == "shop.purchase" and e.payload["status"] == "completed"
    )


def _revenue(e: Event) -> Decimal:
    if e.event_type == "clickstream.purchase":
        return (Decimal(str(e.payload["price"])) * e.payload["quantity"]).quantize(CENT)
    if _is_purchase(e):
        return (Decimal(e.payload["price_cents"]) / 100).quantize(CENT)
    return Decimal("0.00")


# --- clickstream marts -----------------------------------------------------------------------


def _human_clickstream(events: list[Event], v: dict) -> tuple[list[Event], list[Event]]:
    flagged, _ = bots(events, v)
    kept = [e for e in events if e.domain == "clickstream" and e.session_id not in flagged]
    return (
        [e for e in kept if e.event_type == "clickstream.click"],
        [e for e in kept if e.event_type == "clickstream.purchase"],
    )


def clickstream_daily_metrics(events: list[Event], v: dict) -> list[dict]:
    """Per UTC day of the events, bots left out. avg_order_value = total_revenue / total_purchases
    (the reference system's definition); revenue_per_buying_session is the former measure."""
    clicks, purchases = _human_clickstream(events, v)
    days = sorted({e.ts.date() for e in clicks + purchases})
    rows = []
    for day in days:
        day_clicks = [e for e in clicks if e.ts.date() == day]
        day_buys = [e for e in purchases if e.ts.date() == day]
        by_session: dict[str, list[Event]] = defaultdict(list)
        for e in day_clicks + day_buys:
            by_session[e.session_id].append(e)
        clicking = {e.session_id for e in day_clicks}
        buying = {e.session_id for e in day_buys}
        revenue = sum((_revenue(e) for e in day_buys), Decimal("0.00"))
        durations = [(max(e.ts for e in evs) - min(e.ts for e in evs)).total_seconds() for evs in by_session.values()]
        rows.append(
            {
                "metric_date": day,
                "total_clicks": len(day_clicks),
                "total_purchases": len(day_buys),
                "unique_sessions": len(clicking),
                "unique_items": len({e.payload["item_id"] for e in day_clicks}),
                "conversion_rate": len(clicking & buying) / len(clicking) if clicking else None,
                "avg_session_duration_sec": sum(durations) / len(durations),
                "avg_clicks_per_session": len(day_clicks) / len(clicking) if clicking else None,
                "total_revenue": revenue,
                "avg_order_value": revenue / len(day_buys) if day_buys else None,
                "revenue_per_buying_session": revenue / len(buying) if buying else None,
            }
        )
    return rows


FUNNEL_STAGES = ["Single View", "Multi View", "Purchase"]


def clickstream_session_funnel(events: list[Event], v: dict) -> list[dict]:
    """Per day, over the day's sessions with a click (bots left out): one click, two or more,
    a click and a buy. percentage = the stage's count / the three stages' counts x 100 (the
    reference's definition); share_of_clicking_sessions is the former measure; drop_rate compares
    each stage with the one before (0 for the first, None after an empty one)."""
    clicks, purchases = _human_clickstream(events, v)
    rows = []
    for day in sorted({e.ts.date() for e in clicks}):
        per_session: dict[str, int] = defaultdict(int)
        for e in clicks:
            if e.ts.date() == day:
                per_session[e.session_id] += 1
        bought = {e.session_id for e in purchases if e.ts.date() == day}
        counts = [
            sum(n == 1 for n in per_session.values()),
            sum(n >= 2 for n in per_session.values()),
            len(bought & set(per_session)),
        ]
        total = sum(counts)
        for i, (stage, count) in enumerate(zip(FUNNEL_STAGES, counts, strict=True)):
            previous = counts[i - 1] if i else None
            rows.append(
                {
                    "metric_date": day,
                    "stage_order": i + 1,
                    "funnel_stage": stage,
                    "session_count": count,
                    "percentage": 100 * count / total if total else None,
                    "share_of_clicking_sessions": 100 * count / len(per_session),
                    "drop_rate": 0.0 if i == 0 else (None if previous == 0 else 100 * (1 - count / previous)),
                }
            )
    return rows


def _item_days(events: list[Event], v: dict) -> dict[tuple[date, int], dict]:
    """Per (day, item) clicked or bought: clicks, buys, revenue, the latest click's category and time."""
    clicks, purchases = _human_clickstream(events, v)
    items: dict[tuple[date, int], dict] = {}
    for e in sorted(clicks, key=lambda e: (e.ts, e.event_id)):
        row = items.setdefault((e.ts.date(), e.payload["item_id"]), _item_row(e.ts.date(), e.payload["item_id"]))
        row["category"] = e.payload["category"]  # the latest click's
        row["last_clicked_at"] = e.ts
        row["click_count"] += 1
    for e in purchases:
        row = items.setdefault((e.ts.date(), e.payload["item_id"]), _item_row(e.ts.date(), e.payload["item_id"]))
        row["purchase_count"] += 1
        row["revenue"] += _revenue(e)
    return items


def clickstream_item_days(events: list[Event], v: dict) -> list[dict]:
    """Every (day, item) clicked or bought that day (bots left out)."""
    return sorted(_item_days(events, v).values(), key=lambda r: (r["metric_date"], r["item_id"]))


def clickstream_popular_items(events: list[Event], v: dict) -> list[dict]:
    """Per day, the items in the top popular_items_top_n by clicks or by revenue (bots left out)."""
    items = {
        key: {k: val for k, val in row.items() if k != "last_clicked_at"} for key, row in _item_days(events, v).items()
    }
    rows = []
    for day in sorted({d for d, _ in items}):
        day_rows = [r for (d, _), r in items.items() if d == day]
        by_clicks = sorted(day_rows, key=lambda r: (-r["click_count"], r["item_id"]))
        by_revenue = sorted(day_rows, key=lambda r: (-r["revenue"], -r["click_count"], r["item_id"]))
        for r in day_rows:
            r["click_rank"] = by_clicks.index(r) + 1
            r["revenue_rank"] = by_revenue.index(r) + 1
            r["click_to_purchase_ratio"] = r["purchase_count"] / r["click_count"] if r["click_count"] else None
        top = v["popular_items_top_n"]
        rows += [r for r in day_rows if r["click_rank"] <= top or r["revenue_rank"] <= top]
    return sorted(rows, key=lambda r: (r["metric_date"], r["item_id"]))


def _item_row(day: date, item_id: int) -> dict:
    return {
        "metric_date": day,
        "item_id": item_id,
        "category": "",
        "last_clicked_at": None,
        "click_count": 0,
        "purchase_count": 0,
        "revenue": Decimal("0.00"),
    }


# --- users and orders ------------------------------------------------------------------------


def user_retention(events: list[Event], v: dict) -> list[dict]:
    """Day-N retention per (user_type, first day): players are game/economy users, customers
    order users; bots (any rule) are left out of cohorts and activity; a day N past the last day
    with any event of that user type is None."""
    _, flagged_players = bots(events, v)
    active: dict[tuple[str, str], set[date]] = defaultdict(set)
    for e in events:
        if e.user_id and e.domain in ("game", "economy"):
            active[("player", e.user_id)].add(e.ts.date())
        elif e.user_id and e.domain == "orders":
            active[("customer", e.user_id)].add(e.ts.date())
    through = {kind: max(d for (k, _), days in active.items() if k == kind for d in days) for kind, _ in active}
    cohorts: dict[tuple[str, date], list[set[date]]] = defaultdict(list)
    for (kind, user), days in active.items():
        if not (kind == "player" and user in flagged_players):
            cohorts[(kind, min(days))].append(days)
    rows = []
    for (kind, first), members in sorted(cohorts.items()):
        row = {"user_type": kind, "cohort_date": first, "cohort_size": len(members), "data_through_date": through[kind]}
        for n in (1, 3, 7, 14, 30):
            day = first + timedelta(days=n)
            retained = None if day > through[kind] else sum(day in days for days in members)
            row[f"d{n}_retained_users"] = retained
            row[f"d{n}_retention_rate"] = None if retained is None else retained / len(members)
        rows.append(row)
    return rows


def fct_orders(events: list[Event], v: dict) -> list[dict]:
    """Each order's latest version, unless that is a delete; no revenue in the non-revenue
    statuses."""
    by_order: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if e.domain == "orders":
            by_order[e.payload["order_id"]].append(e)
    rows = []
    for order_id, theirs in sorted(by_order.items()):
        theirs.sort(key=lambda e: e.payload["version"])
        latest = theirs[-1]
        if latest.event_type == "order.deleted":
            continue
        created = next(e for e in theirs if e.event_type == "order.created")
        status = next(e.payload["status"] for e in reversed(theirs) if "status" in e.payload)
        amount = Decimal(created.payload["amount_cents"]) / 100
        is_revenue = status not in v["commerce_non_revenue_statuses"]
        rows.append(
            {
                "order_id": order_id,
                "customer_id": created.user_id,
                "order_status": status,
                "order_version": latest.payload["version"],
                "amount_cents": created.payload["amount_cents"],
                "order_amount": amount.quantize(CENT),
                "is_revenue": is_revenue,
                "revenue": amount.quantize(CENT) if is_revenue else Decimal("0.00"),
                "product_ids": created.payload["product_ids"],
                "product_count": len(created.payload["product_ids"]),
                "created_at": created.ts,
                "order_date": created.ts.date(),
                "order_hour": created.ts.replace(minute=0, second=0, microsecond=0),
                "updated_at": latest.ts,
            }
        )
    return rows


CORE_MARTS = {
    "fct_sessions": (fct_sessions, "session_id"),
    "clickstream_daily_metrics": (clickstream_daily_metrics, "metric_date"),
    "clickstream_session_funnel": (clickstream_session_funnel, "metric_date, stage_order"),
    "clickstream_popular_items": (clickstream_popular_items, "metric_date, item_id"),
    "clickstream_item_days": (clickstream_item_days, "metric_date, item_id"),
    "clickstream_anomalies": (clickstream_anomalies, "session_id, anomaly_type, window_start"),
    "game_anomalies": (game_anomalies, "anomaly_type, user_id, window_start, event_id"),
    "user_retention": (user_retention, "user_type, cohort_date"),
    "fct_orders": (fct_orders, "order_id"),
}

# Columns whose definition issue 14 changed: the models follow once the models branch is merged.
CHANGED_DEFINITIONS = {
    "clickstream_daily_metrics": {"avg_order_value", "revenue_per_buying_session"},
    "clickstream_session_funnel": {"percentage", "share_of_clicking_sessions"},
}
