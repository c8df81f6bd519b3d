"""The loader's bounded retries: which errors are waited out, which end the run at once, and the bounds.

The failing "servers" are plain functions raising the exceptions the client libraries raise.
"""

from __future__ import annotations

import threading
import time

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from kafka.errors import KafkaTimeoutError

from ingestion.loader_stats import LoaderStats
from ingestion.retries import LoaderError, Retrier, short_reason
from settings import load_settings

SETTINGS = load_settings({"EVENTHOUSE_CLICKHOUSE_PORT": "18999", "EVENTHOUSE_KAFKA_BOOTSTRAP": "127.0.0.1:19999"})


def _retrier(*, max_seconds: float | None = None, stop: threading.Event | None = None) -> tuple[Retrier, LoaderStats]:
    stats = LoaderStats()
    deadline = time.monotonic() + max_seconds if max_seconds else None
    retrier = Retrier(
        SETTINGS, stats, stop or threading.Event(), max_sleep=0.01, max_seconds=max_seconds, deadline=deadline
    )
    return retrier, stats


def _failing(times: int, error: Exception):
    calls = []

    def action() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "inserted"

    return action, calls


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("connection refused"),
        DatabaseError("Code: 202. DB::Exception: Too many simultaneous queries", code=202),
        DatabaseError("no code in the response"),
        KafkaTimeoutError("Unable to bootstrap from [('127.0.0.1', 19999)]"),
    ],
    ids=["unreachable", "overloaded", "no code", "no broker yet"],
)
def test_a_passing_failure_is_retried_until_the_action_succeeds(error):
    retrier, stats = _retrier()
    action, calls = _failing(3, error)
    assert retrier(action, "insert into raw_game_events") == "inserted"
    assert (len(calls), stats.retries) == (4, 3)


def test_wrong_credentials_end_the_run_at_once_with_one_line():
    retrier, stats = _retrier()
    action, calls = _failing(1, DatabaseError("Code: 516. Authentication failed", code=516))
    with pytest.raises(LoaderError) as raised:
        retrier(action, "connect to ClickHouse")
    assert str(raised.value) == (
        "ClickHouse at 127.0.0.1:18999 refused user 'default': wrong password or no such user "
        "(EVENTHOUSE_CLICKHOUSE_USER / EVENTHOUSE_CLICKHOUSE_PASSWORD)"
    )
    assert (len(calls), stats.retries) == (1, 0)


def test_a_bad_statement_is_raised_as_it_is_not_waited_out():
    retrier, stats = _retrier()
    error = DatabaseError("Code: 60. DB::Exception: Unknown table", code=60)
    action, calls = _failing(1, error)
    with pytest.raises(DatabaseError) as raised:
        retrier(action, "insert into raw_game_events")
    assert raised.value is error and (len(calls), stats.retries) == (1, 0)


def test_the_time_limit_ends_the_wait_naming_the_server():
    retrier, _ = _retrier(max_seconds=0.3)
    action, _ = _failing(10**6, OperationalError("Connection refused"))
    with pytest.raises(LoaderError) as raised:
        retrier(action, "insert into raw_game_events")
    assert str(raised.value) == (
        "could not insert into raw_game_events within the time limit of 0.3 s: 127.0.0.1:18999: connection refused"
    )


def test_a_stop_request_ends_the_wait():
    stop = threading.Event()
    stop.set()
    retrier, _ = _retrier(stop=stop)
    action, calls = _failing(10**6, KafkaTimeoutError("Unable to bootstrap from [('127.0.0.1', 19999)]"))
    with pytest.raises(LoaderError) as raised:
        retrier(action, "reach Kafka")
    assert str(raised.value) == "stopped while waiting to reach Kafka: 127.0.0.1:19999: no broker answered"
    assert len(calls) == 1


def test_short_reason_names_the_root_cause_a_library_wrapped():
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as cause:
            raise OperationalError("HTTPConnectionPool(host='127.0.0.1', port=18999): Max retries exceeded") from cause
    except OperationalError as wrapped:
        assert short_reason(wrapped) == "connection refused"
    assert short_reason(DatabaseError("Code: 60. Unknown table\nstack trace ...")) == "Code: 60. Unknown table"
    assert short_reason(RuntimeError()) == "RuntimeError"
