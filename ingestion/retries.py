"""The loader's bounded retries: a server being down is a wait, not a failure, within limits.

Which errors are worth waiting out (ClickHouse unreachable or overloaded, no Kafka broker yet)
and which are raised at once (wrong credentials, a bad statement) is decided here, as is how
long the wait may last: until the run's time limit or a stop request, backing off exponentially
up to `max_sleep` between attempts.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ingestion.loader_stats import LoaderStats
from settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_RETRY_SLEEP = 0.2

# ClickHouse server-side failures that can pass (overload, timeouts, shutting down); any other
# DatabaseError is a bug to surface at once.
RETRIABLE_CLICKHOUSE_CODES = frozenset({None, 159, 202, 209, 210, 241, 1000, 1001})
AUTHENTICATION_FAILED = 516


class LoaderError(RuntimeError):
    """The loader cannot go on (a server unreachable within the time limit, credentials refused, ...).

    Its message is one line naming the problem; nothing unfinished was committed, so the next
    run redoes it.
    """


def short_reason(error: BaseException) -> str:
    """What went wrong, in a few words: the root cause a client library wrapped (connection refused, ...)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "host not found"
        if isinstance(seen, TimeoutError):
            return "timed out"
        seen = seen.__cause__ or seen.__context__
    text = str(error).strip()
    if "Connection refused" in text:
        return "connection refused"
    if "Unable to bootstrap" in text:  # kafka-python: no broker answered within bootstrap_timeout_ms
        return "no broker answered"
    return text.splitlines()[0][:200] if text else type(error).__name__


class Retrier:
    """Runs an action until it succeeds, the time limit passes or a stop is requested."""

    def __init__(
        self,
        settings: Settings,
        stats: LoaderStats,
        stop: threading.Event,
        *,
        max_sleep: float,
        max_seconds: float | None,
        deadline: float | None,
    ):
        self.settings = settings
        self.stats = stats
        self.stop = stop
        self.max_sleep = max_sleep
        self.max_seconds = max_seconds
        self.deadline = deadline  # time.monotonic() at which waiting stops; None: no time limit

    def __call__(self, action: Callable[[], T], what: str) -> T:
        """Run `action` until it succeeds: a server being down is a wait, not a failure.

        The wait ends at the run's time limit or a stop request (LoaderError); errors that
        waiting cannot mend (wrong credentials, a bad statement) are raised at once.
        """
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
        from kafka.errors import RetriableError

        delay = FIRST_RETRY_SLEEP
        while True:
            try:
                return action()
            except OperationalError as exc:  # connection refused, reset, timeout
                error: Exception = exc
            except DatabaseError as exc:
                code = getattr(exc, "code", None)
                if code == AUTHENTICATION_FAILED:
                    ch = self.settings.clickhouse
                    raise LoaderError(
                        f"ClickHouse at {ch.host}:{ch.port} refused user {ch.user!r}: wrong password or no such user "
                        "(EVENTHOUSE_CLICKHOUSE_USER / EVENTHOUSE_CLICKHOUSE_PASSWORD)"
                    ) from None
                if code not in RETRIABLE_CLICKHOUSE_CODES:
                    raise
                error = exc
            except RetriableError as exc:  # no broker answered yet (KafkaTimeoutError "Unable to bootstrap", ...)
                error = exc
            reason = short_reason(error)
            if self.stop.is_set():
                raise LoaderError(f"stopped while waiting to {what}: {self._where(what)}: {reason}")
            if self.deadline is not None and time.monotonic() + delay >= self.deadline:
                raise LoaderError(
                    f"could not {what} within the time limit of {self.max_seconds:g} s: {self._where(what)}: {reason}"
                )
            self.stats.retries += 1
            log.warning("could not %s (%s); retrying in %.1f s", what, reason, delay)
            self.stop.wait(delay)
            delay = min(delay * 2, self.max_sleep)

    def _where(self, what: str) -> str:
        if "Kafka" in what:
            return self.settings.kafka.bootstrap
        ch = self.settings.clickhouse
        return f"{ch.host}:{ch.port}"
