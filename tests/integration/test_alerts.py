"""The alert publisher (`eventhouse alerts`) against the live anomaly models on the embedded stack.

One module-scoped database with the live models (`dbt run --select +live_anomalies
+live_anomaly_entities` on a copy of the session's prepared database). Events go straight into the
raw tables in the loader's format (`RawWriter`): detection at insert time is the models' concern and
has its own tests; here the question is what the publisher makes of it. The expected anomalies are
worked out from the events inserted (50 clicks of one session in one 10-second window is
HIGH_FREQUENCY, 49 is not; a clear in 100 ms is IMPOSSIBLE_CLEAR), not read from the publisher.

The webhook is a local http.server that records every request; the Kafka topic is read back by a
plain consumer here that counts every copy of every message.
"""

from __future__ import annotations

import http.server
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestion.contract import make_event
from ingestion.raw_writer import RawWriter
from tests.conftest import wait_until
from tests.integration.conftest import WORK_DATABASE, prepared_database
from tests.integration.dbt_support import run_dbt

pytestmark = pytest.mark.integration

TOPIC = "anomalies"
# Event time of the bursts: aligned to a 10-second window, so 50 clicks 100 ms apart (4.9 s) fall in one.
T0 = datetime(2026, 11, 2, 10, 0, 0, tzinfo=UTC)


@dataclass
class Live:
    env: dict[str, str]
    database: str
    raw: str
    client: Any
    kafka_bootstrap: str


@pytest.fixture(scope="module")
def live(embedded_stack, prepared_template, tmp_path_factory):
    target = tmp_path_factory.mktemp("alerts-dbt")
    shutil.copy(prepared_template.work_parse, target / "partial_parse.msgpack")
    with prepared_database(embedded_stack, prepared_template, WORK_DATABASE) as (env, database):
        built = run_dbt(["run", "--select", "+live_anomalies", "+live_anomaly_entities"], env, target)
        assert built.returncode == 0, built.stdout[-5000:]
        # a failed webhook delivery is due again 0.2 s later (then 0.4, 0.8, at most 1 s), not 1 s, 2 s, ...
        env = {**env, "EVENTHOUSE_ALERT_RETRY_BASE_SECONDS": "0.2", "EVENTHOUSE_ALERT_RETRY_MAX_SECONDS": "1"}
        client = embedded_stack.client()
        try:
            yield Live(env, database, env["EVENTHOUSE_RAW_DATABASE"], client, embedded_stack.kafka_bootstrap)
        finally:
            client.close()


# ---- events ------------------------------------------------------------------------------------


def clicks(session: str, count: int, start: datetime = T0) -> list[dict]:
    """`count` clicks of one session, 100 ms apart, on distinct items (never BOT_LIKE)."""
    return [
        make_event(
            "clickstream.click",
            f"{session}-click-{i}",
            start + timedelta(milliseconds=100 * i),
            {"item_id": i},
            session_id=session,
        )
        for i in range(count)
    ]


def fast_clear(user: str, at: datetime = T0) -> dict:
    """One stage clear in 100 ms (under the 500 ms limit), score 10 (within the stage's maximum)."""
    return make_event(
        "game.stage_clear",
        f"{user}-clear",
        at,
        {"chapter": 1, "stage": 1, "mode": "story", "clear_time_ms": 100, "score": 10},
        user_id=user,
        session_id=f"{user}-session",
    )


def insert(live: Live, events: list[dict]) -> None:
    RawWriter(live.client, live.raw, source="test-alerts").add_all(events).flush()


# ---- the publisher -----------------------------------------------------------------------------


def alerts_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "eventhouse.cli", "alerts", "--no-pipeline", *args]


