"""The loader's fast path (ingestion/fast_rows.py) against the reference path, message by message.

The oracle below is the loader's per-message path as it was before the fast path existed
(`PartitionState.accept` and `_encode` of commit 2694c7f): `contract.validate`, `check_topic`,
`encode_raw_row`, and the exception boundary around them, kept here verbatim so that a change to
the loader cannot move both sides at once. Every input, valid or not, must come out of
`PartitionState.accept_many` as exactly the oracle's result: the same row bytes, or a dead letter
with the same reason, and the same event lag. Valid events must also really take the fast path
(a test that only ever exercised the fallback would prove nothing about it).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
import pytest

from ingestion import contract, fast_rows
from ingestion.contract import MAX_NESTING, REGISTRY, ContractError, validate
from ingestion.fast_rows import FastRows, RawRow
from ingestion.loader_stats import LoaderStats
from ingestion.partition_ranges import PartitionState
from ingestion.raw_tables import RAW_COLUMNS, encode_raw_row
from ingestion.topics import TOPICS, TOPICS_BY_NAME, check_topic
from settings import ContractConfig

NOW = datetime(2024, 4, 1, 10, 0, 5, tzinfo=UTC)
NOW_TEXT = "2024-04-01 10:00:05.000"
TS = "2024-04-01T10:00:00.000Z"
LIMITS = ContractConfig()
TOPIC_ID = "tid-1"


@dataclass
class Record:
    offset: int
    value: bytes | None
    key: bytes | None = b"k"


def reference(
    message: Record, topic: str, partition: int, topic_id: str, contract: ContractConfig, now: datetime, now_text: str
) -> tuple[bytes | None, float | None, str | None]:
    """(row, event lag in ms, None) or (None, None, dead-letter reason): the loader before the fast path."""
    value = message.value or b""
    try:
        if not value:
            raise ContractError("empty message (no value)" if message.value is None else "empty message (0 bytes)")
        envelope = validate(value, contract, now)
        check_topic(envelope.event_type, topic)
        try:
            ingested_at = envelope.ingested_at_text or now_text
            row = encode_raw_row(envelope, ingested_at, topic, partition, message.offset, topic_id)
        except orjson.JSONEncodeError as exc:
            raise ContractError(f"cannot be encoded as a raw row: {exc}") from None
        return row, (now - envelope.ts).total_seconds() * 1000, None
    except ContractError as error:
        return None, None, error.reason
    except Exception as error:
        return None, None, f"could not be loaded ({type(error).__name__}: {error})"


# ---- the inputs -----------------------------------------------------------------------------

_SAMPLE = {
    "string": ["x", "Zürich", "東京 🎮", ""],
    "int": [7, 0, -3, 2**63 - 1, 2**64 - 1, -(2**63)],
    "number": [2.5, 3, 1e16, 1.5e-7, 5e-324, -0.0, 1.7976931348623157e308],
    "bool": [True, False],
    "object": [{"a": 1, "b": [1, 2]}, {}],
    "array": [[1, "b", None, {"c": 2.25}], []],
}
_WRONG = {
    "string": [7, True, None, ["x"]],
    "int": ["7", True, 7.0, 2.5, None, {}],
    "number": ["2.5", False, None, []],
    "bool": [1, "true", None],
    "object": [[], "{}", 1],
    "array": [{}, "[]", 1],
}


def _envelope(event_type: str, payload: Any, **fields: Any) -> dict[str, Any]:
    spec = REGISTRY[event_type]
    document = {
        "schema_version": 1,
        "event_type": event_type,
        "event_id": "e-1",
        "user_id": "u1" if spec.needs_user else None,
        "session_id": "s1" if spec.needs_session or event_type.startswith("game.") else None,
        "source": {"service": "svc", "host": "h1"},
        "ts": TS,
        "ingested_at": None,
        "sequence": 17,
        "payload": payload,
        "dedupe_key": "e-1",
    }
    document.update(fields)
    return document


def _payload(event_type: str, choice: int = 0, optional: bool = True) -> dict[str, Any]:
    spec = REGISTRY[event_type]
    payload = {name: _SAMPLE[kind][choice % len(_SAMPLE[kind])] for name, kind in spec.required.items()}
    if optional:
        payload.update({name: _SAMPLE[kind][choice % len(_SAMPLE[kind])] for name, kind in spec.optional.items()})
    return payload


def _valid_events() -> list[tuple[str, bytes]]:
    """Valid events of every type, on their own topic, with each sample value of each field kind."""
    cases = []
    for event_type, spec in REGISTRY.items():
        for choice in range(7):
            cases.append((spec.topic, orjson.dumps(_envelope(event_type, _payload(event_type, choice)))))
        cases.append((spec.topic, orjson.dumps(_envelope(event_type, _payload(event_type, optional=False)))))
        extra = {**_payload(event_type), "undeclared": {"kept": ["as", "is"]}, "n": 1.25}
        cases.append((spec.topic, orjson.dumps(_envelope(event_type, extra))))
    return cases


def _malformed_envelopes() -> list[bytes]:
    click = _envelope("clickstream.click", {"item_id": 7, "category": "S"})
    variants: list[dict[str, Any]] = []
    for name, values in {
        "schema_version": [0, 2, True, "1", 1.0, None],
        "event_type": ["", "clickstream.teleport", 5, None, ["clickstream.click"]],
        "event_id": ["", 5, None, True, {"id": 1}],
        "user_id": [5, True, "", 2.5, ["u"]],
        "session_id": [None, "", 9, False],
        "source": [None, {}, [], "", 0, {"service": 1}, {"service": "a", "host": "b", "region": "eu"}, {"host": 2.5}],
        "sequence": [None, 0, 2**64 - 1, -1, 1.5, True, "5"],
        "dedupe_key": [None, "", 0, {"a": 1}, "k-9"],
        "ingested_at": ["2024-04-01T10:00:01.250Z", "2024-04-01T10:00:01Z", "2100-01-01T00:00:00.000Z", 5, ""],
        "payload": [None, [], "x", 5, {}, {"item_id": None}, {"category": "S"}],
    }.items():
        for value in values:
            variants.append({**click, name: value})
    for name in ("schema_version", "event_type", "event_id", "session_id", "source", "ts", "payload", "dedupe_key"):
        variants.append({key: value for key, value in click.items() if key != name})
    variants.append({**click, "extra_field": 1})
    variants.append({**click, "user_id": "u" * 1025})
    cases = [orjson.dumps(variant) for variant in variants]
    text = orjson.dumps(click)
    for number in (b"18446744073709551616", b"-0", b"1e0", b"01"):
        cases.append(text.replace(b'"sequence":17', b'"sequence":' + number))
        cases.append(text.replace(b'"schema_version":1', b'"schema_version":' + number))
    return cases


def _payload_kinds() -> list[tuple[str, bytes]]:
    """Each declared field of each type given each wrong kind, and huge or odd numbers."""
    cases = []
    for event_type, spec in REGISTRY.items():
        for name, kind in {**spec.required, **spec.optional}.items():
            for wrong in _WRONG[kind]:
                cases.append((spec.topic, orjson.dumps(_envelope(event_type, {**_payload(event_type), name: wrong}))))
    order = _envelope("order.created", _payload("order.created"))
    text = orjson.dumps(order)
    for number in (b"18446744073709551616", b"-9223372036854775809", b"1" * 40, b"1e400", b"1e-400", b"0.1e1"):
        cases.append(("orders", text.replace(b'"amount_cents":7', b'"amount_cents":' + number)))
        cases.append(("orders", text.replace(b'"amount_cents":7', b'"amount_cents":7,"big":' + number)))
        cases.append(("orders", text.replace(b'"amount_cents":7', b'"amount_cents":7,"big":[' + number + b"]")))
    return cases


def _timestamps() -> list[bytes]:
    cases = []
    for ts in [
        TS,
        "2024-04-01T10:00:00Z",
        "2024-04-01T10:00:00.000+00:00",
        "2024-04-01T12:00:00.000+02:00",
        "2024-04-01T10:00:00.000",
        "2024-04-01",
        "2024-04-01T10:00:00.000z",
        "2024-02-30T00:00:00.000Z",
        "2024-04-01T10:00:00,000Z",
        "2024-04-01 10:00:00.000Z",
        "1969-12-31T23:59:59.999Z",
        "1999-12-31T23:59:59.999Z",
        "2000-01-01T00:00:00.000Z",
        "2024-04-02T10:00:05.000Z",  # exactly 24 h ahead of NOW
        "2024-04-02T10:00:05.001Z",
        "2106-01-01T00:00:00.000Z",
        " 2024-04-01T10:00:00.000Z",
        "2024-04-01T10:00:00.0000Z",
        "",
        "now",
        5,
        None,
    ]:
        cases.append(orjson.dumps(_envelope("clickstream.click", {"item_id": 1}, ts=ts)))
        cases.append(orjson.dumps(_envelope("clickstream.click", {"item_id": 1}, ingested_at=ts)))
    return cases


def _strings_and_bytes() -> list[bytes]:
    """Unicode, escapes, control characters, lengths, nesting, and JSON that is not the usual shape."""
    click = _envelope("clickstream.click", {"item_id": 7, "category": "S"})
    text = orjson.dumps(click)
    cases = []
    for category in [
        "Zürich",
        "東京",
        "emoji 👩‍💻",
        "no-break\u00a0space ©°",
        "line\u2028separator",
        'quote " inside',
        "back\\slash n",
        "a\nb",
        "tab\there",
        "nul\x00",
        "del\x7f",
        "c1\x85",
        "x" * 1024,
        "x" * 1025,
        "é" * 600,
    ]:
        cases.append(orjson.dumps({**click, "payload": {"item_id": 7, "category": category}}))
        cases.append(orjson.dumps({**click, "event_id": category or "e"}))
        cases.append(orjson.dumps({**click, "source": {"service": category, "host": "h"}}))
    cases += [
        orjson.dumps({**click, "payload": {"item_id": 7, "k" * 1100: 1}}),
        json.dumps(click).encode(),  # spaces after separators
        json.dumps(click, indent=2).encode(),
        json.dumps({**click, "payload": {"item_id": 7, "category": "Zürich"}}).encode(),  # \u00fc escapes
        json.dumps({**click, "payload": {"item_id": 7, "category": "Zürich"}}, ensure_ascii=False).encode(),
        b" \n" + text + b"\n ",
        b"\xef\xbb\xbf" + text,
        text + b"x",
        text[:-1],
        text.replace(b'"S"', b'"\xff"'),
        text.replace(b'"S"', b'"\xed\xa0\x80"'),  # a UTF-8 encoded surrogate
        text.replace(b'"S"', b'"\xc0\x80"'),  # an overlong encoding
        text.replace(b'"S"', b'"\\ud800"'),
        text.replace(b'"S"', b'"\\u00e9\\"\\/"'),
        text.replace(b'"item_id":7', b'"item_id":NaN'),
        text.replace(b'"item_id":7', b'"item_id":07'),
        text.replace(b'"item_id":7', b'"item_id":-0'),
        text.replace(b'"item_id":7', b'"item_id":7,"item_id":8'),
        text.replace(b'"item_id":7', b'"item_id":"7","item_id":8'),
        text.replace(b'"event_id":"e-1"', b'"event_id":"e-1","event_id":"e-2"'),
        text.replace(b'"payload":{', b'"payload":{"a":1},"payload":{'),
        text.replace(b'"payload":{', b'"payload":{"a":"\xff"},"payload":{'),
        text.replace(b'"payload":{', b'"payload":{"a":1e400},"payload":{'),
        text.replace(b'"source":{', b'"source":{"service":"a","service":'),
        b"[1, 2]",
        b"null",
        b'"a string"',
        b"{}",
        b"junk",
        b"",
        b"\x00",
        b" " * 300_000,
        orjson.dumps({**click, "payload": {"item_id": 7, "blob": "x" * 300_000}}),
    ]
    for number in (b"9223372036854775807", b"9223372036854775808", b"18446744073709551615", b"18446744073709551616"):
        cases.append(text.replace(b'"item_id":7', b'"item_id":7,"n":' + number))  # a flat payload
        cases.append(text.replace(b'"item_id":7', b'"item_id":7,"n":-' + number))
        cases.append(text.replace(b'"item_id":7', b'"item_id":' + number))
    for levels in (3, MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1, 254, 1024):
        inner = levels - 2
        deep = b"[" * inner + b"]" * inner
        cases.append(text.replace(b'"item_id":7', b'"item_id":7,"deep":' + deep))
    brackets = b'"' + b"[" * 40 + b'"'  # brackets inside a string: not nesting
    cases.append(text.replace(b'"S"', brackets))
    many = b"[" + b",".join([b"[]"] * 20) + b"]"  # 21 arrays side by side, nested 3 deep
    cases.append(text.replace(b'"item_id":7', b'"item_id":7,"a":' + many + b',"b":' + many))
    return cases


def _corpus() -> list[tuple[str, str, bytes | None]]:
    cases: list[tuple[str, str, bytes | None]] = []
    cases += [(f"valid-{i}", topic, value) for i, (topic, value) in enumerate(_valid_events())]
    cases += [(f"envelope-{i}", "clickstream", value) for i, value in enumerate(_malformed_envelopes())]
    cases += [(f"payload-{i}", topic, value) for i, (topic, value) in enumerate(_payload_kinds())]
    cases += [(f"ts-{i}", "clickstream", value) for i, value in enumerate(_timestamps())]
    cases += [(f"bytes-{i}", "clickstream", value) for i, value in enumerate(_strings_and_bytes())]
    cases.append(("no-value", "clickstream", None))
    # every type on every topic: same domain loads, another domain is a dead letter
    for event_type in REGISTRY:
        for spec in TOPICS:
            cases.append((f"route-{event_type}-{spec.name}", spec.name, orjson.dumps(_envelope(event_type, {}))))
            payload = _payload(event_type)
            cases.append(
                (f"route-full-{event_type}-{spec.name}", spec.name, orjson.dumps(_envelope(event_type, payload)))
            )
    return cases


CORPUS = _corpus()


def _domain(topic: str) -> str:
    return TOPICS_BY_NAME[topic].domain


def _accepted(topic: str, records: list[Record], limits: ContractConfig = LIMITS) -> PartitionState:
    state = PartitionState(topic, 3, _domain(topic), TOPIC_ID)
    state.accept_many(records, limits, NOW, NOW_TEXT, LoaderStats())
    return state


def _expect(state: PartitionState, topic: str, records: list[Record], limits: ContractConfig = LIMITS) -> None:
    """The state holds exactly the oracle's rows, dead letters and largest event lag."""
    rows, reasons, lags = [], [], [0.0]
    for record in records:
        row, lag, reason = reference(record, topic, 3, TOPIC_ID, limits, NOW, NOW_TEXT)
        if row is not None:
            rows.append(row)
            lags.append(lag)
        else:
            reasons.append((record.offset, reason, record.key, record.value or b""))
    assert bytes(state.body) == b"".join(rows)
    assert state.row_count == len(rows)
    assert [(d.offset, d.reason, d.key, d.value) for d in state.dead] == reasons
    assert state.max_event_lag_ms == max(lags)
    assert (state.first_offset, state.last_offset, state.next_offset) == (
        records[0].offset,
        records[-1].offset,
        records[-1].offset + 1,
    )
    assert state.nbytes == sum(len(record.value or b"") for record in records)


