"""GET /health: ClickHouse answers, Kafka answers, and the raw tables hold recent data (503 if not)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from alerting.pipeline import measure_freshness

router = APIRouter(tags=["health"])
# a broker round trip per /health would make the endpoint as slow as Kafka's metadata request;
# one answer serves every request for this long
KAFKA_CHECK_SECONDS = 5.0


class KafkaProbe:
    """Asks the brokers for their topics through one long-lived client, at most every few seconds."""

    def __init__(self, kafka_config: Any):
        self._config = kafka_config
        self._consumer: Any = None
        self._lock = threading.Lock()
        self._checked = 0.0
        self._result: dict[str, Any] = {}

    def check(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._checked < KAFKA_CHECK_SECONDS:
                return self._result
            started = time.perf_counter()
            try:
                if self._consumer is None:
                    from kafka import KafkaConsumer

                    self._consumer = KafkaConsumer(**self._config.client_kwargs(), client_id="eventhouse-serve-health")
                topics = self._consumer.topics()
                ms = round((time.perf_counter() - started) * 1e3, 1)
                self._result = {"ok": True, "topics": len(topics), "ms": ms}
            except Exception as exc:  # any failure is the answer: Kafka is not usable
                self.close()
                self._result = {"ok": False, "error": f"Kafka at {self._config.bootstrap}: {exc}"}
            self._checked = time.monotonic()
            return self._result

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None


def _kafka_probe(request: Request) -> KafkaProbe:
    state = request.app.state
    with state.lock:
        if getattr(state, "kafka_probe", None) is None:
            state.kafka_probe = KafkaProbe(state.settings.kafka)
    return state.kafka_probe


def health_report(request: Request) -> JSONResponse:
    """ok when every check passes, else 503 with the failing checks' reasons."""
    db = request.app.state.warehouse
    hours = request.app.state.serve.freshness_hours
    checks: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    try:
        db.client.command("SELECT 1")
        checks["clickhouse"] = {"ok": True, "ms": round((time.perf_counter() - started) * 1e3, 1)}
    except Exception as exc:
        checks["clickhouse"] = {"ok": False, "error": f"ClickHouse at {db.config.host}:{db.config.port}: {exc}"}
    checks["kafka"] = _kafka_probe(request).check()
    if checks["clickhouse"]["ok"]:
        try:
            newest = measure_freshness(db.client, db.raw_database)
            latest = max((t for t in newest.values() if t is not None), default=None)
            age_h = (datetime.now(UTC) - latest).total_seconds() / 3600 if latest else None
            checks["freshness"] = {
                "ok": age_h is not None and age_h <= hours,
                "newest_loaded_at": latest.isoformat(timespec="seconds") if latest else None,
                "age_hours": round(age_h, 3) if age_h is not None else None,
                "threshold_hours": hours,
                "by_table": {t: v.isoformat(timespec="seconds") if v else None for t, v in newest.items()},
            }
            if age_h is None:
                checks["freshness"]["error"] = "no event has been loaded yet"
            elif age_h > hours:
                checks["freshness"]["error"] = f"the newest event was loaded {age_h:.1f} h ago (threshold {hours:g} h)"
        except Exception as exc:
            checks["freshness"] = {"ok": False, "error": f"raw tables in {db.raw_database}: {exc}"}
    else:
        checks["freshness"] = {"ok": False, "error": "ClickHouse is not reachable"}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"status": "ok" if ok else "failing", "checks": checks}, status_code=200 if ok else 503)


router.add_api_route(
    "/health",
    health_report,
    methods=["GET"],
    summary="ClickHouse, Kafka and data freshness (503 when one fails)",
    responses={503: {"description": "a check failed; its entry says why"}},
)
