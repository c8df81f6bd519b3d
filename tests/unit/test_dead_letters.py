"""Dead letters: the DLQ copy of a huge message is cut with its size and hash; failed copies are retried."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from ingestion.dead_letters import DLQ_MAX_KEY_BYTES, DLQ_MAX_VALUE_BYTES, DeadLetter, DlqPublisher


def _letter(value: bytes, key: bytes | None = b"k", offset: int = 3) -> DeadLetter:
    return DeadLetter("clickstream", 1, offset, "tid", key, value, "invalid JSON: x", datetime(2026, 1, 1, tzinfo=UTC))


def test_the_table_row_keeps_the_bytes_as_received():
    value = b"\xff\xfe not utf-8 \x00"
    row = _letter(value, key=b"\x80key").row()
    assert row == ["clickstream", 1, 3, "tid", b"\x80key", value, "invalid JSON: x", datetime(2026, 1, 1, tzinfo=UTC)]


def test_a_small_message_is_copied_whole_with_the_reason():
    key, value, headers = _letter(b"{broken").dlq_copy()
    assert (key, value) == (b"k", b"{broken")
    assert dict(headers) == {"eventhouse.error": b"invalid JSON: x", "eventhouse.source": b"clickstream:1:3"}


def test_an_oversize_message_is_cut_to_the_limit_with_its_size_and_hash():
    value = bytes(range(256)) * 8192  # 2 MiB, over the producer's default 1 MiB request size
    key, copy, headers = _letter(value, key=b"x" * 5000).dlq_copy()
    named = dict(headers)
    assert copy == value[:DLQ_MAX_VALUE_BYTES] and len(copy) == 256 * 1024
    assert named["eventhouse.truncated"] == b"value"
    assert named["eventhouse.original_size"] == b"2097152"
    assert named["eventhouse.original_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert key == b"x" * DLQ_MAX_KEY_BYTES and named["eventhouse.original_key_size"] == b"5000"


class _Future:
    def __init__(self, error: Exception | None):
        self.error = error

    def add_callback(self, callback):
        if self.error is None:
            callback("metadata")
        return self

    def add_errback(self, errback):
        if self.error is not None:
            errback(self.error)
        return self


class _FlakyProducer:
    """Fails the first `failures` sends (raising or by errback, alternately), then succeeds."""

    def __init__(self, failures: int):
        self.failures = failures
        self.sent: list[tuple[str, bytes]] = []
        self.flushes = 0

    def send(self, topic, key, value, headers):
        if self.failures > 0:
            self.failures -= 1
            if self.failures % 2:
                raise TimeoutError("metadata not available")
            return _Future(RuntimeError("broker said no"))
        self.sent.append((topic, value))
        return _Future(None)

    def flush(self, timeout=None):
        self.flushes += 1
        raise TimeoutError("still sending")  # a slow broker must not raise out of the publisher either


def test_failed_copies_are_kept_and_retried_without_raising():
    producer = _FlakyProducer(failures=3)
    publisher = DlqPublisher(producer, lambda topic: topic + ".dlq")
    publisher.publish([_letter(b"a", offset=1), _letter(b"b", offset=2)])
    assert publisher.pending == 2 and publisher.failures == 2 and producer.sent == []
    publisher.flush(timeout=0.1)  # retries both: the first fails once more, the second goes out
    assert producer.sent == [("clickstream.dlq", b"b")] and publisher.pending == 1
    publisher.flush(timeout=0.1)
    assert producer.sent == [("clickstream.dlq", b"b"), ("clickstream.dlq", b"a")]
    assert publisher.pending == 0 and publisher.failures == 3 and publisher.published == 2