@pytest.mark.parametrize(("topic", "value"), [case[1:] for case in CORPUS], ids=[case[0] for case in CORPUS])
def test_each_message_comes_out_as_the_reference_path_makes_it(topic, value):
    records = [Record(41, value)]
    _expect(_accepted(topic, records), topic, records)


def test_the_whole_corpus_in_one_call_per_topic_keeps_order_rows_and_reasons():
    by_topic: dict[str, list[Record]] = {}
    for _, topic, value in CORPUS:
        records = by_topic.setdefault(topic, [])
        records.append(Record(100 + len(records), value))
    for topic, records in by_topic.items():
        _expect(_accepted(topic, records), topic, records)


def test_valid_events_take_the_fast_path_and_give_the_reference_row():
    earliest, latest = LIMITS.ts_min, NOW + LIMITS.ts_max_ahead
    for topic, value in _valid_events():
        records = [Record(9, value)]
        fast = FastRows(topic, 3, TOPIC_ID)
        (found,), unsure, oldest, nbytes = fast.rows(records, LIMITS, earliest, latest, NOW_TEXT)
        assert (unsure, nbytes) == (0, len(value)) and found is not None, value
        row, lag, _ = reference(records[0], topic, 3, TOPIC_ID, LIMITS, NOW, NOW_TEXT)
        assert msgspec.json.encode(found) + b"\n" == row
        assert oldest is not None and (NOW - oldest).total_seconds() * 1000 == lag


