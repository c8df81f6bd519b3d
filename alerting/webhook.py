"""The webhook channel: a Slack-compatible JSON body, POSTed with `Idempotency-Key: <anomaly_id>`.

Slack's incoming webhooks take `text` (the notification and fallback) and `blocks` (what is shown);
other receivers can key on the header, which is the anomaly's stable id. Delivery is at-least-once
(alerting/state.py, step 3). Plain urllib: one POST needs no new dependency.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from alerting.anomaly import PIPELINE_FAMILY, Anomaly


class WebhookError(RuntimeError):
    """The webhook did not accept an alert (an HTTP status other than 2xx, or no answer)."""


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.4g}"


def alert_text(a: Anomaly) -> str:
    """One line: what, who, how far over the threshold, when."""
    what = f"{a.anomaly_type} ({a.anomaly_family}{', ' + a.domain if a.domain else ''})"
    window = f"{a.window_start:%Y-%m-%d %H:%M:%S}–{a.window_end:%H:%M:%S} UTC"
    return (
        f"{what}: {a.entity_type} {a.entity_id}: observed {_number(a.observed_value)}, "
        f"threshold {_number(a.threshold_value)}, window {window}"
    )


def webhook_body(a: Anomaly) -> dict[str, Any]:
    """The JSON body: `text` for notifications and receivers that read only it, `blocks` for Slack."""
    icon = ":rotating_light:" if a.anomaly_family != PIPELINE_FAMILY else ":warning:"
    fields = [
        ("Type", a.anomaly_type),
        ("Family", a.anomaly_family),
        (a.entity_type.capitalize() or "Entity", a.entity_id),
        ("Observed / threshold", f"{_number(a.observed_value)} / {_number(a.threshold_value)}"),
        ("Window (UTC)", f"{a.window_start:%Y-%m-%d %H:%M:%S} – {a.window_end:%H:%M:%S}"),
        ("Anomaly id", a.anomaly_id),
    ]
    return {
        "text": f"{icon} {alert_text(a)}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": f"{a.anomaly_type}: {a.entity_id}"[:150]}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields]},
        ],
    }


def post_alert(url: str, a: Anomaly, timeout: float) -> None:
    """POST one alert; raises WebhookError naming the status or the failure."""
    request = urllib.request.Request(
        url,
        data=json.dumps(webhook_body(a)).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": a.anomaly_id,
            "User-Agent": "eventhouse-alerts",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebhookError(f"no answer: {reason}") from None
