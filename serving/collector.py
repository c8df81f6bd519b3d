"""POST /api/v1/events: the event collector.

Clients (game servers, a web page's `navigator.sendBeacon`) post one event (a JSON object) or a
batch (a JSON array) of the project's envelope (ingestion/contract.py), as application/json or
as text/plain with the same JSON inside (what sendBeacon sends with a string). Each event is
checked against the contract by the loader's own `validate`; the valid ones are published to
their topics with their keys, exactly as the client sent them, and the answer waits for the
broker to acknowledge every one of them (acks=all): a 202 or 207 means they are in Kafka.

Retries are safe, and the way to handle any failure: the event_id is the event's identity. The
collector never makes one up (an event without event_id breaks the contract and is refused) nor
any other field (the loader sets ingested_at when it is absent), and the warehouse collapses
re-deliveries by event_id (the raw tables are ReplacingMergeTree keyed by it). So a client that
got no answer, a 503 or a 429 sends the same batch again, and events the first attempt did get
into Kafka are not counted twice.

Answers (JSON; `detail` says what happened):
- 202 {"accepted": n, "event_ids": [...]}: every event valid and acknowledged.
- 207 and 400 add "rejected" and "errors": [{"index", "event_id", "reason"}] when some or all
  events break the contract; refused events are never published. 400 also for a body that is
  not JSON, not an object or array, or an empty array.
- 413 over collector_max_bytes of body or collector_max_events events; 415 another content type;
  429 over the client's rate (Retry-After says when to retry); 503 Kafka unreachable or a send
  not acknowledged (nothing is accepted then: retry the whole batch).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from kafka.errors import KafkaError
from pydantic import BaseModel, Field

from serving.collector_batch import check_events
from serving.collector_kafka import KafkaUnavailable, publish_and_wait, publisher_for
from serving.rate_limit import RateLimiter
from settings import ServeSettings

log = logging.getLogger(__name__)

router = APIRouter(tags=["collector"])

PATH = "/api/v1/events"
ACCEPTED_TYPES = ("application/json", "text/plain")
_UTF8 = {"utf-8", "utf8"}


class Accepted(BaseModel):
    accepted: int = Field(description="events published and acknowledged by Kafka")
    event_ids: list[str] = Field(description="their event_ids, in batch order")


class EventError(BaseModel):
    index: int = Field(description="the event's place in the batch (0 for a single event)")
    event_id: str | None = Field(description="its event_id, when it has one")
    reason: str = Field(description="the first contract rule it breaks")


class Rejected(BaseModel):
    detail: str
    accepted: int
    rejected: int
    event_ids: list[str] = Field(description="the accepted events' ids")
    errors: list[EventError]


class Problem(BaseModel):
    detail: str = Field(description="what is wrong with the request, and what to do")


_EXAMPLE_EVENT = {
    "schema_version": 1,
    "event_type": "clickstream.click",
    "event_id": "2b7e1f0c-click-1",
    "session_id": "s-42",
    "source": {"service": "web", "host": "browser"},
    "ts": "2024-04-01T12:00:00.123Z",
    "payload": {"item_id": 214536502, "category": "S"},
}

RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": Accepted, "description": "every event valid, published and acknowledged by Kafka"},
    207: {"model": Rejected, "description": "some events break the contract (not published); the others accepted"},
    400: {
        "model": Rejected | Problem,
        "description": "every event breaks the contract, or the body is not JSON, not an object or array, or empty",
    },
    413: {
        "model": Problem,
        "description": "over collector_max_bytes of body, or more events than collector_max_events or the burst",
    },
    415: {"model": Problem, "description": "a content type other than application/json or text/plain"},
    429: {
        "model": Problem,
        "description": "the client is over its rate limit (events per second)",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    },
    503: {"model": Problem, "description": "Kafka unreachable or a send not acknowledged: nothing accepted, retry"},
}

_REQUEST_BODY = {
    "required": True,
    "description": "One event (an envelope, ingestion/contract.py) or a batch (an array) of them",
    "content": {
        "application/json": {
            "schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}, "minItems": 1}]},
            "example": [_EXAMPLE_EVENT],
        },
        "text/plain": {"schema": {"type": "string"}, "example": orjson.dumps([_EXAMPLE_EVENT]).decode()},
    },
}


class Refused(Exception):
    """A request the collector answers without publishing anything."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers

    def response(self) -> Response:
        return _json(self.status, {"detail": self.detail}, self.headers)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _check_content_type(header: str | None) -> None:
    what = "send the JSON as application/json, or as text/plain (navigator.sendBeacon with a string)"
    if not header:
        raise Refused(415, f"the request has no Content-Type: {what}")
    media, _, parameters = header.partition(";")
    media = media.strip().lower()
    if media not in ACCEPTED_TYPES:
        raise Refused(415, f"Content-Type {media!r} is not accepted: {what}")
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8:
            raise Refused(415, f"charset {value.strip()!r} is not accepted: JSON must be UTF-8")


