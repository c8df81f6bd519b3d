"""Replay of the RecSys Challenge 2015 (YOOCHOOSE) files into the clickstream topic.

Clicks: `session_id,timestamp,item_id,category`; buys: `session_id,timestamp,item_id,price,quantity`;
comma-separated, no header, timestamps like `2014-04-07T10:51:09.277Z`.

The two files are merged in timestamp order. The originals are ordered by session, not by
time, so a first pass indexes every line (timestamp, file, line number, byte offset) into
numpy arrays (17 bytes a line: ~600 MB for the full 34M lines) and sorts that; a second
pass reads the lines back in order through mmap. `event_id` is derived from (file name,
line number): replaying a file twice produces the same ids, so nothing changes downstream,
while two identical lines stay two events.
"""

from __future__ import annotations

import logging
import mmap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from ingestion.contract import make_event

log = logging.getLogger(__name__)

EVENT_NAMESPACE = uuid.UUID("6f1d3c52-52a5-4c0e-9a55-2b0f0c8e2a11")
CLICK_FIELDS = 4
BUY_FIELDS = 5


class MalformedLine(ValueError):
    def __init__(self, path: Path, line_no: int, reason: str, text: str):
        super().__init__(f"{path.name}:{line_no}: {reason}: {text[:120]!r}")
        self.path, self.line_no, self.reason = path, line_no, reason


@dataclass
class ReplaySummary:
    lines_read: int = 0
    produced: int = 0
    rejected: int = 0
    anomalies_injected: int = 0
    rejections: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "lines_read": self.lines_read,
            "produced": self.produced,
            "rejected": self.rejected,
            "anomalies_injected": self.anomalies_injected,
            "first_rejections": self.rejections[:20],
        }


def event_id_for(file_name: str, line_no: int) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{file_name}:{line_no}"))


def _parse_ts(text: str) -> datetime:
    if not text.endswith("Z"):
        raise ValueError("timestamp must end in Z (UTC)")
    return datetime.fromisoformat(text[:-1] + "+00:00")


def parse_line(path: Path, line_no: int, raw: bytes, is_buy: bool) -> dict:
    """One file line as an envelope; MalformedLine names the file, the line and the problem."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise MalformedLine(path, line_no, "not UTF-8", repr(raw)) from None
    fields = text.split(",")
    expected = BUY_FIELDS if is_buy else CLICK_FIELDS
    if len(fields) != expected:
        raise MalformedLine(path, line_no, f"expected {expected} comma-separated fields, found {len(fields)}", text)
    try:
        session_id = str(int(fields[0]))
        ts = _parse_ts(fields[1])
        item_id = int(fields[2])
        if is_buy:
            price, quantity = int(fields[3]), int(fields[4])
            if price < 0 or quantity < 0:
                raise ValueError("negative price or quantity")
            payload: dict = {"item_id": item_id, "price": price, "quantity": quantity}
        else:
            payload = {"item_id": item_id, "category": fields[3]}
    except ValueError as exc:
        raise MalformedLine(path, line_no, str(exc), text) from None
    return make_event(
        "clickstream.purchase" if is_buy else "clickstream.click",
        event_id_for(path.name, line_no),
        ts,
        payload,
        session_id=session_id,
        service="yoochoose-replay",
        host=path.name,
        sequence=line_no,
    )


def _index(path: Path, file_index: int, is_buy: bool, summary: ReplaySummary, strict: bool):
    """Pass 1: (timestamp ms, file, line number, byte offset) of every well-formed line."""
    stamps, lines, offsets = [], [], []
    offset = 0
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            summary.lines_read += 1
            if raw.strip():
                try:
                    event = parse_line(path, line_no, raw, is_buy)
                except MalformedLine as error:
                    if strict:
                        raise
                    summary.rejected += 1
                    summary.rejections.append(str(error))
                    log.warning("skipping %s", error)
                else:
                    stamps.append(int(_parse_ts(event["ts"]).timestamp() * 1000))
                    lines.append(line_no)
                    offsets.append(offset)
            offset += len(raw)
    count = len(stamps)
    return (
        np.array(stamps, dtype=np.int64),
        np.full(count, file_index, dtype=np.int8),
        np.array(lines, dtype=np.int64),
        np.array(offsets, dtype=np.int64),
    )


def merged_events(
    clicks: Path, buys: Path | None, summary: ReplaySummary, strict: bool = False, max_events: int | None = None
) -> Iterator[dict]:
    """Both files' events in timestamp order (clicks before buys at the same instant)."""
    files = [(clicks, False)] + ([(buys, True)] if buys else [])
    parts = [_index(path, i, is_buy, summary, strict) for i, (path, is_buy) in enumerate(files)]
    stamps = np.concatenate([p[0] for p in parts])
    which = np.concatenate([p[1] for p in parts])
    line_nos = np.concatenate([p[2] for p in parts])
    offsets = np.concatenate([p[3] for p in parts])
    order = np.lexsort((line_nos, which, stamps))
    if max_events is not None:
        order = order[:max_events]
    maps = []
    handles = []
    try:
        for path, _ in files:
            handle = open(path, "rb")  # noqa: SIM115 - closed in finally
            handles.append(handle)
            maps.append(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else None)
        for position in order:
            file_index = int(which[position])
            path, is_buy = files[file_index]
            data = maps[file_index]
            start = int(offsets[position])
            end = data.find(b"\n", start)
            raw = data[start : end if end >= 0 else len(data)]
            yield parse_line(path, int(line_nos[position]), raw, is_buy)
    finally:
        for data in maps:
            if data is not None:
                data.close()
        for handle in handles:
            handle.close()


