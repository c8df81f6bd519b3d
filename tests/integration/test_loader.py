"""The loader against the real embedded Kafka and ClickHouse: exact counts whatever crashes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingestion.contract import make_event
from ingestion.publisher import Publisher
from settings import load_settings
from tests.conftest import RunningStack

pytestmark = pytest.mark.integration

BASE = datetime(2024, 4, 1, tzinfo=UTC)


def _events(n: int, start: int = 0, run: str = "r") -> list[dict]:
    events = []
    for i in range(start, start + n):
        ts = BASE + timedelta(seconds=i)
        kind = i % 4
        if kind == 0:
            events.append(
                make_event(
                    "clickstream.click",
                    f"{run}-c{i}",
                    ts,
                    {"item_id": i % 97, "category": "S"},
                    session_id=f"s{i % 50}",
                )
            )
        elif kind == 1:
            payload = {
                "chapter": 1 + i % 5,
                "stage": 1 + i % 10,
                "mode": "story",
                "clear_time_ms": 4000 + i,
                "score": 900,
            }
            events.append(
                make_event(
                    "game.stage_clear", f"{run}-g{i}", ts, payload, user_id=f"u{i % 40}", session_id=f"gs{i % 9}"
                )
            )
        elif kind == 2:
            events.append(
                make_event("reward.granted", f"{run}-e{i}", ts, {"delta_gold": 10, "balance": i}, user_id=f"u{i % 40}")
            )
        else:
            payload = {"order_id": f"o{i}", "status": "PENDING", "version": 1, "amount_cents": 1999}
            events.append(make_event("order.created", f"{run}-o{i}", ts, payload, user_id=f"u{i % 40}"))
    return events


def _produce(stack: RunningStack, events: list[dict]) -> None:
    publisher = Publisher(load_settings(stack.env).kafka)
    for event in events:
        publisher.publish(event)
    publisher.close()


def _loader(stack: RunningStack, *args: str, database: str, group: str) -> subprocess.Popen:
    env = stack.env
    return subprocess.Popen(
        [sys.executable, "-m", "eventhouse.cli", "load", "--raw-database", database, "--group-id", group, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _load_until_caught_up(stack: RunningStack, database: str, group: str, *extra: str) -> dict:
    process = _loader(stack, "--until-caught-up", "--max-seconds", "240", *extra, database=database, group=group)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-4000:]
    return orjson.loads(output[output.rindex("\n{") :])


def _counts(stack: RunningStack, database: str) -> dict[str, tuple[int, int]]:
    client = stack.client()
    counts = {}
    for domain in ("clickstream", "game", "economy", "orders"):
        counts[domain] = tuple(
            int(v) for v in client.command(f"SELECT count(), uniqExact(event_id) FROM {database}.raw_{domain}_events")
        )
    return counts


def test_produce_load_exact_count_then_load_again_changes_nothing(embedded_stack):
    database, group = f"raw_{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    _produce(embedded_stack, _events(8000, run="once"))
    summary = _load_until_caught_up(embedded_stack, database, group)
    assert summary["rows_loaded"] >= 8000 and summary["dead_letters"] == 0
    counts = _counts(embedded_stack, database)
    # Earlier tests share the broker: count only this test's events, by id.
    client = embedded_stack.client()
    mine = client.command(
        f"SELECT count(), uniqExact(event_id) FROM merge('{database}', '^raw_') WHERE startsWith(event_id, 'once-')"
    )
    assert mine == ["8000", "8000"]
    again = _load_until_caught_up(embedded_stack, database, group)
    assert again["rows_loaded"] == 0
    assert _counts(embedded_stack, database) == counts
    # The ops table says what was loaded.
    done = client.command(f"SELECT sum(rows_loaded) FROM {database}.ingest_batches WHERE state = 'done'")
    assert int(done) == sum(c for c, _ in counts.values())


def test_kill_9_repeatedly_mid_stream_loses_and_duplicates_nothing(own_stack):
    database, group = "raw_kill", "g-kill"
    total = 40_000
    _produce(own_stack, _events(total, run="k"))
    rng = random.Random(7)
    kills = 0
    for _ in range(5):
        process = _loader(own_stack, "--batch-rows", "700", database=database, group=group)
        time.sleep(rng.uniform(4.0, 6.5))  # group join takes ~3 s on the embedded broker
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kills += 1
    loaded_before_final = sum(c for c, _ in _counts(own_stack, database).values())
    assert 0 < loaded_before_final < total, "the kills should land mid-stream"
    _load_until_caught_up(own_stack, database, group)
    counts = _counts(own_stack, database)
    # A plain count(), no FINAL: exactly the events produced, each once.
    assert sum(c for c, _ in counts.values()) == total
    assert all(c == u for c, u in counts.values())
    client = own_stack.client()
    gaps = client.command(
        f"""SELECT count() FROM (
              SELECT kafka_topic, kafka_partition, max(kafka_offset) - min(kafka_offset) + 1 - count() AS gap
              FROM merge('{database}', '^raw_') GROUP BY kafka_topic, kafka_partition) WHERE gap != 0"""
    )
    assert gaps == 0
    assert kills == 5


def test_clickhouse_outage_under_load_loses_nothing(own_stack):
    database, group = "raw_outage", "g-outage"
    first, second = _events(10_000, run="a"), _events(10_000, start=10_000, run="b")
    _produce(own_stack, first)
    process = _loader(own_stack, "--batch-rows", "1000", "--max-seconds", "90", database=database, group=group)
    time.sleep(5)
    clickhouse_service = own_stack.stack.services()[0]
    clickhouse_service.stop()
    _produce(own_stack, second)  # produced while ClickHouse is down
    time.sleep(4)
    clickhouse_service.start()
    output, _ = process.communicate(timeout=150)
    assert process.returncode == 0, output[-3000:]
    assert "retrying" in output
    counts = _counts(own_stack, database)
    assert sum(c for c, _ in counts.values()) == 20_000
    assert all(c == u for c, u in counts.values())


def test_two_loaders_in_one_group_split_partitions_and_load_exactly_n(own_stack):
    database, group = "raw_pair", "g-pair"
    _produce(own_stack, _events(30_000, run="p"))
    loaders = [
        _loader(own_stack, "--batch-rows", "1000", "--max-seconds", "40", database=database, group=group)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in loaders]
    assert all(p.returncode == 0 for p in loaders), [o[-2000:] for o in outputs]
    summaries = [orjson.loads(o[o.rindex("\n{") :]) for o in outputs]
    assert all(s["rows_loaded"] > 0 for s in summaries), "both loaders should own partitions"
    assert sum(s["rows_loaded"] for s in summaries) == 30_000
    counts = _counts(own_stack, database)
    assert sum(c for c, _ in counts.values()) == 30_000


def test_broker_restart_is_noticed_and_new_data_loads(own_stack):
    database, group = "raw_reset", "g-reset"
    _produce(own_stack, _events(3000, run="before"))
    _load_until_caught_up(own_stack, database, group)
    kafka_service = own_stack.stack.services()[1]
    state = own_stack.stack.read_state()
    kafka_service.stop()
    # The broker forgets everything; offsets start again at 0 under a new cluster id.
    new_stack_state = own_stack.stack.up()
    assert new_stack_state.kafka_cluster_id != state.kafka_cluster_id
    _produce(own_stack, _events(1000, start=3000, run="after"))
    summary = _load_until_caught_up(own_stack, database, group)
    assert summary["rows_loaded"] == 1000
    counts = _counts(own_stack, database)
    assert sum(c for c, _ in counts.values()) == 4000


def test_replaying_the_same_yoochoose_files_twice_changes_nothing(own_stack, tmp_path):
    database, group = "raw_yc", "g-yc"
    clicks = tmp_path / "clicks.dat"
    clicks.write_text(
        "1,2014-04-01T10:00:00.000Z,10,0\n"
        "1,2014-04-01T10:00:00.000Z,10,0\n"  # identical lines: two events
        "2,2014-04-01T11:00:00.000Z,11,S\n"
        "broken line\n"
    )
    buys = tmp_path / "buys.dat"
    buys.write_text("1,2014-04-01T10:03:00.000Z,10,1200,1\n")
    env = own_stack.env
    command = [sys.executable, "-m", "eventhouse.cli", "produce", "yoochoose", "--clicks", str(clicks)]
    command += ["--buys", str(buys)]
    strict = subprocess.run([*command, "--strict"], env=env, capture_output=True, text=True, timeout=120)
    assert strict.returncode == 2 and "clicks.dat:4" in strict.stderr
    client = own_stack.client()
    table = f"{database}.raw_clickstream_events"
    for replay_number in (1, 2):
        replayed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert replayed.returncode == 0, replayed.stderr[-2000:]
        summary = orjson.loads(replayed.stdout[replayed.stdout.index("{") :])
        assert (summary["lines_read"], summary["produced"], summary["rejected"]) == (5, 4, 1)
        assert summary["first_rejections"][0].startswith("clicks.dat:4: ")
        loaded = _load_until_caught_up(own_stack, database, group, "--domains", "clickstream")
        assert loaded["rows_loaded"] == 4  # the replay is delivered again ...
        # ... and collapses onto the same four events: nothing changes downstream.
        assert client.command(f"SELECT count() FROM {table} FINAL") == 4, replay_number
        assert client.command(f"SELECT uniqExact(event_id) FROM {table}") == 4
    types = client.query(
        f"SELECT event_type, count() FROM {table} FINAL GROUP BY event_type ORDER BY event_type"
    ).result_rows
    assert types == [("clickstream.click", 3), ("clickstream.purchase", 1)]


def _produce_cli(stack: RunningStack, *args: str) -> dict:
    command = [sys.executable, "-m", "eventhouse.cli", "produce", *args]
    result = subprocess.run(command, env=stack.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return orjson.loads(result.stdout[result.stdout.index("{") :])


def test_simulated_game_economy_and_orders_load_exactly_with_duplicates_collapsing(own_stack):
    database, group = "raw_sim", "g-sim"
    game = _produce_cli(own_stack, "simulate", "--users", "12", "--days", "3", "--duplicate-rate", "0.03")
    orders = _produce_cli(own_stack, "orders", "--orders", "150", "--days", "3", "--duplicate-rate", "0.03")
    assert game["duplicates_injected"] > 0 and orders["duplicates_injected"] > 0
    assert game["users_by_persona"]["bot"] == 1
    loaded = _load_until_caught_up(own_stack, database, group)
    assert loaded["dead_letters"] == 0
    assert loaded["rows_loaded"] == game["produced"] + orders["produced"]
    counts = _counts(own_stack, database)
    # Every delivery was inserted once; re-delivered envelopes share an event_id and collapse
    # (background merges may already have collapsed some, so a plain count() sits in between).
    client = own_stack.client()
    assert counts["game"][1] + counts["economy"][1] == game["distinct_events"]
    assert counts["orders"][1] == orders["distinct_events"]
    assert game["distinct_events"] <= counts["game"][0] + counts["economy"][0] <= game["produced"]
    for domain, expected in (("game", counts["game"][1]), ("economy", counts["economy"][1])):
        assert client.command(f"SELECT count() FROM {database}.raw_{domain}_events FINAL") == expected
    assert client.command(f"SELECT count() FROM {database}.raw_orders_events FINAL") == orders["distinct_events"]
    # The simulated server receive time is kept as ingested_at (history keeps realistic latencies).
    lag = client.query(
        f"SELECT max(dateDiff('second', ts, ingested_at)) < 3600, min(loaded_at) > max(ingested_at) "
        f"FROM {database}.raw_orders_events"
    )
    assert lag.result_rows == [(1, 1)]
    # The same seed again: the same event ids, so nothing new downstream.
    again = _produce_cli(own_stack, "orders", "--orders", "150", "--days", "3", "--duplicate-rate", "0.03")
    assert again["produced"] == orders["produced"]
    _load_until_caught_up(own_stack, database, group)
    assert client.command(f"SELECT count() FROM {database}.raw_orders_events FINAL") == orders["distinct_events"]