def run_once(live: Live, *args: str) -> dict:
    done = subprocess.run(alerts_command("--once", *args), env=live.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


class WebhookReceiver:
    """A local webhook: answers `status` and records (Idempotency-Key, status answered, body) per request."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[tuple[str, int, dict]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = receiver.status
                receiver.requests.append((self.headers["Idempotency-Key"], status, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def accepted(self) -> Counter[str]:
        return Counter(key for key, status, _ in self.requests if status == 200)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def webhook():
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


# ---- what the channels hold --------------------------------------------------------------------


def _created(live: Live, table: str) -> bool:
    """The publisher creates its tables when it starts: before that, there is nothing in them."""
    return bool(live.client.command(f"EXISTS TABLE `{live.raw}`.`{table}`"))


def alert_rows(live: Live, family: str = "live") -> Counter[tuple[str, str, str, str]]:
    """(anomaly_id, type, entity_type, entity_id) -> rows in `alerts` (a plain count: no FINAL), of the
    live anomalies or of the pipeline ones."""
    if not _created(live, "alerts"):
        return Counter()
    rows = live.client.query(
        f"SELECT anomaly_id, anomaly_type, entity_type, entity_id, count() FROM `{live.raw}`.alerts "
        f"WHERE (anomaly_family = 'pipeline') = {int(family == 'pipeline')} "
        "GROUP BY anomaly_id, anomaly_type, entity_type, entity_id"
    ).result_rows
    return Counter({tuple(r[:4]): r[4] for r in rows})


def live_anomalies(live: Live) -> dict[str, tuple[str, str, str]]:
    rows = live.client.query(
        f"SELECT anomaly_id, anomaly_type, entity_type, entity_id FROM `{live.database}`.live_anomalies"
    ).result_rows
    return {r[0]: tuple(r[1:]) for r in rows}


def topic_messages(live: Live) -> Counter[str]:
    """Every message on `anomalies` from the start to the highwater: event_id -> copies."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=[live.kafka_bootstrap], group_id=None, enable_auto_commit=False)
    copies: Counter[str] = Counter()
    try:
        partitions = [TopicPartition(TOPIC, p) for p in sorted(consumer.partitions_for_topic(TOPIC) or ())]
        if not partitions:  # no publisher has run yet
            return copies
        consumer.assign(partitions)
        consumer.seek_to_beginning()

        def caught_up() -> bool:
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    event = orjson.loads(record.value)
                    assert event["event_type"] == "anomaly.detected"
                    assert event["payload"]["anomaly_id"] == event["event_id"]
                    assert record.key.decode() == event["payload"]["entity_id"]
                    copies[event["event_id"]] += 1
            return all(
                consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp)
                for tp in partitions
            )

        wait_until(caught_up, "the anomalies topic read to its highwater", timeout=30, interval=0)
    finally:
        consumer.close()
    return copies


def open_webhook_delivery(live: Live, anomaly_id: str) -> tuple[str, int, str]:
    return live.client.query(
        f"SELECT toString(argMax(state, seq)), max(attempts), argMax(last_error, seq) "
        f"FROM `{live.raw}`.alert_deliveries WHERE anomaly_id = {{id:String}} AND channel = 'webhook'",
        parameters={"id": anomaly_id},
    ).result_rows[0]


# ---- the tests ---------------------------------------------------------------------------------


