"""Where a newly assigned partition resumes, from its batch-log rows and its committed offset.

Every expected offset below is worked out by hand from the rows the test writes down: no
Kafka, no ClickHouse.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ingestion.batch_log import (
    BATCH_LOG_COLUMNS,
    NOTHING_LOGGED,
    LoggedRange,
    PartitionProgress,
    ResumePoint,
    batch_log_rows,
    ingest_batches_ddl,
    partition_progress,
    resume_point,
)
from ingestion.dead_letters import DeadLetter
from ingestion.partition_ranges import Batch, Chunk


def _resume(committed: int | None, started: list[tuple[str, int, int]], done: list[tuple[str, int, int]]):
    progress = partition_progress(
        [LoggedRange(*row) for row in started],
        [LoggedRange(*row) for row in done],
    )
    return progress, resume_point(committed, progress)


def test_a_partition_never_loaded_reads_from_the_start_or_the_committed_offset():
    assert resume_point(None, NOTHING_LOGGED) == ResumePoint(None, None)
    assert resume_point(40, NOTHING_LOGGED) == ResumePoint(40, None)


def test_done_ranges_resume_after_the_furthest_one_whatever_their_order():
    started = [("b2", 100, 199), ("b1", 0, 99), ("b3", 200, 249)]
    progress, point = _resume(None, started, started)
    assert progress == PartitionProgress(249, None)
    assert point == ResumePoint(250, None)


def test_a_commit_behind_the_done_rows_resumes_after_them():
    # The loader logged 0-99 and 100-199 done, then died before committing the second range.
    _, point = _resume(100, [("a", 0, 99), ("b", 100, 199)], [("a", 0, 99), ("b", 100, 199)])
    assert point == ResumePoint(200, None)


def test_a_commit_ahead_of_the_done_rows_is_kept():
    # Another raw database's batch log (or none) but this group's commit at 500: Kafka's offset wins.
    _, point = _resume(500, [("a", 0, 99)], [("a", 0, 99)])
    assert point == ResumePoint(500, None)


def test_a_range_started_and_never_done_is_redone_with_the_same_boundaries():
    progress, point = _resume(100, [("a", 0, 99), ("b", 100, 149)], [("a", 0, 99)])
    assert progress == PartitionProgress(99, (100, 149))
    assert point == ResumePoint(100, 149)


def test_an_unfinished_first_range_is_redone_even_with_nothing_committed():
    _, point = _resume(None, [("a", 0, 63)], [])
    assert point == ResumePoint(0, 63)


def test_of_several_unfinished_ranges_the_earliest_is_redone_first():
    # Two runs each died mid-batch after 0-9 was done: 30-39 and 10-19 were left started.
    started = [("a", 0, 9), ("c", 30, 39), ("b", 10, 19)]
    progress, point = _resume(10, started, [("a", 0, 9)])
    assert progress.unfinished == (10, 19)
    assert point == ResumePoint(10, 19)


def test_an_unfinished_range_redone_later_under_another_batch_id_is_not_redone_again():
    # Run 1 died in 100-149 (batch b); run 2 redid it as batch c and went on to 150-199 (batch d).
    started = [("a", 0, 99), ("b", 100, 149), ("c", 100, 149), ("d", 150, 199)]
    done = [("a", 0, 99), ("c", 100, 149), ("d", 150, 199)]
    progress, point = _resume(150, started, done)
    assert progress == PartitionProgress(199, None)
    assert point == ResumePoint(200, None)


def test_a_gap_below_the_furthest_done_range_is_not_reread():
    # 100-149 has no done row but 150-199 has: a redo of 100-149 under another batch id came
    # first (a run goes on only after its redo), so the log resumes at 200, not at 100.
    progress, point = _resume(None, [("a", 0, 99), ("b", 100, 149), ("d", 150, 199)], [("a", 0, 99), ("d", 150, 199)])
    assert progress == PartitionProgress(199, None)
    assert point == ResumePoint(200, None)


def test_an_unfinished_range_behind_the_committed_offset_is_left_alone():
    # The commit (from a loader that shared the group but wrote another batch log) is past it.
    _, point = _resume(300, [("a", 0, 99), ("b", 100, 149)], [("a", 0, 99)])
    assert point == ResumePoint(300, None)


def test_an_unfinished_range_starting_exactly_at_the_commit_is_redone():
    _, point = _resume(150, [("b", 150, 180)], [])
    assert point == ResumePoint(150, 180)


def test_the_log_rows_of_a_batch_name_each_range_in_column_order():
    letter = DeadLetter("orders", 2, 11, "tid-o", None, b"{", "invalid JSON", datetime(2026, 1, 1, tzinfo=UTC))
    started_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    chunks = [
        Chunk("clickstream", 0, "clickstream", "tid-c", 10, 14, bytearray(b"x"), 5, [], 500, 12.5, "tok", 5, 3.0),
        Chunk("orders", 2, "orders", "tid-o", 7, 11, bytearray(), 4, [letter], 310, 0.0, "tok2", 4, 1.5),
    ]
    rows = batch_log_rows(Batch("bid", chunks, started_at), "done", "me", "cluster-1", {"orders[2]": 42})
    assert rows == [
        ["bid", "done", "me", "cluster-1", "clickstream", "tid-c", 0, 10, 14, 5, 0, 500, 3.0, started_at, 12.5, 0],
        ["bid", "done", "me", "cluster-1", "orders", "tid-o", 2, 7, 11, 4, 1, 310, 1.5, started_at, 0.0, 42],
    ]
    assert len(rows[0]) == len(BATCH_LOG_COLUMNS)


def test_the_ddl_declares_every_logged_column():
    ddl = ingest_batches_ddl("raw")
    declared = [line.split()[0] for line in ddl.splitlines() if line.startswith("    ")]
    # recorded_at is filled in by ClickHouse (DEFAULT now64(3)); the loader writes the rest.
    assert [c for c in declared if c != "recorded_at"] == list(BATCH_LOG_COLUMNS)
