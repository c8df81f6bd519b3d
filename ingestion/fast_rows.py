"""The loader's fast path: a raw-table row straight from a message's bytes, for the common event.

`contract.validate`, `topics.check_topic` and `raw_tables.encode_raw_row` stay the definition of
what the loader accepts and writes (the reference path): they parse the message into a dict,
check it field by field in Python, build an `Envelope` and encode a row dict, which was most of
the loader's own time per event. This module gets the same row for a message that is plainly
fine with less work: msgspec decodes the envelope into a typed Struct (its type checks run in C),
the payload's declared fields are checked against precompiled type sets, and the rows of one
`PartitionState.accept_many` call are encoded together in one `encode_lines` call.

The fast path never decides that a message is bad. Whenever it is not sure (a decode or type
error, an unknown or misrouted event type, a missing field, a timestamp not in the canonical
form or outside the window, a message that could break the string or nesting limits, anything
unforeseen), it says "not sure" (None) and the loader runs the reference path on that message,
which produces the row or the exact dead-letter reason as before. What it does accept, it turns
into the byte-identical row the reference path would have written (tests/unit/test_fast_rows.py
checks both paths against each other on a varied set of inputs).

Why each shortcut gives the reference result:
- A message goes fast only if the reference's string and nesting walk could not fail on it: it
  is at most `max_string_chars` bytes long (so is every string in it), holds no DEL or C1
  character and no backslash at all (no JSON escapes: its strings cannot hold a quote, a
  backslash, a control character or a lone surrogate, and msgspec and orjson read and write them
  alike), and its payload holds no object or array, or it has at most `MAX_NESTING` brackets.
- The envelope's fields are typed exactly as the reference accepts them without conversion
  (strings, `None`, ints; msgspec refuses a bool or a float for an int). The reference's lenient
  cases (an integer `user_id`, a falsy non-object `source`, ...) fail the typed decode and go the
  reference way. Unknown envelope fields fail it too (`forbid_unknown_fields`).
- msgspec parses the payload as orjson does (both read floats correctly rounded; keys, strings
  and duplicate keys alike), except integers outside 64 bits, which orjson reads as floats and
  msgspec as ints: orjson refuses to encode those, so such a payload goes the reference way.
- A payload of strings, int64s, bools and nulls only (`_FlatWire`: most events) is written by
  msgspec itself: for those values, strings without escapes included, its bytes are orjson's.
  Any other payload is re-encoded with orjson, as the reference row nests it (msgspec writes
  floats differently: `1e16` where orjson writes `1e+16`). The rest of the row is strings without
  escapes, ints and nulls.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from ingestion.contract import _KINDS, MAX_MESSAGE_BYTES, MAX_NESTING, REGISTRY, SCHEMA_VERSION, EventType
from ingestion.topics import TOPICS_BY_NAME

_UINT64_MAX = (1 << 64) - 1
# C1 control characters as raw UTF-8 (DEL is looked for on its own; C0 cannot appear raw in valid JSON).
_C1 = re.compile(rb"\xc2[\x80-\x9f]")
_BACKSLASH, _DEL = ord("\\"), 0x7F

# Each payload field kind's types, matched exactly: among JSON values (str, int, float, bool,
# None, dict, list) that is what `contract._check_kind` accepts, a bool not being an int there.
# (A kind of other types would only send its events the reference way: an exact match is never
# looser than the reference's isinstance.)
_KIND_TYPES: dict[str, frozenset[type]] = {kind: frozenset(types) for kind, types in _KINDS.items()}


class _Source(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    service: str | None = None
    host: str | None = None


class _Wire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The envelope as producers write it (contract.make_event), typed as the reference reads it."""

    event_type: str
    event_id: str
    ts: str
    payload: dict[str, Any]
    schema_version: int = SCHEMA_VERSION
    user_id: str | None = None
    session_id: str | None = None
    source: _Source | None = None
    ingested_at: str | None = None
    sequence: int | None = None
    dedupe_key: str | None = None


# An int orjson surely reads as an int (beyond 64 bits it reads a float); msgspec's bounds must
# fit an int64, so ints up to 2^64 - 1 beyond that take the other decoder, where orjson decides.
_Int64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]


