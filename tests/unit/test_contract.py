"""The event contract's limits: strings, control characters, nesting, the plausible time window, topics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingestion.contract import MAX_NESTING, REGISTRY, ContractError, make_event, validate
from ingestion.raw_tables import encode_raw_row
from ingestion.topics import TOPICS, check_topic, topic_for
from settings import ConfigError, ContractConfig, contract_config

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
TS = datetime(2014, 4, 1, 10, 0, tzinfo=UTC)


def _click(**payload) -> dict:
    return make_event("clickstream.click", "c-1", TS, {"item_id": 7, **payload}, session_id="s1")


DEFAULT_LIMITS = ContractConfig()


def _reason(event: dict | bytes, limits: ContractConfig = DEFAULT_LIMITS) -> str:
    raw = event if isinstance(event, bytes) else orjson.dumps(event)
    with pytest.raises(ContractError) as caught:
        validate(raw, limits, NOW)
    return caught.value.reason


def _nested(levels: int) -> bytes:
    """A click whose payload field `deep` makes the whole message `levels` levels deep."""
    inner = levels - 2  # the envelope and the payload are levels 1 and 2
    deep = "[" * inner + "]" * inner
    return orjson.dumps(_click()).replace(b'"item_id":7', b'"item_id":7,"deep":' + deep.encode())


def test_a_plain_event_passes_and_encodes():
    envelope = validate(orjson.dumps(_click(category="S")), now=NOW)
    assert envelope.payload == {"item_id": 7, "category": "S"}
    row = orjson.loads(encode_raw_row(envelope, "2014-04-01 10:00:00.500", "clickstream", 0, 5, "t"))
    assert row["event_id"] == "c-1" and row["kafka_offset"] == 5


def test_string_length_limit_is_inclusive_and_configurable():
    assert validate(orjson.dumps(_click(category="x" * 1024)), now=NOW).payload["category"] == "x" * 1024
    assert _reason(_click(category="x" * 1025)) == "payload.category is 1025 characters long, over the limit of 1024"
    narrow = ContractConfig(max_string_chars=20)  # the longest other string is "eventhouse-producer" (19)
    assert _reason(_click(category="x" * 21), narrow) == "payload.category is 21 characters long, over the limit of 20"
    long_id = {**_click(), "event_id": "e" * 2000}
    assert _reason(long_id) == "'event_id' is 2000 characters long, over the limit of 1024"
    long_key = _click(**{"k" * 1100: 1})
    assert _reason(long_key).startswith("a key in payload is 1100 characters long")


@pytest.mark.parametrize(
    ("text", "shown", "position"),
    [
        ("a\nb", "'\\n'", 1),
        ("tab\there", "'\\t'", 3),
        ("nul\x00", "'\\x00'", 3),
        ("del\x7f", "'\\x7f'", 3),
        ("c1\x85", "'\\x85'", 2),
    ],
)
def test_control_characters_are_refused_wherever_they_are(text, shown, position):
    expected = f"payload.category contains the control character {shown} at {position}"
    assert _reason(_click(category=text)) == expected
    nested = _click(tags=[{"name": text}])
    assert _reason(nested) == f"payload.tags[0].name contains the control character {shown} at {position}"
    in_user = make_event("game.heartbeat", "h1", TS, {}, user_id="u" + text, session_id="s")
    assert _reason(in_user) == f"'user_id' contains the control character {shown} at {position + 1}"


def test_printable_unicode_and_escaped_backslashes_pass():
    for text in ("Zürich", "東京", "emoji 👩‍💻", "no-break\u00a0space", "back\\slash n", 'quote " and \\n literal'):
        assert validate(orjson.dumps(_click(category=text)), now=NOW).payload["category"] == text


def test_nesting_up_to_the_limit_passes_and_one_more_is_refused():
    assert validate(_nested(MAX_NESTING), now=NOW).payload["deep"]
    assert (
        _reason(_nested(MAX_NESTING + 1))
        == f"payload.deep{'[0]' * (MAX_NESTING - 2)} nests more than {MAX_NESTING} levels deep"
    )
    # orjson parses 254 and 1,024 levels (and encodes only up to 254): both are refused by the contract,
    # before either could fail in the loader's encoder.
    for levels in (254, 255, 1024):
        assert "nests more than 32 levels deep" in _reason(_nested(levels))
    assert _reason(_nested(100_000)).startswith("invalid JSON: ")


def test_the_time_window_bounds_ts_and_ingested_at():
    window = ContractConfig()  # 2000-01-01 .. clock + 24 h
    old = make_event(
        "clickstream.click", "o", datetime(1999, 12, 31, 23, 59, tzinfo=UTC), {"item_id": 1}, session_id="s"
    )
    assert (
        _reason(old, window)
        == "'ts' 1999-12-31T23:59:00.000Z is before 2000-01-01T00:00:00.000Z, the earliest plausible time"
    )
    assert validate(orjson.dumps({**old, "ts": "2000-01-01T00:00:00.000Z"}), window, NOW)
    ahead = {**old, "ts": "2026-11-30T12:00:00.001Z"}  # 24 h and 1 ms after NOW
    assert _reason(ahead, window) == "'ts' 2026-11-30T12:00:00.001Z is more than 24 h ahead of the loader's clock"
    assert validate(orjson.dumps({**old, "ts": "2026-11-30T12:00:00.000Z"}), window, NOW)
    year_2100 = {**_click(), "ts": "2100-01-01T00:00:00.000Z"}
    assert "is more than 24 h ahead" in _reason(year_2100)
    future_receipt = {**_click(), "ingested_at": "2100-01-01T00:00:00.000Z"}
    assert _reason(future_receipt).startswith("'ingested_at' 2100-01-01T00:00:00.000Z is more than 24 h ahead")
    wider = ContractConfig(ts_min=datetime(1990, 1, 1, tzinfo=UTC), ts_max_ahead=timedelta(days=365 * 100))
    assert validate(orjson.dumps(old), wider, NOW) and validate(orjson.dumps(year_2100), wider, NOW)


def test_contract_config_reads_its_variables_and_names_bad_ones():
    config = contract_config(
        {
            "EVENTHOUSE_MAX_STRING_CHARS": "64",
            "EVENTHOUSE_EVENT_TS_MIN": "2010-06-01",
            "EVENTHOUSE_EVENT_TS_MAX_AHEAD_HOURS": "0.5",
        }
    )
    assert config == ContractConfig(64, datetime(2010, 6, 1, tzinfo=UTC), timedelta(minutes=30))
    assert contract_config({}) == ContractConfig()
    with pytest.raises(ConfigError, match="EVENTHOUSE_EVENT_TS_MIN='yesterday' is not a date"):
        contract_config({"EVENTHOUSE_EVENT_TS_MIN": "yesterday"})
    with pytest.raises(ConfigError, match="EVENTHOUSE_MAX_STRING_CHARS='many' is not an integer"):
        contract_config({"EVENTHOUSE_MAX_STRING_CHARS": "many"})


def test_envelope_fields_the_raw_table_could_not_hold_are_refused():
    too_big = orjson.dumps({**_click(), "sequence": 1}).replace(b'"sequence":1', b'"sequence":18446744073709551616')
    assert _reason(too_big) == "'sequence' must be an integer from 0 to 2^64 - 1"
    assert _reason({**_click(), "sequence": -1}) == "'sequence' must be an integer from 0 to 2^64 - 1"
    assert validate(orjson.dumps({**_click(), "sequence": 2**64 - 1}), now=NOW).sequence == 2**64 - 1
    assert _reason({**_click(), "dedupe_key": {"a": 1}}) == "'dedupe_key' must be a string, got dict"
    assert _reason({**_click(), "source": {"service": ["x"]}}) == "'service' must be a string, got list"


def test_an_event_must_arrive_on_a_topic_of_its_domain():
    check_topic("clickstream.click", "clickstream")
    check_topic("auth.login", "shop.purchase")  # another economy topic: same domain, same raw table
    with pytest.raises(ContractError) as caught:
        check_topic("order.created", "clickstream")
    assert caught.value.reason == (
        "wrong topic: order.created belongs to the orders domain (topic orders), not to topic clickstream (clickstream)"
    )


@pytest.mark.parametrize(
    ("event_type", "topic"),
    [
        ("clickstream.purchase", "clickstream"),
        ("game.heartbeat", "game.events"),
        ("auth.profile_updated", "auth.events"),
        ("mission.claim", "mission.claim"),
        ("game.session", "game.session"),  # an economy event despite its namespace
        ("order.deleted", "orders"),
    ],
)
def test_each_event_type_is_published_on_the_topic_the_registry_names(event_type, topic):
    assert topic_for(event_type).name == topic


def test_every_registered_type_routes_to_a_topic_of_its_own_domain():
    routed = {name: topic_for(name) for name in REGISTRY}
    assert {name: spec.domain for name, spec in routed.items()} == {n: t.domain for n, t in REGISTRY.items()}
    # every declared topic carries at least one event type
    assert {spec.name for spec in routed.values()} == {spec.name for spec in TOPICS}


def test_an_unknown_event_type_has_no_topic_and_says_so():
    with pytest.raises(ContractError, match="unknown event type 'payment.made': not in the registry"):
        topic_for("payment.made")