def anomaly_burst(anchor: dict, burst_no: int) -> list[dict]:
    """A bot-like session: 120 clicks on 3 items within 6 seconds (HIGH_FREQUENCY and BOT_LIKE)."""
    start = datetime.fromisoformat(anchor["ts"].replace("Z", "+00:00"))
    session_id = str(900_000_000 + burst_no)
    events = []
    for k in range(120):
        ts = start + timedelta(milliseconds=50 * k)
        event_id = str(uuid.uuid5(EVENT_NAMESPACE, f"anomaly:{anchor['event_id']}:{k}"))
        payload = {"item_id": 214_000_000 + k % 3, "category": "0"}
        events.append(
            make_event("clickstream.click", event_id, ts, payload, session_id=session_id, service="yoochoose-anomaly")
        )
    return events


def replay(
    publisher,
    clicks: Path,
    buys: Path | None,
    *,
    max_events: int | None = None,
    speed: float = 0.0,
    anomaly_interval: float | None = None,
    strict: bool = False,
    progress_every: float = 5.0,
) -> ReplaySummary:
    """Publish the merged files; `speed` X plays X seconds of event time per second (0: no waiting)."""
    summary = ReplaySummary()
    wall_start = time.monotonic()
    first_ts: datetime | None = None
    last_anomaly = wall_start
    last_progress = wall_start
    for event in merged_events(clicks, buys, summary, strict, max_events):
        ts = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
        if speed > 0:
            first_ts = first_ts or ts
            due = wall_start + (ts - first_ts).total_seconds() / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 5.0))
        publisher.publish(event)
        summary.produced += 1
        now = time.monotonic()
        if anomaly_interval and now - last_anomaly >= anomaly_interval:
            for injected in anomaly_burst(event, summary.anomalies_injected):
                publisher.publish(injected)
                summary.produced += 1
            summary.anomalies_injected += 1
            last_anomaly = now
        if now - last_progress >= progress_every:
            last_progress = now
            log.info(
                "replayed %d events (%.0f/s), %d lines rejected", summary.produced, publisher.rate(), summary.rejected
            )
    return summary


def write_sample(directory: Path, sessions: int = 400, seed: int = 2015) -> tuple[Path, Path]:
    """Generate small files in the YOOCHOOSE layout (our own synthetic data)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    clicks_path, buys_path = directory / "yoochoose-clicks.dat", directory / "yoochoose-buys.dat"
    start = datetime(2014, 4, 1, tzinfo=UTC)
    categories = ["0", "S", "1", "2", "3", "5", "8", "2053427889"]
    with open(clicks_path, "w") as clicks, open(buys_path, "w") as buys:
        for session in range(1, sessions + 1):
            session_id = 10_000 + session
            t = start + timedelta(days=int(rng.integers(0, 10)), seconds=int(rng.integers(0, 86_000)))
            items = [int(214_500_000 + rng.integers(0, 300)) for _ in range(int(rng.integers(1, 6)))]
            clicked = []
            for _ in range(int(rng.integers(1, 12))):
                item = items[int(rng.integers(0, len(items)))]
                clicked.append(item)
                stamp = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
                clicks.write(f"{session_id},{stamp},{item},{categories[item % len(categories)]}\n")
                t += timedelta(seconds=float(rng.exponential(90)))
            if rng.random() < 0.2:
                for item in set(clicked[: int(rng.integers(1, 3))]):
                    stamp = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
                    price = 0 if rng.random() < 0.1 else int(rng.integers(300, 20_000))
                    buys.write(f"{session_id},{stamp},{item},{price},{int(rng.integers(1, 4))}\n")
                    t += timedelta(seconds=5)
    return clicks_path, buys_path
