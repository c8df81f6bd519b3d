"""An anomaly as the publisher handles it: the columns of `live_anomalies` (and of the batch mart
`fct_anomalies`), the Kafka envelope it is published in, and the stable ids of pipeline anomalies."""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from ingestion.contract import format_ts, make_event

# The columns of live_anomalies / fct_anomalies, in their order.
ANOMALY_COLUMNS = (
    "anomaly_id",
    "anomaly_family",
    "anomaly_type",
    "domain",
    "entity_type",
    "entity_id",
    "event_id",
    "window_start",
    "window_end",
    "observed_value",
    "threshold_value",
    "detected_at",
)

ALERT_EVENT_TYPE = "anomaly.detected"
PIPELINE_FAMILY = "pipeline"


@dataclass(frozen=True)
class Anomaly:
    anomaly_id: str
    anomaly_family: str
    anomaly_type: str
    domain: str
    entity_type: str
    entity_id: str
    event_id: str | None
    window_start: datetime
    window_end: datetime
    observed_value: float
    threshold_value: float
    detected_at: datetime

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Anomaly:
        """A row selected as ANOMALY_COLUMNS (clickhouse-connect returns naive UTC or aware datetimes)."""
        values = dict(zip(ANOMALY_COLUMNS, row, strict=True))
        for name in ("window_start", "window_end", "detected_at"):
            values[name] = _utc(values[name])
        values["observed_value"] = float(values["observed_value"])
        values["threshold_value"] = float(values["threshold_value"])
        return cls(**values)

    def row(self) -> list[Any]:
        return list(astuple(self))

    def payload(self) -> dict[str, Any]:
        """The anomaly's columns as JSON values (timestamps in ISO 8601 UTC, milliseconds)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = _iso(value) if isinstance(value, datetime) else value
        return out

    def event(self) -> dict[str, Any]:
        """The `anomaly.detected` envelope: event_id = anomaly_id, so a consumer (and the publisher's
        own read-back) recognises an anomaly it has seen; the entity rides as user or session."""
        return make_event(
            ALERT_EVENT_TYPE,
            self.anomaly_id,
            self.detected_at,
            self.payload(),
            user_id=self.entity_id if self.entity_type == "user" else None,
            session_id=self.entity_id if self.entity_type == "session" else None,
            service="eventhouse-alerts",
        )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return format_ts(_utc(value))


def pipeline_anomaly_id(anomaly_type: str, entity_type: str, entity_id: str, window_start: datetime) -> str:
    """The stable id of a pipeline anomaly: one per type, entity and bucket, so a breach seen at
    every check of a bucket is one alert (md5 hex, like the live anomalies' ids)."""
    key = f"{PIPELINE_FAMILY}|{anomaly_type}|{entity_type}|{entity_id}|{_iso(window_start)}"
    return hashlib.md5(key.encode()).hexdigest()
