"""The event envelope every producer publishes, and the registry of event types.

One JSON object per Kafka message:

    {"schema_version": 1, "event_type": "game.stage_clear", "event_id": "...",
     "user_id": "u42", "session_id": "s9", "source": {"service": "game-api", "host": "web-1"},
     "ts": "2024-04-01T12:00:00.123Z", "ingested_at": null, "sequence": 17,
     "payload": {"chapter": 1, "stage": 3, "mode": "story", "clear_time_ms": 5400, "score": 1180},
     "dedupe_key": "game.stage_clear:u42:17"}

The registry declares each event type's required and optional payload fields. Adding an
optional field is a compatible change; payload fields nobody declared are kept as they are.
Validation is hand-written rather than a schema library's: it runs once per event on the
loader's hot path.

Beyond the fields, every event is held to limits (`ContractConfig`, configurable): strings
(payload values and keys, ids, source) at most `max_string_chars` long and free of control
characters, `ts` and `ingested_at` inside a plausible window, and JSON nested at most
`MAX_NESTING` levels, so that whatever passes validation can also be encoded and inserted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from settings import ContractConfig

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024  # larger messages are dead-lettered, not loaded
# Levels of JSON nesting an event may have, the envelope being level 1. orjson parses up to 1,024
# but encodes only up to 254 (the loader re-encodes each event), and no event type needs more
# than four; anything deeper is rejected here, before it can fail later.
MAX_NESTING = 32
# Unicode's control characters (category Cc): C0, DEL and C1.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")
# How a control character can appear in a JSON message: escaped (\n, \u001b, ...) or, for DEL and
# C1, as raw UTF-8. An escaped backslash before an `n` also matches: that only costs the exact check.
_RAW_CONTROL_CHARACTER = re.compile(rb"\\[bfnrt]|\\u00[01819][0-9a-fA-F]|\\u007[fF]|\x7f|\xc2[\x80-\x9f]")
_UINT64_MAX = (1 << 64) - 1
DEFAULT_CONTRACT = ContractConfig()

# Field kinds and the Python types that satisfy them (bool is not an int here).
_KINDS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "number": (int, float),
    "bool": (bool,),
    "object": (dict,),
    "array": (list,),
}


class ContractError(ValueError):
    """A message that breaks the contract; `reason` says how (it goes to the dead-letter table)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class EventType:
    name: str
    domain: str
    version: int
    required: dict[str, str]
    optional: dict[str, str] = field(default_factory=dict)
    # Envelope fields this type must carry (clickstream events are anonymous but in a session).
    needs_user: bool = True
    needs_session: bool = False
    # The Kafka topic it is published on (ingestion/topics.py's TOPICS): an event arriving on a
    # topic of another domain is a dead letter.
    topic: str = field(kw_only=True)

    def check_payload(self, payload: dict[str, Any]) -> None:
        for name, kind in self.required.items():
            if name not in payload or payload[name] is None:
                raise ContractError(f"{self.name}: payload field '{name}' is required")
            _check_kind(self.name, name, payload[name], kind)
        for name, kind in self.optional.items():
            value = payload.get(name)
            if value is not None:
                _check_kind(self.name, name, value, kind)


def _check_kind(event_type: str, name: str, value: Any, kind: str) -> None:
    if isinstance(value, bool) and kind not in ("bool",):
        raise ContractError(f"{event_type}: payload field '{name}' must be {kind}, got bool")
    if not isinstance(value, _KINDS[kind]):
        raise ContractError(f"{event_type}: payload field '{name}' must be {kind}, got {type(value).__name__}")


def check_string(value: str, where: str, max_chars: int) -> None:
    """A string the warehouse can hold and show: bounded, and without control characters."""
    if len(value) > max_chars:
        raise ContractError(f"{where} is {len(value)} characters long, over the limit of {max_chars}")
    if not value.isprintable():  # fast path: most strings are printable; the regex says which are not
        control = _CONTROL_CHARACTER.search(value)
        if control is not None:
            raise ContractError(f"{where} contains the control character {control.group()!r} at {control.start()}")


def _clean(text: str, max_chars: int) -> bool:
    return len(text) <= max_chars and (text.isprintable() or _CONTROL_CHARACTER.search(text) is None)