@pytest.mark.parametrize(
    "value",
    [
        orjson.dumps(_envelope("clickstream.click", {"item_id": 7, "category": 'a "quoted" word'})),  # escapes
        orjson.dumps(_envelope("clickstream.click", {"item_id": 7, "category": "x" * 2000})),  # long
        orjson.dumps(_envelope("clickstream.click", {"item_id": 7, "category": "c1\x85"})),
        orjson.dumps(_envelope("clickstream.click", {"item_id": 7}, user_id=5)),  # the reference converts it
        orjson.dumps(_envelope("clickstream.click", {"item_id": 7}, ts="2024-04-01T10:00:00Z")),
        orjson.dumps(_envelope("order.created", {"order_id": "o", "status": "S", "version": 1, "amount_cents": 1})),
    ],
    ids=["escapes", "long", "C1", "int user_id", "short ts", "other domain"],
)
def test_what_the_fast_path_is_unsure_of_it_leaves_to_the_reference(value):
    window = (LIMITS.ts_min, NOW + LIMITS.ts_max_ahead)
    found = FastRows("clickstream", 0, "t").rows([Record(0, value)], LIMITS, *window, "x")
    assert found == ([None], 1, None, len(value))


def test_other_limits_are_honoured_the_same_way():
    narrow = ContractConfig(max_string_chars=20)
    wide = ContractConfig(ts_min=datetime(1990, 1, 1, tzinfo=UTC), ts_max_ahead=timedelta(days=365 * 100))
    long_strings = ContractConfig(max_string_chars=1_000_000)  # above the message size limit
    for limits in (narrow, wide, long_strings):
        for _, topic, value in CORPUS:
            records = [Record(0, value)]
            _expect(_accepted(topic, records, limits), topic, records, limits)


