"""The webhook's body (Slack-compatible), its headers on the wire, and the retry schedule."""

from __future__ import annotations

import http.server
import json
import threading
from datetime import UTC, datetime

import pytest

from alerting.anomaly import Anomaly
from alerting.state import retry_delay
from alerting.webhook import WebhookError, post_alert, webhook_body

CLEAR = Anomaly(
    anomaly_id="0f3c2a9d8e7b6a5f4e3d2c1b0a998877",
    anomaly_family="game",
    anomaly_type="IMPOSSIBLE_CLEAR",
    domain="game",
    entity_type="user",
    entity_id="u-42",
    event_id="e-1",
    window_start=datetime(2026, 11, 3, 10, 0, 5, 250000, tzinfo=UTC),
    window_end=datetime(2026, 11, 3, 10, 0, 5, 250000, tzinfo=UTC),
    observed_value=100.0,
    threshold_value=500.0,
    detected_at=datetime(2026, 11, 3, 10, 0, 6, tzinfo=UTC),
)


def test_body_is_what_slack_takes_text_and_blocks():
    body = webhook_body(CLEAR)
    assert set(body) == {"text", "blocks"}
    assert body["text"] == (
        ":rotating_light: IMPOSSIBLE_CLEAR (game, game): user u-42: observed 100, threshold 500, "
        "window 2026-11-03 10:00:05–10:00:05 UTC"
    )
    header, section = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "IMPOSSIBLE_CLEAR: u-42"}}
    assert section["type"] == "section"
    texts = [f["text"] for f in section["fields"]]
    assert texts == [
        "*Type*\nIMPOSSIBLE_CLEAR",
        "*Family*\ngame",
        "*User*\nu-42",
        "*Observed / threshold*\n100 / 500",
        "*Window (UTC)*\n2026-11-03 10:00:05 – 10:00:05",
        "*Anomaly id*\n0f3c2a9d8e7b6a5f4e3d2c1b0a998877",
    ]
    # Slack's limits: at most 10 fields per section, a header's text at most 150 characters
    assert len(section["fields"]) <= 10
    json.dumps(body)  # serialisable as it is


def test_fractional_values_keep_four_significant_digits():
    rate = Anomaly(
        **{**CLEAR.__dict__, "anomaly_family": "pipeline", "observed_value": 0.0123456, "threshold_value": 0.01}
    )
    assert webhook_body(rate)["text"].startswith(":warning: ")
    assert "observed 0.01235, threshold 0.01" in webhook_body(rate)["text"]


def _receiver(status: int):
    seen: list[tuple[dict[str, str], dict]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((dict(self.headers), json.loads(body)))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    return server, seen


def test_post_sends_the_idempotency_key_and_json():
    server, seen = _receiver(200)
    try:
        post_alert(f"http://127.0.0.1:{server.server_port}/hook", CLEAR, timeout=5)
    finally:
        server.shutdown()
    ((headers, body),) = seen
    assert headers["Idempotency-Key"] == "0f3c2a9d8e7b6a5f4e3d2c1b0a998877"
    assert headers["Content-Type"] == "application/json"
    assert body == webhook_body(CLEAR)


def test_post_names_the_status_of_a_refusal_and_a_dead_endpoint():
    server, _ = _receiver(503)
    try:
        with pytest.raises(WebhookError, match=r"^HTTP 503 Service Unavailable$"):
            post_alert(f"http://127.0.0.1:{server.server_port}/", CLEAR, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(WebhookError, match="^no answer: "):
        post_alert(f"http://127.0.0.1:{server.server_port}/", CLEAR, timeout=5)


def test_backoff_doubles_from_the_base_up_to_the_ceiling():
    # base 1 s, ceiling 300 s: 1, 2, 4, ..., 256, then 300 for every later attempt
    assert [retry_delay(n, 1.0, 300.0) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert retry_delay(0, 1.0, 300.0) == 0  # never failed: due now
    assert retry_delay(10_000, 0.5, 60.0) == 60  # no overflow however many attempts
