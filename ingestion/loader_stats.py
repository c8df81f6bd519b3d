"""The loader's counters and timings, and the summary it prints at the end of a run."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoaderStats:
    rows_loaded: int = 0
    dead_letters: int = 0
    duplicates_collapsed: int = 0
    batches: int = 0
    messages: int = 0
    bytes_consumed: int = 0
    consume_s: float = 0.0
    parse_s: float = 0.0
    encode_s: float = 0.0
    insert_s: float = 0.0
    insert_latencies_ms: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    first_message_at: float | None = None  # rates from here exclude start-up and the group join
    retries: int = 0
    rows_rejected: int = 0  # valid events ClickHouse refused (dead-lettered; counted in dead_letters too)
    dlq_copy_failures: int = 0
    dlq_copies_pending: int = 0

    def summary(self) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-9)
        latencies = sorted(self.insert_latencies_ms)

        def pct(p: float) -> float | None:
            return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else None

        return {
            "rows_loaded": self.rows_loaded,
            "dead_letters": self.dead_letters,
            "duplicates_collapsed": self.duplicates_collapsed,
            "messages": self.messages,
            "batches": self.batches,
            "rows_per_s": round(self.messages / elapsed, 1),
            "rows_per_s_since_first_message": round(self.messages / max(now - self.first_message_at, 1e-9), 1)
            if self.first_message_at is not None
            else None,
            "elapsed_s": round(elapsed, 2),
            "median_batch_size": statistics.median(self.batch_sizes) if self.batch_sizes else 0,
            "insert_ms_p50": pct(0.50),
            "insert_ms_p95": pct(0.95),
            "time_split_s": {
                "consume": round(self.consume_s, 3),
                "parse_validate": round(self.parse_s - self.encode_s, 3),
                "encode": round(self.encode_s, 3),
                "insert": round(self.insert_s, 3),
            },
            "lag": dict(self.lag),
            "clickhouse_retries": self.retries,
            "rows_rejected_by_clickhouse": self.rows_rejected,
            "dlq_copy_failures": self.dlq_copy_failures,
            "dlq_copies_pending": self.dlq_copies_pending,
        }
