"""The alert publisher's loop: poll the live anomalies (and now and then the pipeline), publish what is
new, deliver what is owed. The protocol that makes each alert land once is in alerting/state.py.

Polling is cheap on purpose: `live_anomaly_entities` has a row per insert into the live tables, so
the poll asks only for the anomalies of entities touched since the previous poll (less an overlap,
5 s: an insert's rows become visible when it ends, so a newer row may show before an older
insert's). Every `sweep_minutes` (10) a poll reads instead every entity touched since the previous
sweep (less the overlap), which finds what an insert slower than the overlap made visible late. The
first poll of a process has no mark and reads every live anomaly; those already in `alerts` are
dropped. An anomaly is published as first seen: a window that keeps growing afterwards (more clicks)
keeps its id and is not published again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from alerting.anomaly import ANOMALY_COLUMNS, Anomaly
from alerting.kafka_channel import KafkaChannel, kafka_read_back, read_from_bounds
from alerting.metrics import AlertMetrics
from alerting.pipeline import check_pipeline
from alerting.state import (
    CLICKHOUSE,
    DELIVERED,
    FAILED,
    KAFKA,
    SENDING,
    WEBHOOK,
    DeliveryState,
    StateStore,
    ensure_state_tables,
    retry_delay,
    utc_now,
)
from alerting.webhook import WebhookError, post_alert
from settings import AlertSettings, Settings

log = logging.getLogger(__name__)


class PublisherError(RuntimeError):
    """The publisher cannot run (the live models are missing, a server refuses)."""


@dataclass
class PassSummary:
    """What one pass (or a whole run) did; `--once` prints it as JSON."""

    candidates: int = 0
    new_alerts: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    delivered: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    read_back: int = 0
    resent: int = 0
    open_deliveries: Counter[str] = field(default_factory=Counter)

    def add(self, other: PassSummary) -> None:
        self.candidates += other.candidates
        self.new_alerts += other.new_alerts
        self.by_type.update(other.by_type)
        self.delivered.update(other.delivered)
        self.failed.update(other.failed)
        self.read_back += other.read_back
        self.resent += other.resent
        self.open_deliveries = other.open_deliveries

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "new_alerts": self.new_alerts,
            "new_alerts_by_type": dict(sorted(self.by_type.items())),
            "delivered": dict(sorted(self.delivered.items())),
            "delivery_failures": dict(sorted(self.failed.items())),
            "kafka_read_back": self.read_back,
            "kafka_resent": self.resent,
            "open_deliveries": dict(sorted(self.open_deliveries.items())),
        }


class AlertPublisher:
    def __init__(
        self,
        settings: Settings,
        config: AlertSettings,
        *,
        webhook_url: str | None = None,
        metrics: AlertMetrics | None = None,
        client: Any = None,
        pipeline_checks: bool = True,
    ):
        import clickhouse_connect

        self.settings = settings
        self.config = config
        self.webhook_url = webhook_url
        self.metrics = metrics or AlertMetrics()
        self.pipeline_checks = pipeline_checks
        self.database = settings.clickhouse.database
        self.raw_database = settings.clickhouse.raw_database
        self._owns_client = client is None  # a client passed in stays open for its owner
        self.client = client or clickhouse_connect.get_client(
            **{**settings.clickhouse.client_kwargs(), "database": "default"}
        )
        self._check_live_models()
        ensure_state_tables(self.client, self.raw_database)
        self.store = StateStore(self.client, self.raw_database)
        self.kafka = KafkaChannel(settings.kafka)
        self.channels = (CLICKHOUSE, KAFKA, WEBHOOK) if webhook_url else (CLICKHOUSE, KAFKA)
        self._since: datetime | None = None  # the live poll's mark; None: read every live anomaly
        # the periodic sweep's mark and when it is due (the first poll reads everything, a sweep too)
        self._sweep_since: datetime | None = None
        self._next_sweep = 0.0
        self._kafka_acked: dict[int, int] | None = None  # partition -> next offset, from the log at start
        self._next_pipeline_check = 0.0
        self._check_missing = True  # at start: a previous process may have stopped between two writes
        self._stop = threading.Event()

    def _check_live_models(self) -> None:
        found = {
            r[0]
            for r in self.client.query(
                "SELECT name FROM system.tables WHERE database = {db:String} AND name IN "
                "('live_anomalies', 'live_anomaly_entities')",
                parameters={"db": self.database},
            ).result_rows
        }
        missing = sorted({"live_anomalies", "live_anomaly_entities"} - found)
        if missing:
            raise PublisherError(
                f"{', '.join(f'{self.database}.{m}' for m in missing)} not found: build the live models first "
                "(dbt run --select +live_anomalies +live_anomaly_entities)"
            )

    # ---- the loop ------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, once: bool = False) -> PassSummary:
        total = PassSummary()
        while True:
            started = time.monotonic()
            try:
                total.add(self.run_pass())
            except Exception as exc:
                self._check_missing = True  # the pass may have stopped between two writes
                if once:
                    raise
                # a server down or refusing: state is consistent after any failed write, so the
                # next pass simply starts again
                log.warning("alert pass failed, retrying in %.1f s: %s", self.config.poll_seconds, exc)
            if once or self._stop.wait(max(self.config.poll_seconds - (time.monotonic() - started), 0)):
                return total

    def run_pass(self) -> PassSummary:
        summary = PassSummary()
        with self.metrics.poll_seconds.time():
            now = utc_now()
            candidates = self._poll_live()
            if self.pipeline_checks and time.monotonic() >= self._next_pipeline_check:
                self._next_pipeline_check = time.monotonic() + self.config.pipeline_check_seconds
                candidates += check_pipeline(
                    self.client, self.settings.kafka, self.raw_database, self.config, self.store.open_deliveries(), now
                )
            summary.candidates = len(candidates)
            self._publish_new(candidates, summary)
            if self._check_missing:
                # only a stop (or a failed pass) between writing alerts and their pending rows leaves a gap
                missing = self.store.deliveries_missing()
                if missing:
                    log.warning(
                        "%d deliveries had no pending row (a stop between two writes): adding them", len(missing)
                    )
                    self.store.write_pending(missing)
                self._check_missing = False
            open_deliveries = self.store.open_deliveries()
            # the channels fail independently: Kafka down does not hold back the webhook, nor the reverse
            errors: list[Exception] = []
            for channel, deliver in ((KAFKA, self._deliver_kafka), (WEBHOOK, self._deliver_webhook)):
                try:
                    deliver([d for d in open_deliveries if d.channel == channel], summary)
                except Exception as exc:
                    log.warning("%s deliveries failed this pass: %s", channel, exc)
                    errors.append(exc)
            summary.open_deliveries = Counter(d.channel for d in self.store.open_deliveries())
            for channel in (KAFKA, WEBHOOK):
                self.metrics.open_deliveries.labels(channel).set(summary.open_deliveries.get(channel, 0))
            if errors:
                raise errors[0]  # after both channels had their turn: `--once` exits 1, the loop retries
        return summary

    # ---- step 1: what is new -------------------------------------------------------------------

    def _poll_live(self) -> list[Anomaly]:
        db = self.database
        columns = ", ".join(ANOMALY_COLUMNS)
        # every sweep_minutes the poll reads from the previous sweep's mark instead of the last poll's
        sweeping = time.monotonic() >= self._next_sweep
        mark = self._sweep_since if sweeping else self._since
        since = "toDateTime64({since:String}, 3, 'UTC')"
        params = {"since": _ch_time(mark)} if mark else {}
        recent = f"WHERE inserted_at >= {since}" if mark else ""
        # the mark is taken before the read, so an insert landing during the read is read again next time
        newest, count = self.client.query(
            f"SELECT max(inserted_at), count() FROM `{db}`.live_anomaly_entities {recent}", parameters=params
        ).result_rows[0]
        if mark is None:
            rows = self.client.query(f"SELECT {columns} FROM `{db}`.live_anomalies").result_rows
        else:
            rows = self.client.query(
                f"SELECT {columns} FROM `{db}`.live_anomalies "
                f"WHERE entity_id IN (SELECT entity_id FROM `{db}`.live_anomaly_entities {recent})",
                parameters=params,
            ).result_rows
        if count:
            self._since = _as_utc(newest) - timedelta(seconds=self.config.poll_overlap_seconds)
        if sweeping:
            self._sweep_since = self._since
            self._next_sweep = time.monotonic() + self.config.sweep_minutes * 60
        return [Anomaly.from_row(r) for r in rows]

    def _publish_new(self, candidates: list[Anomaly], summary: PassSummary) -> None:
        unique = {a.anomaly_id: a for a in candidates}
        published = self.store.published(list(unique))
        new = [a for anomaly_id, a in sorted(unique.items()) if anomaly_id not in published]
        if not new:
            return
        now = utc_now()
        self.store.write_alerts(new, self.channels, now)
        summary.new_alerts = len(new)
        summary.by_type.update(a.anomaly_type for a in new)
        summary.delivered[CLICKHOUSE] += len(new)
        for a in new:
            self.metrics.published.labels(CLICKHOUSE, a.anomaly_type).inc()
        self.metrics.last_alert.set(now.timestamp())
        log.info("%d new alerts: %s", len(new), ", ".join(f"{t} {n}" for t, n in sorted(summary.by_type.items())))

    # ---- step 2: Kafka -------------------------------------------------------------------------

    def _deliver_kafka(self, deliveries: list[DeliveryState], summary: PassSummary) -> None:
        if not deliveries:
            return
        maybe_sent = [d for d in deliveries if d.state == SENDING]
        to_send = [d.anomaly_id for d in deliveries if d.state != SENDING]
        anomalies = self.store.alerts([d.anomaly_id for d in deliveries])
        if maybe_sent:
            starts = read_from_bounds((d.read_from for d in maybe_sent), self.kafka.partitions())
            decision = kafka_read_back((d.anomaly_id for d in maybe_sent), self.kafka.find(starts))
            if decision.delivered:
                self.store.record([(i, KAFKA, DELIVERED) for i in decision.delivered], offsets=decision.delivered)
                self._count_delivered(KAFKA, [anomalies[i] for i in decision.delivered if i in anomalies], summary)
            log.info(
                "Kafka read-back of %d maybe-sent alerts: %d on the topic, %d to send again",
                len(maybe_sent),
                len(decision.delivered),
                len(decision.resend),
            )
            summary.read_back += len(decision.delivered)
            summary.resent += len(decision.resend)
            self.metrics.retries.labels(KAFKA).inc(len(decision.resend))
            to_send += decision.resend
        batch = [anomalies[i] for i in sorted(set(to_send)) if i in anomalies]
        if not batch:
            return
        if self._kafka_acked is None:
            self._kafka_acked = self.store.kafka_acked()
        read_from = {p: self._kafka_acked.get(p, 0) for p in self.kafka.partitions()}
        self.store.record([(a.anomaly_id, KAFKA, SENDING) for a in batch], read_from=read_from)
        try:
            acked = self.kafka.send(batch)
        except Exception as exc:
            # left `sending`: the next pass reads the topic back before sending again
            summary.failed[KAFKA] += len(batch)
            self.metrics.delivery_failures.labels(KAFKA).inc(len(batch))
            log.warning("sending %d alerts to Kafka failed (read back next pass): %s", len(batch), exc)
            return
        self.store.record([(i, KAFKA, DELIVERED) for i in acked], offsets=acked)
        for partition, offset in acked.values():
            self._kafka_acked[partition] = max(self._kafka_acked.get(partition, 0), offset + 1)
        self._count_delivered(KAFKA, batch, summary)

    def _count_delivered(self, channel: str, anomalies: list[Anomaly], summary: PassSummary) -> None:
        summary.delivered[channel] += len(anomalies)
        for a in anomalies:
            self.metrics.published.labels(channel, a.anomaly_type).inc()

    # ---- step 3: the webhook -------------------------------------------------------------------

    def _deliver_webhook(self, deliveries: list[DeliveryState], summary: PassSummary) -> None:
        if not deliveries:
            return
        if not self.webhook_url:
            log.debug("%d webhook deliveries wait for a run with --webhook", len(deliveries))
            return
        now = utc_now()
        due = [d for d in deliveries if d.due(now)]
        anomalies = self.store.alerts([d.anomaly_id for d in due])
        for d in due:
            if self._stop.is_set():
                return
            anomaly = anomalies.get(d.anomaly_id)
            if anomaly is None:
                continue
            if d.attempts:
                self.metrics.retries.labels(WEBHOOK).inc()
            try:
                post_alert(self.webhook_url, anomaly, self.config.webhook_timeout_seconds)
            except WebhookError as exc:
                attempts = d.attempts + 1
                delay = retry_delay(attempts, self.config.retry_base_seconds, self.config.retry_max_seconds)
                self.store.record(
                    [(d.anomaly_id, WEBHOOK, FAILED)],
                    attempts={d.anomaly_id: attempts},
                    error=str(exc),
                    next_attempt_at=utc_now() + timedelta(seconds=delay),
                )
                summary.failed[WEBHOOK] += 1
                self.metrics.delivery_failures.labels(WEBHOOK).inc()
                log.warning(
                    "webhook delivery of %s failed (attempt %d, next in %.0f s): %s", d.anomaly_id, attempts, delay, exc
                )
                # the endpoint is down or refusing: the others wait for the next pass, uncounted
                return
            self.store.record([(d.anomaly_id, WEBHOOK, DELIVERED)], attempts={d.anomaly_id: d.attempts + 1})
            self._count_delivered(WEBHOOK, [anomaly], summary)

    def close(self) -> None:
        self.kafka.close()
        if self._owns_client:
            self.client.close()


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ch_time(value: datetime) -> str:
    """A UTC instant as ClickHouse's DateTime64(3) text, milliseconds kept."""
    return _as_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