def _tree_is_clean(value: Any, level: int, max_chars: int) -> bool:
    """The fast check of a JSON value at `level` (the envelope is level 1): strings and nesting."""
    kind = type(value)
    if kind is str:
        return _clean(value, max_chars)
    if kind is dict:
        if level > MAX_NESTING:
            return False
        for key, item in value.items():
            if not _clean(key, max_chars):
                return False
            item_kind = type(item)
            if item_kind is str:
                if not _clean(item, max_chars):
                    return False
            elif (item_kind is dict or item_kind is list) and not _tree_is_clean(item, level + 1, max_chars):
                return False
        return True
    if kind is list:
        return level <= MAX_NESTING and all(_tree_is_clean(item, level + 1, max_chars) for item in value)
    return True


def _explain_tree(value: Any, where: str, level: int, max_chars: int) -> None:
    """Raise ContractError naming where a value that failed `_tree_is_clean` breaks the limits."""
    kind = type(value)
    if kind is str:
        check_string(value, where, max_chars)
    elif kind is dict or kind is list:
        if level > MAX_NESTING:
            raise ContractError(f"{where} nests more than {MAX_NESTING} levels deep")
        items = value.items() if kind is dict else enumerate(value)
        for key, item in items:
            if kind is dict:
                check_string(key, f"a key in {where}", max_chars)
            _explain_tree(item, f"{where}.{key}" if kind is dict else f"{where}[{key}]", level + 1, max_chars)


def check_tree(value: Any, where: str, level: int, max_chars: int) -> None:
    """Strings (length, control characters) and nesting of a JSON value at `level`."""
    if not _tree_is_clean(value, level, max_chars):
        _explain_tree(value, where, level, max_chars)


def _types(*specs: EventType) -> dict[str, EventType]:
    return {spec.name: spec for spec in specs}


_STAGE = {"chapter": "int", "stage": "int", "mode": "string"}

REGISTRY: dict[str, EventType] = _types(
    # clickstream (YOOCHOOSE layout): anonymous users, always in a session
    EventType(
        "clickstream.click",
        "clickstream",
        1,
        {"item_id": "int"},
        {"category": "string"},
        needs_user=False,
        needs_session=True,
        topic="clickstream",
    ),
    EventType(
        "clickstream.purchase",
        "clickstream",
        1,
        {"item_id": "int", "price": "number", "quantity": "int"},
        needs_user=False,
        needs_session=True,
        topic="clickstream",
    ),
    # the wire-connecting puzzle game
    EventType(
        "game.session_start",
        "game",
        1,
        {},
        {"platform": "string", "app_version": "string"},
        needs_session=True,
        topic="game.events",
    ),
    EventType("game.session_end", "game", 1, {"duration_ms": "int"}, needs_session=True, topic="game.events"),
    EventType("game.stage_start", "game", 1, dict(_STAGE), needs_session=True, topic="game.events"),
    EventType(
        "game.stage_clear",
        "game",
        1,
        {**_STAGE, "clear_time_ms": "int", "score": "int"},
        {"moves": "int", "wildcards_used": "int"},
        needs_session=True,
        topic="game.events",
    ),
    EventType(
        "game.stage_fail",
        "game",
        1,
        dict(_STAGE),
        {"reason": "string", "elapsed_ms": "int"},
        needs_session=True,
        topic="game.events",
    ),
    EventType(
        "game.item_use",
        "game",
        1,
        {"item": "string", "action": "string"},
        {"cost_gold": "int"},
        True,
        True,
        topic="game.events",
    ),
    EventType(
        "game.navigation",
        "game",
        1,
        {"from_screen": "string", "to_screen": "string"},
        needs_session=True,
        topic="game.events",
    ),
    EventType("game.heartbeat", "game", 1, {}, {"screen": "string"}, needs_session=True, topic="game.events"),
    # the game economy (reference spec 3)
    EventType(
        "auth.signup",
        "economy",
        1,
        {},
        {"country": "string", "platform": "string", "persona": "string"},
        topic="auth.events",
    ),
    EventType("auth.login", "economy", 1, {}, {"platform": "string"}, topic="auth.events"),
    EventType("auth.logout", "economy", 1, {}, topic="auth.events"),
    # a player changed their profile (moved country, switched device); carries the changed fields
    EventType(
        "auth.profile_updated", "economy", 1, {}, {"country": "string", "platform": "string"}, topic="auth.events"
    ),
    EventType(
        "event.progress",
        "economy",
        1,
        {"live_event_id": "string", "progress_version": "int", "progress": "int"},
        topic="event.progress",
    ),
    EventType(
        "event.claim",
        "economy",
        1,
        {"live_event_id": "string", "progress_version": "int"},
        {"reward_gold": "int"},
        topic="event.claim",
    ),
    EventType(
        "mission.progress",
        "economy",
        1,
        {"mission_id": "string", "progress_version": "int", "progress": "int"},
        topic="mission.progress",
    ),
    EventType(
        "mission.claim",
        "economy",
        1,
        {"mission_id": "string", "progress_version": "int"},
        {"reward_gold": "int"},
        topic="mission.claim",
    ),
    EventType(
        "reward.granted",
        "economy",
        1,
        {"delta_gold": "int", "balance": "int"},
        {"reason": "string"},
        topic="reward.granted",
    ),
    EventType(
        "shop.purchase",
        "economy",
        1,
        {"tx_id": "string", "status": "string", "product_id": "string", "amount_gold": "int", "price_cents": "int"},
        topic="shop.purchase",
    ),
    EventType(
        "game.session",
        "economy",
        1,
        {"action": "string"},
        {"duration_ms": "int"},
        needs_session=True,
        topic="game.session",
    ),
    # commerce orders (outbox pattern, reference spec 4)
    EventType(
        "order.created",
        "orders",
        1,
        {"order_id": "string", "status": "string", "version": "int", "amount_cents": "int"},
        {"items": "array", "product_ids": "array"},
        topic="orders",
    ),
    EventType(
        "order.status_changed",
        "orders",
        1,
        {"order_id": "string", "status": "string", "version": "int"},
        {"amount_cents": "int", "previous_status": "string"},
        topic="orders",
    ),
    EventType(
        "order.deleted",
        "orders",
        1,
        {"order_id": "string", "version": "int", "deleted_by": "string"},
        {"deleted_at": "string"},
        topic="orders",
    ),
)

