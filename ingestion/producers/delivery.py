"""Delivery order for simulated events: what the servers received, when.

Simulators generate events in the order things happened. Real pipelines deliver them in the
order servers received them: clients buffer offline (late events), retry (duplicates) and
networks reorder. `DeliveryQueue` holds generated events keyed by their receive time and
releases them in that order once nothing earlier can still be generated, so memory stays
bounded by the lateness window rather than by the run.
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ingestion.contract import format_ts

log = logging.getLogger(__name__)


@dataclass
class ProduceSummary:
    """What a producer run published; printed as JSON at the end of `eventhouse produce ...`."""

    produced: int = 0
    by_event_type: Counter[str] = field(default_factory=Counter)
    duplicates_injected: int = 0
    late_events: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "distinct_events": self.produced - self.duplicates_injected,
            "duplicates_injected": self.duplicates_injected,
            "late_events": self.late_events,
            "by_event_type": dict(sorted(self.by_event_type.items())),
            **self.extra,
        }


class DeliveryQueue:
    """A min-heap of (receive time, generation order, event)."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, dict[str, Any]]] = []
        self._counter = 0

    def push(self, received_at: datetime, event: dict[str, Any]) -> None:
        # The server's receive time is the pipeline's ingest time for simulated data, so
        # replayed history gets realistic latencies instead of "now minus two years".
        event["ingested_at"] = format_ts(received_at)
        heapq.heappush(self._heap, (received_at, self._counter, event))
        self._counter += 1

    def release(self, before: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Events received before `before` (all of them when None), in receive order."""
        heap = self._heap
        while heap and (before is None or heap[0][0] < before):
            yield heapq.heappop(heap)[2]

    def __len__(self) -> int:
        return len(self._heap)


class ProgressLog:
    """Logs `what` every few seconds on long runs."""

    def __init__(self, what: str, every_seconds: float = 5.0):
        self.what = what
        self.every = every_seconds
        self.started = self._last = time.monotonic()

    def tick(self, count: int, detail: Callable[[], str] | None = None) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            rate = count / max(now - self.started, 1e-9)
            log.info("%s: %d events (%.0f/s)%s", self.what, count, rate, f", {detail()}" if detail else "")


def publish_all(
    events: Iterator[dict[str, Any]], sink: Callable[[dict[str, Any]], None], summary: ProduceSummary, what: str
) -> ProduceSummary:
    """Send generated events to `sink` (a Publisher's publish, or a file writer), counting."""
    progress = ProgressLog(what)
    for event in events:
        sink(event)
        summary.produced += 1
        summary.by_event_type[event["event_type"]] += 1
        progress.tick(summary.produced)
    return summary


# Simulator event ids are derived from what the event is, not drawn from the random stream: the
# same seed and configuration give the same ids (re-running a producer re-delivers, it does not
# duplicate), and two different events never share an id, even across simulator versions or
# configurations (an id drawn from the stream would be handed to whatever event came next).
_EVENT_ID_NAMESPACE = uuid.UUID("6b9d3c1e-7f4a-4e51-9a86-2f1c0e5d7a42")


def derived_event_id(seed: int, *identity: Any) -> str:
    """A UUID (v5) from the simulator's seed and the parts that make an event itself."""
    key = orjson.dumps([seed, *identity], option=orjson.OPT_SORT_KEYS, default=str)
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, key.decode()))
