"""The loader against the real embedded Kafka and ClickHouse: exact counts whatever crashes."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingestion.contract import make_event
from ingestion.lag import group_lag
from ingestion.publisher import Publisher
from ingestion.topics import TOPICS, topic_for
from settings import load_settings
from tests.conftest import RunningStack, last_json, wait_until

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


def _loader(stack: RunningStack, *args: str, database: str, group: str, output: Path | None = None) -> subprocess.Popen:
    """An `eventhouse load` process; its output (log lines, then the JSON summary) goes to a pipe or `output`."""
    log_file = output.open("w") if output is not None else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "eventhouse.cli", "load", "--raw-database", database, "--group-id", group, *args],
            env=stack.env,
            stdout=subprocess.PIPE if log_file is None else log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        if log_file is not None:
            log_file.close()  # the process has its own copy


def _load_until_caught_up(stack: RunningStack, database: str, group: str, *extra: str) -> dict:
    process = _loader(stack, "--until-caught-up", "--max-seconds", "240", *extra, database=database, group=group)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-4000:]
    return last_json(output)


def _metrics_port(process: subprocess.Popen) -> tuple[int, list[str]]:
    """The port a loader started with `--metrics-port 0` logged, and the output read up to that line."""
    lines: list[str] = []
    while line := process.stdout.readline():
        lines.append(line)
        found = re.search(r"serving Prometheus metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
        if found:
            return int(found.group(1)), lines
    raise AssertionError("the loader exited without serving metrics:\n" + "".join(lines)[-4000:])


def _scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The loader's metrics, as Prometheus would scrape them: sample name -> sorted labels -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _per_topic(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> dict[str, float]:
    return {dict(labels)["topic"]: value for labels, value in samples.get(name, {}).items()}


def _counts(stack: RunningStack, database: str) -> dict[str, tuple[int, int]]:
    client = stack.client()
    counts = {}
    for domain in ("clickstream", "game", "economy", "orders"):
        counts[domain] = tuple(
            int(v) for v in client.command(f"SELECT count(), uniqExact(event_id) FROM {database}.raw_{domain}_events")
        )
    return counts


def _done(stack: RunningStack, database: str) -> tuple[int, int]:
    """(batches, rows) the batch log records as done; (0, 0) before the loader created it."""
    client = stack.client()
    if not client.command(f"EXISTS TABLE {database}.ingest_batches"):
        return 0, 0
    batches, rows = client.command(
        f"SELECT uniqExact(batch_id), sum(rows_loaded) FROM {database}.ingest_batches WHERE state = 'done'"
    )
    return int(batches), int(rows)


def _assert_done_ranges_tile_every_partition(stack: RunningStack, database: str, group: str) -> None:
    """Each partition's `done` ranges cover offsets 0 .. its highwater (from Kafka) once each: no gap, no overlap."""
    lag = group_lag(load_settings(stack.env).kafka, group, [spec.name for spec in TOPICS])
    highwaters = {(p.topic, p.partition): p.highwater for p in lag.partitions if p.highwater}
    logged = (
        stack.client()
        .query(
            f"SELECT kafka_topic, kafka_partition, arraySort(groupArray((first_offset, last_offset))) "
            f"FROM {database}.ingest_batches WHERE state = 'done' GROUP BY kafka_topic, kafka_partition"
        )
        .result_rows
    )
    ranges = {(topic, partition): [(int(a), int(b)) for a, b in spans] for topic, partition, spans in logged}
    assert set(ranges) == set(highwaters)
    for key, spans in ranges.items():
        starts = [first for first, _ in spans]
        assert starts == [0] + [last + 1 for _, last in spans[:-1]], (key, spans)
        assert spans[-1][1] + 1 == highwaters[key], (key, spans)


