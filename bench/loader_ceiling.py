"""The loader against the client's ceiling (issue 18): kafka-python's bare consume rate, one loader,
`--workers 2`, all on the same topics in one run, and a profile of the one-process loader.

One embedded stack; `--events` events of the four domains are produced once. Then, `--repeats`
times, alternating: a bare kafka-python consumer reads every message of the topics (no group, no
processing: the client's own decoding is all it does); the same consumer handing every record to
the loader's acceptance (`ACCEPT_ONLY`: validation and row encoding, no group, no ClickHouse: the
hot path's own cost against the client's); one `eventhouse load --until-caught-up` process loads
them into a raw database of its own; and `eventhouse load --workers 2` does the same into another.
Rates are events per second of wall time from start to exit (a loader's includes its group join,
as an hourly run pays it), and the loader's rate from its first message. Each phase also records
the CPU seconds spent by ClickHouse, the broker and the client processes (`CpuMeter`): on a small
machine that says what a loader, which also inserts, competes with. Last, one loader run under
cProfile: the functions that take its main thread's time.

    python -m bench.loader_ceiling [--events 300000] [--repeats 3] [--json FILE] [--baseline DIR]

`--baseline DIR` (another checkout, e.g. `mkdir DIR && git archive HEAD | tar -x -C DIR`) adds to
each round that checkout's acceptance and one loader run of it, on the same topics: a before and
after measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from kafka import KafkaConsumer

from bench.common import embedded_stack, sample_event
from ingestion.publisher import Publisher
from ingestion.topics import DOMAINS, topics_for_domains
from settings import REPO_ROOT, load_settings

BASE = datetime(2024, 4, 1, tzinfo=UTC)
BATCH_ROWS = "20000"


class CpuMeter:
    """CPU seconds (user + system) spent by the servers and by this process's clients during a phase.

    On a 2-core machine a phase is CPU-bound when the servers' and the client's CPU seconds come
    close to twice its wall time: that is what a loader that also inserts competes with."""

    def __init__(self, env: dict[str, str]):
        run = Path(env["EVENTHOUSE_HOME"]) / "run"
        pids = {name: int((run / f"{name}.pid").read_text()) for name in ("clickhouse", "kafka")}
        self.servers = {name: psutil.Process(pid) for name, pid in pids.items()}

    def _now(self) -> dict[str, float]:
        def seconds(times: Any) -> float:
            return times.user + times.system + times.children_user + times.children_system

        reading = {name: seconds(process.cpu_times()) for name, process in self.servers.items()}
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        reading["client"] = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
        return reading

    @contextmanager
    def phase(self, into: dict[str, dict[str, float]], name: str) -> Iterator[None]:
        before, started = self._now(), time.perf_counter()
        yield
        after = self._now()
        into[name] = {key: round(after[key] - before[key], 2) for key in after}
        into[name]["wall"] = round(time.perf_counter() - started, 2)


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


# A bare consumer that also hands every polled record to the loader's acceptance, as the loader's
# main thread does (PartitionState: the contract, the topic check, the row encoding), and drops the
# sealed ranges: no group, no ClickHouse, no writer thread. Run with cwd at a checkout, it measures
# that checkout's hot path (before accept_many existed, the loader accepted one message at a time).
ACCEPT_ONLY = r"""
import json, sys, time
from datetime import UTC, datetime
import psutil
from kafka import KafkaConsumer
from ingestion.loader_stats import LoaderStats
from ingestion.partition_ranges import PartitionState, clickhouse_time
from ingestion.topics import TOPICS_BY_NAME
from settings import ContractConfig

bootstrap, expected, topics = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
consumer = KafkaConsumer(
    bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
    fetch_max_bytes=16 << 20, max_partition_fetch_bytes=4 << 20,
)
contract, stats, states, rows = ContractConfig(), LoaderStats(), {}, 0
clock_at, now = 0.0, None
started = time.perf_counter()
consumer.subscribe(topics)
while stats.messages < expected:
    for tp, records in consumer.poll(timeout_ms=500, max_records=20_000).items():
        state = states.get(tp)
        if state is None:
            state = states[tp] = PartitionState(tp.topic, tp.partition, TOPICS_BY_NAME[tp.topic].domain, "t")
        if hasattr(state, "accept_many"):
            for start in range(0, len(records), 512):
                now = datetime.now(UTC)
                state.accept_many(records[start : start + 512], contract, now, clickhouse_time(now), stats)
        else:
            for record in records:
                if state.next_offset is not None and record.offset < state.next_offset:
                    continue
                ticks = time.monotonic()
                if ticks - clock_at > 0.01:
                    clock_at, now = ticks, datetime.now(UTC)
                    now_text = clickhouse_time(now)
                state.accept(record, contract, now, now_text, stats)
        if state.row_count >= 20_000:
            rows += state.seal().row_count
