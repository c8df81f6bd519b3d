"""YOOCHOOSE parsing and merge order, on small files written by the test."""

from __future__ import annotations

import pytest

from ingestion.contract import validate
from ingestion.producers.yoochoose import (
    MalformedLine,
    ReplaySummary,
    event_id_for,
    merged_events,
    parse_line,
    write_sample,
)


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_merge_is_in_timestamp_order_across_unsorted_files(tmp_path):
    clicks = _write(
        tmp_path,
        "clicks.dat",
        [
            "2,2014-04-02T10:00:00.000Z,11,S",
            "1,2014-04-01T10:00:00.000Z,10,0",
            "1,2014-04-01T10:00:00.000Z,10,0",  # an identical line is a second event
            "3,2014-04-03T10:00:00.000Z,12,5",
        ],
    )
    buys = _write(tmp_path, "buys.dat", ["1,2014-04-01T10:05:00.000Z,10,1500,2", "2,2014-04-02T09:00:00.000Z,11,0,1"])
    summary = ReplaySummary()
    events = list(merged_events(clicks, buys, summary))
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert [e["event_type"] for e in events] == [
        "clickstream.click",
        "clickstream.click",
        "clickstream.purchase",
        "clickstream.purchase",
        "clickstream.click",
        "clickstream.click",
    ]
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == 6
    assert ids[0] == event_id_for("clicks.dat", 2) and ids[1] == event_id_for("clicks.dat", 3)
    assert summary.lines_read == 6 and summary.rejected == 0
    for event in events:
        validate(__import__("orjson").dumps(event))  # every replayed event passes the contract
    assert events[2]["payload"] == {"item_id": 10, "price": 1500, "quantity": 2}
    assert list(merged_events(clicks, buys, ReplaySummary(), max_events=2)) == events[:2]


def test_malformed_lines_are_reported_with_file_and_line(tmp_path):
    clicks = _write(
        tmp_path,
        "clicks.dat",
        ["1,2014-04-01T10:00:00.000Z,10,0", "1,not-a-time,10,0", "1,2014-04-01T10:00:01.000Z,ten,0", "1,2,3"],
    )
    summary = ReplaySummary()
    events = list(merged_events(clicks, None, summary))
    assert len(events) == 1
    assert summary.rejected == 3
    assert summary.rejections[0].startswith("clicks.dat:2: ")
    assert summary.rejections[1].startswith("clicks.dat:3: ")
    assert "expected 4 comma-separated fields, found 3" in summary.rejections[2]
    with pytest.raises(MalformedLine) as error:
        list(merged_events(clicks, None, ReplaySummary(), strict=True))
    assert (error.value.line_no, error.value.path.name) == (2, "clicks.dat")


def test_parse_line_rejects_negative_prices(tmp_path):
    with pytest.raises(MalformedLine, match="negative price"):
        parse_line(tmp_path / "b.dat", 7, b"1,2014-04-01T10:00:00.000Z,10,-5,1", is_buy=True)


def test_sample_writer_is_deterministic(tmp_path):
    a = write_sample(tmp_path / "a", sessions=50, seed=1)
    b = write_sample(tmp_path / "b", sessions=50, seed=1)
    assert a[0].read_text() == b[0].read_text() and a[1].read_text() == b[1].read_text()
    assert len(list(merged_events(a[0], a[1], ReplaySummary()))) == len(a[0].read_text().splitlines()) + len(
        a[1].read_text().splitlines()
    )
