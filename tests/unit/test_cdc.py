"""CDC without servers: the pgoutput parser on bytes captured from PostgreSQL 15, the Debezium
change events built from them, and how the loader accepts (or dead-letters) a change event."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pytest

from ingestion.cdc_rows import encode_cdc_row
from ingestion.cdc_tables import cdc_ddl, cdc_table_for_topic
from ingestion.contract import ContractError
from oltp import pgoutput
from oltp.debezium import UNAVAILABLE_VALUE, TableShape, change_event, typed
from oltp.leaderboard import LeaderboardCollector

# Captured from the embedded PostgreSQL 15 (`pg_logical_slot_peek_binary_changes(slot, NULL, NULL,
# 'proto_version', '1', 'publication_names', 'eventhouse_cdc')`, TimeZone UTC) after:
#   BEGIN; INSERT INTO users VALUES ('fx1', 'Zoë ☃', 'JP', '2024-02-29 23:59:59.999+00', '2024-03-01 00:00:00+00');
#          UPDATE users SET country = NULL WHERE user_id = 'fx1'; COMMIT;
#   DELETE FROM users WHERE user_id = 'fx1';
#   INSERT INTO leaderboard VALUES ('fx', '3-4', 1234, '2024-03-01 00:00:00+00');
#   TRUNCATE leaderboard;
# as (the slot's lsn column, the message in hex).
CAPTURED = [
    ("0/199A698", "42000000000199a7b80003047690b7a319000002e5"),
    (
        "0/199A698",
        "52000040097075626c69630075736572730066000501757365725f69640000000019ffffffff01646973706c61795f6e616d65"
        "0000000019ffffffff01636f756e7472790000000019ffffffff01637265617465645f617400000004a0ffffffff0175706461"
        "7465645f617400000004a0ffffffff",
    ),
    (
        "0/199A698",
        "49000040094e0005740000000366783174000000085a6fc3ab20e2988374000000024a50740000001a323032342d30322d3239"
        "2032333a35393a35392e3939392b30307400000016323032342d30332d30312030303a30303a30302b3030",
    ),
    (
        "0/199A730",
        "55000040094f0005740000000366783174000000085a6fc3ab20e2988374000000024a50740000001a323032342d30322d3239"
        "2032333a35393a35392e3939392b30307400000016323032342d30332d30312030303a30303a30302b30304e00057400000003"
        "66783174000000085a6fc3ab20e298836e740000001a323032342d30322d32392032333a35393a35392e3939392b3030740000"
        "0016323032342d30332d30312030303a30303a30302b3030",
    ),
    ("0/199A7E8", "4300000000000199a7b8000000000199a7e80003047690b7a319"),
    ("0/199A7E8", "42000000000199a8800003047690b7a5af000002e6"),
    (
        "0/199A7E8",
        "44000040094f0005740000000366783174000000085a6fc3ab20e298836e740000001a323032342d30322d32392032333a3539"
        "3a35392e3939392b30307400000016323032342d30332d30312030303a30303a30302b3030",
    ),
    ("0/199A8B0", "4300000000000199a880000000000199a8b00003047690b7a5af"),
    ("0/199B510", "42000000000199b5400003047690b7ab72000002e8"),
    (
        "0/199B510",
        "52000040187075626c6963006c6561646572626f6172640066000401757365725f69640000000019ffffffff0173746167655f"
        "69640000000019ffffffff01626573745f74696d655f6d730000000014ffffffff0161636869657665645f617400000004a0ff"
        "ffffff",
    ),
    ("0/199B510", "54000000010000004018"),
    ("0/199B6B0", "4300000000000199b540000000000199b6b00003047690b7ab72"),
]
MESSAGES = [pgoutput.parse(bytes.fromhex(data)) for _, data in CAPTURED]
USERS_ROW = ("fx1", "Zoë ☃", "JP", "2024-02-29 23:59:59.999+00", "2024-03-01 00:00:00+00")


def test_pgoutput_parses_each_message_type_as_postgres_sent_it():
    begin, relation, insert, update, commit, _, delete, _, _, leaderboard, truncate, _ = MESSAGES
    assert isinstance(begin, pgoutput.Begin)
    assert (begin.final_lsn, begin.xid) == (0x199A7B8, 741)
    assert begin.commit_time.date() == date(2026, 11, 30)  # the day these bytes were captured
    assert relation == pgoutput.Relation(
        0x4009,
        "public",
        "users",
        "f",  # REPLICA IDENTITY FULL: every column is part of the identity
        tuple(
            pgoutput.Column(name, oid, -1, True)
            for name, oid in (
                ("user_id", 25),
                ("display_name", 25),
                ("country", 25),
                ("created_at", 1184),
                ("updated_at", 1184),
            )
        ),
    )
    assert insert == pgoutput.Insert(0x4009, USERS_ROW)
    assert update == pgoutput.Update(0x4009, USERS_ROW, False, (*USERS_ROW[:2], None, *USERS_ROW[3:]))
    assert commit == pgoutput.Commit(0, 0x199A7B8, 0x199A7E8, begin.commit_time)
    assert delete == pgoutput.Delete(0x4009, (*USERS_ROW[:2], None, *USERS_ROW[3:]), False)
    assert leaderboard.name == "leaderboard" and [c.type_oid for c in leaderboard.columns] == [25, 25, 20, 1184]
    assert truncate == pgoutput.Truncate((0x4018,), cascade=False, restart_identity=False)


def test_pgoutput_refuses_what_is_not_its_format():
    with pytest.raises(pgoutput.PgOutputError, match="more bytes expected"):
        pgoutput.parse(bytes.fromhex(CAPTURED[0][1])[:-2])
    with pytest.raises(pgoutput.PgOutputError, match="unexpected bytes"):
        pgoutput.parse(bytes.fromhex(CAPTURED[0][1]) + b"\0")
    with pytest.raises(pgoutput.PgOutputError, match="unknown pgoutput message type 'Z'"):
        pgoutput.parse(b"Z")
    with pytest.raises(pgoutput.PgOutputError, match="empty"):
        pgoutput.parse(b"")
    # an unchanged TOASTed column ('u') is not a value
    toast = pgoutput.parse(b"I\0\0\0\x01N\0\x02t\0\0\0\x01au")
    assert toast.new == ("a", pgoutput.UNCHANGED_TOAST)


def test_lsn_text_round_trips():
    for text in ("0/199A698", "16/B374D848", "0/0", "FFFFFFFF/FFFFFFFF"):
        assert pgoutput.lsn_text(pgoutput.lsn_int(text)) == text
    assert pgoutput.lsn_int("1/0") == 2**32


def _users_shape(relation: pgoutput.Relation) -> TableShape:
    return TableShape("public", "users", tuple((c.name, c.type_oid) for c in relation.columns), ("user_id",))


def test_an_update_becomes_a_debezium_change_event():
    relation, update = MESSAGES[1], MESSAGES[3]
    shape = _users_shape(relation)
    before, after = shape.row(update.old), shape.row(update.new)
    event = change_event(
        shape,
        "u",
        before,
        after,
        lsn=pgoutput.lsn_int("0/199A730"),
        tx_id=741,
        source_ts_ms=1_764_480_000_123,
        database="eventhouse",
        topic_prefix="cdc",
        now_ms=1_764_480_001_000,
    )
    assert orjson.loads(event.key) == {"user_id": "fx1"}
    assert orjson.loads(event.value) == {
        "before": {
            "user_id": "fx1",
            "display_name": "Zoë ☃",
            "country": "JP",
            "created_at": "2024-02-29T23:59:59.999Z",
            "updated_at": "2024-03-01T00:00:00Z",
        },
        "after": {
            "user_id": "fx1",
            "display_name": "Zoë ☃",
            "country": None,
            "created_at": "2024-02-29T23:59:59.999Z",
            "updated_at": "2024-03-01T00:00:00Z",
        },
        "source": {
            "version": "eventhouse-cdc-1",
            "connector": "postgresql",
            "name": "cdc",
            "ts_ms": 1_764_480_000_123,
            "snapshot": "false",
            "db": "eventhouse",
            "schema": "public",
            "table": "users",
            "txId": 741,
            "lsn": 0x199A730,
        },
        "op": "u",
        "ts_ms": 1_764_480_001_000,
    }
    assert event.lsn == 0x199A730


def test_an_unchanged_toasted_column_keeps_the_old_value_or_says_it_is_unavailable():
    shape = TableShape("public", "t", (("id", 25), ("doc", 25)), ("id",))
    old = shape.row(("1", "big"))
    assert shape.row(("1", pgoutput.UNCHANGED_TOAST), fallback=old) == {"id": "1", "doc": "big"}
    assert shape.row(("1", pgoutput.UNCHANGED_TOAST)) == {"id": "1", "doc": UNAVAILABLE_VALUE}


@pytest.mark.parametrize(
    ("text", "oid", "expected"),
    [
        ("t", 16, True),
        ("false", 16, False),  # a ::text cast (the snapshot) prints bool as true/false
        ("-32768", 21, -32768),
        ("9223372036854775807", 20, 9223372036854775807),
        ("1.5", 701, 1.5),
        ("12.50", 1700, "12.50"),  # decimal.handling.mode=string
        ("2024-02-29 23:59:59.999+00", 1184, "2024-02-29T23:59:59.999Z"),
        ("2024-03-01 05:30:00+05:30", 1184, "2024-03-01T00:00:00Z"),
        ("2024-03-01 00:00:00.000001", 1114, 1_709_251_200_000_001),  # MicroTimestamp
        ("1970-01-11", 1082, 10),  # Date: days since the epoch
        ("infinity", 1184, "infinity"),
        ("a b", 25, "a b"),
        (None, 23, None),
    ],
)
def test_values_are_typed_as_debezium_types_them(text, oid, expected):
    assert typed(text, oid) == expected


def _change(op: str = "u", **source) -> bytes:
    row = {"user_id": "u1", "display_name": "Ann"}
    event = {
        "before": row if op == "d" else None,
        "after": None if op == "d" else row,
        "source": {"schema": "public", "table": "users", "lsn": 42, "ts_ms": 1_704_067_200_000, "txId": 7, **source},
        "op": op,
        "ts_ms": 0,
    }
    return orjson.dumps(event)


USERS = cdc_table_for_topic("cdc.public.users")


def test_a_change_event_becomes_a_cdc_row():
    row = orjson.loads(encode_cdc_row(USERS, _change(), "cdc.public.users", 0, 5, "tid"))
    assert row == {
        "user_id": "u1",
        "row_json": {"user_id": "u1", "display_name": "Ann"},
        "op": "u",
        "lsn": 42,
        "is_deleted": 0,
        "source_ts": "2024-01-01 00:00:00.000",
        "tx_id": 7,
        "kafka_topic": "cdc.public.users",
        "kafka_partition": 0,
        "kafka_offset": 5,
        "kafka_topic_id": "tid",
    }
    deleted = orjson.loads(encode_cdc_row(USERS, _change("d"), "cdc.public.users", 0, 6, "tid"))
    assert (deleted["is_deleted"], deleted["row_json"]["display_name"]) == (1, "Ann")
    truncated = orjson.loads(
        encode_cdc_row(USERS, orjson.dumps({"op": "t", "source": orjson.loads(_change())["source"]}), "t", 0, 7, "")
    )
    assert (truncated["user_id"], truncated["is_deleted"], truncated["row_json"]) == ("", 1, {})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1]", "must be a JSON object, not list"),
        (_change("x"), "'op' is 'x'"),
        (_change(table="products"), "wrong topic: a change of public.products on topic cdc.public.users"),
        (_change(lsn="0/1"), "'source.lsn' is '0/1'"),
        (_change(lsn=-1), "'source.lsn' is -1"),
        (_change(ts_ms=None), "'source.ts_ms' is None"),
        (_change(txId="7"), "'source.txId' is '7'"),
        (orjson.dumps({"op": "c", "source": {"schema": "public", "table": "users", "lsn": 1, "ts_ms": 1}}), "'after'"),
        (_change().replace(b'"user_id":"u1"', b'"user_id":""'), "key column after.user_id is ''"),
        (b"{" + b'"x":"' + b"a" * 300_000 + b'"}', "over the 262144-byte limit"),
    ],
)
def test_a_malformed_change_event_is_refused_with_its_reason(value, reason):
    with pytest.raises(ContractError) as refused:
        encode_cdc_row(USERS, value, "cdc.public.users", 0, 0, "")
    assert reason in refused.value.reason


def test_cdc_tables_are_versioned_by_lsn_with_a_delete_flag_and_keyed_by_the_primary_key():
    ddl = cdc_ddl("raw", cdc_table_for_topic("cdc.public.leaderboard"))
    assert "ENGINE = ReplacingMergeTree(lsn, is_deleted)" in ddl
    assert "ORDER BY (`user_id`, `stage_id`)" in ddl
    assert "loaded_at DateTime64(3, 'UTC') DEFAULT now64(3)" in ddl
    assert "TTL" not in ddl  # state, not events: an unchanged row must not expire


def test_the_leaderboard_keeps_each_players_lowest_time_attack_time_per_stage():
    def clear(user, chapter, stage, ms, ts, mode="time_attack"):
        payload = {"chapter": chapter, "stage": stage, "mode": mode, "clear_time_ms": ms}
        return {"event_type": "game.stage_clear", "user_id": user, "ts": ts, "payload": payload}

    collector = LeaderboardCollector()
    events = [
        clear("p1", 2, 5, 9000, "2024-01-01T10:00:00.000Z"),
        clear("p1", 2, 5, 7000, "2024-01-02T10:00:00.000Z"),
        clear("p1", 2, 5, 7000, "2024-01-01T09:00:00.000Z"),  # a tie set earlier (a late event) holds it
        clear("p1", 2, 5, 100, "2024-01-03T10:00:00.000Z", mode="story"),
        clear("p2", 1, 1, 500, "2024-01-01T10:00:00.000Z"),
        {"event_type": "game.stage_fail", "user_id": "p3", "payload": {}},
    ]
    assert list(collector.passing(events)) == events
    assert collector.bests == {
        ("p1", "2-5"): (7000, "2024-01-01T09:00:00.000Z"),
        ("p2", "1-1"): (500, "2024-01-01T10:00:00.000Z"),
    }


def test_timestamps_in_captured_rows_are_utc():
    shape = _users_shape(MESSAGES[1])
    row = shape.row(MESSAGES[2].new)
    moment = datetime.fromisoformat(row["created_at"].replace("Z", "+00:00"))
    assert moment == datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC)