def test_once_publishes_each_anomaly_once_to_every_channel_and_retries_a_failing_webhook(live, webhook):
    on_topic_before = topic_messages(live)  # empty unless another test of the session published
    insert(live, clicks("s-hot", 50) + clicks("s-cold", 49) + [fast_clear("u-fast")])
    expected = {("HIGH_FREQUENCY", "session", "s-hot"), ("IMPOSSIBLE_CLEAR", "user", "u-fast")}

    first = run_once(live, "--webhook", webhook.url)
    assert (first["new_alerts"], first["delivered"]) == (2, {"clickhouse": 2, "kafka": 2, "webhook": 2})
    assert first["open_deliveries"] == {}
    rows = alert_rows(live)
    assert {key[1:] for key in rows} == expected
    assert set(rows.values()) == {1}
    ids = {key[0] for key in rows}
    assert ids == set(live_anomalies(live))
    assert topic_messages(live) - on_topic_before == Counter(ids)
    assert webhook.accepted() == Counter(ids)

    # A second pass finds nothing new and sends nothing anywhere.
    again = run_once(live, "--webhook", webhook.url)
    assert (again["new_alerts"], again["delivered"], again["open_deliveries"]) == (0, {}, {})
    assert alert_rows(live) == rows
    assert topic_messages(live) - on_topic_before == Counter(ids)
    assert len(webhook.requests) == 2

    # The webhook fails: the alert is in ClickHouse and on Kafka, its webhook delivery is recorded
    # as failed with the error, stays owed, and is delivered once the webhook answers again.
    webhook.status = 500
    insert(live, [fast_clear("u-fast-2")])
    failing = run_once(live, "--webhook", webhook.url)
    assert (failing["new_alerts"], failing["delivery_failures"]) == (1, {"webhook": 1})
    assert failing["delivered"] == {"clickhouse": 1, "kafka": 1}
    assert failing["open_deliveries"] == {"webhook": 1}
    (new_id,) = {key[0] for key in alert_rows(live)} - ids
    assert open_webhook_delivery(live, new_id) == ("failed", 1, "HTTP 500 Internal Server Error")
    # still failing on a later pass (its 0.2 s backoff is over by then): attempt 2, still owed
    wait_until(lambda: run_once(live, "--webhook", webhook.url)["delivery_failures"], "a second failed attempt")
    assert open_webhook_delivery(live, new_id) == ("failed", 2, "HTTP 500 Internal Server Error")

    webhook.status = 200
    wait_until(lambda: run_once(live, "--webhook", webhook.url)["delivered"] == {"webhook": 1}, "the webhook delivery")
    assert [(key, status) for key, status, _ in webhook.requests[2:]] == [(new_id, 500), (new_id, 500), (new_id, 200)]
    assert open_webhook_delivery(live, new_id)[0] == "delivered"
    assert topic_messages(live) - on_topic_before == Counter(ids | {new_id})
    assert set(alert_rows(live).values()) == {1}


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sending(live: Live) -> int:
    """Kafka deliveries whose send is recorded and whose acknowledgement is not (yet)."""
    if not _created(live, "alert_deliveries"):
        return 0
    return live.client.command(
        f"SELECT count() FROM (SELECT anomaly_id FROM `{live.raw}`.alert_deliveries WHERE channel = 'kafka' "
        "GROUP BY anomaly_id HAVING countIf(state = 'sending') > 0 AND countIf(state = 'delivered') = 0)"
    )


def _deliveries_logged(live: Live) -> int:
    if not _created(live, "alert_deliveries"):
        return 0
    return live.client.command(f"SELECT count() FROM `{live.raw}`.alert_deliveries")


def _not_yet_delivered(live: Live) -> int:
    """Live alerts without a `delivered` row for both Kafka and the webhook (an alert whose pending rows are
    not written yet counts too: "no open delivery" would pass in that instant)."""
    return live.client.command(
        f"SELECT count() FROM `{live.raw}`.alerts WHERE anomaly_family != 'pipeline' AND anomaly_id NOT IN ("
        f"SELECT anomaly_id FROM `{live.raw}`.alert_deliveries WHERE state = 'delivered' "
        "AND channel IN ('kafka', 'webhook') GROUP BY anomaly_id HAVING uniqExact(channel) = 2)"
    )