def test_mutated_messages_agree_with_the_reference():
    """Random byte edits of valid events (seeded): whatever they parse as, both paths agree."""
    rng = random.Random(18)
    valid = _valid_events()
    alphabet = b'{}[]":,\\ 0123456789.eE+-truefalsnl\x00\x7f\xc2\x85\xff\xe9abc'
    by_topic: dict[str, list[Record]] = {}
    for _ in range(4000):
        topic, value = rng.choice(valid)
        edited = bytearray(value)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(edited))
            action = rng.random()
            if action < 0.4:
                edited[at] = rng.choice(alphabet)
            elif action < 0.7:
                del edited[at]
            else:
                edited.insert(at, rng.choice(alphabet))
        records = by_topic.setdefault(topic, [])
        records.append(Record(len(records), bytes(edited)))
    for topic, records in by_topic.items():
        _expect(_accepted(topic, records), topic, records)


def test_random_field_values_agree_with_the_reference():
    """Random envelopes built from the corpus's good and bad field values (seeded)."""
    rng = random.Random(7)
    pool: dict[str, list[Any]] = {
        "schema_version": [1, 1, 0, 2, True, None],
        "user_id": ["u1", None, "", 5],
        "session_id": ["s1", None, "", 5],
        "source": [{"service": "a", "host": "b"}, None, {}, [], {"service": None}],
        "ts": [TS, "2024-04-01T10:00:00Z", "1999-01-01T00:00:00.000Z", "2030-01-01T00:00:00.000Z", 1],
        "ingested_at": [None, None, "2024-04-01T10:00:02.000Z", "2024-04-01T10:00:02Z", "x"],
        "sequence": [None, 3, -1, 2**64 - 1, 1.0],
        "dedupe_key": [None, "d", "", 1],
    }
    by_topic: dict[str, list[Record]] = {}
    for _ in range(3000):
        event_type = rng.choice(list(REGISTRY))
        spec = REGISTRY[event_type]
        payload = _payload(event_type, rng.randrange(7), optional=rng.random() < 0.5)
        if payload and rng.random() < 0.3:
            name = rng.choice(list(payload))
            kind = {**spec.required, **spec.optional}[name]
            payload[name] = rng.choice(_WRONG[kind] + _SAMPLE[kind])
        fields = {name: rng.choice(values) for name, values in pool.items() if rng.random() < 0.25}
        topic = spec.topic if rng.random() < 0.9 else rng.choice(TOPICS).name
        records = by_topic.setdefault(topic, [])
        records.append(Record(len(records), orjson.dumps(_envelope(event_type, payload, **fields))))
    for topic, records in by_topic.items():
        _expect(_accepted(topic, records), topic, records)