seconds = time.perf_counter() - started
rows += sum(state.row_count for state in states.values())
consumer.close()
print(json.dumps({"seconds": seconds, "rows": rows}))
"""


def accept_only(bootstrap: str, topics: list[str], expected: int, checkout: Path) -> float:
    """Seconds a bare consumer plus `checkout`'s acceptance of every record take (ACCEPT_ONLY)."""
    result = subprocess.run(
        [sys.executable, "-c", ACCEPT_ONLY, bootstrap, str(expected), ",".join(topics)],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["rows"] == expected, report
    return report["seconds"]


def load(env: dict[str, str], *extra: str, checkout: Path | None = None) -> tuple[float, dict]:
    """One `eventhouse load` run, from `checkout` when given (its modules first: it runs with cwd there)."""
    raw = f"raw_{uuid.uuid4().hex[:8]}"
    command = ["load", "--until-caught-up", "--batch-rows", BATCH_ROWS, "--batch-bytes", str(64 << 20)]
    command += ["--batch-seconds", "5", "--no-cdc", "--raw-database", raw, "--group-id", f"g-{raw}", *extra]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", *command],
        env=env if checkout is None else {**env, "PYTHONPATH": ""},
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    start = 0 if result.stdout.startswith("{") else result.stdout.rindex("\n{") + 1
    return seconds, json.loads(result.stdout[start:])


def profile_loader(env: dict[str, str], top: int = 15) -> tuple[list[dict], list[dict]]:
    """The top functions by own time, and the loader's own (ingestion/) and the client's poll by time with callees."""
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
    rows, ours = [], []
    for (path, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        row = {
            "function": f"{Path(path).name}:{line}({name})",
            "calls": calls,
            "tottime_s": round(tottime, 3),
            "cumtime_s": round(cumtime, 3),
        }
        rows.append(row)
        if "/ingestion/" in path or (path.endswith("kafka/consumer/group.py") and name == "poll"):
            ours.append(row)
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    ours.sort(key=lambda r: r["cumtime_s"], reverse=True)
    return rows[:top], ours[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout: one loader run of it per round")
    args = parser.parse_args()

    rounds = []
    with embedded_stack("eventhouse-loader-ceiling-") as env:
        settings = load_settings(env)
        publisher = Publisher(settings.kafka, client_id="bench-producer")
        for i in range(args.events):
            publisher.publish(sample_event(i, BASE + timedelta(milliseconds=97 * i)))
        publisher.close()
        topics = [spec.name for spec in topics_for_domains(list(DOMAINS))]
        meter = CpuMeter(env)
        bootstrap = settings.kafka.bootstrap
        for round_ in range(args.repeats):
            cpu: dict[str, dict[str, float]] = {}
            with meter.phase(cpu, "bare"):
                bare_s = bare_consume(bootstrap, topics, args.events)
            with meter.phase(cpu, "consume_and_accept"):
                accept_s = accept_only(bootstrap, topics, args.events, REPO_ROOT)
            if args.baseline is not None:
                with meter.phase(cpu, "baseline_consume_and_accept"):
                    base_accept_s = accept_only(bootstrap, topics, args.events, args.baseline.resolve())
            with meter.phase(cpu, "loader_1"):
                one_s, one = load(env)
            with meter.phase(cpu, "loader_2_workers"):
                two_s, two = load(env, "--workers", "2")
            assert one["rows_loaded"] == two["rows_loaded"] == args.events, (one, two)
            if args.baseline is not None:
                with meter.phase(cpu, "baseline_loader_1"):
                    base_s, base = load(env, checkout=args.baseline.resolve())
                assert base["rows_loaded"] == args.events, base
            measured = {
                "bare_consume_per_s": round(args.events / bare_s),
                "consume_and_accept_per_s": round(args.events / accept_s),
                "loader_1_per_s": round(args.events / one_s),
                "loader_1_per_s_from_first_message": one["rows_per_s_since_first_message"],
                "loader_2_workers_per_s": round(args.events / two_s),
                "loader_1_time_split_s": one["time_split_s"],
                "cpu_s": cpu,
            }
            if args.baseline is not None:
                measured["baseline_consume_and_accept_per_s"] = round(args.events / base_accept_s)
                measured["baseline_loader_1_per_s"] = round(args.events / base_s)
                measured["baseline_loader_1_per_s_from_first_message"] = base["rows_per_s_since_first_message"]
            print(f"round {round_ + 1}: {json.dumps(measured)}", flush=True)
            rounds.append(measured)
        profile, profile_ours = profile_loader(env)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    medians = ["bare_consume_per_s", "consume_and_accept_per_s", "loader_1_per_s", "loader_1_per_s_from_first_message"]
    medians.append("loader_2_workers_per_s")
    if args.baseline is not None:
        medians += [
            "baseline_consume_and_accept_per_s",
            "baseline_loader_1_per_s",
            "baseline_loader_1_per_s_from_first_message",
        ]

    def ratio(key: str, to: str = "bare_consume_per_s") -> float:
        return round(statistics.median(r[key] / r[to] for r in rounds), 3)

    report = {
        "events": args.events,
        "rounds": rounds,
        "median": {key: median(key) for key in medians},
        "ratio_consume_and_accept_to_bare": ratio("consume_and_accept_per_s"),
        "ratio_loader_1_to_bare": ratio("loader_1_per_s"),
        "ratio_loader_1_from_first_message_to_bare": ratio("loader_1_per_s_from_first_message"),
        "ratio_2_workers_to_1": ratio("loader_2_workers_per_s", "loader_1_per_s"),
        **(
            {
                "baseline": str(args.baseline),
                "ratio_baseline_consume_and_accept_to_bare": ratio("baseline_consume_and_accept_per_s"),
                "ratio_baseline_loader_1_to_bare": ratio("baseline_loader_1_per_s"),
                "ratio_baseline_loader_1_from_first_message_to_bare": ratio(
                    "baseline_loader_1_per_s_from_first_message"
                ),
            }
            if args.baseline is not None
            else {}
        ),
        "profile_top_tottime": profile,
        "profile_loader_cumtime": profile_ours,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
