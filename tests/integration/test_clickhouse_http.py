"""The embedded server against clickhouse-connect as the protocol oracle, plus raw HTTP edge cases."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import zlib
from datetime import datetime

import clickhouse_connect
import lz4.frame
import numpy as np
import pandas as pd
import pytest
import zstandard
from clickhouse_connect.driver.exceptions import DatabaseError

pytestmark = pytest.mark.integration

EVENTS_DDL = """
CREATE TABLE events (
    id UInt64,
    user_id String,
    kind LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    amount Float64,
    qty Nullable(Int32),
    tags Array(String),
    day Date
) ENGINE = MergeTree ORDER BY id
"""
COLUMNS = ["id", "user_id", "kind", "ts", "amount", "qty", "tags", "day"]


def _rows(n: int, offset: int = 0) -> list[tuple]:
    base = datetime(2024, 3, 1)
    return [
        (
            offset + i,
            f"u{(offset + i) % 997}",
            ("click", "buy", "view")[i % 3],
            pd.Timestamp(base) + pd.Timedelta(milliseconds=i * 37),
            round(i * 0.25, 2),
            None if i % 5 == 0 else i % 100,
            [f"t{i % 4}"] * (i % 3),
            (base + pd.Timedelta(days=i % 30)).date(),
        )
        for i in range(n)
    ]


def _raw(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_query_and_command(client):
    assert client.server_version.startswith("26.")
    assert client.command("SELECT 1 + 1") == 2
    result = client.query("SELECT number AS n, toString(number) AS s FROM numbers(5)")
    assert result.column_names == ("n", "s")
    assert result.result_rows == [(i, str(i)) for i in range(5)]
    assert client.command("SELECT 'a', 'b'") == ["a", "b"]


@pytest.mark.parametrize("compression", [None, "lz4", "zstd", "gzip"])
def test_insert_100k_rows_with_each_compression(embedded_stack, database, compression):
    client = embedded_stack.client(database=database, compress=compression or False)
    client.command(EVENTS_DDL)
    rows = _rows(100_000)
    summary = client.insert("events", rows, column_names=COLUMNS)
    assert summary.written_rows == 100_000
    count, distinct_ids, amount_sum, null_qty = client.query(
        "SELECT count(), uniqExact(id), sum(amount), countIf(qty IS NULL) FROM events"
    ).result_rows[0]
    assert (count, distinct_ids) == (100_000, 100_000)
    assert amount_sum == pytest.approx(sum(r[4] for r in rows))
    assert null_qty == 20_000
    back = client.query("SELECT * FROM events WHERE id IN (0, 1, 99999) ORDER BY id").result_rows
    for got, want in zip(back, [rows[0], rows[1], rows[99_999]], strict=True):
        assert got[0:3] == want[0:3]
        assert got[3].replace(tzinfo=None) == want[3].to_pydatetime()
        assert got[4:] == want[4:]


def test_dataframe_round_trip(client):
    client.command(EVENTS_DDL)
    frame = pd.DataFrame(
        {
            "id": np.arange(1000, dtype=np.uint64),
            "user_id": [f"u{i}" for i in range(1000)],
            "kind": ["click"] * 1000,
            "ts": pd.date_range("2024-01-01", periods=1000, freq="s"),
            "amount": np.linspace(0, 1, 1000),
            "qty": pd.array([None if i % 7 == 0 else i for i in range(1000)], dtype="Int32"),
            "tags": [["a", "b"]] * 1000,
            "day": [pd.Timestamp("2024-01-01").date()] * 1000,
        }
    )
    client.insert_df("events", frame)
    back = client.query_df("SELECT * FROM events ORDER BY id")
    assert len(back) == 1000
    assert back["id"].tolist() == frame["id"].tolist()
    assert back["amount"].tolist() == pytest.approx(frame["amount"].tolist())
    assert back["qty"].isna().sum() == frame["qty"].isna().sum()
    assert back["tags"].iloc[3] == ["a", "b"] or list(back["tags"].iloc[3]) == ["a", "b"]


def test_query_parameters_small_and_large(embedded_stack, database):
    client = embedded_stack.client(database=database)
    assert client.query("SELECT {x:UInt32} + 1, {s:String}", parameters={"x": 41, "s": "it's"}).result_rows == [
        (42, "it's")
    ]
    # Large parameters travel as multipart form data.
    form_client = embedded_stack.client(database=database, form_encode_query_params=True)
    big = "x" * 300_000
    assert form_client.query("SELECT length({p:String})", parameters={"p": big}).result_rows == [(300_000,)]
    assert client.query("SELECT length({p:String})", parameters={"p": big}).result_rows == [(300_000,)]


def test_session_state_persists_across_requests(embedded_stack, database):
    default = embedded_stack.client(database=database, autogenerate_session_id=False).command(
        "SELECT getSetting('max_block_size')"
    )
    changed = default + 1
    client = embedded_stack.client(database=database, session_id="persist-test")
    client.command(f"SET max_block_size = {changed}")
    assert client.command("SELECT getSetting('max_block_size')") == changed
    client.command("CREATE TEMPORARY TABLE scratch (a Int32)")
    client.command("INSERT INTO scratch VALUES (7), (8)")
    assert client.command("SELECT sum(a) FROM scratch") == 15
    # Another session does not see it.
    other = embedded_stack.client(database=database, session_id="persist-other")
    with pytest.raises(DatabaseError) as error:
        other.command("SELECT * FROM scratch")
    assert error.value.code == 60
    assert other.command("SELECT getSetting('max_block_size')") == default


def test_url_setting_applies_to_one_request_only(embedded_stack, database):
    client = embedded_stack.client(database=database, session_id="one-request")
    default = client.command("SELECT getSetting('max_block_size')")
    assert client.command("SELECT getSetting('max_block_size')", settings={"max_block_size": 1234}) == 1234
    assert client.command("SELECT getSetting('max_block_size')") == default
    # Session-less requests never leak settings either.
    sessionless = embedded_stack.client(database=database, autogenerate_session_id=False)
    assert sessionless.command("SELECT getSetting('max_block_size')", settings={"max_block_size": 99}) == 99
    assert sessionless.command("SELECT getSetting('max_block_size')") == default


def test_insert_settings_apply_to_that_insert_only(embedded_stack, database):
    """Per-insert settings (a dedup token, a format option) act on the insert and do not leak."""
    client = embedded_stack.client(database=database, autogenerate_session_id=False)
    client.command(
        "CREATE TABLE dedup (id UInt32, doc String) ENGINE = MergeTree ORDER BY id "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    body = b'{"id": 1, "doc": {"a": [1, 2]}}\n{"id": 2, "doc": {"b": null}}\n'
    as_strings = {"input_format_json_read_objects_as_strings": 1}
    for token in ("t-1", "t-1", "t-2"):
        client.raw_insert(
            "dedup",
            ["id", "doc"],
            insert_block=body,
            fmt="JSONEachRow",
            settings={"insert_deduplication_token": token, **as_strings},
        )
    assert client.query("SELECT id, doc FROM dedup ORDER BY id, doc").result_rows == [
        (1, '{"a": [1, 2]}'),
        (1, '{"a": [1, 2]}'),
        (2, '{"b": null}'),
        (2, '{"b": null}'),
    ]
    assert client.command("SELECT getSetting('insert_deduplication_token')") == ""


def test_errors_carry_clickhouse_codes(embedded_stack, client):
    with pytest.raises(DatabaseError) as unknown_table:
        client.query("SELECT * FROM no_such_table")
    assert unknown_table.value.code == 60
    with pytest.raises(DatabaseError) as syntax:
        client.command("SELEC 1")
    assert syntax.value.code == 62
    with pytest.raises(DatabaseError) as unknown_setting:
        client.command("SELECT 1", settings={"no_such_setting_xyz": 1})
    assert unknown_setting.value.code == 115
    status, headers, body = _raw(embedded_stack.clickhouse_port, "POST", "/", b"SELECT * FROM no_such_table")
    assert status == 404
    assert headers["X-ClickHouse-Exception-Code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception:") and b"(UNKNOWN_TABLE)" in body
    with pytest.raises(Exception) as auth:
        clickhouse_connect.get_client(host="127.0.0.1", port=embedded_stack.clickhouse_port, password="wrong")
    assert "516" in str(auth.value)


def test_eight_concurrent_clients(embedded_stack, database):
    setup = embedded_stack.client(database=database)
    setup.command("CREATE TABLE concurrent (worker UInt8, n UInt64) ENGINE = MergeTree ORDER BY (worker, n)")
    errors: list[BaseException] = []
    sums: dict[int, int] = {}

    def work(worker: int) -> None:
        try:
            c = embedded_stack.client(database=database)
            for batch in range(5):
                c.insert("concurrent", [(worker, batch * 1000 + i) for i in range(1000)], column_names=["worker", "n"])
            sums[worker] = c.command(f"SELECT count() FROM concurrent WHERE worker = {worker}")
            assert c.query("SELECT sum(number) FROM numbers(1000000)").result_rows == [(499999500000,)]
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sums == {w: 5000 for w in range(8)}
    assert setup.command("SELECT count() FROM concurrent") == 40_000


def test_large_result_streams_in_blocks(embedded_stack):
    port = embedded_stack.clickhouse_port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/?default_format=TabSeparated", body=b"SELECT number FROM numbers(2000000)")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("X-ClickHouse-Format") == "TabSeparated"
    total = 0
    lines = 0
    while chunk := response.read(1 << 16):
        total += len(chunk)
        lines += chunk.count(b"\n")
    conn.close()
    assert lines == 2_000_000
    client = embedded_stack.client()
    with client.query_rows_stream("SELECT number FROM numbers(3000000)") as stream:
        assert sum(1 for _ in stream) == 3_000_000


def test_error_in_the_middle_of_a_stream_reaches_the_client(embedded_stack):
    client = embedded_stack.client()
    with pytest.raises(DatabaseError) as error:
        _ = client.query(
            "SELECT throwIf(number = 500000, 'boom at half a million') FROM numbers(1000000) "
            "SETTINGS max_block_size = 1000"
        ).result_rows
    assert "boom at half a million" in str(error.value)
    assert client.command("SELECT 1") == 1


def test_empty_result_keeps_column_names_and_types(client):
    client.command(EVENTS_DDL)
    result = client.query("SELECT id, kind, ts FROM events WHERE id > 10")
    assert result.column_names == ("id", "kind", "ts")
    assert [t.name for t in result.column_types] == ["UInt64", "LowCardinality(String)", "DateTime64(3, 'UTC')"]
    assert result.result_rows == []


def test_response_headers(embedded_stack):
    status, headers, body = _raw(
        embedded_stack.clickhouse_port, "POST", "/?query_id=my-query-1&default_format=JSON", b"SELECT 1 AS one"
    )
    assert status == 200
    assert headers["X-ClickHouse-Query-Id"] == "my-query-1"
    assert headers["X-ClickHouse-Format"] == "JSON"
    # The embedded server runs in UTC and reports the zone its engine uses.
    assert headers["X-ClickHouse-Timezone"] in ("UTC", "Etc/UTC")
    assert (
        _raw(embedded_stack.clickhouse_port, "POST", "/", b"SELECT timezone()")[2].decode().strip()
        == (headers["X-ClickHouse-Timezone"])
    )
    assert "read_rows" in json.loads(headers["X-ClickHouse-Summary"])
    assert json.loads(body)["data"] == [{"one": 1}]
    status, _, body = _raw(embedded_stack.clickhouse_port, "GET", "/ping")
    assert (status, body) == (200, b"Ok.\n")
    status, _, body = _raw(embedded_stack.clickhouse_port, "GET", "/?query=SELECT%20version()")
    assert status == 200 and body.startswith(b"26.")


def test_insert_statement_in_query_param_with_compressed_bodies(embedded_stack, database):
    port = embedded_stack.clickhouse_port
    client = embedded_stack.client(database=database)
    client.command("CREATE TABLE t (a UInt32, b String) ENGINE = MergeTree ORDER BY a")
    data = b"".join(b"%d\tv%d\n" % (i, i) for i in range(10_000))
    encoders = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "zstd": lambda d: (
            zstandard.ZstdCompressor().compress(d[:50000]) + zstandard.ZstdCompressor().compress(d[50000:])
        ),
        "lz4": lambda d: lz4.frame.compress(d[:30000]) + lz4.frame.compress(d[30000:]),
    }
    for encoding, encode in encoders.items():
        status, headers, body = _raw(
            port,
            "POST",
            f"/?database={database}&query=INSERT%20INTO%20t%20FORMAT%20TabSeparated",
            encode(data),
            {"Content-Encoding": encoding},
        )
        assert status == 200, body
        assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "10000"
    assert client.command("SELECT count(), sum(a) FROM t") == ["40000", str(4 * sum(range(10_000)))]


def test_insert_statement_as_first_line_of_chunked_body(embedded_stack, database):
    port = embedded_stack.clickhouse_port
    client = embedded_stack.client(database=database)
    client.command("CREATE TABLE t (a UInt32, b String) ENGINE = MergeTree ORDER BY a")

    def body():
        yield b"INSERT INTO t (a, b) FORMAT JSONEachRow\n"
        for start in range(0, 5000, 1000):
            yield b"".join(b'{"a": %d, "b": "x%d"}\n' % (i, i) for i in range(start, start + 1000))

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", f"/?database={database}", body=body(), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 200, response.read()
    response.read()
    conn.close()
    assert client.command("SELECT count(), uniqExact(b) FROM t") == ["5000", "5000"]


def test_bad_insert_data_is_rejected_whole_and_clearly(embedded_stack, database):
    client = embedded_stack.client(database=database)
    client.command("CREATE TABLE t (a UInt32) ENGINE = MergeTree ORDER BY a")
    status, headers, body = _raw(
        embedded_stack.clickhouse_port,
        "POST",
        f"/?database={database}&query=INSERT%20INTO%20t%20FORMAT%20TabSeparated",
        b"1\n2\nnot-a-number\n4\n",
    )
    assert status == 400
    assert headers["X-ClickHouse-Exception-Code"] == "27"
    assert b"not-a-number" in body
    assert client.command("SELECT count() FROM t") == 0


def test_malformed_requests_get_errors_and_the_server_keeps_serving(embedded_stack):
    port = embedded_stack.clickhouse_port
    status, headers, body = _raw(port, "POST", "/", b"SELECT 1", {"Content-Encoding": "gzip"})
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "36"
    assert b"Cannot decompress the request body as gzip" in body
    status, _, body = _raw(port, "POST", "/", b"SELECT 1", {"Content-Encoding": "snappy-ish"})
    assert status == 400 and b"Unknown Content-Encoding" in body
    status, _, body = _raw(port, "POST", "/nowhere", b"SELECT 1")
    assert status == 500 and b"There is no handler /nowhere" in body
    status, _, body = _raw(port, "POST", "/", b"")
    assert status == 400 and b"Empty query" in body
    # Garbage chunk framing.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nSELECT 1\r\n0\r\n\r\n"
        )
        reply = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 400") and b"Malformed chunked request body" in reply
    # Not even HTTP.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 400")
    status, _, body = _raw(port, "POST", "/", b"SELECT 42")
    assert (status, body) == (200, b"42\n")


def test_session_check_and_locking(embedded_stack):
    port = embedded_stack.clickhouse_port
    status, headers, body = _raw(port, "POST", "/?session_id=never-made&session_check=1", b"SELECT 1")
    assert status == 404 and headers["X-ClickHouse-Exception-Code"] == "372"
    status, _, _ = _raw(port, "POST", "/?session_id=made-now", b"SELECT 1")
    assert status == 200
    status, _, body = _raw(port, "POST", "/?session_id=made-now&session_check=1", b"SELECT 2")
    assert (status, body) == (200, b"2\n")
