"""The publisher's metrics: on a registry of their own, served by the same endpoint class as the loader's."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from alerting.metrics import AlertMetrics
from ingestion.loader_metrics import LoaderMetrics, MetricsServer


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_alert_metrics_served_on_a_free_port_apart_from_a_loaders():
    metrics, loader = AlertMetrics(), LoaderMetrics()
    metrics.published.labels("kafka", "HIGH_FREQUENCY").inc(3)
    metrics.published.labels("webhook", "IMPOSSIBLE_CLEAR").inc()
    metrics.delivery_failures.labels("webhook").inc(2)
    metrics.retries.labels("webhook").inc()
    metrics.last_alert.set(1_764_460_800.5)
    metrics.poll_seconds.observe(0.03)
    metrics.open_deliveries.labels("webhook").set(1)
    server = MetricsServer(metrics, 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.close()
    samples = _samples(text)
    assert samples[("eventhouse_alerts_published_total", (("channel", "kafka"), ("type", "HIGH_FREQUENCY")))] == 3
    assert samples[("eventhouse_alerts_published_total", (("channel", "webhook"), ("type", "IMPOSSIBLE_CLEAR")))] == 1
    assert samples[("eventhouse_alerts_delivery_failures_total", (("channel", "webhook"),))] == 2
    assert samples[("eventhouse_alerts_retries_total", (("channel", "webhook"),))] == 1
    assert samples[("eventhouse_alerts_last_alert_timestamp_seconds", ())] == 1_764_460_800.5
    assert samples[("eventhouse_alerts_open_deliveries", (("channel", "webhook"),))] == 1
    # 0.03 s falls in the 0.05 bucket and above, not in 0.025
    assert samples[("eventhouse_alerts_poll_seconds_bucket", (("le", "0.025"),))] == 0
    assert samples[("eventhouse_alerts_poll_seconds_bucket", (("le", "0.05"),))] == 1
    assert not any(name.startswith("eventhouse_loader") for name, _ in samples)
    assert not any(name.startswith("eventhouse_alerts") for name, _ in _samples_of(loader))


def _samples_of(loader: LoaderMetrics) -> dict[tuple[str, tuple], float]:
    from prometheus_client import generate_latest

    return _samples(generate_latest(loader.registry).decode())