def test_kill_9_at_random_moments_publishes_every_anomaly_once(live, webhook, tmp_path):
    rng = random.Random(15)
    published_before = {key[0] for key in alert_rows(live)}  # the first test's, if it ran
    on_topic_before = topic_messages(live)
    webhook_before = len(webhook.requests)
    expected: set[tuple[str, str, str]] = set()
    logs: list[Path] = []

    def start(*extra: str) -> subprocess.Popen:
        logs.append(tmp_path / f"publisher-{len(logs)}.log")
        return subprocess.Popen(
            alerts_command("--interval", "0.1", "--webhook", webhook.url, *extra),
            env=live.env,
            stdout=subprocess.PIPE,
            stderr=logs[-1].open("w"),
            text=True,
        )

    process: subprocess.Popen | None = None
    try:
        for round_ in range(4):
            process = start() if round_ < 3 else start("--metrics-port", "0")
            # a burst while it runs: 6 impossible clears and one session of 50 clicks (7 anomalies)
            users = [f"u-r{round_}-{i}" for i in range(6)]
            session = f"s-r{round_}"
            before = _deliveries_logged(live)
            insert(live, [fast_clear(u) for u in users] + clicks(session, 50))
            expected |= {("IMPOSSIBLE_CLEAR", "user", u) for u in users} | {("HIGH_FREQUENCY", "session", session)}
            if round_ == 0:
                # Killed as soon as the burst's first alert rows land: before or just after their pending
                # deliveries are written (the restart must find an alert without delivery rows, if so).
                wait_until(lambda: len(alert_rows(live)) > len(published_before), "the first alerts", interval=0.01)
            elif round_ == 1:
                # Killed as soon as the burst's Kafka send is recorded: often before its acknowledgements are
                # (the restart must then read the topic back rather than send again).
                wait_until(lambda: _sending(live) > 0, "a Kafka send", interval=0.005)
            elif round_ == 2:
                # Killed once the log has gained 1 to 30 more rows (a burst writes 35: 14 pending, 7 sending,
                # 7 delivered to Kafka, 7 to the webhook): between any two of its writes.
                target = before + rng.randint(1, 30)
                wait_until(
                    lambda t=target: _deliveries_logged(live) >= t, "the publisher to log deliveries", interval=0.01
                )
            if round_ < 3:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                process.stdout.close()

        # The last run finishes everything the killed ones left ...
        def all_delivered() -> bool:
            return len(alert_rows(live)) == len(published_before) + len(expected) and _not_yet_delivered(live) == 0

        wait_until(all_delivered, "every anomaly published and delivered", timeout=60)
        # ... and, polling by then only the entities inserted since its previous poll, finds a late burst too:
        # one alert of each type, counted once per channel by its metrics; then it stops cleanly on SIGTERM.
        port = int(
            wait_until(lambda: re.search(r"metrics on http://127\.0\.0\.1:(\d+)/", logs[-1].read_text()), "the port")[1]
        )
        metrics_before = scrape(port)
        insert(live, [fast_clear("u-late")] + clicks("s-late", 50))
        expected |= {("IMPOSSIBLE_CLEAR", "user", "u-late"), ("HIGH_FREQUENCY", "session", "s-late")}
        wait_until(all_delivered, "the late burst published and delivered", timeout=30)
        # the counters and the gauge move just after the rows they follow: wait for them, then compare
        want = {
            ("eventhouse_alerts_published_total", (("channel", c), ("type", t))): 1.0
            for c in ("clickhouse", "kafka", "webhook")
            for t in ("HIGH_FREQUENCY", "IMPOSSIBLE_CLEAR")
        }

        def late_burst_counted() -> bool:
            after = scrape(port)
            grown = {
                key: after[key] - metrics_before.get(key, 0)
                for key in after
                if key[0] == "eventhouse_alerts_published_total" and after[key] != metrics_before.get(key, 0)
            }
            still_open = [
                after.get(("eventhouse_alerts_open_deliveries", (("channel", c),))) for c in ("kafka", "webhook")
            ]
            return grown == want and still_open == [0, 0]

        wait_until(late_burst_counted, "the late burst in the metrics, once per channel and type", timeout=10)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0, logs[-1].read_text()[-3000:]
        assert json.loads(out)["open_deliveries"] == {}
    finally:
        if process is not None and process.poll() is None:  # a failure above: never leave it publishing
            process.kill()
            process.communicate(timeout=30)

    rows = alert_rows(live)
    new = {key for key in rows if key[0] not in published_before}
    assert {key[1:] for key in new} == expected
    assert set(rows.values()) == {1}, "an anomaly has more than one row in alerts"
    new_ids = {key[0] for key in new}
    assert {key[0] for key in rows} == set(live_anomalies(live))
    on_topic = topic_messages(live) - on_topic_before
    assert on_topic == Counter(new_ids), (
        f"every anomaly once on the topic: extra {on_topic - Counter(new_ids)}, missing {Counter(new_ids) - on_topic}"
    )
    hooks = webhook.requests[webhook_before:]
    accepted = Counter(key for key, status, _ in hooks if status == 200)
    assert set(accepted) == new_ids, "every anomaly reached the webhook"
    # at-least-once: a kill between a 2xx and its record re-sends, with the same key (the anomaly id)
    repeats = sum(accepted.values()) - len(accepted)
    read_backs = sum(log.read_text().count("Kafka read-back of") for log in logs)
    orphans = sum(log.read_text().count("had no pending row") for log in logs)
    print(
        f"webhook repeats: {repeats}; Kafka read-backs after a kill: {read_backs}; alerts without deliveries: {orphans}"
    )
    for key, _, body in hooks:
        assert key in body["text"] or any(key in f["text"] for f in body["blocks"][1]["fields"])