ORDER_STATUSES = (
    "PENDING",
    "CONFIRMED",
    "PROCESSING",
    "SHIPPED",
    "DELIVERED",
    "CANCELLED",
    "REFUNDED",
    "FAILED",
    "COMPLETED",
)


@dataclass(slots=True)  # not frozen: frozen __init__ costs ~2 us an event on the loader's hot path
class Envelope:
    schema_version: int
    event_type: str
    domain: str
    event_id: str
    user_id: str | None
    session_id: str | None
    source_service: str
    source_host: str
    ts: datetime
    ingested_at: datetime | None
    ts_text: str  # ts as ClickHouse reads it (see clickhouse_text)
    ingested_at_text: str | None
    sequence: int | None
    payload: dict[str, Any]
    dedupe_key: str


def format_ts(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds, the envelope's timestamp format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _is_canonical(value: str) -> bool:
    """`YYYY-MM-DDThh:mm:ss.mmmZ`, what our producers write (the loader's fast path)."""
    return len(value) == 24 and value[23] == "Z" and value[10] == "T" and value[19] == "."


def clickhouse_text(value: str, moment: datetime) -> str:
    """`YYYY-MM-DD hh:mm:ss.mmm` (UTC), as ClickHouse parses DateTime64(3); sliced when canonical."""
    if _is_canonical(value):
        return value[:10] + " " + value[11:23]
    return moment.isoformat(sep=" ", timespec="milliseconds")[:23]


def parse_ts(value: Any, field_name: str = "ts") -> datetime:
    if type(value) is str and _is_canonical(value):
        try:
            moment = datetime.fromisoformat(value)  # Python 3.11 reads the Z as UTC
        except ValueError:
            pass  # the careful path below says what is wrong
        else:
            if 1970 <= moment.year <= 2105:
                return moment
    if not isinstance(value, str):
        raise ContractError(f"'{field_name}' must be an ISO 8601 string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ContractError(f"'{field_name}' is not an ISO 8601 timestamp: {value!r}") from None
    if moment.tzinfo is None:
        raise ContractError(f"'{field_name}' has no timezone (expected UTC, e.g. 2024-04-01T12:00:00.000Z): {value!r}")
    moment = moment.astimezone(UTC)
    if not 1970 <= moment.year <= 2105:  # the range of ClickHouse DateTime64
        raise ContractError(f"'{field_name}' is out of range: {value!r}")
    return moment


def _optional_str(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ContractError(f"'{name}' must be a string, got {type(value).__name__}")


def _check_strings(document: dict[str, Any], max_chars: int) -> None:
    """The string and nesting limits over the envelope's ids, source and payload."""
    for name in ("event_id", "user_id", "session_id", "dedupe_key"):
        value = document.get(name)
        if isinstance(value, str):
            check_string(value, f"'{name}'", max_chars)
    source = document.get("source")
    if isinstance(source, dict):
        for name in ("service", "host"):
            value = source.get(name)
            if isinstance(value, str):
                check_string(value, f"'source.{name}'", max_chars)
    check_tree(document.get("payload"), "payload", 2, max_chars)


def _check_window(moment: datetime, field_name: str, limits: ContractConfig, now: datetime | None) -> None:
    if limits.ts_min <= moment <= (now or datetime.now(UTC)) + limits.ts_max_ahead:
        return
    if moment < limits.ts_min:
        raise ContractError(
            f"'{field_name}' {format_ts(moment)} is before {format_ts(limits.ts_min)}, the earliest plausible time"
        )
    latest = (now or datetime.now(UTC)) + limits.ts_max_ahead
    if moment > latest:
        hours = limits.ts_max_ahead.total_seconds() / 3600
        raise ContractError(f"'{field_name}' {format_ts(moment)} is more than {hours:g} h ahead of the loader's clock")


def validate(raw: bytes, limits: ContractConfig = DEFAULT_CONTRACT, now: datetime | None = None) -> Envelope:
    """Parse one Kafka message value; raise ContractError naming the first problem found.

    `now` is the clock the plausible window's upper end counts from (default: the current time).
    """
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ContractError(f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ContractError(f"message must be a JSON object, got {type(document).__name__}")
    event_type = document.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise ContractError("'event_type' is required")
    spec = REGISTRY.get(event_type)
    if spec is None:
        raise ContractError(f"unknown event_type {event_type!r}")
    version = document.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise ContractError(f"unsupported schema_version {version!r} (this loader reads 1..{SCHEMA_VERSION})")
    event_id = document.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise ContractError("'event_id' is required and must be a non-empty string")
    max_chars = limits.max_string_chars
    # The string and nesting limits need a look at each string only when the message could break
    # them: it is longer than a string may be, has a control character in some form, or more
    # brackets than the nesting limit. Most messages are short and plain, and skip the walk.
    if len(raw) > max_chars or raw.count(b"{") + raw.count(b"[") > MAX_NESTING or _RAW_CONTROL_CHARACTER.search(raw):
        _check_strings(document, max_chars)
    user_id = _optional_str(document, "user_id")
    session_id = _optional_str(document, "session_id")
    if spec.needs_user and not user_id:
        raise ContractError(f"{event_type}: 'user_id' is required")
    if spec.needs_session and not session_id:
        raise ContractError(f"{event_type}: 'session_id' is required")
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise ContractError("'payload' is required and must be a JSON object")
    spec.check_payload(payload)
    source = document.get("source") or {}
    if not isinstance(source, dict):
        raise ContractError("'source' must be an object {service, host}")
    source_service = _optional_str(source, "service") or ""
    source_host = _optional_str(source, "host") or ""
    sequence = document.get("sequence")
    if sequence is not None and (
        not isinstance(sequence, int) or isinstance(sequence, bool) or not 0 <= sequence <= _UINT64_MAX
    ):
        raise ContractError("'sequence' must be an integer from 0 to 2^64 - 1")
    dedupe_key = document.get("dedupe_key") or event_id
    if not isinstance(dedupe_key, str):
        raise ContractError(f"'dedupe_key' must be a string, got {type(dedupe_key).__name__}")
    ts_value = document.get("ts")
    ts = parse_ts(ts_value)
    _check_window(ts, "ts", limits, now)
    ingested_value = document.get("ingested_at")
    ingested_at = parse_ts(ingested_value, "ingested_at") if ingested_value is not None else None
    if ingested_at is not None:
        _check_window(ingested_at, "ingested_at", limits, now)
    return Envelope(
        schema_version=version,
        event_type=event_type,
        domain=spec.domain,
        event_id=event_id,
        user_id=user_id,
        session_id=session_id,
        source_service=source_service,
        source_host=source_host,
        ts=ts,
        ingested_at=ingested_at,
        ts_text=clickhouse_text(ts_value, ts),
        ingested_at_text=clickhouse_text(ingested_value, ingested_at) if ingested_at is not None else None,
        sequence=sequence,
        payload=payload,
        dedupe_key=dedupe_key,
    )


def make_event(
    event_type: str,
    event_id: str,
    ts: datetime,
    payload: dict[str, Any],
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    service: str = "eventhouse-producer",
    host: str = "local",
    sequence: int | None = None,
    dedupe_key: str | None = None,
) -> dict[str, Any]:
    """An envelope as producers publish it (the loader sets ingested_at when it is absent)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "event_type": event_type,
        "event_id": event_id,
        "user_id": user_id,
        "session_id": session_id,
        "source": {"service": service, "host": host},
        "ts": format_ts(ts),
        "ingested_at": None,
        "sequence": sequence,
        "payload": payload,
        "dedupe_key": dedupe_key or event_id,
    }
