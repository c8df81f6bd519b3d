"""The loader against the client's ceiling (issue 18): kafka-python's bare consume rate, one loader,
`--workers 2`, all on the same topics in one run, and a profile of the one-process loader.

One embedded stack; `--events` events of the four domains are produced once. Then, `--repeats`
times, alternating: a bare kafka-python consumer reads every message of the topics (no group, no
processing: the client's own decoding is all it does), one `eventhouse load --until-caught-up`
process loads them into a raw database of its own, and `eventhouse load --workers 2` does the same
into another. Rates are events per second of wall time from start to exit (a loader's includes its
group join, as an hourly run pays it), and the loader's rate from its first message. Last, one
loader run under cProfile: the functions that take its main thread's time.

    python -m bench.loader_ceiling [--events 300000] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer

from bench.common import embedded_stack, sample_event
from ingestion.publisher import Publisher
from ingestion.topics import DOMAINS, topics_for_domains
from settings import load_settings

BASE = datetime(2024, 4, 1, tzinfo=UTC)
BATCH_ROWS = "20000"


def bare_consume(bootstrap: str, topics: list[str], expected: int) -> float:
    """Seconds kafka-python takes to hand over `expected` messages (records decoded, nothing else)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=16 << 20,
        max_partition_fetch_bytes=4 << 20,
    )
    started = time.perf_counter()
    consumer.subscribe(topics)
    seen = 0
    while seen < expected:
        for records in consumer.poll(timeout_ms=500, max_records=20_000).values():
            seen += len(records)
    seconds = time.perf_counter() - started
    consumer.close()
    return seconds


def load(env: dict[str, str], *extra: str) -> tuple[float, dict]:
    raw = f"raw_{uuid.uuid4().hex[:8]}"
    command = ["load", "--until-caught-up", "--batch-rows", BATCH_ROWS, "--batch-bytes", str(64 << 20)]
    command += ["--batch-seconds", "5", "--no-cdc", "--raw-database", raw, "--group-id", f"g-{raw}", *extra]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", *command], env=env, capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - started
    start = 0 if result.stdout.startswith("{") else result.stdout.rindex("\n{") + 1
    return seconds, json.loads(result.stdout[start:])


def profile_loader(env: dict[str, str], top: int = 15) -> list[dict]:
    raw = f"raw_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "loader.prof"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(out),
                "-m",
                "eventhouse.cli",
                "load",
                "--until-caught-up",
                "--batch-rows",
                BATCH_ROWS,
                "--no-cdc",
                "--raw-database",
                raw,
                "--group-id",
                f"g-{raw}",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        stats = pstats.Stats(str(out), stream=io.StringIO())
    rows = []
    for (path, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(path).name}:{line}({name})",
                "calls": calls,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
            }
        )
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    rounds = []
    with embedded_stack("eventhouse-loader-ceiling-") as env:
        settings = load_settings(env)
        publisher = Publisher(settings.kafka, client_id="bench-producer")
        for i in range(args.events):
            publisher.publish(sample_event(i, BASE + timedelta(milliseconds=97 * i)))
        publisher.close()
        topics = [spec.name for spec in topics_for_domains(list(DOMAINS))]
        for round_ in range(args.repeats):
            bare_s = bare_consume(settings.kafka.bootstrap, topics, args.events)
            one_s, one = load(env)
            two_s, two = load(env, "--workers", "2")
            assert one["rows_loaded"] == two["rows_loaded"] == args.events, (one, two)
            measured = {
                "bare_consume_per_s": round(args.events / bare_s),
                "loader_1_per_s": round(args.events / one_s),
                "loader_1_per_s_from_first_message": one["rows_per_s_since_first_message"],
                "loader_2_workers_per_s": round(args.events / two_s),
                "loader_1_time_split_s": one["time_split_s"],
            }
            print(f"round {round_ + 1}: {json.dumps(measured)}", flush=True)
            rounds.append(measured)
        profile = profile_loader(env)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    report = {
        "events": args.events,
        "rounds": rounds,
        "median": {
            key: median(key)
            for key in (
                "bare_consume_per_s",
                "loader_1_per_s",
                "loader_1_per_s_from_first_message",
                "loader_2_workers_per_s",
            )
        },
        "ratio_loader_1_to_bare": round(
            statistics.median(r["loader_1_per_s"] / r["bare_consume_per_s"] for r in rounds), 3
        ),
        "ratio_loader_1_from_first_message_to_bare": round(
            statistics.median(r["loader_1_per_s_from_first_message"] / r["bare_consume_per_s"] for r in rounds), 3
        ),
        "ratio_2_workers_to_1": round(
            statistics.median(r["loader_2_workers_per_s"] / r["loader_1_per_s"] for r in rounds), 3
        ),
        "profile_top_tottime": profile,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