def test_pipeline_alerts_from_the_loaders_batch_log(live):
    """The loader's last minutes as its batch log records them, worked out by hand: clickstream loaded
    980 rows and dead-lettered 20 (20 / 1000 = 2% > 1%), game.events 995 and 5 (0.5%: no alert); of
    the 20 batches' insert times, 18 took 0.1 s and 2 took 3 s, so the nearest-rank p95 (the 19th of
    20) is 3 s > 2 s. The lag and freshness checks run too, with thresholds nothing here reaches."""
    from ingestion.batch_log import BATCH_LOG_COLUMNS

    now = datetime.now(UTC)
    rows = []
    for i in range(20):
        topic, loaded, dead = ("clickstream", 98, 2) if i < 10 else ("game.events", 99 + (i == 19) * 5, 1 * (i < 15))
        rows.append(
            [
                f"b{i}",
                "done",
                "loader-t",
                "cluster-t",
                topic,
                "tid",
                0,
                i * 100,
                i * 100 + 99,
                loaded,
                dead,
                0,
                3000.0 if i in (3, 17) else 100.0,
                now,
                0.0,
                0,
            ]
        )
    live.client.insert(f"`{live.raw}`.ingest_batches", rows, column_names=list(BATCH_LOG_COLUMNS))
    by_topic = Counter()
    for r in rows:
        by_topic[(r[4], "rows")] += r[9]
        by_topic[(r[4], "dead")] += r[10]
    assert (by_topic[("clickstream", "rows")], by_topic[("clickstream", "dead")]) == (980, 20)
    assert (by_topic[("game.events", "rows")], by_topic[("game.events", "dead")]) == (995, 5)

    # buckets of ~2 years: the two runs below cannot straddle two buckets (an hour's could, at xx:59:59)
    env = {
        **live.env,
        "EVENTHOUSE_LAG_THRESHOLD": str(10**12),
        "EVENTHOUSE_FRESHNESS_HOURS": "1000",
        "EVENTHOUSE_ALERT_PIPELINE_REPEAT_MINUTES": str(10**6),
    }
    done = subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", "alerts", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["new_alerts_by_type"] == {"DEAD_LETTER_RATE": 1, "INSERT_LATENCY": 1}
    values = live.client.query(
        f"SELECT anomaly_type, entity_type, entity_id, observed_value, threshold_value FROM `{live.raw}`.alerts "
        "WHERE anomaly_family = 'pipeline' ORDER BY anomaly_type"
    ).result_rows
    assert values == [
        ("DEAD_LETTER_RATE", "topic", "clickstream", 0.02, 0.01),
        ("INSERT_LATENCY", "pipeline", "loader", 3.0, 2.0),
    ]
    # the same breaches at the next check are the same alerts (one per hour-long bucket)
    again = subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", "alerts", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["new_alerts"] == 0


def test_without_the_live_models_it_stops_with_one_line_naming_them(live):
    env = {**live.env, "EVENTHOUSE_CLICKHOUSE_DATABASE": live.raw}  # a database with no live models
    done = subprocess.run(alerts_command("--once"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {live.raw}.live_anomalies, {live.raw}.live_anomaly_entities not found: build the live models "
        "first (dbt run --select +live_anomalies +live_anomaly_entities)"
    )
    assert "Traceback" not in done.stderr