class _FlatWire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An envelope whose payload holds only strings, int64s, bools and nulls (most events):
    nested exactly 2 levels deep, and written by msgspec exactly as orjson writes it."""

    event_type: str
    event_id: str
    ts: str
    payload: dict[str, str | _Int64 | bool | None]
    schema_version: int = SCHEMA_VERSION
    user_id: str | None = None
    session_id: str | None = None
    source: _Source | None = None
    ingested_at: str | None = None
    sequence: int | None = None
    dedupe_key: str | None = None


class RawRow(msgspec.Struct, gc=False):
    """One raw-table row, its fields in raw_tables.RAW_COLUMNS order (a unit test holds them equal)."""

    event_id: str
    event_type: str
    schema_version: int
    user_id: str | None
    session_id: str | None
    source_service: str
    source_host: str
    ts: str
    ingested_at: str
    sequence: int | None
    dedupe_key: str
    payload: Any  # the payload as msgspec decoded it, or its JSON (msgspec.Raw) as orjson wrote it
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int
    kafka_topic_id: str


_decode_flat = msgspec.json.Decoder(_FlatWire).decode
_decode = msgspec.json.Decoder(_Wire).decode
_encoder = msgspec.json.Encoder()


def encode_lines(rows: list[Any]) -> bytes:
    """JSONEachRow lines of `RawRow`s (and of `msgspec.Raw` lines without their newline), in one call."""
    return _encoder.encode_lines(rows)


def _compile(spec: EventType) -> tuple[bool, bool, tuple[tuple[str, frozenset[type]], ...]]:
    """An event type's checks: (needs_user, needs_session, (field, accepted types) of the payload).

    A required field accepts its kind's types; an optional one also None (absent or null)."""
    fields = tuple((name, _KIND_TYPES[kind]) for name, kind in spec.required.items())
    fields += tuple((name, _KIND_TYPES[kind] | {type(None)}) for name, kind in spec.optional.items())
    return spec.needs_user, spec.needs_session, fields


@functools.cache
def _types_for_topic(topic: str) -> dict[str, tuple[bool, bool, tuple[tuple[str, frozenset[type]], ...]]]:
    """The event types `check_topic` lets arrive on `topic` (those of its domain), compiled."""
    domain = TOPICS_BY_NAME[topic].domain
    return {name: _compile(spec) for name, spec in REGISTRY.items() if TOPICS_BY_NAME[spec.topic].domain == domain}


class _Unsure(Exception):
    """The fast path cannot vouch for a message: the reference path decides."""


_fromiso = datetime.fromisoformat


def _canonical_moment(value: str) -> datetime | None:
    """`contract.parse_ts`'s fast branch: the moment of a canonical `YYYY-MM-DDThh:mm:ss.mmmZ`, else None."""
    if len(value) == 24 and value[23] == "Z" and value[10] == "T" and value[19] == ".":
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if 1970 <= moment.year <= 2105:
            return moment
    return None