def test_msgspec_writes_plain_strings_int64s_bools_and_nulls_byte_for_byte_as_orjson():
    """What the fast path lets msgspec encode itself (a flat payload, the envelope's fields)."""
    rng = random.Random(3)
    banned = {ord('"'), ord("\\"), 0x7F, *range(0x20), *range(0x80, 0xA0), *range(0xD800, 0xE000)}
    points = [p for p in [*range(0x20, 0x250), 0x2028, 0x2029, 0xFEFF, 0xFFFD, 0x1F3AE, 0x10FFFF] if p not in banned]
    for _ in range(3000):
        document = {}
        for _ in range(rng.randint(0, 6)):
            key = "".join(chr(rng.choice(points)) for _ in range(rng.randint(0, 8)))
            document[key] = rng.choice(
                [
                    "".join(chr(rng.choice(points)) for _ in range(rng.randint(0, 30))),
                    rng.randint(-(2**63), 2**63 - 1),
                    rng.randint(-1000, 1000),
                    rng.choice([True, False, None]),
                ]
            )
        assert msgspec.json.encode(document) == orjson.dumps(document), document


def test_the_fast_row_has_the_raw_tables_columns_in_order():
    assert RawRow.__struct_fields__ == RAW_COLUMNS


def test_each_field_kind_accepts_exactly_the_json_values_the_contract_accepts():
    values = ["s", "", 0, 7, -1, 2.5, 0.0, True, False, None, {}, {"a": 1}, [], [1]]
    for kind in contract._KINDS:
        for value in values:
            try:
                contract._check_kind("t", "f", value, kind)
                accepted = value is not None  # (a required field's None is refused before the kind check)
            except ContractError:
                accepted = False
            assert (type(value) in fast_rows._KIND_TYPES[kind]) == accepted, (kind, value)