async def _read_body(request: Request, limit: int) -> bytearray:
    """The body, refused (413) as soon as it is known to be over `limit` bytes: by Content-Length
    before reading anything, else while reading, so that an oversized body is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the body is {int(declared)} bytes, over the limit of {limit}: send smaller batches")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, f"the body is over the limit of {limit} bytes: send smaller batches")
    return body


_JSON_KINDS = {str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}


def _parse(body: bytearray, max_events: int) -> list[Any]:
    """The posted events: one object, or a non-empty array of at most `max_events`."""
    if not body.strip():
        raise Refused(400, "the body is empty: send one event (a JSON object) or a batch (a JSON array)")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"the body is not JSON: {exc}") from None
    if isinstance(document, dict):
        return [document]
    if not isinstance(document, list):
        kind = _JSON_KINDS.get(type(document), type(document).__name__)
        raise Refused(400, f"the body is {kind}, not an event (a JSON object) or a batch (a JSON array)")
    if not document:
        raise Refused(400, "the batch is empty: send at least one event")
    if len(document) > max_events:
        raise Refused(
            413, f"the batch has {len(document)} events, over the limit of {max_events}: split it into smaller batches"
        )
    return document


def _limiter(app: Any, serve: ServeSettings) -> RateLimiter:
    # made on first use on the event loop's thread (the only caller), so no two are made
    limiter = getattr(app.state, "collector_limiter", None)
    if limiter is None:
        limiter = app.state.collector_limiter = RateLimiter(serve.collector_rate_per_second, serve.collector_burst)
    return limiter


def _check_rate(request: Request, serve: ServeSettings, events: int) -> None:
    """Charge the client's bucket one token per event (valid or not: all of them cost the server)."""
    if events > serve.collector_burst:
        raise Refused(
            413,
            f"the batch has {events} events, more than this server's rate-limit burst of {serve.collector_burst}: "
            "split it into smaller batches",
        )
    client = request.client.host if request.client else "unknown"
    wait = _limiter(request.app, serve).take(client, events)
    if wait > 0:
        seconds = math.ceil(wait)
        raise Refused(
            429,
            f"{client} is over the collector's rate limit of {serve.collector_rate_per_second:g} events/s "
            f"(burst {serve.collector_burst}): retry these {events} events in {seconds} s",
            {"Retry-After": str(seconds)},
        )


@router.post(
    PATH,
    status_code=202,
    summary="Collect events",
    response_model=Accepted,
    responses=RESPONSES,
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def collect_events(request: Request) -> Response:
    """Publish one event or a batch to Kafka; answers once the broker has acknowledged every valid event.

    Retrying a batch is safe: event_id is each event's identity (it is required; the collector
    never generates one) and the warehouse collapses re-deliveries by it."""
    serve: ServeSettings = request.app.state.serve
    try:
        _check_content_type(request.headers.get("content-type"))
        body = await _read_body(request, serve.collector_max_bytes)
        events = _parse(body, serve.collector_max_events)
        _check_rate(request, serve, len(events))
    except Refused as refused:
        return refused.response()
    # validating is CPU work and waiting for acks blocks: both in the threadpool, off the event loop
    return await run_in_threadpool(_ingest, request.app, events)


def _ingest(app: Any, events: list[Any]) -> Response:
    checked = check_events(events, app.state.settings.contract)
    if checked.messages:
        try:
            publish_and_wait(publisher_for(app), checked.messages, app.state.serve.collector_ack_timeout_seconds)
        except KafkaUnavailable as exc:
            return _json(503, {"detail": f"{exc}; none of the {len(events)} events accepted: retry the batch"})
    event_ids = [message.event_id for message in checked.messages]
    if not checked.errors:
        return _json(202, {"accepted": len(event_ids), "event_ids": event_ids})
    first = checked.errors[0]
    if event_ids:
        status, outcome = 207, f"{len(checked.errors)} of {len(events)} events break the contract (not published)"
    else:
        status, outcome = 400, f"every event ({len(events)}) breaks the contract: none published"
    return _json(
        status,
        {
            "detail": f"{outcome}; the first, event {first['index']}: {first['reason']}",
            "accepted": len(event_ids),
            "rejected": len(checked.errors),
            "event_ids": event_ids,
            "errors": checked.errors,
        },
    )


def close_publisher(app: Any) -> None:
    """At shutdown: flush and close the app's Publisher, if the collector made one, waiting for Kafka
    no longer than a request would (a plain flush waits out the producer's 2-minute delivery timeout
    while Kafka is down). Records still unsent were never acknowledged: their clients got a 503."""
    publisher = getattr(app.state, "publisher", None)
    if publisher is not None:
        app.state.publisher = None
        try:
            publisher.close(timeout=app.state.serve.collector_ack_timeout_seconds)
        except KafkaError as exc:
            log.warning("collector: Kafka did not take the last records before shutdown (dropped): %s", exc)
