"""A posted batch checked against the event contract: the Kafka messages to send, and why the rest fail.

Each event is serialised (orjson) and checked by the loader's own `validate`, so the collector
and the loader cannot disagree: whatever the collector accepts, the loader loads, and whatever it
refuses would have been a dead letter. The bytes checked are the bytes published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ingestion.contract import MAX_NESTING, ContractError, validate
from ingestion.topics import message_key, topic_for
from settings import ContractConfig


@dataclass(frozen=True, slots=True)
class Message:
    """One valid event as it goes to Kafka."""

    index: int  # its place in the posted batch
    event_id: str
    topic: str
    key: bytes | None
    value: bytes


@dataclass
class CheckedBatch:
    messages: list[Message] = field(default_factory=list)
    # {"index": i, "event_id": "..." or None, "reason": the ContractError's text}, in batch order
    errors: list[dict[str, Any]] = field(default_factory=list)


def _event_id(event: Any) -> str | None:
    """The event_id a refused event names, if it names one, so the client can tell which it was."""
    value = event.get("event_id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None


def check_events(events: list[Any], limits: ContractConfig) -> CheckedBatch:
    """Split a parsed batch into the messages to publish and the refused events' reasons."""
    checked = CheckedBatch()
    for index, event in enumerate(events):
        try:
            value = orjson.dumps(event)
        except orjson.JSONEncodeError:
            # orjson reads 1,024 levels of nesting but writes only 254: such an event breaks the
            # contract's nesting limit anyway (validate would say so of the original bytes)
            checked.errors.append(
                {"index": index, "event_id": _event_id(event), "reason": f"nests more than {MAX_NESTING} levels deep"}
            )
            continue
        try:
            envelope = validate(value, limits)
        except ContractError as exc:
            checked.errors.append({"index": index, "event_id": _event_id(event), "reason": exc.reason})
            continue
        spec = topic_for(envelope.event_type)
        # the key as every producer computes it (ingestion.publisher.Publisher.publish)
        checked.messages.append(Message(index, envelope.event_id, spec.name, message_key(spec, event), value))
    return checked