def test_produce_load_exact_count_then_load_again_changes_nothing(own_stack):
    database, group = "raw_once", "g-once"
    events = _events(8000, run="once")
    _produce(own_stack, events)
    # The first run serves its Prometheus metrics: scraped until they show every event loaded,
    # then the loader is stopped as a service would be (SIGTERM) and prints its summary.
    per_topic = dict(Counter(topic_for(event["event_type"]).name for event in events))
    process = _loader(own_stack, "--max-seconds", "240", "--metrics-port", "0", database=database, group=group)
    try:
        port, head = _metrics_port(process)

        def all_loaded() -> dict | None:
            samples = _scrape(port)
            return samples if _per_topic(samples, "eventhouse_loader_events_loaded_total") == per_topic else None

        scraped = wait_until(all_loaded, "the metrics to show every event loaded")
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    output = "".join(head) + rest
    assert process.returncode == 0, output[-4000:]
    assert _per_topic(scraped, "eventhouse_loader_events_consumed_total") == per_topic
    assert set(_per_topic(scraped, "eventhouse_loader_duplicates_collapsed_total").values()) == {0}
    assert "eventhouse_loader_dead_letters_total" not in scraped
    # every message went through an insert: the batch sizes add up to them, one latency per range
    assert scraped["eventhouse_loader_insert_batch_rows_sum"][()] == 8000
    batches = scraped["eventhouse_loader_insert_batch_rows_count"][()]
    assert batches >= 1 and scraped["eventhouse_loader_insert_seconds_count"][()] == batches
    summary = last_json(output)
    assert (summary["messages"], summary["rows_loaded"], summary["dead_letters"]) == (8000, 8000, 0)
    # _events cycles through four domains: 2000 events each, each once.
    counts = _counts(own_stack, database)
    assert counts == {domain: (2000, 2000) for domain in ("clickstream", "game", "economy", "orders")}
    again = _load_until_caught_up(own_stack, database, group)
    assert (again["messages"], again["rows_loaded"]) == (0, 0)
    assert _counts(own_stack, database) == counts
    # The ops table says what was loaded.
    assert _done(own_stack, database)[1] == 8000
    _assert_done_ranges_tile_every_partition(own_stack, database, group)


def test_kill_9_repeatedly_mid_stream_loses_and_duplicates_nothing(own_stack):
    database, group = "raw_kill", "g-kill"
    total = 40_000
    _produce(own_stack, _events(total, run="k"))
    rng = random.Random(7)
    # A killed member stays in the group until its session times out, and the next run's join
    # waits for that: a 2 s session (the default is 6 s) keeps five restarts quick.
    session = ("--session-timeout-ms", "2000")
    for _ in range(5):
        # Each run is killed once it has logged 1 to 3 more batches done: mid-stream, while its
        # writer thread is inserting the next batch or its consumer is filling it.
        before = _done(own_stack, database)[0]
        process = _loader(own_stack, "--batch-rows", "700", *session, database=database, group=group)
        target = before + rng.randint(1, 3)
        wait_until(lambda t=target: _done(own_stack, database)[0] >= t, "the loader to log more batches done")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()
    loaded_before_final = sum(c for c, _ in _counts(own_stack, database).values())
    assert 0 < loaded_before_final < total, "the kills should land mid-stream"
    _load_until_caught_up(own_stack, database, group, *session)
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
    # However the kills fell, the batch log ends up with every offset in exactly one done range.
    _assert_done_ranges_tile_every_partition(own_stack, database, group)


