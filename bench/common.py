"""What the loader benchmarks share: a throwaway embedded stack and a four-domain event mix."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from ingestion.contract import make_event
from settings import stack_env
from stack.lifecycle import EmbeddedStack
from stack.processes import free_port


@contextmanager
def embedded_stack(prefix: str) -> Iterator[dict[str, str]]:
    """Start a fresh embedded ClickHouse + Kafka; yield the environment that points at it."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    stack = EmbeddedStack(work, free_port(), free_port(), postgres_port=free_port())
    state = stack.up()
    env = dict(os.environ)
    env.update(stack_env(state.clickhouse_port, state.kafka_port, work, state.postgres_port))
    try:
        yield env
    finally:
        stack.down()
        shutil.rmtree(work, ignore_errors=True)


def sample_event(i: int, ts: datetime, prefix: str = "") -> dict:
    """Event i of a round-robin mix of the four domains (~330 bytes each on the wire)."""
    kind = i % 4
    if kind == 0:
        payload = {"item_id": i % 5000, "category": "S"}
        return make_event("clickstream.click", f"{prefix}c{i}", ts, payload, session_id=f"s{i % 9000}")
    if kind == 1:
        payload = {"chapter": 1 + i % 5, "stage": 1 + i % 10, "mode": "story", "clear_time_ms": 4000 + i % 9000}
        payload["score"] = 900
        return make_event(
            "game.stage_clear", f"{prefix}g{i}", ts, payload, user_id=f"u{i % 3000}", session_id=f"gs{i % 7000}"
        )
    if kind == 2:
        payload = {"delta_gold": 10, "balance": i}
        return make_event("reward.granted", f"{prefix}r{i}", ts, payload, user_id=f"u{i % 3000}")
    payload = {"order_id": f"{prefix}o{i}", "status": "PENDING", "version": 1, "amount_cents": 1999}
    return make_event("order.created", f"{prefix}o{i}", ts, payload, user_id=f"u{i % 3000}")
