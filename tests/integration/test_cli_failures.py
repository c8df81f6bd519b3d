"""Every way the `eventhouse` command is commonly misused or meets a server that is not there ends
in a non-zero exit and one line naming the problem: no traceback, no endless wait."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from stack.processes import free_port
from tests.conftest import RunningStack

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]
    code: int
    error: str  # the start of the one error line, after "error: " (or argparse's "eventhouse ...: error: ")
    env: dict[str, str] = field(default_factory=dict)
    within_s: float = 60.0  # a bound on the whole run (process start-up included), not a speed target


@dataclass(frozen=True)
class Outcome:
    code: int
    stderr: str
    elapsed_s: float


def _run(case: Case, base_env: dict[str, str]) -> Outcome:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", *case.argv],
        env={**base_env, **case.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Outcome(result.returncode, result.stderr, time.monotonic() - started)


def _check(case: Case, outcome: Outcome) -> None:
    assert "Traceback" not in outcome.stderr, (case.name, outcome.stderr[-3000:])
    assert outcome.code == case.code, (case.name, outcome.code, outcome.stderr[-2000:])
    last = outcome.stderr.strip().splitlines()[-1]
    assert case.error in last and "error: " in last, (case.name, last)
    assert outcome.elapsed_s < case.within_s, (case.name, outcome.elapsed_s)


def _closed_port() -> str:
    return str(free_port())  # nothing listens there


def test_bad_input_and_absent_servers_end_in_one_line(embedded_stack: RunningStack, tmp_path: Path):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    rejected = tmp_path / "rejected.dat"
    rejected.write_text("not,a,click\nbroken line\n")
    env = embedded_stack.env
    no_clickhouse = {"EVENTHOUSE_CLICKHOUSE_PORT": _closed_port()}
    no_kafka = {
        "EVENTHOUSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{_closed_port()}",
        "EVENTHOUSE_KAFKA_BOOTSTRAP_TIMEOUT_MS": "1500",
    }
    cases = [
        Case(
            "ClickHouse down, time limit",
            ["load", "--max-seconds", "3", "--raw-database", "raw_cli"],
            1,
            "could not connect to ClickHouse within the time limit of 3 s",
            no_clickhouse,
            within_s=30,
        ),
        Case(
            "Kafka down, time limit",
            ["load", "--max-seconds", "3", "--raw-database", "raw_cli"],
            1,
            "could not reach Kafka within the time limit of 3 s",
            no_kafka,
            within_s=30,
        ),
        Case("Kafka down, producer", ["produce", "orders", "--orders", "1"], 1, "Kafka at 127.0.0.1:", no_kafka),
        Case(
            "wrong ClickHouse password",
            ["load", "--create-tables-only", "--raw-database", "raw_cli"],
            1,
            "refused user 'default': wrong password or no such user",
            {"EVENTHOUSE_CLICKHOUSE_PASSWORD": "not-the-password"},
        ),
        Case(
            "wrong ClickHouse password, loader",
            ["load", "--max-seconds", "20", "--raw-database", "raw_cli"],
            1,
            "refused user 'default': wrong password or no such user",
            {"EVENTHOUSE_CLICKHOUSE_PASSWORD": "not-the-password"},
        ),
        Case("missing input file", ["produce", "yoochoose", "--clicks", str(tmp_path / "nope.dat")], 1, "no such file"),
        Case("directory as input", ["produce", "yoochoose", "--clicks", str(tmp_path)], 1, "not a file"),
        Case(
            "nothing produced",
            ["produce", "yoochoose", "--clicks", str(rejected), "--buys", str(rejected)],
            1,
            "produced nothing: all 4 lines were rejected",
        ),
        Case("port too high", ["stack", "status", "--clickhouse-port", "70000"], 2, "70000 is not a port number"),
        Case("port zero", ["stack", "status", "--kafka-port", "0"], 2, "0 is not a port number (1-65535)"),
        Case(
            "port in the environment",
            ["stack", "status"],
            2,
            "is not a port number",
            {"EVENTHOUSE_CLICKHOUSE_PORT": "99999"},
        ),
        Case("home is a file", ["stack", "status", "--home", str(a_file)], 2, "is a file, not a directory"),
        Case(
            "session timeout not a number",
            ["load", "--until-caught-up"],
            2,
            "EVENTHOUSE_KAFKA_SESSION_TIMEOUT_MS='soon' is not an integer",
            {"EVENTHOUSE_KAFKA_SESSION_TIMEOUT_MS": "soon"},
        ),
        Case(
            "negative order count",
            ["produce", "orders", "--orders", "-5"],
            2,
            "expected a number of at least 1, got -5",
        ),
        Case("fraction out of range", ["produce", "simulate", "--late-rate", "2"], 2, "between 0 and 1"),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda case: _run(case, env), cases))
    for case, outcome in zip(cases, outcomes, strict=True):
        _check(case, outcome)


def test_a_topic_with_other_partitions_is_named(own_stack: RunningStack):
    admin = KafkaAdminClient(bootstrap_servers=own_stack.kafka_bootstrap)
    admin.create_topics([NewTopic("orders", num_partitions=5, replication_factor=1)])
    admin.close()
    case = Case(
        "unexpected partitions",
        ["produce", "orders", "--orders", "1"],
        1,
        "Kafka topics do not match eventhouse's layout: orders has 5 partitions, expected 3",
    )
    _check(case, _run(case, own_stack.env))
    loader = Case(
        "unexpected partitions, loader",
        ["load", "--max-seconds", "20", "--domains", "orders"],
        1,
        "orders has 5 partitions, expected 3",
    )
    _check(loader, _run(loader, own_stack.env))
