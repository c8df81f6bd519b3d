"""Fixtures that start the real embedded servers on free ports with temporary homes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from settings import REPO_ROOT, stack_env
from stack.lifecycle import EmbeddedStack, clickhouse_ready
from stack.processes import free_port

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.05) -> T:
    """Poll `condition` until it returns something true (and return that), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(interval)


def last_json(output: str) -> dict:
    """The JSON summary an `eventhouse` command prints last (log lines may come before it)."""
    start = 0 if output.startswith("{") else output.rindex("\n{") + 1
    return json.loads(output[start:])


@dataclass
class RunningStack:
    stack: EmbeddedStack
    clickhouse_port: int
    kafka_port: int
    postgres_port: int

    @property
    def postgres_dsn(self) -> str:
        return self.env["EVENTHOUSE_POSTGRES_DSN"]

    @property
    def home(self) -> Path:
        return self.stack.layout.home

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(stack_env(self.clickhouse_port, self.kafka_port, self.home, self.postgres_port))
        env["DBT_PROFILES_DIR"] = str(REPO_ROOT)
        return env

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def client(self, **kwargs):
        import clickhouse_connect

        kwargs.setdefault("database", "default")
        return clickhouse_connect.get_client(host="127.0.0.1", port=self.clickhouse_port, **kwargs)


# `make test` runs pytest in two processes (pytest-xdist). Each module's tests run in one process, so
# its module fixtures are built once; modules that share a costly session fixture, or write the same
# files, form one group that runs in one process.
XDIST_GROUPS = {
    # the expected-output case's warehouse (`built_case`), built once and read by all three
    "test_warehouse_expected_output": "built_case",
    "test_serving": "built_case",
    "test_dashboards": "built_case",
    # Dagster's dbt parse writes the repository's target/ (orchestration/project.py)
    "test_orchestration": "dagster",
    "test_daily_partitions": "dagster",
    "test_dagster_webserver": "dagster",
    "test_dagster_production": "dagster",
    "test_orchestration_definitions": "dagster",
}


# The two groups that take longest start first, one in each process; the rest fill in around them.
XDIST_FIRST = ("built_case", "dagster")


def _xdist_group(item: pytest.Item) -> str:
    return XDIST_GROUPS.get(item.path.stem, item.nodeid.split("::", 1)[0])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller schedules in this order
        first = {group: rank for rank, group in enumerate(XDIST_FIRST)}
        items.sort(key=lambda item: first.get(_xdist_group(item), len(first)))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's per-module scheduling, with the groups above as one scope each. (Its own `loadgroup`
    marks do not group under pytest 9, whose node ids no longer take xdist's suffix.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return XDIST_GROUPS.get(Path(module).stem, module)

    return ModuleGroupScheduling(config, log)


@contextmanager
def running_stack(prefix: str = "eventhouse-test-") -> Iterator[RunningStack]:
    """A whole embedded stack on free ports in a temporary home, stopped and removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    stack = EmbeddedStack(home, free_port(), free_port(), postgres_port=free_port())
    state = stack.up()
    try:
        yield RunningStack(stack, state.clickhouse_port, state.kafka_port, state.postgres_port)
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_stack() -> Iterator[RunningStack]:
    with running_stack() as stack:
        yield stack


@pytest.fixture()
def own_stack() -> Iterator[RunningStack]:
    """A stack of the test's own, for tests that stop or restart its servers."""
    with running_stack("eventhouse-own-") as stack:
        yield stack


@pytest.fixture()
def database(embedded_stack: RunningStack) -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:10]}"
    admin = embedded_stack.client()
    admin.command(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture()
def client(embedded_stack: RunningStack, database: str):
    c = embedded_stack.client(database=database)
    try:
        yield c
    finally:
        c.close()


class ServerProcess:
    """A foreground `eventhouse stack clickhouse` process, for lifecycle tests."""

    def __init__(self, home: Path, port: int):
        self.home = home
        self.port = port
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "eventhouse.cli",
                "stack",
                "clickhouse",
                "--home",
                str(home),
                "--clickhouse-port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early: {self.process.stdout.read()}")
            return clickhouse_ready(self.port)

        wait_until(ready, "the server to become ready", timeout, interval=0.1)

    def output(self) -> str:
        return self.process.stdout.read() if self.process.stdout else ""