def test_the_reference_reasons_are_the_ones_the_loader_gives():
    """A few dead letters with their reasons written out (the oracle itself must be right)."""
    cases = {
        b"[1, 2]": "message must be a JSON object, got list",
        orjson.dumps(_envelope("clickstream.click", {"item_id": "7"})): (
            "clickstream.click: payload field 'item_id' must be int, got str"
        ),
        orjson.dumps(_envelope("clickstream.click", {"item_id": True})): (
            "clickstream.click: payload field 'item_id' must be int, got bool"
        ),
        orjson.dumps(_envelope("clickstream.click", {"item_id": 1}, session_id=None)): (
            "clickstream.click: 'session_id' is required"
        ),
        orjson.dumps(_envelope("clickstream.click", {"item_id": 1}, sequence=-1)): (
            "'sequence' must be an integer from 0 to 2^64 - 1"
        ),
        orjson.dumps(_envelope("order.deleted", {"order_id": "o", "version": 1, "deleted_by": "x"})): (
            "wrong topic: order.deleted belongs to the orders domain (topic orders), "
            "not to topic clickstream (clickstream)"
        ),
        orjson.dumps(_envelope("clickstream.click", {"item_id": 1}, ts="1999-12-31T23:59:59.999Z")): (
            "'ts' 1999-12-31T23:59:59.999Z is before 2000-01-01T00:00:00.000Z, the earliest plausible time"
        ),
    }
    records = [Record(offset, value) for offset, value in enumerate(cases)]
    state = _accepted("clickstream", records)
    assert [letter.reason for letter in state.dead] == list(cases.values())
