"""Pure helpers of the HTTP interface: statement shapes, formats, bodies, errors."""

from __future__ import annotations

import gzip
import zlib

import lz4.frame
import pytest
import zstandard
from clickhouse_connect.driver.buffer import ResponseBuffer
from clickhouse_connect.driver.query import QueryContext
from clickhouse_connect.driver.transform import NativeTransform

from stack.clickhouse_protocol import (
    ClickHouseError,
    decompress_chunks,
    leading_keyword,
    native_header_block,
    parse_describe,
    parse_multipart,
    returns_result_set,
    settings_statement,
    split_insert,
    streamable_statement,
    strip_trailing_format,
    trailing_format,
)


@pytest.mark.parametrize(
    ("sql", "keyword"),
    [
        ("SELECT 1", "SELECT"),
        ("  -- a comment\n/* block */ with x as (select 1) select * from x", "WITH"),
        ("(SELECT 1) UNION ALL (SELECT 2)", "("),
        ("insert into t values (1)", "INSERT"),
        ("", ""),
    ],
)
def test_leading_keyword(sql, keyword):
    assert leading_keyword(sql) == keyword


def test_result_sets_and_streaming():
    assert returns_result_set("SHOW TABLES") and not streamable_statement("SHOW TABLES")
    assert returns_result_set("EXISTS DATABASE x")
    assert returns_result_set("select 1") and streamable_statement("select 1")
    assert not returns_result_set("CREATE TABLE t (a Int8) ENGINE = Memory")
    assert not returns_result_set("SET max_threads = 1")
    assert not returns_result_set("INSERT INTO t VALUES (1)")


@pytest.mark.parametrize(
    ("sql", "fmt"),
    [
        ("SELECT 1 FORMAT JSON", "JSON"),
        ("SELECT 1\n FORMAT Native;", "Native"),
        ("SELECT 1 FORMAT JSONEachRow SETTINGS max_threads = 1", "JSONEachRow"),
        ("SELECT formatDateTime(now(), '%Y')", None),
        ("SELECT 1", None),
    ],
)
def test_trailing_format(sql, fmt):
    assert trailing_format(sql) == fmt


def test_strip_trailing_format():
    assert strip_trailing_format("SELECT 1 AS a\n FORMAT Native") == "SELECT 1 AS a"
    assert strip_trailing_format("SELECT 1") == "SELECT 1"


def test_split_insert_finds_statement_format_and_data_offset():
    body = b"INSERT INTO db.t (a, b) FORMAT TabSeparated\n1\tx\n2\ty\n"
    head = split_insert(body)
    assert head is not None
    assert head.statement == "INSERT INTO db.t (a, b)"
    assert head.data_format == "TabSeparated"
    assert body[head.data_offset :] == b"1\tx\n2\ty\n"


def test_split_insert_keeps_settings_and_skips_comments():
    body = b"/* loader */ INSERT INTO t SETTINGS insert_deduplication_token = 'p:0:1-9' FORMAT Native\n\x02\x00"
    head = split_insert(body)
    assert head.statement == "INSERT INTO t SETTINGS insert_deduplication_token = 'p:0:1-9'"
    assert head.data_format == "Native"
    assert body[head.data_offset :] == b"\x02\x00"


def test_split_insert_leaves_values_and_non_inserts_alone():
    assert split_insert(b"INSERT INTO t VALUES (1, 'FORMAT x')") is None
    assert split_insert(b"SELECT 1 FORMAT JSON") is None
    assert split_insert(b"INSERT INTO t SELECT * FROM s") is None


def test_native_header_block_is_read_by_clickhouse_connect():
    block = native_header_block([("id", "UInt64"), ("name", "LowCardinality(String)"), ("ts", "DateTime64(3)")])
    context = QueryContext()
    result = NativeTransform().parse_response(ResponseBuffer(_Source(block)), context)
    assert result.column_names == ("id", "name", "ts")
    assert [t.name for t in result.column_types] == ["UInt64", "LowCardinality(String)", "DateTime64(3)"]
    assert result.result_rows == []


class _Source:
    def __init__(self, data: bytes):
        self.data = data
        self.last_message = None
        self.exception_tag = None

    @property
    def gen(self):
        yield self.data

    def close(self):
        pass


def test_parse_describe_unescapes():
    assert parse_describe(b"a\tUInt8\t\t\t\t\t\nweird\\tname\tString\t\t\t\t\t\n") == [
        ("a", "UInt8"),
        ("weird\tname", "String"),
    ]


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("zstd", lambda d: zstandard.ZstdCompressor().compress(d)),
        ("lz4", lz4.frame.compress),
        (None, lambda d: d),
    ],
)
def test_decompress_handles_concatenated_frames_split_anywhere(encoding, encode):
    parts = [b"first block " * 100, b"second block " * 50, b"third"]
    stream = b"".join(encode(p) for p in parts)
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    assert b"".join(decompress_chunks(pieces, encoding)) == b"".join(parts)


def test_decompress_errors_name_the_encoding():
    with pytest.raises(ClickHouseError) as error:
        list(decompress_chunks([b"definitely not gzip"], "gzip"))
    assert error.value.code == 36 and "as gzip" in error.value.message
    with pytest.raises(ClickHouseError) as unknown:
        list(decompress_chunks([b"x"], "snappy"))
    assert "Unknown Content-Encoding 'snappy'" in unknown.value.message


def test_parse_multipart_fields_and_rejects_files():
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="query"\r\n\r\nSELECT {{p:String}}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="param_p"\r\n\r\nhello\r\n--{boundary}--\r\n'
    ).encode()
    fields = parse_multipart(body, f"multipart/form-data; boundary={boundary}")
    assert fields == {"query": b"SELECT {p:String}", "param_p": b"hello"}
    with_file = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="ext"; filename="x.tsv"\r\n\r\n1\r\n--{boundary}--\r\n'
    ).encode()
    with pytest.raises(ClickHouseError) as error:
        parse_multipart(with_file, f"multipart/form-data; boundary={boundary}")
    assert error.value.code == 48


def test_settings_statement_quotes_values_and_rejects_bad_names():
    assert settings_statement({"max_threads": "2", "x_y": "it's"}) == "SET max_threads = '2', x_y = 'it\\'s'"
    with pytest.raises(ClickHouseError) as error:
        settings_statement({"bad name; DROP": "1"})
    assert error.value.code == 115


def test_engine_errors_keep_code_name_and_text():
    error = ClickHouseError.from_engine(
        "Streaming query failed: Code: 60. DB::Exception: Unknown table 'x'. (UNKNOWN_TABLE) (version 26.9.2.1)"
    )
    assert (error.code, error.name, error.http_status) == (60, "UNKNOWN_TABLE", 404)
    assert error.wire_body().startswith("Code: 60. DB::Exception: Unknown table 'x'.")
    plain = ClickHouseError.from_engine("something odd")
    assert (plain.code, plain.http_status) == (1001, 500)
    assert ClickHouseError(62, "Empty query", "SYNTAX_ERROR").wire_body() == (
        "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)\n"
    )
