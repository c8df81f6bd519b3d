"""Live anomaly detection on the embedded stack: event-to-alert latency, the loader's cost, table sizes.

Three measurements in one run (issue 15's benchmark):

1. The loader with and without the live models attached, on the same topics: N events of the
   four-domain mix are published once; loaders with new group ids load them into fresh raw
   databases, alternately without insert-time views and with the live models
   (models/marts/live) created on them by dbt. Median rows/s of each, and their ratio.
2. Event-to-alert latency at a steady rate: a loader and `eventhouse alerts` run while a
   producer publishes the mix at `--rate` events/s, each stamped `ts` = now when sent, with a bot
   burst every `--anomaly-interval` seconds (60 clicks of a new session in 0.6 s: a
   HIGH_FREQUENCY window) and an impossible clear (one event, clear_time_ms 100). The latency of
   an alert is `alerts.published_at` minus the `ts` of the event that made the anomaly: the 50th
   click of the window (high_frequency_min_clicks) or the clear.
3. The live tables' size after an hour of events at `--rate`: an hour of the mix's clicks and
   stage clears (a quarter of the events each) is generated in ClickHouse itself (INSERT ... SELECT
   from numbers(), in the loader's row format) into raw tables with the live models attached;
   sessions of 5 clicks 20 s apart, clears of a million players. Sizes from system.parts, as
   inserted and after the merges (OPTIMIZE FINAL). Also the sizes after the latency run.

The background mix flags nothing: its sessions and players are spread so that no window reaches a
threshold (sample_event's players are re-spread; 3,000 players clearing 2,500 stages/s would
all be RAPID_FIRE).

    python -m bench.live_alerts [--events 300000] [--rate 10000] [--seconds 60] [--anomaly-interval 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect

from bench.common import embedded_stack, sample_event
from ingestion.contract import format_ts, make_event
from ingestion.publisher import Publisher
from ingestion.raw_tables import RAW_COLUMNS
from ingestion.topics import message_key, topic_for
from settings import REPO_ROOT, load_settings

LIVE_MODELS = ["+live_anomalies", "+live_anomaly_entities"]
LIVE_TABLES = ["live_click_windows", "live_stage_clears", "live_anomaly_entities"]
BURST_CLICKS = 60
BURST_SPAN_MS = 600
PLACEHOLDER_TS = datetime(2000, 1, 1, tzinfo=UTC)


def background_event(i: int, ts: datetime, prefix: str) -> dict:
    """sample_event, with players spread over a million ids (no RAPID_FIRE by accident)."""
    event = sample_event(i, ts, prefix)
    if event["event_type"] == "game.stage_clear":
        event["user_id"] = f"{prefix}u{i % 1_000_000}"
    return event


def run(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=REPO_ROOT, check=True, capture_output=True, text=True, **kwargs)


def databases(env: dict[str, str], name: str) -> dict[str, str]:
    """The environment for a dbt database `name` reading the raw database `raw_<name>`."""
    return {**env, "EVENTHOUSE_CLICKHOUSE_DATABASE": name, "EVENTHOUSE_RAW_DATABASE": f"raw_{name}"}


def attach_live_models(env: dict[str, str]) -> None:
    """Raw tables, then the live models (and their parents: seeds, dim_stages) on them."""
    bin_dir = Path(sys.executable).parent
    run([str(bin_dir / "eventhouse"), "load", "--create-tables-only"], env)
    dbt = [str(bin_dir / "dbt"), "build", "--profiles-dir", ".", "--project-dir", "."]
    run([*dbt, "--select", *LIVE_MODELS, "--exclude-resource-type", "test", "unit_test"], env)


def load_once(env: dict[str, str], group: str) -> dict:
    bin_dir = Path(sys.executable).parent
    out = run(
        [str(bin_dir / "eventhouse"), "load", "--until-caught-up", "--group-id", group, "--batch-seconds", "5"], env
    ).stdout
    return json.loads(out[out.index("{") :])


def loader_with_and_without(env: dict[str, str], events: int, rounds: int) -> dict:
    publisher = Publisher(load_settings(env).kafka, client_id="bench-live-ab")
    base = datetime.now(UTC) - timedelta(hours=1)
    for i in range(events):
        publisher.publish(background_event(i, base + timedelta(milliseconds=i), "ab-"))
    publisher.close()
    rates: dict[str, list[float]] = {"without": [], "with_live_models": []}
    for n in range(rounds):
        for variant in rates:
            name = f"ab_{variant}_{n}"
            target = databases(env, name)
            bin_dir = Path(sys.executable).parent
            if variant == "with_live_models":
                attach_live_models(target)
            else:
                run([str(bin_dir / "eventhouse"), "load", "--create-tables-only"], target)
            summary = load_once(target, f"bench-{name}")
            assert summary["rows_loaded"] == events, summary
            rates[variant].append(summary["rows_per_s_since_first_message"])
    without, with_live = statistics.median(rates["without"]), statistics.median(rates["with_live_models"])
    return {
        "events": events,
        "rounds": rounds,
        "rows_per_s": rates,
        "median_rows_per_s_without": round(without),
        "median_rows_per_s_with_live_models": round(with_live),
        "slowdown": round(1 - with_live / without, 3),
    }


def steady_messages(rate: int, seconds: float, interval: float, prefix: str) -> list[tuple[float, str, bytes, bytes]]:
    """(send offset s, topic, key, value) for the steady mix plus the injected anomalies."""
    messages = []
    for i in range(int(rate * seconds)):
        event = background_event(i, PLACEHOLDER_TS, prefix)
        messages.append((i / rate, event))
    burst = 0
    at = interval
    while at < seconds - 1:
        session = f"{prefix}bot{burst}"
        for k in range(BURST_CLICKS):
            payload = {"item_id": 7, "category": "S"}
            event = make_event("clickstream.click", f"{session}-{k}", PLACEHOLDER_TS, payload, session_id=session)
            messages.append((at + k * BURST_SPAN_MS / 1000 / BURST_CLICKS, event))
        clear = {"chapter": 1, "stage": 1, "mode": "story", "clear_time_ms": 100, "score": 10}
        messages.append(
            (
                at,
                make_event(
                    "game.stage_clear",
                    f"{prefix}fast{burst}",
                    PLACEHOLDER_TS,
                    clear,
                    user_id=f"{session}-p",
                    session_id=f"{session}-gs",
                ),
            )
        )
        burst += 1
        at += interval
    messages.sort(key=lambda m: m[0])
    encoded = []
    for offset, event in messages:
        spec = topic_for(event["event_type"])
        encoded.append((offset, spec.name, message_key(spec, event), json.dumps(event, separators=(",", ":")).encode()))
    return encoded


def publish_on_schedule(publisher: Publisher, messages: list, seconds: float) -> int:
    placeholder = format_ts(PLACEHOLDER_TS).encode()
    started = time.monotonic()
    sent = 0
    while sent < len(messages) and (elapsed := time.monotonic() - started) < seconds + 5:
        now = format_ts(datetime.now(UTC)).encode()
        while sent < len(messages) and messages[sent][0] <= elapsed:
            _, topic, key, value = messages[sent]
            publisher.publish_raw(topic, value.replace(placeholder, now, 1), key)
            sent += 1
        time.sleep(0.002)
    publisher.flush()
    return sent


def wait_for_alerts(client, raw: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = client.command(f"SELECT count() FROM `{raw}`.alerts WHERE startsWith(entity_id, 'lat-bot')")
        if seen >= expected:
            break
        time.sleep(0.5)
    return int(seen)


def event_to_alert(env: dict[str, str], rate: int, seconds: float, interval: float, alerts_args: str = "") -> dict:
    target = databases(env, "latency")
    attach_live_models(target)
    settings = load_settings(target)
    raw = settings.clickhouse.raw_database
    client = clickhouse_connect.get_client(**settings.clickhouse.client_kwargs())
    bin_dir = Path(sys.executable).parent
    loader = subprocess.Popen(
        [str(bin_dir / "eventhouse"), "load", "--group-id", "bench-latency"],
        env=target,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    alerts = subprocess.Popen(
        [str(bin_dir / "eventhouse"), "alerts", *alerts_args.split()],
        env=target,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    messages = steady_messages(rate, seconds, interval, "lat-")
    bursts = sum(1 for m in messages if b'"clear_time_ms":100,' in m[3])
    publisher = Publisher(settings.kafka, client_id="bench-live-latency")
    try:
        started = time.monotonic()
        sent = publish_on_schedule(publisher, messages, seconds)
        publish_s = time.monotonic() - started
        # two alerts per burst (the HIGH_FREQUENCY window, unless it straddles a 10-s boundary, and
        # the impossible clear)
        published = wait_for_alerts(client, raw, 2 * bursts, 60)
    finally:
        publisher.close()
        for process in (alerts, loader):
            process.send_signal(signal.SIGTERM)
        for process in (alerts, loader):
            process.wait(timeout=60)
    # per alert: (type, event to raw table, raw table to live table, live table to alert), ms, where
    # the event is the one that made the anomaly: the 50th click of the window, or the clear
    latencies = client.query(
        f"""
        WITH
            windows AS (
                SELECT entity_id, window_start, window_end, detected_at, published_at
                FROM `{raw}`.alerts
                WHERE anomaly_type = 'HIGH_FREQUENCY' AND startsWith(entity_id, 'lat-bot')
            ),
            completed AS (
                SELECT
                    windows.entity_id,
                    any(windows.detected_at) AS detected_at,
                    any(windows.published_at) AS published_at,
                    arraySort(groupArray((clicks.ts, clicks.loaded_at)))[{{n:UInt32}}] AS completing
                FROM windows
                INNER JOIN `{raw}`.raw_clickstream_events AS clicks ON clicks.session_id = windows.entity_id
                WHERE clicks.ts >= windows.window_start AND clicks.ts < windows.window_end
                GROUP BY windows.entity_id, windows.window_start
            )
        SELECT
            'HIGH_FREQUENCY',
            dateDiff('millisecond', completing.1, completing.2),
            dateDiff('millisecond', completing.2, detected_at),
            dateDiff('millisecond', detected_at, published_at)
        FROM completed
        UNION ALL
        SELECT
            'IMPOSSIBLE_CLEAR',
            dateDiff('millisecond', alerts.window_start, clears.loaded_at),
            dateDiff('millisecond', clears.loaded_at, alerts.detected_at),
            dateDiff('millisecond', alerts.detected_at, alerts.published_at)
        FROM `{raw}`.alerts AS alerts
        INNER JOIN `{raw}`.raw_game_events AS clears ON clears.event_id = alerts.event_id
        WHERE alerts.anomaly_type = 'IMPOSSIBLE_CLEAR' AND startsWith(alerts.entity_id, 'lat-bot')
        """,
        parameters={"n": 50},
    ).result_rows
    values = sorted(sum(parts) for _, *parts in latencies)
    by_type = {kind: len([1 for k, *_ in latencies if k == kind]) for kind in ("HIGH_FREQUENCY", "IMPOSSIBLE_CLEAR")}

    def quantile(q: float, sample: list[int]) -> int | None:
        return sample[min(int(q * len(sample)), len(sample) - 1)] if sample else None

    def split(index: int) -> dict[str, int | None]:
        part = sorted(row[index] for row in latencies)
        return {"p50": quantile(0.5, part), "p95": quantile(0.95, part)}

    sizes = client.query(
        "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts"
        " WHERE active AND database = {db:String} AND table IN {tables:Array(String)} GROUP BY table",
        parameters={"db": settings.clickhouse.database, "tables": LIVE_TABLES},
    ).result_rows
    hour = 3600 / publish_s
    return {
        "target_rate_events_per_s": rate,
        "alerts_args": alerts_args,
        "events_sent": sent,
        "achieved_rate_events_per_s": round(sent / publish_s),
        "bursts": bursts,
        "alerts_published": published,
        "alerts_measured": by_type,
        "event_to_alert_ms": {
            "p50": quantile(0.5, values),
            "p95": quantile(0.95, values),
            "max": values[-1] if values else None,
        },
        "event_to_raw_table_ms": split(1),
        "raw_table_to_live_detection_ms": split(2),
        "live_detection_to_alert_ms": split(3),
        "live_tables": {
            table: {"rows": rows, "bytes": size, "bytes_per_hour_at_this_rate": round(size * hour)}
            for table, rows, size in sizes
        },
        "publisher_stderr_tail": alerts.stderr.read()[-500:] if alerts.stderr else "",
    }


def generated_hour(env: dict[str, str], rate: int, seconds: float) -> dict:
    """Live table sizes after `seconds` of events at `rate`, generated in ClickHouse."""
    target = databases(env, "hour")
    attach_live_models(target)
    settings = load_settings(target)
    raw, db = settings.clickhouse.raw_database, settings.clickhouse.database
    client = clickhouse_connect.get_client(**settings.clickhouse.client_kwargs())
    per_kind = int(rate * seconds / 4)
    step_ms = 4000 / rate  # one click (and one clear) every 4 events
    base = "toDateTime64('2026-01-01 00:00:00', 3, 'UTC')"
    common = (
        "1 AS schema_version, 'bench' AS source_service, 'local' AS source_host, ts, ts AS ingested_at,"
        " NULL AS sequence, event_id AS dedupe_key, payload, kafka_topic, 0 AS kafka_partition,"
        " number AS kafka_offset, 'bench' AS kafka_topic_id"
    )
    started = time.perf_counter()
    client.command(
        f"""INSERT INTO `{raw}`.raw_clickstream_events ({", ".join(RAW_COLUMNS)})
        SELECT concat('hc', toString(number)) AS event_id, 'clickstream.click' AS event_type, {
            common.replace(
                "1 AS schema_version",
                "1 AS schema_version, NULL AS user_id, concat('hs', toString(intDiv(number, 5))) AS session_id",
                1,
            )
        }
        FROM (
            SELECT number, {base} + toIntervalMillisecond(toUInt64(number * {step_ms})) AS ts,
                concat('{{"item_id":', toString(number % 5000), ',"category":"S"}}') AS payload,
                'clickstream' AS kafka_topic
            FROM numbers({per_kind})
        )""",
        settings={"max_insert_block_size": 100_000, "min_insert_block_size_rows": 100_000},
    )
    client.command(
        f"""INSERT INTO `{raw}`.raw_game_events ({", ".join(RAW_COLUMNS)})
        SELECT concat('hg', toString(number)) AS event_id, 'game.stage_clear' AS event_type, {
            common.replace(
                "1 AS schema_version",
                "1 AS schema_version, concat('hu', toString(number % 1000000)) AS user_id,"
                " concat('hgs', toString(number % 1000000)) AS session_id",
                1,
            )
        }
        FROM (
            SELECT number, {base} + toIntervalMillisecond(toUInt64(number * {step_ms})) AS ts,
                concat('{{"chapter":', toString(1 + number % 5), ',"stage":', toString(1 + number % 10),
                    ',"mode":"story","clear_time_ms":', toString(4000 + number % 9000), ',"score":900}}') AS payload,
                'game.events' AS kafka_topic
            FROM numbers({per_kind})
        )""",
        settings={"max_insert_block_size": 100_000, "min_insert_block_size_rows": 100_000},
    )
    insert_s = time.perf_counter() - started

    def sizes() -> dict:
        rows = client.query(
            "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts"
            " WHERE active AND database = {db:String} AND table IN {tables:Array(String)} GROUP BY table",
            parameters={"db": db, "tables": LIVE_TABLES},
        ).result_rows
        return {table: {"rows": int(n), "mb": round(size / 2**20, 1)} for table, n, size in rows}

    as_inserted = sizes()
    for table in LIVE_TABLES:
        client.command(f"OPTIMIZE TABLE `{db}`.`{table}` FINAL")
    started = time.perf_counter()
    anomalies = client.command(f"SELECT count() FROM `{db}`.live_anomalies")
    full_view_s = time.perf_counter() - started
    # what a poll of the publisher reads at this rate: the anomalies of the entities one second of
    # events touched (a quarter of the events are clicks, a quarter clears: rate / 2 entities)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        client.query(
            f"SELECT * FROM `{db}`.live_anomalies WHERE entity_id IN (SELECT entity_id FROM "
            f"`{db}`.live_anomaly_entities ORDER BY inserted_at DESC LIMIT {rate // 2})"
        )
        timings.append(time.perf_counter() - started)
    recent_poll_s = statistics.median(timings)
    return {
        "seconds_of_events": seconds,
        "clicks": per_kind,
        "stage_clears": per_kind,
        "insert_s": round(insert_s, 1),
        "live_tables_as_inserted": as_inserted,
        "live_tables_merged": sizes(),
        "live_anomalies_found": int(anomalies),
        "full_live_anomalies_query_s": round(full_view_s, 2),
        "poll_of_one_second_of_entities_s_median_of_3": round(recent_poll_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000, help="events per loader run of the A/B")
    parser.add_argument("--rounds", type=int, default=2, help="loader runs per variant")
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--anomaly-interval", type=float, default=2.0)
    parser.add_argument("--hour-seconds", type=float, default=3600.0, help="seconds of events for the sizes")
    parser.add_argument("--alerts-args", default="", help="extra `eventhouse alerts` flags, e.g. '--interval 0.5'")
    parser.add_argument("--only", choices=["loader", "alerts", "hour"], default=None, help="run one part")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.chdir(REPO_ROOT)
    with embedded_stack("eventhouse-live-bench-") as env:
        parts = {
            "loader": lambda: loader_with_and_without(env, args.events, args.rounds),
            "alerts": lambda: event_to_alert(env, args.rate, args.seconds, args.anomaly_interval, args.alerts_args),
            "hour": lambda: generated_hour(env, args.rate, args.hour_seconds),
        }
        report = {name: run_part() for name, run_part in parts.items() if args.only in (None, name)}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
