"""Kafka topics: one per domain stream, keyed as the reference systems key them, each with a DLQ."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from ingestion.contract import REGISTRY, ContractError

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    domain: str
    key_field: str  # envelope field, or payload field when prefixed "payload."
    partitions: int = 3

    @property
    def dlq(self) -> str:
        return self.name + DLQ_SUFFIX


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("clickstream", "clickstream", "session_id"),
    TopicSpec("game.events", "game", "user_id"),
    TopicSpec("auth.events", "economy", "user_id"),
    TopicSpec("event.progress", "economy", "payload.live_event_id"),
    TopicSpec("event.claim", "economy", "payload.live_event_id"),
    TopicSpec("mission.progress", "economy", "payload.mission_id"),
    TopicSpec("mission.claim", "economy", "payload.mission_id"),
    TopicSpec("reward.granted", "economy", "user_id"),
    TopicSpec("shop.purchase", "economy", "user_id"),
    TopicSpec("game.session", "economy", "session_id"),
    TopicSpec("orders", "orders", "payload.order_id"),
)
TOPICS_BY_NAME = {spec.name: spec for spec in TOPICS}
DOMAINS = ("clickstream", "game", "economy", "orders")

# Each event type names its topic in the registry (ingestion/contract.py); a topic there that is
# not declared here, or of another domain, is a programming error caught at import.
for _spec in REGISTRY.values():
    _topic = TOPICS_BY_NAME.get(_spec.topic)
    if _topic is None or _topic.domain != _spec.domain:
        raise RuntimeError(f"{_spec.name}: topic {_spec.topic!r} is not a topic of the {_spec.domain} domain")


def topic_for(event_type: str) -> TopicSpec:
    """The topic an event of this type is published on."""
    spec = REGISTRY.get(event_type)
    if spec is None:
        raise ContractError(f"unknown event type {event_type!r}: not in the registry (ingestion/contract.py)")
    return TOPICS_BY_NAME[spec.topic]


def check_topic(event_type: str, topic: str) -> None:
    """An event must arrive on a topic of its own domain: anything else would land in another
    domain's raw table, where no model reads it."""
    spec = TOPICS_BY_NAME[topic]
    own = topic_for(event_type)
    if own.domain != spec.domain:
        raise ContractError(
            f"wrong topic: {event_type} belongs to the {own.domain} domain (topic {own.name}), "
            f"not to topic {topic} ({spec.domain})"
        )


def message_key(spec: TopicSpec, event: dict[str, Any]) -> bytes | None:
    if spec.key_field.startswith("payload."):
        value = event.get("payload", {}).get(spec.key_field[len("payload.") :])
    else:
        value = event.get(spec.key_field)
    return None if value is None else str(value).encode()


def topics_for_domains(domains: list[str] | tuple[str, ...]) -> list[TopicSpec]:
    unknown = set(domains) - set(DOMAINS)
    if unknown:
        raise ValueError(f"unknown domain(s) {sorted(unknown)}; choose from {', '.join(DOMAINS)}")
    return [spec for spec in TOPICS if spec.domain in domains]


def topic_configs(name: str) -> dict[str, str]:
    """A new topic's configs: retention.ms, 7 days for topics and 14 for DLQs (settings/__init__.py).

    Set at creation only; an existing topic's retention is the cluster operator's to change. The
    embedded Tansu broker accepts the config but does not report it back (describe_configs answers
    with no entries) and keeps messages in memory until it stops: the retention applies on a real cluster."""
    from settings import topic_retention_ms

    return {"retention.ms": str(topic_retention_ms(dlq=name.endswith(DLQ_SUFFIX)))}


def _create(admin: Any, topics: list[Any]) -> None:
    """Create the topics; a broker that refuses their configs gets them without (and a warning)."""
    from kafka.errors import InvalidConfigurationError, TopicAlreadyExistsError

    try:
        with contextlib.suppress(TopicAlreadyExistsError):  # another process created them meanwhile
            admin.create_topics(topics)
    except InvalidConfigurationError as exc:
        log.warning("the broker refused the topics' retention configs (%s): creating them with its defaults", exc)
        for topic in topics:
            topic.topic_configs = {}
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(topics)


class TopicMismatch(RuntimeError):
    """A topic exists with another partition count than eventhouse expects."""


def ensure_topics(admin: Any, specs: list[TopicSpec], timeout: float = 30.0) -> dict[str, int]:
    """Create the topics and their DLQs that do not exist, then verify every partition count.

    Returns {topic: partitions}. Tansu cannot add partitions later, so a mismatch is an error.
    """
    from kafka.admin import NewTopic

    wanted = {spec.name: spec.partitions for spec in specs}
    wanted.update({spec.dlq: 1 for spec in specs})
    existing = set(admin.list_topics())
    missing = [
        NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=topic_configs(name))
        for name, n in wanted.items()
        if name not in existing
    ]
    if missing:
        _create(admin, missing)
        log.info("created topics: %s", ", ".join(t.name for t in missing))
    deadline = time.monotonic() + timeout
    while True:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(wanted))}
        if all(described.get(name) for name in wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    wrong = {name: (described.get(name), n) for name, n in wanted.items() if described.get(name) != n}
    if wrong:
        details = ", ".join(f"{name} has {got} partitions, expected {want}" for name, (got, want) in wrong.items())
        raise TopicMismatch(f"Kafka topics do not match eventhouse's layout: {details}")
    return described