def test_clickhouse_outage_under_load_loses_nothing(own_stack, tmp_path):
    database, group = "raw_outage", "g-outage"
    first, second = _events(10_000, run="a"), _events(10_000, start=10_000, run="b")
    _produce(own_stack, first)
    log = tmp_path / "loader.log"
    # Retries back off to 0.5 s at most (10 s by default), so the loader notices ClickHouse is
    # back within half a second; --max-seconds only bounds a run that would hang.
    process = _loader(
        own_stack,
        *("--batch-rows", "1000", "--retry-max-sleep", "0.5", "--max-seconds", "120"),
        database=database,
        group=group,
        output=log,
    )
    try:
        wait_until(lambda: _done(own_stack, database)[0] > 0, "the loader's first batch")
        clickhouse_service = own_stack.stack.services()[0]
        clickhouse_service.stop()
        _produce(own_stack, second)  # produced while ClickHouse is down
        # The loader's log line for a failed insert it will retry: "could not insert into ...; retrying in ..."
        wait_until(lambda: "could not insert into" in log.read_text(), "an insert retried against the stopped server")
        clickhouse_service.start()
        wait_until(lambda: _done(own_stack, database)[1] == 20_000, "every event logged done after the outage")
    finally:
        process.send_signal(signal.SIGTERM)  # a clean stop: flush, commit, print the summary
        process.wait(timeout=60)
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    summary = last_json(output)
    assert summary["clickhouse_retries"] > 0 and summary["messages"] == 20_000
    counts = _counts(own_stack, database)
    assert sum(c for c, _ in counts.values()) == 20_000
    assert all(c == u for c, u in counts.values())
    _assert_done_ranges_tile_every_partition(own_stack, database, group)


def test_two_loaders_in_one_group_split_partitions_and_load_exactly_n(own_stack, tmp_path):
    """`eventhouse load --workers 2`: two loader processes in one group, each with its share."""
    database, group = "raw_pair", "g-pair"
    log = tmp_path / "loader.log"
    # The workers run until the batch log has every event done, then stop cleanly; --max-seconds
    # only bounds a run that would hang.
    loader = _loader(
        own_stack,
        "--workers",
        "2",
        "--batch-rows",
        "1000",
        "--max-seconds",
        "120",
        database=database,
        group=group,
        output=log,
    )

    def joined() -> set[str]:
        return set(re.findall(r"ingestion\.loader: assigned .* to (\S+)$", log.read_text(), re.MULTILINE))

    try:
        # The events come once both workers own partitions (each logs "assigned ... to <its id>"):
        # neither can load them all before the other has joined, however the two starts are timed.
        wait_until(lambda: len(joined()) == 2, "both workers to join")
        _produce(own_stack, _events(30_000, run="p"))
        wait_until(lambda: _done(own_stack, database)[1] == 30_000, "every event logged done")
    finally:
        loader.send_signal(signal.SIGTERM)  # forwarded to both workers
        loader.wait(timeout=60)
    output = log.read_text()
    assert loader.returncode == 0, output[-2000:]
    summary = last_json(output)
    assert summary["workers"] == 2 and len(summary["per_worker"]) == 2
    assert all(s["rows_loaded"] > 0 for s in summary["per_worker"]), "both workers should own partitions"
    assert summary["rows_loaded"] == sum(s["rows_loaded"] for s in summary["per_worker"]) == 30_000
    writers = own_stack.client().command(
        f"SELECT uniqExact(loader_id) FROM {database}.ingest_batches WHERE state = 'done'"
    )
    assert writers == 2
    counts = _counts(own_stack, database)
    assert sum(c for c, _ in counts.values()) == 30_000
    _assert_done_ranges_tile_every_partition(own_stack, database, group)


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
    client = own_stack.client()
    # Every delivery was written once: the batch log's done ranges hold each produced message once
    # (a plain count() cannot say so exactly: background merges may already have collapsed some).
    written = client.query(
        f"SELECT kafka_topic = 'orders' AS is_orders, sum(rows_loaded) FROM {database}.ingest_batches "
        "WHERE state = 'done' GROUP BY is_orders ORDER BY is_orders"
    ).result_rows
    assert [int(rows) for _, rows in written] == [game["produced"], orders["produced"]]
    # Re-delivered envelopes share an event_id and collapse.
    assert counts["game"][1] + counts["economy"][1] == game["distinct_events"]
    assert counts["orders"][1] == orders["distinct_events"]
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
    reloaded = _load_until_caught_up(own_stack, database, group)
    assert reloaded["rows_loaded"] == orders["produced"]  # new deliveries, new offsets: all written ...
    # ... and collapse onto the events already there: nothing new downstream.
    assert client.command(f"SELECT count() FROM {database}.raw_orders_events FINAL") == orders["distinct_events"]