class FastRows:
    """The fast path for one partition of an event topic."""

    def __init__(self, topic: str, partition: int, topic_id: str):
        self.topic = topic
        self.partition = partition
        self.topic_id = topic_id
        self._types = _types_for_topic(topic)

    @staticmethod
    def for_topic(topic: str, partition: int, topic_id: str) -> FastRows | None:
        """None for a topic the registry has no event types for (those go the reference way)."""
        return FastRows(topic, partition, topic_id) if topic in TOPICS_BY_NAME else None

    def rows(
        self, messages: Sequence[Any], limits: Any, earliest: datetime, latest: datetime, now_text: str
    ) -> tuple[list[RawRow | None], int, datetime | None, int]:
        """Each message's row, or None where the reference path must decide (how many: `unsure`).

        Returns (rows, unsure, the earliest `ts` of the rows, the bytes of the messages' values).
        `earliest` and `latest` are the plausible window (`limits.ts_min`, the loader's clock plus
        `limits.ts_max_ahead`), `now_text` the rows' `ingested_at` when an event brings none.
        One loop over the messages, everything it needs in locals: this is the loader's hot path.
        """
        types = self._types
        topic, partition, topic_id = self.topic, self.partition, self.topic_id
        max_bytes = min(limits.max_string_chars, MAX_MESSAGE_BYTES)
        decode_flat, decode, Raw, dumps, fromisoformat = _decode_flat, _decode, msgspec.Raw, orjson.dumps, _fromiso
        out: list[RawRow | None] = []
        append = out.append
        unsure = nbytes = 0
        oldest: datetime | None = None
        for message in messages:
            raw = message.value
            if not raw:
                append(None)
                unsure += 1
                continue
            nbytes += len(raw)
            try:
                # The reference walks the strings of a message longer than a string may be, or with a
                # control character in some form (here: any backslash): not for here. (`int in bytes`
                # is a memchr; `bytes in bytes` a slower general search.)
                if (
                    len(raw) > max_bytes
                    or _BACKSLASH in raw
                    or _DEL in raw
                    or not (raw.isascii() or _C1.search(raw) is None)
                ):
                    raise _Unsure
                try:
                    wire: _Wire | _FlatWire = decode_flat(raw)
                    flat = True
                except msgspec.ValidationError:
                    # The payload nests objects or arrays, or holds a float (or the envelope is off):
                    # decoded again whole, it must have no more brackets than the reference lets
                    # skip its walk.
                    if raw.count(b"{") + raw.count(b"[") > MAX_NESTING:
                        raise _Unsure from None
                    wire = decode(raw)
                    flat = False
                event_type = wire.event_type
                checks = types.get(event_type)
                if checks is None:
                    raise _Unsure  # unknown, or of another domain's topic
                needs_user, needs_session, fields = checks
                version = wire.schema_version
                event_id = wire.event_id
                user_id = wire.user_id
                session_id = wire.session_id
                if (
                    not 1 <= version <= SCHEMA_VERSION
                    or not event_id
                    or (needs_user and not user_id)
                    or (needs_session and not session_id)
                ):
                    raise _Unsure
                payload = wire.payload
                get = payload.get
                for name, accepted in fields:
                    if type(get(name)) not in accepted:
                        raise _Unsure
                sequence = wire.sequence
                if sequence is not None and not 0 <= sequence <= _UINT64_MAX:
                    raise _Unsure
                ts_value = wire.ts
                # contract.parse_ts's fast branch: only the canonical form, in its years
                if not (len(ts_value) == 24 and ts_value[23] == "Z" and ts_value[10] == "T" and ts_value[19] == "."):
                    raise _Unsure
                ts = fromisoformat(ts_value)
                if not (1970 <= ts.year <= 2105 and earliest <= ts <= latest):
                    raise _Unsure
                ingested_value = wire.ingested_at
                if ingested_value is None:
                    ingested_text = now_text
                else:
                    ingested_at = _canonical_moment(ingested_value)
                    if ingested_at is None or not earliest <= ingested_at <= latest:
                        raise _Unsure
                    ingested_text = ingested_value[:10] + " " + ingested_value[11:23]
                source = wire.source
                if source is None:
                    service = host = ""
                else:
                    service = source.service or ""
                    host = source.host or ""
                if flat:
                    payload_json: Any = payload  # encode_lines writes it as orjson would
                else:
                    # orjson refuses an integer beyond 64 bits (which it read as a float): JSONEncodeError.
                    # Its result sits in a 4 KiB buffer: copied to its size, or the slice's rows would
                    # hold 2 MiB of fresh memory (page faults cost more than the rest of the event).
                    payload_json = Raw(bytes(memoryview(dumps(payload))))
            except Exception:  # _Unsure, a decode error, a bad date, anything unforeseen: the reference decides
                append(None)
                unsure += 1
                continue
            append(
                RawRow(
                    event_id,
                    event_type,
                    version,
                    user_id,
                    session_id,
                    service,
                    host,
                    ts_value[:10] + " " + ts_value[11:23],
                    ingested_text,
                    sequence,
                    wire.dedupe_key or event_id,
                    payload_json,
                    topic,
                    partition,
                    message.offset,
                    topic_id,
                )
            )
            if oldest is None or ts < oldest:
                oldest = ts
        return out, unsure, oldest, nbytes
